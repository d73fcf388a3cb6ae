//! Two-date detection on any pair of co-registered multi-band images (e.g. one mosaic per date
//! that a user already has): the stages of a period run, with the earlier image's classes as
//! the baseline instead of the farmland layer and the archive.
//!
//! Takes: two GDAL-readable images with the band layout of a sensor profile, optionally a
//! parcel layer (without one the whole image is watched). Gives, in the output folder:
//! `class_before.tif`, `class_after.tif` (land cover of the watched area, 0 elsewhere),
//! `flags.tif`, `patches.gpkg` and `summary.json`.
//! Rules: FNH and FLH as in [`crate::domain::change`]; PH needs a year of periods and is flagged from
//! two dates only when asked ([`DetectOptions::abandonment`]). A pair is one look at each
//! date, so there is no persistence to outvote a misclassified pixel; instead a pixel changes
//! only when a learned model is sure of both its classes, and with a parcel layer an FLH or PH
//! patch must take most of its parcel ([`ParcelShares`]).

use crate::classify::{Classifier, ClassifierInput, ClassifierKind};
use crate::domain::change::{pair_cultivation, ParcelShares, Rules, DEFAULT_MIN_PARCEL_SHARE};
use crate::engine::change_rasters::ChangeRasters;
use crate::engine::judge::{judge_tile, ChangeTile, History, Observation};
use crate::engine::patch_record::{patch_specs, patch_values};
use crate::engine::patches::{totals_by_type, PeriodInfo, Timeline, TypeTotals};
use crate::engine::tiles::for_each_tile;
use crate::error::{Error, Result};
use crate::geo::composite::Composite;
use crate::geo::grid::{JobGrid, Tile, Window};
use crate::geo::imagery::{dark_objects, to_reflectance};
use crate::geo::layers::{labelled_points, Admin, County, Farmland};
use crate::geo::raster::{open_georeferenced, warp_onto, GridTiff, Resample};
use crate::geo::sensor::SensorProfile;
use crate::geo::vector::{write_layer, Format};
use crate::job::staging::StagingDir;
use crate::train::PointModel;
use gdal::vector::Geometry;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct DetectOptions {
    pub before: PathBuf,
    pub after: PathBuf,
    pub farmland: Option<PathBuf>,
    pub sensor: Option<String>,
    /// DN offset of the images, overriding the profile's.
    pub add_offset: Option<f32>,
    pub out: PathBuf,
    pub min_area_m2: f64,
    /// A learned model (with its card) instead of the index baseline.
    pub model: Option<PathBuf>,
    /// Labelled points of each image: a model is trained per image from them (written as
    /// `model_before.ot` / `model_after.ot` with their cards) and replaces `model` there.
    pub samples_before: Option<PathBuf>,
    pub samples_after: Option<PathBuf>,
    /// Integer field of the points holding the gengbao class code (1..6).
    pub sample_class_field: String,
    /// Flag PH from the pair (cropland before, grass after): see [`pair_cultivation`].
    pub abandonment: bool,
    /// A pixel changes only when the classifier is at least this sure of both its classes:
    /// a pair is one look at each date, so an unsure class is no evidence of change. Applies
    /// to learned models, whose confidence is a probability (not to the index rules).
    pub min_confidence: f32,
    /// With a parcel layer, the share of a parcel's observed pixels that the pixels of an FLH
    /// or PH patch's type there must make up ([`ParcelShares`]); 0 keeps every patch.
    pub min_parcel_share: f64,
    pub quiet: bool,
}

impl DetectOptions {
    /// The defaults of `gengbao detect` for a pair of images.
    pub fn new(before: PathBuf, after: PathBuf, out: PathBuf) -> Self {
        DetectOptions {
            before,
            after,
            farmland: None,
            sensor: None,
            add_offset: None,
            out,
            min_area_m2: DEFAULT_MIN_AREA_M2,
            model: None,
            samples_before: None,
            samples_after: None,
            sample_class_field: DEFAULT_SAMPLE_CLASS_FIELD.into(),
            abandonment: false,
            min_confidence: DEFAULT_MIN_CONFIDENCE,
            min_parcel_share: DEFAULT_MIN_PARCEL_SHARE,
            quiet: false,
        }
    }
}

/// Default of [`DetectOptions::min_area_m2`].
pub const DEFAULT_MIN_AREA_M2: f64 = 400.0;

/// Default of [`DetectOptions::sample_class_field`].
pub const DEFAULT_SAMPLE_CLASS_FIELD: &str = "class";

/// Default of [`DetectOptions::min_confidence`]. Measured on the peer harness's 2048 scene:
/// the planted changes' patches had a mean confidence of 0.99 and more, the spurious
/// grain/forest ones 0.69 to 0.93 (5th to 95th percentile).
pub const DEFAULT_MIN_CONFIDENCE: f32 = 0.9;

#[derive(Debug, Clone, Serialize)]
pub struct DetectSummary {
    pub before: String,
    pub after: String,
    pub sensor: String,
    pub classifier: String,
    pub width: usize,
    pub height: usize,
    pub watched: String,
    pub patches: BTreeMap<&'static str, TypeTotals>,
    pub seconds: f64,
    pub rules: String,
}

impl DetectSummary {
    pub fn human(&self) -> String {
        let mut s = format!(
            "detect {} -> {} ({}, {}x{} px, {:.1} s):",
            self.before, self.after, self.sensor, self.width, self.height, self.seconds
        );
        for (t, v) in &self.patches {
            s += &format!("  {t} {} ({:.0} m²)", v.count, v.area_m2);
        }
        s
    }
}

fn profile_for(path: &Path, bands: usize, name: Option<&str>) -> Result<&'static SensorProfile> {
    let profile = match name {
        Some(n) => SensorProfile::by_name(n)?,
        None => SensorProfile::for_band_count(bands).ok_or_else(|| {
            Error::input(
                path,
                format!("{bands} bands do not identify a sensor profile"),
                "name one with --sensor (see `gengbao sensors`)",
            )
        })?,
    };
    if profile.bands.len() != bands {
        return Err(Error::input(
            path,
            format!(
                "has {bands} bands but profile `{}` expects {} ({})",
                profile.name,
                profile.bands.len(),
                profile.bands.join(" ")
            ),
            "pick the profile that matches the file's band layout with --sensor",
        ));
    }
    Ok(profile)
}

/// One date of the pair: its file, its name in the outputs (`before`, `after`), its dark
/// objects (zeros unless the profile subtracts them) and its labelled points, if any.
struct Image<'o> {
    path: &'o Path,
    name: &'static str,
    dark: Vec<f32>,
    samples: Option<&'o PathBuf>,
}

/// The pair as read and checked: its profile, the grid of the earlier image, both images,
/// and the watched parcels.
struct Pair<'o> {
    opts: &'o DetectOptions,
    profile: &'static SensorProfile,
    grid: JobGrid,
    farmland: Option<Farmland>,
    admin: Admin,
    add_offset: f32,
    before: Image<'o>,
    after: Image<'o>,
}

impl Pair<'_> {
    /// The image's composite of a grid window; pixels off the watched parcels (`watched` 0)
    /// count as unobserved (class 0), which saves the model's time off farmland.
    fn read(&self, image: &Image, w: Window, watched: Option<&[i32]>) -> Result<Composite> {
        let profile = self.profile;
        let mut bands = warp_onto(
            image.path,
            &self.grid,
            w,
            Resample::Bilinear,
            Some(profile.nodata),
        )?;
        for (i, mut b) in bands.outer_iter_mut().enumerate() {
            let b = b
                .as_slice_mut()
                .expect("a read stack is in standard layout");
            to_reflectance(profile, i, self.add_offset - image.dark[i], b);
            if let Some(parcels) = watched {
                for (v, &parcel) in b.iter_mut().zip(parcels) {
                    if parcel == 0 {
                        *v = f32::NAN;
                    }
                }
            }
        }
        Ok(Composite::single(profile, bands))
    }
}

/// The classifier of each date, and the confidence both classes of a pixel need to change.
struct PairClassifiers {
    before: Box<dyn Classifier>,
    after: Box<dyn Classifier>,
    min_confidence: f32,
    version: String,
}

/// What one tile of the pair gives, in the tile's core window.
struct PairTile {
    class_before: Vec<u8>,
    class_after: Vec<u8>,
    change: ChangeTile,
    parcel: Vec<i32>,
    shares: ParcelShares,
}

pub fn detect(opts: &DetectOptions) -> Result<DetectSummary> {
    let t0 = Instant::now();
    let pair = open_pair(opts)?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let staging_dir = StagingDir::beside(&opts.out.join("detect"))?;
    let staging = staging_dir.path();
    let classifiers = pair_classifiers(&pair, staging)?;
    let work = staging.join("work");
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let grid = &pair.grid;
    let mut class_before =
        GridTiff::create::<u8>(&staging.join("class_before.tif"), grid, 1, Some(0.0))?;
    let mut class_after =
        GridTiff::create::<u8>(&staging.join("class_after.tif"), grid, 1, Some(0.0))?;
    let mut change = ChangeRasters::create(&staging.join("flags.tif"), &work, grid)?;
    let mut shares = ParcelShares::default();
    let rules = Rules::two_dates(opts.abandonment);
    for_each_tile(
        None,
        &grid.tiles(),
        |tile| pair_tile(&pair, &classifiers, &rules, tile),
        |tile, out| {
            let w = tile.core;
            shares.merge(out.shares);
            class_before.write(1, w, out.class_before)?;
            class_after.write(1, w, out.class_after)?;
            change.write(w, out.change, out.parcel)
        },
    )?;
    class_before.close()?;
    class_after.close()?;
    let info = PeriodInfo {
        period: "T2".into(),
        image_dates: String::new(),
        model_version: &classifiers.version,
        timeline: Timeline::Pair {
            before: "T1".into(),
        },
    };
    let patches = change.into_patches(
        grid,
        &pair.admin,
        &info,
        |_| opts.min_area_m2,
        |p| shares.keeps(p.parcel, p.change, opts.min_parcel_share),
    )?;
    let rows = patches
        .iter()
        .map(|p| (p.geometry.clone(), patch_values(p)));
    write_layer(
        &staging.join("patches.gpkg"),
        Format::GeoPackage,
        "patches",
        &grid.spatial_ref()?,
        &patch_specs(),
        rows,
        "UTF-8",
    )?;
    let summary = DetectSummary {
        before: opts.before.display().to_string(),
        after: opts.after.display().to_string(),
        sensor: pair.profile.name.into(),
        classifier: classifiers.version.clone(),
        width: grid.width,
        height: grid.height,
        watched: opts
            .farmland
            .as_ref()
            .map_or("whole image".into(), |f| f.display().to_string()),
        patches: totals_by_type(&patches),
        seconds: t0.elapsed().as_secs_f64(),
        rules: rules_text(opts),
    };
    std::fs::write(
        staging.join("summary.json"),
        serde_json::to_vec_pretty(&summary).expect("serialisable"),
    )
    .map_err(|e| Error::io(staging, e))?;
    move_results(&pair, &staging_dir)?;
    Ok(summary)
}

/// Checks the options and both images, and reads what the tiles share.
fn open_pair<'o>(opts: &'o DetectOptions) -> Result<Pair<'o>> {
    for (name, value) in [
        ("--min-confidence", f64::from(opts.min_confidence)),
        ("--min-parcel-share", opts.min_parcel_share),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(Error::usage(
                format!("{name} {value} is not a share"),
                format!("give {name} between 0 and 1"),
            ));
        }
    }
    let before_ds = open_georeferenced(&opts.before)?;
    let after_ds = open_georeferenced(&opts.after)?;
    let profile = profile_for(
        &opts.before,
        before_ds.raster_count(),
        opts.sensor.as_deref(),
    )?;
    profile_for(&opts.after, after_ds.raster_count(), Some(profile.name))?;
    let grid = JobGrid::of_dataset(&before_ds, &opts.before)?;
    if let Err(problem) = crate::geo::grid::check_metric(&grid.spatial_ref()?) {
        return Err(Error::input(
            &opts.before,
            format!("its CRS {problem}"),
            "warp both images to a projected CRS in metres first, e.g. `gdalwarp -t_srs EPSG:4527`",
        ));
    }
    drop((before_ds, after_ds));
    let farmland = opts
        .farmland
        .as_deref()
        .map(Farmland::open_polygons)
        .transpose()?;
    let (x0, y0, x1, y1) = grid.window_bounds(grid.full_window());
    let admin = Admin {
        path: opts.before.clone(),
        counties: vec![County::new(
            "000000".into(),
            "检测范围".into(),
            &Geometry::bbox(x0, y0, x1, y1)?,
        )?],
    };
    let image = |path: &'o PathBuf, name, samples: &'o Option<PathBuf>| -> Result<Image<'o>> {
        let dark = if profile.dark_object_subtraction {
            dark_objects(path, profile)?
        } else {
            vec![0.0; profile.bands.len()]
        };
        Ok(Image {
            path,
            name,
            dark,
            samples: samples.as_ref(),
        })
    };
    Ok(Pair {
        opts,
        profile,
        farmland,
        admin,
        add_offset: opts.add_offset.unwrap_or(profile.add_offset),
        before: image(&opts.before, "before", &opts.samples_before)?,
        after: image(&opts.after, "after", &opts.samples_after)?,
        grid,
    })
}

/// The classifier of each date: a model fitted on the date's labelled points (saved into
/// `staging`), or the built-in one.
fn pair_classifiers(pair: &Pair, staging: &Path) -> Result<PairClassifiers> {
    let opts = pair.opts;
    let classifier_for = |image: &Image| -> Result<Box<dyn Classifier>> {
        let Some(points) = image.samples else {
            return crate::classify::select(
                ClassifierKind::Auto,
                opts.model.as_deref(),
                pair.profile,
            );
        };
        let pixels = labelled_points(points, &opts.sample_class_field, &pair.grid)?;
        let model = PointModel {
            profile: pair.profile,
            grid: &pair.grid,
            name: format!("detect-{}", image.name),
            points: points.clone(),
        };
        let fitted = model.fit(
            &pixels,
            |w| pair.read(image, w, None),
            &staging.join(format!("model_{}.ot", image.name)),
            opts.quiet,
        )?;
        Ok(Box::new(fitted))
    };
    let before = classifier_for(&pair.before)?;
    let after = classifier_for(&pair.after)?;
    let min_confidence = if before.probabilistic() && after.probabilistic() {
        opts.min_confidence
    } else {
        0.0
    };
    let version = if before.version() == after.version() {
        before.version().to_string()
    } else {
        format!("{}+{}", before.version(), after.version())
    };
    Ok(PairClassifiers {
        before,
        after,
        min_confidence,
        version,
    })
}

/// Classifies one tile at both dates and judges its pixels through the engine's change step.
fn pair_tile(
    pair: &Pair,
    classifiers: &PairClassifiers,
    rules: &Rules,
    tile: &Tile,
) -> Result<PairTile> {
    let (grid, profile) = (&pair.grid, pair.profile);
    let w = tile.core;
    let farm = match &pair.farmland {
        Some(f) => Some(f.rasterize(grid, &grid.spatial_ref()?, w)?),
        None => None,
    };
    let watched = farm.as_ref().map(|f| f.parcel.as_slice());
    let classify = |image: &Image, classifier: &dyn Classifier| {
        classifier.classify(&ClassifierInput {
            profile,
            composite: &pair.read(image, w, watched)?,
            history: &[],
        })
    };
    let before = classify(&pair.before, classifiers.before.as_ref())?;
    let after = classify(&pair.after, classifiers.after.as_ref())?;
    let n = w.len();
    let change = judge_tile(n, rules, History::PAIR, |i| {
        let now = if before.classes[i] == 0 {
            0
        } else {
            after.classes[i]
        };
        let confidence = after.confidence[i].min(before.confidence[i]);
        // PH is switched by the rules (`Rules::two_dates`), not here.
        Some(Observation {
            county: 1,
            watched: farm.as_ref().is_none_or(|f| f.parcel[i] != 0),
            basic: farm.as_ref().is_some_and(|f| f.basic[i]),
            baseline: before.classes[i],
            now,
            confidence,
            cultivation: pair_cultivation(now),
            runs_before: [0; 3],
            sure: confidence >= classifiers.min_confidence,
        })
    });
    let mut shares = ParcelShares::default();
    if let Some(f) = &farm {
        for (&parcel, &flag) in f.parcel.iter().zip(&change.flag) {
            shares.add(parcel, flag);
        }
    }
    Ok(PairTile {
        class_before: before.classes,
        class_after: after.classes,
        change,
        parcel: farm.map_or_else(|| vec![0; n], |f| f.parcel),
        shares,
    })
}

fn rules_text(opts: &DetectOptions) -> String {
    format!(
        "FNH: crop before, built-up after; FLH: grain before, non-grain crop, trees or water after; {}{}",
        if opts.abandonment {
            "PH: crop before, grass or shrub after"
        } else {
            "PH is not decidable from two dates (see --abandonment)"
        },
        if opts.farmland.is_some() && opts.min_parcel_share > 0.0 {
            format!(
                "; FLH and PH patches take at least {:.0} % of their parcel",
                opts.min_parcel_share * 100.0
            )
        } else {
            String::new()
        }
    )
}

/// Moves the results (and the fitted models) from the staging folder into the output folder.
fn move_results(pair: &Pair, staging: &StagingDir) -> Result<()> {
    let models = [&pair.before, &pair.after]
        .into_iter()
        .filter(|image| image.samples.is_some())
        .flat_map(|image| {
            let name = image.name;
            [format!("model_{name}.ot"), format!("model_{name}.ot.json")]
        });
    let results = [
        "class_before.tif",
        "class_after.tif",
        "flags.tif",
        "patches.gpkg",
        "summary.json",
    ]
    .map(String::from);
    for name in results.into_iter().chain(models) {
        staging.move_entry(&name, &pair.opts.out.join(&name))?;
    }
    Ok(())
}
