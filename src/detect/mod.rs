//! Two-date detection on any pair of co-registered multi-band images (e.g. one mosaic per date
//! that a user already has): the stages of a period run, with the earlier image's classes as
//! the baseline instead of the farmland layer and the archive.
//!
//! Takes: two images with the bands of a sensor profile (each one GDAL-readable raster, or a
//! folder of band files: [`crate::geo::user_image`]), optionally a
//! parcel layer (without one the whole image is watched). Gives, in the output folder:
//! `class_before.tif`, `class_after.tif` (land cover of the watched area, 0 elsewhere),
//! `change.tif` (the spectral decision: 1 changed, 0 not, 255 unobserved),
//! `flags.tif`, `patches.gpkg` and `summary.json`.
//! Whether a pixel changed is decided from both looks together
//! ([`crate::domain::spectral_change`]: per-scene standardised change vectors, smoothed over
//! 3 × 3 pixels (within each tile), against the scene's minimum-error threshold, from a
//! sample of tiles read before the tile pass); the classes name the change's type. `class_after.tif` therefore
//! holds the before class where the ground did not change, and where it did the after
//! class, or the after classifier's runner-up when its first class repeats the before one.
//! Rules: FNH and FLH as in [`crate::domain::change`]; PH needs a year of periods and is flagged from
//! two dates only when asked ([`DetectOptions::abandonment`]). A pair is one look at each
//! date, so there is no persistence to outvote a misclassified pixel; instead a pixel is
//! flagged only when a learned model is sure of both its classes, and with a parcel layer an
//! FLH or PH patch must take most of its parcel ([`ParcelShares`]).

use crate::classify::{Classified, Classifier, ClassifierInput, ClassifierKind};
use crate::domain::change::{pair_cultivation, ParcelShares, Rules, DEFAULT_MIN_PARCEL_SHARE};
use crate::engine::change_rasters::ChangeRasters;
use crate::engine::judge::{judge_tile, ChangeTile, History, Observation};
use crate::engine::patch_record::{patch_specs, patch_values};
use crate::engine::patches::{totals_by_type, PeriodInfo, Timeline, TypeTotals};
use crate::engine::scene_change::{departed, SceneChange, TileLooks, UNOBSERVED};
use crate::engine::tiles::for_each_tile;
use crate::error::{Error, Result};
use crate::geo::composite::{cloud_margin, Composite};
use crate::geo::gaofen::{Calibration, CalibrationTable};
use crate::geo::grid::{JobGrid, Tile, Window};
use crate::geo::layers::{labelled_points, Admin, County, Farmland, FarmlandTile};
use crate::geo::raster::{open_georeferenced, GridTiff};
use crate::geo::rpc::Elevation;
use crate::geo::sensor::SensorProfile;
use crate::geo::user_image::{check_elevation_covers, profile_of, UserImage};
use crate::geo::vector::{write_layer, Areas, Format};
use crate::job::staging::StagingDir;
use crate::train::PointModel;
use gdal::vector::Geometry;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// Each date: one multi-band raster, or a folder with one file per band
    /// ([`crate::geo::user_image`]). The after image may lie on another grid or CRS: it is
    /// warped onto the grid of the before image ([`JobGrid::for_image`]).
    pub before: PathBuf,
    pub after: PathBuf,
    /// The names of the images' bands in the files' own order, for files that keep a
    /// non-standard one.
    pub band_order: Option<Vec<String>>,
    pub farmland: Option<PathBuf>,
    pub sensor: Option<String>,
    /// DN offset of the images, overriding the profile's.
    pub add_offset: Option<f32>,
    /// The ground's elevation, for images placed by RPCs ([`crate::geo::rpc`]).
    pub elevation: Elevation,
    /// A calibration table file extending the built-in one, for Gaofen L1A products
    /// ([`crate::geo::gaofen`]).
    pub calibration: Option<PathBuf>,
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
    /// A pixel is flagged only when the classifier is at least this sure of both its classes:
    /// a pair is one look at each date, so an unsure class is no evidence of a violation.
    /// Applies to learned models, whose confidence is a probability (not to the index
    /// rules).
    pub min_confidence: f32,
    /// With a parcel layer, the share of a parcel's observed pixels that the pixels of an FLH
    /// or PH patch's type there must make up ([`ParcelShares`]); 0 keeps every patch.
    pub min_parcel_share: f64,
    /// Decide change from the two classifications alone, without the spectral change decision
    /// ([`crate::domain::spectral_change`]).
    pub classes_only: bool,
    pub quiet: bool,
}

impl DetectOptions {
    /// The defaults of `gengbao detect` for a pair of images.
    pub fn new(before: PathBuf, after: PathBuf, out: PathBuf) -> Self {
        DetectOptions {
            before,
            after,
            band_order: None,
            farmland: None,
            sensor: None,
            add_offset: None,
            elevation: Elevation::Unknown,
            calibration: None,
            out,
            min_area_m2: DEFAULT_MIN_AREA_M2,
            model: None,
            samples_before: None,
            samples_after: None,
            sample_class_field: DEFAULT_SAMPLE_CLASS_FIELD.into(),
            abandonment: false,
            min_confidence: DEFAULT_MIN_CONFIDENCE,
            min_parcel_share: DEFAULT_MIN_PARCEL_SHARE,
            classes_only: false,
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
    /// The scene's change-magnitude threshold (standardised units), when the spectral
    /// decision was used and the scene gave one.
    pub change_threshold: Option<f32>,
    /// Share of the watched pixels (the parcels', or the whole image's) that each date saw
    /// clear and classified: before, after. Change is judged only where both did.
    pub seen_share: [f64; 2],
    /// How each Gaofen L1A image's DNs became reflectance (`None` for an image read as
    /// reflectance).
    pub calibration_before: Option<Calibration>,
    pub calibration_after: Option<Calibration>,
    pub seconds: f64,
    pub rules: String,
}

/// Below this share of the watched pixels seen clear, a date is warned about.
const SEEN_WARNING: f64 = 0.5;

impl DetectSummary {
    pub fn human(&self) -> String {
        let mut s = format!(
            "detect {} -> {} ({}, {}x{} px, {:.1} s):",
            self.before, self.after, self.sensor, self.width, self.height, self.seconds
        );
        for (t, v) in &self.patches {
            s += &format!("  {t} {} ({:.0} m²)", v.count, v.area_m2);
        }
        for (date, share) in ["before", "after"].iter().zip(self.seen_share) {
            if share < SEEN_WARNING {
                s += &format!(
                    "\n   warning: the {date} image saw {:.0} % of the watched pixels clear (clouds, nodata or outside it): change is judged only where both dates saw the ground",
                    share * 100.0
                );
            }
        }
        for c in [&self.calibration_before, &self.calibration_after]
            .into_iter()
            .flatten()
        {
            s += &format!(
                "\n   calibrated {} of {} with {}'s coefficients, sun {:.1}° from the zenith",
                c.camera, c.date, c.coefficients_year, c.solar_zenith_deg
            );
            if let Some(note) = &c.note {
                s += &format!("\n   note: {note}");
            }
        }
        s
    }
}

/// One date of the pair: the image, its name in the outputs (`before`, `after`) and its
/// labelled points, if any.
struct Image<'o> {
    image: UserImage,
    name: &'static str,
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
    before: Image<'o>,
    after: Image<'o>,
}

impl Pair<'_> {
    /// Warps each image placed by RPCs once onto the grid, into `folder`, so that tiles
    /// read it as stored ([`crate::geo::user_image::BandStack::placed_on_grid`]).
    fn place_products_on_grid(&mut self, folder: &Path) -> Result<()> {
        let window = self
            .grid
            .full_window()
            .grown(cloud_margin(self.profile, self.grid.resolution));
        for (image, given) in [
            (&mut self.before, &self.opts.before),
            (&mut self.after, &self.opts.after),
        ] {
            let out = folder.join(format!("{}-on-grid.tif", image.name));
            if let Some(placed) = image.image.stack.placed_on_grid(
                &self.grid,
                window,
                self.profile.nodata,
                &out,
                given,
            )? {
                image.image.stack = placed;
            }
        }
        Ok(())
    }

    /// The image's composite of a grid window; pixels off the watched parcels (`watched` 0)
    /// count as unobserved (class 0), which saves the model's time off farmland.
    fn read(&self, image: &Image, w: Window, watched: Option<&[i32]>) -> Result<Composite> {
        image.image.composite(&self.grid, w, watched)
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
    /// The spectral decision: 1 changed, 0 not, 255 unobserved in a look; `None` when
    /// deciding on the classes alone.
    spectral: Option<Vec<u8>>,
    change: ChangeTile,
    parcel: Vec<i32>,
    shares: ParcelShares,
    /// Watched pixels of the core, and those each date's own classification saw.
    watched: usize,
    seen: [usize; 2],
}

pub fn detect(opts: &DetectOptions) -> Result<DetectSummary> {
    let t0 = Instant::now();
    let mut pair = open_pair(opts)?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let staging_dir = StagingDir::beside(&opts.out.join("detect"))?;
    let staging = staging_dir.path();
    let work = staging.join("work");
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    pair.place_products_on_grid(&work)?;
    // The scene's statistics first: they fail fast on images that do not overlap, before
    // the point models are fitted.
    let scene = if opts.classes_only {
        None
    } else {
        Some(scene_change(&pair)?)
    };
    let classifiers = pair_classifiers(&pair, staging)?;
    let grid = &pair.grid;
    let mut class_before =
        GridTiff::create::<u8>(&staging.join("class_before.tif"), grid, 1, Some(0.0))?;
    let mut class_after =
        GridTiff::create::<u8>(&staging.join("class_after.tif"), grid, 1, Some(0.0))?;
    let mut spectral = match scene {
        Some(_) => Some(GridTiff::create::<u8>(
            &staging.join("change.tif"),
            grid,
            1,
            Some(f64::from(UNOBSERVED)),
        )?),
        None => None,
    };
    let mut change = ChangeRasters::create(&staging.join("flags.tif"), &work, grid)?;
    let mut shares = ParcelShares::default();
    // Watched pixels, and those each date classified (seen clear and in the image).
    let (mut watched, mut seen) = (0usize, [0usize; 2]);
    let rules = Rules::two_dates(opts.abandonment);
    for_each_tile(
        None,
        &grid.tiles(),
        |tile| pair_tile(&pair, &classifiers, scene.as_ref(), &rules, tile),
        |tile, out| {
            let w = tile.core;
            shares.merge(out.shares);
            watched += out.watched;
            seen[0] += out.seen[0];
            seen[1] += out.seen[1];
            class_before.write(1, w, out.class_before)?;
            class_after.write(1, w, out.class_after)?;
            if let (Some(tiff), Some(values)) = (spectral.as_mut(), out.spectral) {
                tiff.write(1, w, values)?;
            }
            change.write(w, out.change, out.parcel)
        },
    )?;
    class_before.close()?;
    class_after.close()?;
    if let Some(tiff) = spectral {
        tiff.close()?;
    }
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
        Areas::MultiPolygons,
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
        change_threshold: scene.as_ref().and_then(SceneChange::threshold),
        seen_share: seen.map(|n| n as f64 / watched.max(1) as f64),
        calibration_before: pair.before.image.calibration.clone(),
        calibration_after: pair.after.image.calibration.clone(),
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
    let order = opts.band_order.as_deref();
    let profile = profile_of(&opts.before, opts.sensor.as_deref(), order)?;
    let table = match &opts.calibration {
        Some(file) => CalibrationTable::builtin().extended_by(file)?,
        None => CalibrationTable::builtin(),
    };
    let open = |path: &Path, name| {
        UserImage::open(
            path,
            profile,
            order,
            opts.add_offset,
            &opts.elevation,
            &table,
            name,
        )
    };
    // Before the images are orthorectified: GDAL would place only the ground the DEM
    // covers, and the grid would be cut to it.
    for image in [&opts.before, &opts.after] {
        check_elevation_covers(image, &opts.elevation, None)?;
    }
    let (before, after) = (open(&opts.before, "before")?, open(&opts.after, "after")?);
    // No halo: a halo's strips decode the neighbouring blocks of every band of both images
    // (a 2048 scene took 6.2 s instead of 4.5), so the smoothing of a tile's edge pixels
    // averages the neighbours inside the tile.
    let grid = JobGrid::for_image(&open_georeferenced(&before.stack.path)?, &opts.before)?;
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
        repaired: Vec::new(),
    };
    let image = |image, name, samples: &'o Option<PathBuf>| Image {
        image,
        name,
        samples: samples.as_ref(),
    };
    Ok(Pair {
        opts,
        profile,
        farmland,
        admin,
        before: image(before, "before", &opts.samples_before),
        after: image(after, "after", &opts.samples_after),
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

/// Both looks of a tile, with pixels off the watched parcels unobserved, and the parcels
/// there.
struct Looks {
    before: Composite,
    after: Composite,
    farm: Option<FarmlandTile>,
}

fn read_looks(pair: &Pair, tile: &Tile) -> Result<Looks> {
    let grid = &pair.grid;
    let farm = match &pair.farmland {
        Some(f) => Some(f.rasterize(grid, &grid.spatial_ref()?, tile.core)?),
        None => None,
    };
    let watched = farm.as_ref().map(|f| f.parcel.as_slice());
    Ok(Looks {
        before: pair.read(&pair.before, tile.core, watched)?,
        after: pair.read(&pair.after, tile.core, watched)?,
        farm,
    })
}

impl Looks {
    /// Both looks as the scene's change decision learns from them (a copy it may keep).
    fn for_change(&self) -> TileLooks {
        TileLooks {
            before: self.before.pixels().to_owned(),
            after: self.after.pixels().to_owned(),
            width: self.before.width(),
        }
    }
}

/// Learns the scene's change statistics from a sample of tiles
/// ([`SceneChange::learn`]), on the watched parcels when there are parcels.
fn scene_change(pair: &Pair) -> Result<SceneChange> {
    let (scene, seen) = SceneChange::learn(&pair.grid.tiles(), |tile| {
        Ok(read_looks(pair, tile)?.for_change())
    })?;
    scene.ok_or_else(|| {
        Error::input(
            &pair.opts.before,
            format!("fewer than two pixels observed in both images ({seen} pixels)"),
            "check that the two images overlap and hold data (and the parcels, if given, lie on them)",
        )
    })
}

/// The land cover after, and its confidence, of pixel `i`, given the spectral decision there
/// (1 changed, 0 not, [`UNOBSERVED`]): the before class where the ground did not change;
/// where it changed, the after class, or its runner-up when the after class repeats the
/// before one (the classes name a change, the spectral decision finds it). The after date is
/// classified only where the decision is not "unchanged" ([`wanted_after`]): a pixel judged
/// unchanged was seen in every band of both looks.
fn after_class(before: &Classified, after: &Classified, decision: u8, i: usize) -> (u8, f32) {
    let was = before.classes[i];
    if was == 0 || !seen_after(after, Some(decision), i) {
        (0, 0.0)
    } else if decision != 1 {
        (was, before.confidence[i])
    } else {
        let second = after.runner_up.get(i).copied().unwrap_or(0);
        if after.classes[i] != was || second == 0 || second == was {
            (after.classes[i], after.confidence[i])
        } else {
            (second, after.runner_up_confidence[i])
        }
    }
}

/// The pixels whose after class [`after_class`] reads: all but those the spectral decision
/// found unchanged.
fn wanted_after(spectral: &[u8]) -> Vec<bool> {
    spectral.iter().map(|&d| d != 0).collect()
}

/// Whether the after date saw pixel `i` (`decision`: the spectral decision there, if any):
/// classified, or left unclassified as unchanged ([`wanted_after`]).
fn seen_after(after: &Classified, decision: Option<u8>, i: usize) -> bool {
    after.classes[i] > 0 || decision == Some(0)
}

/// Classifies one tile at both dates and judges its pixels through the engine's change step.
fn pair_tile(
    pair: &Pair,
    classifiers: &PairClassifiers,
    scene: Option<&SceneChange>,
    rules: &Rules,
    tile: &Tile,
) -> Result<PairTile> {
    let profile = pair.profile;
    let looks = read_looks(pair, tile)?;
    let n = tile.core.len();
    let spectral = scene.map(|scene| {
        scene.changed(
            looks.before.pixels(),
            looks.after.pixels(),
            looks.before.width(),
        )
    });
    let wanted = spectral.as_deref().map(wanted_after);
    let before = classifiers.before.classify(&ClassifierInput {
        profile,
        composite: &looks.before,
        history: &[],
        runner_up: false,
        wanted: None,
    })?;
    let after = classifiers.after.classify(&ClassifierInput {
        profile,
        composite: &looks.after,
        history: &[],
        runner_up: spectral.is_some(),
        wanted: wanted.as_deref(),
    })?;
    let farm = looks.farm;
    let decision = |i: usize| spectral.as_ref().map(|s| s[i]);
    let (class_after, confidence_after): (Vec<u8>, Vec<f32>) = (0..n)
        .map(|i| match decision(i) {
            Some(d) => after_class(&before, &after, d, i),
            None => (after.classes[i], after.confidence[i]),
        })
        .unzip();
    let change = judge_tile(n, rules, History::PAIR, |i| {
        let now = class_after[i];
        let confidence = confidence_after[i].min(before.confidence[i]);
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
            departed: spectral.as_ref().and_then(|c| departed(c[i])),
        })
    });
    let mut shares = ParcelShares::default();
    if let Some(f) = &farm {
        for (&parcel, &flag) in f.parcel.iter().zip(&change.flag) {
            shares.add(parcel, flag);
        }
    }
    let watched = farm
        .as_ref()
        .map_or(n, |f| f.parcel.iter().filter(|&&p| p != 0).count());
    // Each date's own classes: the after raster keeps a pixel only where both dates saw it.
    let seen = [
        before.classes.iter().filter(|&&c| c > 0).count(),
        (0..n)
            .filter(|&i| seen_after(&after, decision(i), i))
            .count(),
    ];
    Ok(PairTile {
        class_before: before.classes,
        class_after,
        spectral,
        change,
        parcel: farm.map_or_else(|| vec![0; n], |f| f.parcel),
        shares,
        watched,
        seen,
    })
}

fn rules_text(opts: &DetectOptions) -> String {
    format!(
        "{}FNH: crop before, built-up after; FLH: grain before, non-grain crop, trees or water after; {}{}",
        if opts.classes_only {
            "change where the classes differ; "
        } else {
            "change where both images show it (standardised change vectors, 3x3 mean, the scene's minimum-error threshold), typed by the classes; "
        },
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
    let spectral = (!pair.opts.classes_only).then_some("change.tif");
    let results = [
        "class_before.tif",
        "class_after.tif",
        "flags.tif",
        "patches.gpkg",
        "summary.json",
    ]
    .into_iter()
    .chain(spectral)
    .map(String::from);
    if spectral.is_none() {
        // An earlier run's spectral decision does not describe this one.
        let stale = pair.opts.out.join("change.tif");
        if stale.exists() {
            std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
        }
    }
    for name in results.chain(models) {
        staging.move_entry(&name, &pair.opts.out.join(&name))?;
    }
    Ok(())
}
