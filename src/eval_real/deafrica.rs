//! Digital Earth Africa's crop-mask training points: about 30,000 points in eight regions of
//! Africa, each with the two half-year Sentinel-2 geomedians of 2019 (January-June and
//! July-December, reflectance 0..1) and a label, crop or not crop (perennial tree crops are
//! not crop).
//!
//! Leave one region out: for each region, gengbao's trainer fits its per-pixel MLP on six of
//! the other seven, 120 epochs keeping the mean of the last 60 epochs' weights (the seventh,
//! held back whole, is the trainer's validation split: its loss is recorded, it stops
//! nothing), and the saved model
//! classifies the region as a job classifies a tile: July-December is the period composite,
//! January-June the period before it, read back as the archive keeps it (its NDVI and its
//! bands). Beside
//! it, a random forest on the raw bands of both half-years, grown on all seven regions.
//! Crop is gengbao's class 1; every other point is trained as class 5, and scoring is crop
//! against not crop.

use super::{forest_classes, grow_forest, LandCoverSet};
use crate::classify::{Classifier, ClassifierInput, FeatureLayout, Normalisation, TorchClassifier};
use crate::error::{Error, Result};
use crate::evaluate::class_score;
use crate::geo::composite::{ArchivedPeriod, Composite};
use crate::geo::sensor::SensorProfile;
use crate::train::{files_with_extension, fit, FitOptions, SampleSet, Split};
use ndarray::Array3;
use rayon::prelude::*;
use std::path::Path;

/// The geomedians' bands as the Sentinel-2 L2A profile names them (B8A is not given).
const BANDS: [(&str, &str); 9] = [
    ("blue", "B02"),
    ("green", "B03"),
    ("red", "B04"),
    ("red_edge_1", "B05"),
    ("red_edge_2", "B06"),
    ("red_edge_3", "B07"),
    ("nir", "B08"),
    ("swir_1", "B11"),
    ("swir_2", "B12"),
];

/// The ratios beside the bands: open water (MNDWI, NDWI), built-up and bare ground (NDBI,
/// SWIR ratio) and canopy (red-edge), which hold across illumination and soils.
const RATIOS: [&str; 6] = [
    "ND_B03_B08",
    "ND_B03_B11",
    "ND_B11_B08",
    "ND_B08_B05",
    "ND_B07_B05",
    "ND_B11_B12",
];

const CROP: u8 = 1;
const NOT_CROP: u8 = 5;

/// One region's points: label, and each half-year's composite of the points as one row.
struct Region {
    name: String,
    crop: Vec<bool>,
    first_half: Composite,
    second_half: Composite,
}

/// What every fold reads of a region, made once: the first half-year as the archive keeps
/// it, the model's inputs of the points observed in every band it reads (unnormalised) with
/// their output indices, and the forest's rows.
struct RegionInputs {
    history: [ArchivedPeriod; 1],
    x: Vec<f32>,
    y: Vec<i64>,
    rows: Vec<Vec<f64>>,
}

impl RegionInputs {
    fn of(r: &Region, layout: &FeatureLayout) -> Self {
        let history = [r.first_half.as_archived(true)];
        let observed = layout.observed_pixels(&r.second_half);
        let mut x = Vec::new();
        layout.push_pixels(
            &layout.tile_inputs(&r.second_half, &history),
            &observed,
            &Normalisation::identity(layout.len()),
            &mut x,
        );
        let y = observed
            .iter()
            .map(|&i| i64::from(label(r.crop[i])) - 1)
            .collect();
        RegionInputs {
            history,
            x,
            y,
            rows: raw_rows(r),
        }
    }
}

/// Runs the eight regions under `data`, when present; `None` when the folder is absent.
/// `held_out` names the regions to hold out one by one (all by default).
pub(super) fn deafrica(
    data: &Path,
    work: &Path,
    held_out: Option<&[String]>,
) -> Result<Option<LandCoverSet>> {
    let folder = data.join("deafrica-cropmask");
    if !folder.is_dir() {
        return Ok(None);
    }
    let profile = SensorProfile::by_name("sentinel2-l2a")?;
    let regions = files_with_extension(&folder, "txt")?
        .iter()
        .map(|path| read_region(path, profile))
        .collect::<Result<Vec<_>>>()?;
    if regions.len() < 3 {
        return Err(Error::input(
            &folder,
            format!(
                "holds {} region files, leave-one-region-out needs 3",
                regions.len()
            ),
            "restore the eight <region>.txt files of the crop-mask training data",
        ));
    }
    let names = input_names(profile);
    let layout = FeatureLayout::parse(&names, profile).expect("the profile's own bands");
    let inputs: Vec<RegionInputs> = regions
        .iter()
        .map(|r| RegionInputs::of(r, &layout))
        .collect();
    std::fs::create_dir_all(work).map_err(|e| Error::io(work, e))?;
    let folds: Vec<usize> = match held_out {
        None => (0..regions.len()).collect(),
        Some(wanted) => wanted
            .iter()
            .map(|w| {
                regions.iter().position(|r| &r.name == w).ok_or_else(|| {
                    Error::usage(
                        format!("no region `{w}` in {}", folder.display()),
                        format!(
                            "hold out one of {}",
                            regions
                                .iter()
                                .map(|r| r.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<_>>()?,
    };
    // Each fold's model depends on its seed alone (`build_mlp` draws under a lock), so the
    // folds train side by side as the forests do.
    let fitted = folds
        .par_iter()
        .map(|&fold| {
            let region = &regions[fold];
            // The next region is the validation split: whole regions on every side.
            let validation = (fold + 1) % regions.len();
            let mut set = SampleSet {
                inputs: layout.len(),
                ..Default::default()
            };
            for (k, r) in inputs.iter().enumerate().filter(|&(k, _)| k != fold) {
                let split = if k == validation {
                    Split::Validation
                } else {
                    Split::Train
                };
                set.x.extend_from_slice(&r.x);
                set.y.extend_from_slice(&r.y);
                set.weight.extend(std::iter::repeat_n(1.0, r.y.len()));
                set.split.extend(std::iter::repeat_n(split, r.y.len()));
            }
            let model = fit_model(
                &set,
                &names,
                profile,
                &work.join(format!("without-{}.ot", region.name)),
            )?;
            let classified = model.classify(&ClassifierInput {
                profile,
                composite: &region.second_half,
                history: &inputs[fold].history,
                runner_up: false,
                wanted: None,
            })?;
            // An unclassified point (a band missing) counts as not crop, never as left out.
            let crop = classified
                .classes
                .iter()
                .map(|&c| f64::from(label(c == CROP)))
                .collect::<Vec<f64>>();
            Ok((model.version().to_string(), crop))
        })
        .collect::<Result<Vec<_>>>()?;
    let version = fitted.last().map(|(v, _)| v.clone()).unwrap_or_default();
    let gengbao: Vec<f64> = fitted.into_iter().flat_map(|(_, crop)| crop).collect();
    let forest = folds
        .par_iter()
        .map(|&fold| {
            let (mut rows, mut labels) = (Vec::new(), Vec::new());
            for k in (0..regions.len()).filter(|&k| k != fold) {
                rows.extend(inputs[k].rows.iter().cloned());
                labels.extend(regions[k].crop.iter().map(|&c| label(c)));
            }
            forest_classes(&grow_forest(rows, labels)?, inputs[fold].rows.clone())
        })
        .collect::<Result<Vec<Vec<u8>>>>()?
        .into_iter()
        .flatten()
        .map(f64::from)
        .collect::<Vec<f64>>();
    let truth: Vec<f64> = folds
        .iter()
        .flat_map(|&fold| regions[fold].crop.iter().map(|&c| f64::from(label(c))))
        .collect();
    Ok(Some(LandCoverSet {
        set: "deafrica-cropmask".into(),
        patches: folds.len(),
        classifier: format!(
            "gengbao's MLP trained without each region on {} inputs (last fold's version {version})",
            names.len()
        ),
        labels: "crop 1, not crop 5 (every other point)".into(),
        gengbao: class_score(&truth, &gengbao),
        random_forest: class_score(&truth, &forest),
    }))
}

/// The model inputs: the nine bands, the period's NDVI range and the ratios, and the same
/// of the half-year before, as the archive keeps it.
fn input_names(profile: &SensorProfile) -> Vec<String> {
    let bands: Vec<&str> = profile
        .bands
        .iter()
        .copied()
        .filter(|b| BANDS.iter().any(|(_, name)| name == b))
        .collect();
    let mut names: Vec<String> = bands.iter().map(|b| b.to_string()).collect();
    names.extend(["NDVI_MIN", "NDVI_MAX"].map(String::from));
    names.extend(RATIOS.map(String::from));
    names.extend(bands.iter().map(|b| format!("{b}-1")));
    names.extend(["NDVI_MED-1", "NDVI_MIN-1", "NDVI_MAX-1"].map(String::from));
    names.extend(RATIOS.map(|r| format!("{r}-1")));
    names
}

fn label(crop: bool) -> u8 {
    if crop {
        CROP
    } else {
        NOT_CROP
    }
}

fn fit_model(
    set: &SampleSet,
    names: &[String],
    profile: &'static SensorProfile,
    output: &Path,
) -> Result<TorchClassifier> {
    // No early stopping: the held-back region's loss does not track a region unlike the
    // training ones and stopped the runs early; the mean of the second half's weights does.
    let opts = FitOptions {
        hidden: vec![64, 64],
        seed: 1,
        epochs: 120,
        batch: 512,
        learning_rate: 0.003,
        weight_decay: 0.001,
        patience: 8, // unused when averaging (kept: it is part of the run's id)
        average_from: Some(61),
    };
    let fitted = fit(set, &opts, None, true)?;
    crate::train::save_weights(&fitted.vs, output)?;
    fitted
        .card("deafrica-fold", names.to_vec(), 2, &opts.hidden)
        .save(output)?;
    TorchClassifier::load(output, profile)
}

/// The raw bands of both half-years, one row per point: the forest's inputs.
fn raw_rows(r: &Region) -> Vec<Vec<f64>> {
    let (a, b) = (r.first_half.pixels(), r.second_half.pixels());
    (0..r.crop.len())
        .map(|i| {
            [&a, &b]
                .iter()
                .flat_map(|p| p.column(i).to_vec())
                .filter(|v| !v.is_nan())
                .map(f64::from)
                .collect()
        })
        .collect()
}

/// Reads one region's points: a header line `# Class blue_S1 ...`, then one point per line.
fn read_region(path: &Path, profile: &SensorProfile) -> Result<Region> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = lines
        .next()
        .and_then(|(_, l)| l.strip_prefix('#'))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let column = |name: &str| {
        header.iter().position(|c| *c == name).ok_or_else(|| {
            Error::input(
                path,
                format!("has no column `{name}` in its header line"),
                "the first line names the columns: # Class blue_S1 green_S1 ... slope",
            )
        })
    };
    let class = column("Class")?;
    // Column of each profile band in each half-year; B8A has none.
    let mut columns = [
        vec![None; profile.bands.len()],
        vec![None; profile.bands.len()],
    ];
    for (half, suffix) in ["_S1", "_S2"].iter().enumerate() {
        for (given, band) in BANDS {
            let b = profile.band_index(band).expect("an L2A band");
            columns[half][b] = Some(column(&format!("{given}{suffix}"))?);
        }
    }
    let mut crop = Vec::new();
    let mut values: [Vec<f32>; 2] = [Vec::new(), Vec::new()];
    for (n, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<f32> = line
            .split_whitespace()
            .map(|f| f.parse::<f32>())
            .collect::<std::result::Result<_, _>>()
            .ok()
            .filter(|f: &Vec<f32>| f.len() == header.len())
            .ok_or_else(|| {
                Error::input(
                    path,
                    format!(
                        "line {}: expected {} numbers separated by spaces",
                        n + 1,
                        header.len()
                    ),
                    "restore the file from the crop-mask training data",
                )
            })?;
        crop.push(fields[class] == 1.0);
        for half in 0..2 {
            values[half].extend(
                columns[half]
                    .iter()
                    .map(|c| c.map_or(f32::NAN, |c| fields[c])),
            );
        }
    }
    if crop.is_empty() {
        return Err(Error::input(
            path,
            "holds no labelled point",
            "restore the file from the crop-mask training data",
        ));
    }
    // Points × bands as read; a composite is bands × rows × columns, here one row.
    let composite = |v: Vec<f32>| {
        let points = Array3::from_shape_vec((crop.len(), 1, profile.bands.len()), v)
            .expect("one value per band and point");
        let bands = points
            .permuted_axes([2, 1, 0])
            .as_standard_layout()
            .into_owned();
        Composite::single(profile, bands)
    };
    let [first, second] = values;
    Ok(Region {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        first_half: composite(first),
        second_half: composite(second),
        crop,
    })
}
