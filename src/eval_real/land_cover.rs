//! The real land-cover patches: each through `detect` with the same image as both dates
//! (so that `class_before.tif` is gengbao's single-date land cover, as the data README's
//! protocol has it), beside a random forest on the raw bands of the same pixels.
//!
//! `eurosat-s2/<Class>/<Class>_N.tif`: 64 × 64 px Sentinel-2 L1C patches (13 bands, B8A stored
//! last, products of 2017-2018 without the −1000 offset, pixels of about 10.00 × 10.01 m).
//! Classes onto gengbao's codes: AnnualCrop 1, PermanentCrop 2, Residential and Industrial 3,
//! River and SeaLake 4, Pasture and HerbaceousVegetation 5, Forest 6; Highway is left out.
//!
//! Both are scored on held-out patches: five folds by patch number (patches N and N + 5 of
//! every class form one fold), each fold predicted by models that never saw it. gengbao's is
//! a shipped single-look model retrained on the other folds by its own training config (only
//! the patches changed) and run through `detect --model`: the L1C model on every band
//! (`models/gengbao-s2-l1c-v2.train.toml`), and the four-band model on blue, green, red and
//! NIR (`models/gengbao-4band-v1.train.toml`). The forest is grown on the other folds' raw
//! bands, the same bands the model reads (100 trees, seeded, `smartcore`). The shipped models
//! learned from every patch here, so they are not scored on them.

use super::{digital_numbers, forest_classes, grow_forest, Forest, LandCoverSet};
use crate::detect::{detect, DetectOptions};
use crate::error::{Error, Result};
use crate::evaluate::class_score;
use crate::geo::grid::JobGrid;
use crate::geo::raster::{open_georeferenced, read_band_f64};
use crate::geo::sensor::SensorProfile;
use crate::train::{patch_files, train, TrainConfig};
use std::path::{Path, PathBuf};

/// EuroSAT's folders and gengbao's class codes.
const EUROSAT_CLASSES: [(&str, u8); 9] = [
    ("AnnualCrop", 1),
    ("PermanentCrop", 2),
    ("Residential", 3),
    ("Industrial", 3),
    ("River", 4),
    ("SeaLake", 4),
    ("Pasture", 5),
    ("HerbaceousVegetation", 5),
    ("Forest", 6),
];

/// EuroSAT's band order in its files.
const EUROSAT_BANDS: [&str; 13] = [
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
];

const FOLDS: usize = 5;

/// A shipped single-look model the folds retrain; the forest beside it reads the bands its
/// config's `[model] bands` names (every band when empty).
pub(super) struct SingleLook {
    set: &'static str,
    config: &'static str,
    training: &'static str,
}

/// The L1C model on every band.
pub(super) const EVERY_BAND: SingleLook = SingleLook {
    set: "eurosat-s2",
    config: "models/gengbao-s2-l1c-v2.train.toml",
    training: include_str!("../../models/gengbao-s2-l1c-v2.train.toml"),
};

/// The four-band model of the sensors without shortwave infrared (Gaofen).
pub(super) const FOUR_BANDS: SingleLook = SingleLook {
    set: "eurosat-s2-four-bands",
    config: "models/gengbao-4band-v1.train.toml",
    training: include_str!("../../models/gengbao-4band-v1.train.toml"),
};

/// Every fourth pixel of every fourth row of a patch trains the forest (256 of 4,096): the
/// pixels of a patch are alike.
const TRAINING_STRIDE: usize = 4;

/// One labelled patch file.
struct PatchFile {
    folder: &'static str,
    class: u8,
    path: PathBuf,
    number: usize,
    fold: usize,
}

/// One labelled patch, read.
struct Patch {
    class: u8,
    fold: usize,
    /// gengbao's class of each pixel (0 = unclassified).
    gengbao: Vec<u8>,
    /// Each pixel's digital numbers in the profile's band order, on detect's grid (`None`
    /// where a band is missing).
    pixels: Vec<Option<Vec<f64>>>,
}

/// Runs the EuroSAT patches under `data`, when present; `None` when the folder is absent.
pub(super) fn eurosat(data: &Path, work: &Path, look: &SingleLook) -> Result<Option<LandCoverSet>> {
    let root = data.join("eurosat-s2");
    if !root.is_dir() {
        return Ok(None);
    }
    let profile = SensorProfile::by_name("sentinel2-l1c")?;
    let model_bands = TrainConfig::parse(look.training, &root.join("train.toml"))?
        .model
        .bands;
    let forest_bands: Vec<usize> = if model_bands.is_empty() {
        (0..profile.bands.len()).collect()
    } else {
        model_bands
            .iter()
            .map(|b| profile.input_band(b).expect("a validated band"))
            .collect()
    };
    let order: Vec<String> = EUROSAT_BANDS.iter().map(|b| b.to_string()).collect();
    let mut files = Vec::new();
    for (folder, class) in EUROSAT_CLASSES {
        for (path, number) in numbered_patches(&root.join(folder))? {
            files.push(PatchFile {
                folder,
                class,
                path,
                number,
                fold: (number - 1) % FOLDS,
            });
        }
    }
    if files.is_empty() {
        return Err(Error::input(
            &root,
            "holds no patch (`<Class>/<Class>_N.tif`)",
            "restore the EuroSAT folder as the data README describes it",
        ));
    }
    let mut patches = Vec::with_capacity(files.len());
    let mut version = String::new();
    for fold in 0..FOLDS {
        let fold_work = work.join(format!("fold-{fold}"));
        let (model, fold_version) = model_without(look, &files, fold, &fold_work)?;
        version = fold_version;
        for f in files.iter().filter(|f| f.fold == fold) {
            let out = work.join(format!("{}_{}", f.folder, f.number));
            detect(&DetectOptions {
                sensor: Some(profile.name.into()),
                add_offset: Some(0.0),
                band_order: Some(order.clone()),
                model: Some(model.clone()),
                classes_only: true,
                quiet: true,
                ..DetectOptions::new(f.path.clone(), f.path.clone(), out.clone())
            })?;
            let classes_path = out.join("class_before.tif");
            let grid = JobGrid::of_dataset(&open_georeferenced(&classes_path)?, &classes_path)?;
            let gengbao = read_band_f64(&classes_path, 1)?
                .2
                .iter()
                .map(|&v| v as u8)
                .collect();
            patches.push(Patch {
                class: f.class,
                fold,
                gengbao,
                pixels: raw_pixels(&f.path, profile, &order, &grid, &forest_bands)?,
            });
        }
    }
    let classifier = format!(
        "{} retrained without each fold (last fold's version {version})",
        look.config
    );
    Ok(Some(score(look.set, &patches, classifier)?))
}

/// gengbao's single-look model trained by its shipped config on the patches outside `fold`
/// (linked into a folder of their own under `work`); gives the model file and its version.
fn model_without(
    look: &SingleLook,
    files: &[PatchFile],
    fold: usize,
    work: &Path,
) -> Result<(PathBuf, String)> {
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(|e| Error::io(work, e))?;
    }
    let data = work.join("patches");
    for f in files.iter().filter(|f| f.fold != fold) {
        let dir = data.join(f.folder);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let target = std::path::absolute(&f.path).map_err(|e| Error::io(&f.path, e))?;
        let link = dir.join(f.path.file_name().expect("a patch file has a name"));
        std::os::unix::fs::symlink(&target, &link).map_err(|e| Error::io(&link, e))?;
    }
    let mut cfg = TrainConfig::parse(look.training, &work.join("train.toml"))?;
    let absolute = |p: PathBuf| std::path::absolute(&p).map_err(|e| Error::io(&p, e));
    cfg.model.output = absolute(work.join("model.ot"))?;
    cfg.model.work_dir = Some(absolute(work.join("train"))?);
    let data = absolute(data)?.to_string_lossy().into_owned();
    for d in cfg.datasets.iter_mut().filter(|d| d.kind == "patches") {
        d.path = Some(data.clone());
    }
    let report = train(&cfg, true)?;
    let version = report
        .card
        .extra
        .get("version")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    Ok((report.model, version))
}

/// The patch files of a class folder with their numbers (`<Class>_N.tif`), by number.
fn numbered_patches(folder: &Path) -> Result<Vec<(PathBuf, usize)>> {
    let mut files: Vec<(PathBuf, usize)> = patch_files(folder)?
        .into_iter()
        .filter_map(|p| {
            let number = p.file_stem()?.to_str()?.rsplit('_').next()?.parse().ok()?;
            Some((p, number))
        })
        .collect();
    files.sort_by_key(|(_, n)| *n);
    Ok(files)
}

/// The patch's digital numbers per pixel of the profile bands `keep`, read onto `grid` as
/// detect reads them.
fn raw_pixels(
    path: &Path,
    profile: &SensorProfile,
    order: &[String],
    grid: &JobGrid,
    keep: &[usize],
) -> Result<Vec<Option<Vec<f64>>>> {
    let bands = digital_numbers(path, profile, Some(order), grid, "forest")?;
    Ok(bands
        .columns()
        .into_iter()
        .map(|px| {
            let kept: Vec<f32> = keep.iter().map(|&b| px[b]).collect();
            kept.iter()
                .all(|v| v.is_finite())
                .then(|| kept.iter().map(|&v| f64::from(v)).collect())
        })
        .collect())
}

/// gengbao's and the forest's scores over all patches, in fold order.
fn score(set: &str, patches: &[Patch], classifier: String) -> Result<LandCoverSet> {
    let truth: Vec<f64> = patches
        .iter()
        .flat_map(|p| std::iter::repeat_n(f64::from(p.class), p.gengbao.len()))
        .collect();
    let gengbao: Vec<f64> = patches
        .iter()
        .flat_map(|p| p.gengbao.iter().map(|&c| f64::from(c)))
        .collect();
    let mut forest = Vec::with_capacity(truth.len());
    for fold in 0..FOLDS {
        let model = forest_without(patches, fold)?;
        for p in patches.iter().filter(|p| p.fold == fold) {
            forest.extend(predict(&model, p)?);
        }
    }
    // The forest's predictions come fold by fold: put the truth in the same order.
    let forest_truth: Vec<f64> = (0..FOLDS)
        .flat_map(|fold| patches.iter().filter(move |p| p.fold == fold))
        .flat_map(|p| std::iter::repeat_n(f64::from(p.class), p.pixels.len()))
        .collect();
    Ok(LandCoverSet {
        set: set.into(),
        patches: patches.len(),
        classifier,
        labels: "AnnualCrop 1, PermanentCrop 2, Residential and Industrial 3, River and SeaLake 4, Pasture and HerbaceousVegetation 5, Forest 6 (Highway left out)".into(),
        gengbao: class_score(&truth, &gengbao),
        random_forest: class_score(&forest_truth, &forest),
    })
}

/// A forest grown on the sampled pixels of the patches outside `fold`.
fn forest_without(patches: &[Patch], fold: usize) -> Result<Forest> {
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for p in patches.iter().filter(|p| p.fold != fold) {
        let side = (p.pixels.len() as f64).sqrt() as usize;
        let sampled = |i: &usize| {
            (i / side).is_multiple_of(TRAINING_STRIDE) && i.is_multiple_of(TRAINING_STRIDE)
        };
        for i in (0..p.pixels.len()).filter(sampled) {
            if let Some(x) = &p.pixels[i] {
                rows.push(x.clone());
                labels.push(p.class);
            }
        }
    }
    grow_forest(rows, labels)
}

/// The forest's class of every pixel of a patch (0 where a band is missing).
fn predict(forest: &Forest, p: &Patch) -> Result<Vec<f64>> {
    let observed: Vec<Vec<f64>> = p.pixels.iter().flatten().cloned().collect();
    let mut classes = forest_classes(forest, observed)?.into_iter();
    Ok(p.pixels
        .iter()
        .map(|px| match px {
            Some(_) => f64::from(classes.next().unwrap_or(0)),
            None => 0.0,
        })
        .collect())
}
