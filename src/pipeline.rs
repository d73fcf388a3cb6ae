//! One period of the bimonthly job, end to end.
//!
//! Takes: a [`JobConfig`] and a period. Gives, under `<output>/<period>/`: `class.tif`,
//! `quicklook.png`, `ndvi.tif` (median, min and max NDVI of the period; with the classes, the time-series memory read by later periods), `flags.tif`, per county
//! `counties/<code>/TB_<code>_<period>.{gpkg,shp,geojson}`, and `summary.json`.
//!
//! Everything is written into a staging folder first and moved into place only when the whole
//! period succeeded, so a failed run leaves the previous results untouched and no half file.
//! Tiles run in parallel (rayon) in batches of a few tiles per thread, which bounds memory
//! whatever the size of the job; a single writer puts each finished batch into the mosaics.

use crate::change::{
    cultivation_seen, extend_runs, signals, ChangeType, Rules, Runs, FLAG_OUTSIDE,
};
use crate::checkpoint::{acquisition_identity, file_identity, key_of, Checkpoints, Earlier, Saved};
use crate::classify::{Classifier, ClassifierInput, LandCover};
use crate::composite::{byte_to_ndvi, ndvi_to_byte, NdviStats, NDVI_NODATA};
use crate::config::JobConfig;
use crate::error::{Error, GdalContext, Result};
use crate::export::{write_county, write_quicklook, StagingDir};
use crate::grid::{overlaps, Bounds, JobGrid, Tile, Window};
use crate::imagery::{Acquisition, Catalog};
use crate::layers::{Admin, Farmland};
use crate::ledger::{grain_share, Ledger, PeriodLedger};
use crate::patches::{attr_band, Patch, PeriodInfo, Timeline};
use crate::period::Period;
use crate::raster::{rasterize, read_grid_window, GridTiff};
use crate::sensor::SensorProfile;
use crate::vectorise::{patch_key, polygonize};
use crate::{composite, patches};
use gdal::spatial_ref::SpatialRef;
use gdal::Dataset;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How many earlier periods a run looks back at (one year with the current one).
pub const HISTORY: usize = 5;
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only these county codes (all when empty). Such a run writes only those counties'
    /// dispatch folders; the job-wide rasters are written by whole-job runs.
    pub counties: Vec<String>,
    /// Hide progress bars (tests, logs).
    pub quiet: bool,
}

impl RunOptions {
    /// All counties, no progress bars (tests, scripts).
    pub fn quiet() -> Self {
        RunOptions {
            quiet: true,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct TypeTotals {
    pub count: usize,
    pub area_m2: f64,
}

/// Count and area of `patches` for every change type (zero for the absent ones).
pub fn totals_by_type(patches: &[Patch]) -> BTreeMap<&'static str, TypeTotals> {
    let mut totals: BTreeMap<&'static str, TypeTotals> = ChangeType::ALL
        .iter()
        .map(|t| (t.code(), TypeTotals::default()))
        .collect();
    for p in patches {
        let e = totals.entry(p.change.code()).or_default();
        e.count += 1;
        e.area_m2 += p.area_m2;
    }
    for v in totals.values_mut() {
        v.area_m2 = (v.area_m2 * 100.0).round() / 100.0;
    }
    totals
}

#[derive(Debug, Clone, Serialize)]
pub struct CountySummary {
    pub code: String,
    pub name: String,
    pub patches: BTreeMap<&'static str, TypeTotals>,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub job: String,
    pub period: Period,
    pub classifier: String,
    pub sensor: String,
    pub grid: GridSummary,
    pub acquisitions: Vec<String>,
    pub history_periods: Vec<String>,
    /// Consecutive earlier periods in the archive.
    pub archived_periods: usize,
    /// Rules that cannot fire yet for lack of archived periods, and why.
    pub rules_not_yet_decidable: Vec<String>,
    /// Later periods already run against the archive entry this run replaced: re-run them.
    pub later_periods_to_rerun: Vec<String>,
    /// The lock record of a run that died holding this job, when this run found one.
    pub took_over_lock_of: Option<String>,
    pub resume: ResumeSummary,
    /// What the run did to the job's ledger: new and continued patches, re-checks.
    pub ledger: PeriodLedger,
    pub tiles: usize,
    /// Tiles in which some pixels of the area of interest had no clear observation.
    pub tiles_with_gaps: Vec<String>,
    pub aoi_pixels: u64,
    pub aoi_pixels_without_clear_observation: u64,
    pub counties: Vec<CountySummary>,
    pub totals: BTreeMap<&'static str, TypeTotals>,
    pub seconds: BTreeMap<&'static str, f64>,
    pub rules: String,
    pub inputs: Inputs,
}

/// What a run took over from an interrupted attempt at the same period.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ResumeSummary {
    /// The attempt used other settings, another model or another archive: nothing was kept.
    pub checkpoints_discarded: bool,
    /// Tiles finished by the attempt and not redone.
    pub tiles_resumed: usize,
    /// Tiles the attempt had finished but whose imagery changed since: redone.
    pub tiles_redone_imagery_changed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    pub config: String,
    pub admin: String,
    pub farmland: String,
    pub farmland_parcels: u64,
    pub imagery: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GridSummary {
    pub crs: String,
    pub resolution: f64,
    pub width: usize,
    pub height: usize,
    pub tile_size: usize,
}

impl RunSummary {
    /// A few lines for the terminal.
    pub fn human(&self) -> String {
        let mut s = format!(
            "{} {}: {} acquisitions, {} tiles, {:.1} s, classifier {}{}\n",
            self.job,
            self.period,
            self.acquisitions.len(),
            self.tiles,
            self.seconds.get("total").copied().unwrap_or(0.0),
            self.classifier,
            if self.history_periods.is_empty() {
                ", no earlier periods (single-period rules)".to_string()
            } else {
                format!(", history {}", self.history_periods.join(" "))
            }
        );
        for c in &self.counties {
            s += &format!("   {} {}:", c.code, c.name);
            for (t, v) in &c.patches {
                s += &format!("  {t} {} ({:.0} m²)", v.count, v.area_m2);
            }
            s += "\n";
        }
        let l = &self.ledger;
        s += &format!(
            "   ledger: {} new, {} seen again",
            l.new.len(),
            l.continued.len()
        );
        for (what, list) in [
            ("accepted but grown, sent again", &l.regrown),
            (
                "rectified, cultivation back: proposed for closing",
                &l.proposed_for_closing,
            ),
            (
                "rectified, not back: rectifying again",
                &l.back_to_rectifying,
            ),
            ("rectified, too cloudy to re-check", &l.recheck_undecided),
        ] {
            if !list.is_empty() {
                s += &format!("; {what}: {}", list.join(" "));
            }
        }
        s += "\n";
        if self.resume.tiles_resumed > 0 {
            s += &format!(
                "   resumed: {} tiles finished by an interrupted run were kept\n",
                self.resume.tiles_resumed
            );
        }
        if !self.resume.tiles_redone_imagery_changed.is_empty() {
            s += &format!(
                "   redone: the imagery of tiles {} changed since the interrupted run\n",
                self.resume.tiles_redone_imagery_changed.join(" ")
            );
        }
        if self.resume.checkpoints_discarded {
            s +=
                "   note: an interrupted run with other settings, model or archive was discarded\n";
        }
        if let Some(dead) = &self.took_over_lock_of {
            s += &format!("   note: took over the lock of a run that died: {dead}\n");
        }
        for r in &self.rules_not_yet_decidable {
            s += &format!("   not yet decidable: {r}\n");
        }
        if !self.later_periods_to_rerun.is_empty() {
            s += &format!(
                "   warning: later periods were judged against the replaced archive, re-run them: {}\n",
                self.later_periods_to_rerun.join(" ")
            );
        }
        if self.aoi_pixels_without_clear_observation > 0 {
            s += &format!(
                "   warning: {} of {} pixels had no clear observation (tiles {})\n",
                self.aoi_pixels_without_clear_observation,
                self.aoi_pixels,
                self.tiles_with_gaps.join(" ")
            );
        }
        s.trim_end().to_string()
    }
}

/// Everything a tile needs, shared read-only by the workers.
struct PeriodContext<'a> {
    grid: &'a JobGrid,
    profile: &'static SensorProfile,
    /// The period's acquisitions with their extents in the grid CRS.
    acquisitions: Vec<Located<'a>>,
    /// DN offset of the imagery.
    add_offset: f32,
    classifier: &'a dyn Classifier,
    admin: &'a Admin,
    farmland: &'a Farmland,
    /// Archive entries of the earlier periods the classifier and the rules read, most
    /// recent first.
    history: Vec<ArchiveEntry>,
    /// Consecutive earlier periods archived (may reach further back than `history`).
    archived: usize,
    rules: Rules,
}

/// An acquisition of the period, its extent in the grid CRS and its files' identity.
struct Located<'a> {
    acquisition: &'a Acquisition,
    extent: Bounds,
    identity: String,
}

impl PeriodContext<'_> {
    /// A finished tile from an earlier attempt of this run with the same imagery, or the tile
    /// processed now (and checkpointed). The flag says whether its imagery had changed.
    fn tile(&self, tile: &Tile, checkpoints: &Checkpoints) -> Result<(TileOutput, TileSource)> {
        // Only the acquisitions that cover this tile are read: memory and I/O grow with the
        // number of scenes over a place, not with the size of the job.
        let tile_bounds = self.grid.window_bounds(tile.read);
        let covering: Vec<&Located> = self
            .acquisitions
            .iter()
            .filter(|a| overlaps(a.extent, tile_bounds))
            .collect();
        let fingerprint = key_of(
            &covering
                .iter()
                .map(|a| a.identity.clone())
                .collect::<Vec<_>>(),
        );
        let source = match checkpoints.load(&tile.id(), &fingerprint)? {
            Saved::Found(bytes) => match TileOutput::from_bytes(tile, &bytes) {
                Some(out) => return Ok((out, TileSource::Resumed)),
                None => TileSource::Processed,
            },
            Saved::Stale => TileSource::ImageryChanged,
            Saved::Missing => TileSource::Processed,
        };
        let acquisitions: Vec<&Acquisition> = covering.iter().map(|a| a.acquisition).collect();
        let out = process_tile(self, tile, &acquisitions)?;
        checkpoints.save(&tile.id(), &fingerprint, &out.to_bytes())?;
        Ok((out, source))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TileSource {
    Processed,
    Resumed,
    /// Redone: its imagery changed since an interrupted attempt checkpointed it.
    ImageryChanged,
}

/// The time-series memory of one period: `class.tif` (class, confidence), `ndvi.tif`
/// (median, min, max) and `signals.tif` (runs of the FNH, FLH and PH signals), all on the
/// job grid, tiled and compressed.
#[derive(Debug, Clone)]
struct ArchiveEntry {
    class: PathBuf,
    ndvi: PathBuf,
    signals: PathBuf,
}

impl ArchiveEntry {
    fn of(period_dir: &Path) -> Self {
        ArchiveEntry {
            class: period_dir.join("class.tif"),
            ndvi: period_dir.join("ndvi.tif"),
            signals: period_dir.join("signals.tif"),
        }
    }

    fn exists(&self) -> bool {
        self.class.exists() && self.ndvi.exists() && self.signals.exists()
    }
}

/// What the change stage knows of one pixel inside the area of interest.
pub struct Pixel<'a> {
    /// 1-based county index (0 = outside the area of interest)
    pub county: u16,
    pub watched: bool,
    pub basic: bool,
    /// The class the pixel should have (the farmland layer's, or the earlier image's).
    pub baseline: u8,
    pub now: u8,
    pub confidence: f32,
    /// Runs of the change signals up to now.
    pub runs: Runs,
    /// Classes and confidences (as archived bytes) of the archived earlier periods, most
    /// recent first.
    pub classes_before: &'a [u8],
    pub confidences_before: &'a [u8],
    /// Consecutive earlier periods archived.
    pub history_periods: usize,
}

pub struct Judgement {
    pub flag: u8,
    pub key: u16,
    pub attrs: [u8; attr_band::COUNT],
}

/// Applies the change rules to one pixel and encodes what the patch stage needs. The class
/// before (QDL) is the one of the period before the change began, when archived. The
/// confidence of a lasting change combines the classifier's confidences over its periods
/// (1 - product of the doubts, each period being independent evidence), so it rises as the
/// change persists.
pub fn judge(p: Pixel, rules: &Rules) -> Judgement {
    let (flag, run) = rules.flag(p.watched, p.now, p.runs, p.history_periods);
    let key = if ChangeType::from_flag(flag).is_some() {
        patch_key(p.county, flag)
    } else {
        0
    };
    let earlier = usize::from(run.max(1)) - 1;
    let observed_before = p
        .classes_before
        .get(earlier)
        .copied()
        .filter(|&c| c != 0)
        .unwrap_or(p.baseline);
    let doubt = p.confidences_before[..earlier.min(p.confidences_before.len())]
        .iter()
        .fold(1.0 - p.confidence, |d, &c| {
            d * (1.0 - byte_to_confidence(c))
        });
    let mut attrs = [0u8; attr_band::COUNT];
    attrs[attr_band::BEFORE - 1] = observed_before;
    attrs[attr_band::NOW - 1] = p.now;
    attrs[attr_band::CONFIDENCE - 1] = confidence_to_byte(1.0 - doubt);
    attrs[attr_band::FARMLAND - 1] = if p.basic { 2 } else { u8::from(p.watched) };
    attrs[attr_band::PERSISTED - 1] = run;
    Judgement { flag, key, attrs }
}

/// Confidences are archived and passed on as bytes, 0..=250.
fn confidence_to_byte(c: f32) -> u8 {
    (c.clamp(0.0, 1.0) * 250.0).round() as u8
}

fn byte_to_confidence(b: u8) -> f32 {
    f32::from(b) / 250.0
}

/// Hands the memory the tile stage freed back to the system before the patch stage.
///
/// glibc keeps what a worker thread frees in that thread's arena, where the main thread's
/// patch stage cannot reuse it, so the patch stage's allocations (GDAL's block cache refilled,
/// the polygoniser) came on top of the tile stage's high-water mark.
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the system.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The flag raster, and the scratch rasters the patch stage reads, written tile by tile.
pub(crate) struct ChangeRasters {
    flags: GridTiff,
    key: GridTiff,
    attrs: GridTiff,
    parcel: GridTiff,
    key_path: PathBuf,
    attrs_path: PathBuf,
    parcel_path: PathBuf,
}

impl ChangeRasters {
    pub fn create(flags_path: &Path, work: &Path, grid: &JobGrid) -> Result<Self> {
        let key_path = work.join("patch_key.tif");
        let attrs_path = work.join("attrs.tif");
        let parcel_path = work.join("parcel.tif");
        Ok(ChangeRasters {
            flags: GridTiff::create::<u8>(flags_path, grid, 1, Some(f64::from(FLAG_OUTSIDE)))?,
            key: GridTiff::create_scratch::<u16>(&key_path, grid, 1, None)?,
            attrs: GridTiff::create_scratch::<u8>(&attrs_path, grid, attr_band::COUNT, None)?,
            parcel: GridTiff::create_scratch::<i32>(&parcel_path, grid, 1, None)?,
            key_path,
            attrs_path,
            parcel_path,
        })
    }

    pub fn write(
        &mut self,
        w: Window,
        flag: Vec<u8>,
        key: Vec<u16>,
        attrs: [Vec<u8>; attr_band::COUNT],
        parcel: Vec<i32>,
    ) -> Result<()> {
        self.flags.write(1, w, flag)?;
        self.key.write(1, w, key)?;
        self.parcel.write(1, w, parcel)?;
        for (b, data) in attrs.into_iter().enumerate() {
            self.attrs.write(b + 1, w, data)?;
        }
        Ok(())
    }

    /// Closes the rasters and turns the flagged pixels into patches (see [`patches::build`]).
    pub fn into_patches(
        self,
        grid: &JobGrid,
        admin: &Admin,
        info: &PeriodInfo,
        min_area: impl Fn(ChangeType) -> f64,
        keep: impl Fn(&Patch) -> bool,
    ) -> Result<Vec<Patch>> {
        self.flags.close()?;
        self.key.close()?;
        self.attrs.close()?;
        self.parcel.close()?;
        release_freed_memory();
        let polygons = polygonize(&self.key_path, &self.key_path.with_extension("fgb"))?;
        let attrs = Dataset::open(&self.attrs_path)?;
        let parcel = Dataset::open(&self.parcel_path)?;
        patches::build(polygons, &attrs, &parcel, grid, admin, info, min_area, keep)
    }
}

/// The core outputs of one tile.
struct TileOutput {
    tile: Tile,
    class: Vec<u8>,
    /// Classifier confidence as bytes.
    confidence: Vec<u8>,
    /// median, min, max
    ndvi: [Vec<u8>; 3],
    /// Runs of the FNH, FLH and PH signals up to this period.
    runs: [Vec<u8>; 3],
    flag: Vec<u8>,
    key: Vec<u16>,
    attrs: [Vec<u8>; attr_band::COUNT],
    /// Farmland parcel under each pixel (feature id + 1, 0 = none).
    parcel: Vec<i32>,
    aoi_pixels: u64,
    aoi_without_clear: u64,
}

impl TileOutput {
    /// Lossless bytes for a checkpoint.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.aoi_pixels.to_le_bytes());
        out.extend_from_slice(&self.aoi_without_clear.to_le_bytes());
        for v in self.byte_layers() {
            out.extend_from_slice(v);
        }
        out.extend(self.key.iter().flat_map(|k| k.to_le_bytes()));
        out.extend(self.parcel.iter().flat_map(|k| k.to_le_bytes()));
        out
    }

    fn byte_layers(&self) -> impl Iterator<Item = &Vec<u8>> {
        [&self.class, &self.confidence, &self.flag]
            .into_iter()
            .chain(&self.ndvi)
            .chain(&self.runs)
            .chain(&self.attrs)
    }

    /// The inverse of `to_bytes` for `tile`; `None` when the bytes do not fit the tile.
    fn from_bytes(tile: &Tile, b: &[u8]) -> Option<TileOutput> {
        let n = tile.core.len();
        let layers = 3 + 3 + 3 + attr_band::COUNT;
        if b.len() != 16 + layers * n + 2 * n + 4 * n {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let mut at = 16;
        let mut take = |len: usize| {
            let s = &b[at..at + len];
            at += len;
            s
        };
        let mut layer = || take(n).to_vec();
        let (class, confidence, flag) = (layer(), layer(), layer());
        let ndvi = [layer(), layer(), layer()];
        let runs = [layer(), layer(), layer()];
        let attrs = std::array::from_fn(|_| layer());
        let key = take(2 * n)
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let parcel = take(4 * n)
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(TileOutput {
            tile: *tile,
            class,
            confidence,
            ndvi,
            runs,
            flag,
            key,
            attrs,
            parcel,
            aoi_pixels: u64_at(0),
            aoi_without_clear: u64_at(8),
        })
    }
}

/// Composites, classifies and judges one tile from the acquisitions that cover it.
fn process_tile(ctx: &PeriodContext, tile: &Tile, covering: &[&Acquisition]) -> Result<TileOutput> {
    let grid = ctx.grid;
    let comp = composite::build(covering, ctx.profile, ctx.add_offset, grid, tile.read)?;
    let open = |p: &Path| {
        Dataset::open(p).map_err(|e| {
            Error::input(
                p,
                e.to_string(),
                "the archive of an earlier period is damaged: re-run that period",
            )
        })
    };
    let mut ndvi_history = Vec::with_capacity(ctx.history.len());
    let mut class_history = Vec::with_capacity(ctx.history.len());
    let mut confidence_history = Vec::with_capacity(ctx.history.len());
    for entry in &ctx.history {
        let ds = open(&entry.ndvi)?;
        let band = |b| -> Result<Vec<f32>> {
            let raw = read_grid_window::<u8>(&ds, b, tile.read, NDVI_NODATA)?;
            Ok(raw.into_iter().map(byte_to_ndvi).collect())
        };
        ndvi_history.push(NdviStats {
            median: band(1)?,
            min: band(2)?,
            max: band(3)?,
        });
        let ds = open(&entry.class)?;
        class_history.push(read_grid_window::<u8>(&ds, 1, tile.core, 0)?);
        confidence_history.push(read_grid_window::<u8>(&ds, 2, tile.core, 0)?);
    }
    let runs_before: Option<[Vec<u8>; 3]> = match ctx.history.first() {
        Some(entry) => {
            let ds = open(&entry.signals)?;
            let band = |b| read_grid_window::<u8>(&ds, b, tile.core, 0);
            Some([band(1)?, band(2)?, band(3)?])
        }
        None => None,
    };
    let classified = ctx.classifier.classify(&ClassifierInput {
        profile: ctx.profile,
        composite: &comp,
        history: &ndvi_history,
    })?;
    let class = tile.crop_core(&classified.classes);
    let confidence = tile.crop_core(&classified.confidence);
    let to_bytes =
        |v: &[f32]| -> Vec<u8> { tile.crop_core(v).into_iter().map(ndvi_to_byte).collect() };
    let ndvi = [
        to_bytes(&comp.ndvi.median),
        to_bytes(&comp.ndvi.min),
        to_bytes(&comp.ndvi.max),
    ];
    let clear = tile.crop_core(&comp.clear_count);

    let county = ctx.admin.rasterize(grid, tile.core)?;
    let grid_srs = grid.spatial_ref()?;
    let farm = ctx.farmland.rasterize(grid, &grid_srs, tile.core)?;

    let n = tile.core.len();
    let mut out = TileOutput {
        tile: *tile,
        class: class.clone(),
        confidence: confidence.iter().map(|&c| confidence_to_byte(c)).collect(),
        ndvi,
        runs: std::array::from_fn(|_| vec![0u8; n]),
        flag: vec![FLAG_OUTSIDE; n],
        key: vec![0; n],
        attrs: std::array::from_fn(|_| vec![0u8; n]),
        parcel: farm.parcel.clone(),
        aoi_pixels: 0,
        aoi_without_clear: 0,
    };
    let (mut classes_before, mut confidences_before) = (
        Vec::with_capacity(class_history.len()),
        Vec::with_capacity(class_history.len()),
    );
    // The farmland layer is the baseline: 耕地 parcels are grain land.
    let baseline = LandCover::Grain.code();
    for i in 0..n {
        if county[i] == 0 {
            continue;
        }
        out.aoi_pixels += 1;
        out.aoi_without_clear += u64::from(clear[i] == 0);
        classes_before.clear();
        classes_before.extend(class_history.iter().map(|h| h[i]));
        confidences_before.clear();
        confidences_before.extend(confidence_history.iter().map(|h| h[i]));
        let watched = farm.parcel[i] != 0;
        let runs = if watched {
            // From the archived bytes, so that a period is judged the same now and when it is
            // read back as history.
            let cultivation =
                cultivation_seen(byte_to_ndvi(out.ndvi[1][i]), byte_to_ndvi(out.ndvi[2][i]));
            let before = runs_before
                .as_ref()
                .map_or([0; 3], |b| std::array::from_fn(|k| b[k][i]));
            extend_runs(before, signals(baseline, class[i], cultivation))
        } else {
            [0; 3]
        };
        for (k, &r) in runs.iter().enumerate() {
            out.runs[k][i] = r;
        }
        let j = judge(
            Pixel {
                county: county[i],
                watched,
                basic: farm.basic[i],
                baseline,
                now: class[i],
                confidence: confidence[i],
                runs,
                classes_before: &classes_before,
                confidences_before: &confidences_before,
                history_periods: ctx.archived,
            },
            &ctx.rules,
        );
        out.flag[i] = j.flag;
        out.key[i] = j.key;
        for (b, v) in j.attrs.into_iter().enumerate() {
            out.attrs[b][i] = v;
        }
    }
    Ok(out)
}

pub(crate) fn progress(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// The classifier the job names.
pub fn load_classifier(cfg: &JobConfig, profile: &SensorProfile) -> Result<Box<dyn Classifier>> {
    let model = cfg.classifier.model.as_ref().map(|m| cfg.resolve(m));
    crate::classify::select(&cfg.classifier.kind, model.as_deref(), profile)
}

pub fn period_dir(cfg: &JobConfig, period: Period) -> PathBuf {
    cfg.output_dir().join(period.to_string())
}

/// Runs one period of the job.
pub fn run_period(cfg: &JobConfig, period: Period, opts: &RunOptions) -> Result<RunSummary> {
    let t_start = Instant::now();
    let mut seconds = BTreeMap::new();
    let threads = if cfg.output.threads == 0 {
        num_threads()
    } else {
        cfg.output.threads
    };
    let profile = SensorProfile::by_name(&cfg.imagery.sensor)?;

    // Inputs are checked before anything is written.
    let catalog = Catalog::scan(&cfg.resolve(&cfg.imagery.folder), profile)?;
    let acquisitions = catalog.in_period(period);
    if acquisitions.is_empty() {
        return Err(Error::input(
            cfg.resolve(&cfg.imagery.folder),
            format!(
                "no acquisitions dated inside {period} ({} to {})",
                period.first_day(),
                period.last_day()
            ),
            format!(
                "add the period's imagery; periods with imagery here: {}",
                catalog
                    .periods()
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let mut grid_srs = SpatialRef::from_definition(&cfg.grid.crs)?;
    grid_srs.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let located = acquisitions
        .iter()
        .map(|a| {
            Ok(Located {
                acquisition: a,
                extent: a.check_and_locate(&grid_srs)?,
                identity: acquisition_identity(a)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let all_counties = Admin::of_job(cfg, &grid_srs)?;
    // Read before the tile stage, so that a bad township layer stops the run at once.
    let townships = Admin::townships_of_job(cfg, &grid_srs)?;
    // The grid always covers the whole job, so that archives line up whatever is run.
    let grid = JobGrid::covering(
        grid_srs.to_wkt()?,
        all_counties.envelope()?,
        cfg.grid.resolution,
        cfg.grid.tile_size,
        cfg.grid.halo,
    )?;
    let admin = all_counties.only(&opts.counties)?;
    let farmland = Farmland::open(
        &cfg.resolve(&cfg.farmland.path),
        cfg.farmland.layer.as_deref(),
        &cfg.farmland.id_field,
        &cfg.farmland.class_field,
        cfg.farmland.basic_field.as_deref(),
        &cfg.farmland.classes,
    )?;
    let classifier = load_classifier(cfg, profile)?;

    // Nothing is written before the inputs are checked and the job's lock is held.
    let lock = crate::lock::JobLock::acquire(&cfg.output_dir())?;
    // A run killed mid-replacement may have set an earlier period aside: put it back first.
    let out_root = cfg.output_dir();
    crate::export::clean_stale(&out_root)?;
    let rules = cfg.rules.persistence();
    let reach = ChangeType::ALL
        .iter()
        .map(|&t| rules.history_needed(t))
        .max()
        .unwrap_or(0)
        .max(HISTORY);
    let archived = archived_before(cfg, period, reach, &grid)?;
    let history: Vec<ArchiveEntry> = (1..=archived.min(HISTORY) as i32)
        .map(|k| ArchiveEntry::of(&period_dir(cfg, period.offset(-k))))
        .collect();
    let not_yet_decidable: Vec<String> = ChangeType::ALL
        .iter()
        .filter(|&&t| archived < rules.history_needed(t))
        .map(|&t| {
            format!(
                "{}: needs {} earlier periods archived, has {archived}",
                t.code(),
                rules.history_needed(t)
            )
        })
        .collect();
    // Later periods were judged against the archive entry this run replaces.
    let later_to_rerun: Vec<String> = (1..=reach as i32)
        .map(|k| period.offset(k))
        .filter(|p| ArchiveEntry::of(&period_dir(cfg, *p)).exists())
        .map(|p| p.to_string())
        .collect();

    std::fs::create_dir_all(&out_root).map_err(|e| Error::io(&out_root, e))?;
    let staging = StagingDir::beside(&period_dir(cfg, period))?;
    let work = staging.path().join("work");
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    seconds.insert("check_inputs", t_start.elapsed().as_secs_f64());

    // Tiles.
    let t_tiles = Instant::now();
    let mut tiles = Vec::new();
    for t in grid.tiles() {
        if admin.touches(&grid, t.core)? {
            tiles.push(t);
        }
    }
    let mut class_tif =
        GridTiff::create::<u8>(&staging.path().join("class.tif"), &grid, 2, Some(0.0))?;
    let mut signals_tif =
        GridTiff::create::<u8>(&staging.path().join("signals.tif"), &grid, 3, None)?;
    let mut ndvi_tif = GridTiff::create::<u8>(
        &staging.path().join("ndvi.tif"),
        &grid,
        3,
        Some(f64::from(NDVI_NODATA)),
    )?;
    let mut change = ChangeRasters::create(&staging.path().join("flags.tif"), &work, &grid)?;
    let ctx = PeriodContext {
        grid: &grid,
        profile,
        acquisitions: located,
        add_offset: cfg.imagery.add_offset.unwrap_or(profile.add_offset),
        classifier: classifier.as_ref(),
        admin: &admin,
        farmland: &farmland,
        history: history.clone(),
        archived,
        rules,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| {
            Error::config(
                &cfg.source,
                "output.threads",
                e.to_string(),
                "use 0 (all cores) or a smaller number",
            )
        })?;
    // Everything a tile depends on besides its imagery: a change discards the checkpoints.
    let mut key_parts = vec![
        env!("CARGO_PKG_VERSION").to_string(),
        std::fs::read_to_string(&cfg.source).map_err(|e| Error::io(&cfg.source, e))?,
        classifier.version().to_string(),
        opts.counties.join(","),
        archived.to_string(),
        file_identity(&cfg.resolve(&cfg.aoi.path))?,
        file_identity(&cfg.resolve(&cfg.farmland.path))?,
    ];
    for entry in &history {
        for f in [&entry.class, &entry.ndvi, &entry.signals] {
            key_parts.push(file_identity(f)?);
        }
    }
    let run_key = key_of(&key_parts);
    let (checkpoints, earlier) = Checkpoints::open(&out_root, period, &run_key)?;
    let pb = progress(tiles.len() as u64, "tiles", opts.quiet);
    let (mut aoi_pixels, mut aoi_without_clear, mut tiles_with_gaps) = (0u64, 0u64, Vec::new());
    let (mut tiles_resumed, mut tiles_redone) = (0usize, Vec::new());
    for batch in tiles.chunks(threads * 2) {
        let results: Vec<Result<(TileOutput, TileSource)>> = pool.install(|| {
            batch
                .par_iter()
                .map(|t| {
                    ctx.tile(t, &checkpoints).map_err(|e| Error::Tile {
                        tile: t.id(),
                        source: Box::new(e),
                    })
                })
                .collect()
        });
        for r in results {
            let (o, source) = r?;
            match source {
                TileSource::Resumed => tiles_resumed += 1,
                TileSource::ImageryChanged => tiles_redone.push(o.tile.id()),
                TileSource::Processed => {}
            }
            let w = o.tile.core;
            class_tif.write(1, w, o.class)?;
            class_tif.write(2, w, o.confidence)?;
            for (b, data) in o.runs.into_iter().enumerate() {
                signals_tif.write(b + 1, w, data)?;
            }
            for (b, data) in o.ndvi.into_iter().enumerate() {
                ndvi_tif.write(b + 1, w, data)?;
            }
            change.write(w, o.flag, o.key, o.attrs, o.parcel)?;
            aoi_pixels += o.aoi_pixels;
            aoi_without_clear += o.aoi_without_clear;
            if o.aoi_without_clear > 0 {
                tiles_with_gaps.push(o.tile.id());
            }
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    class_tif.close()?;
    ndvi_tif.close()?;
    signals_tif.close()?;
    seconds.insert("tiles", t_tiles.elapsed().as_secs_f64());

    // Polygons and attributes.
    let t_vec = Instant::now();
    let first = acquisitions
        .first()
        .expect("non-empty")
        .date
        .format("%Y%m%d");
    let last = acquisitions
        .last()
        .expect("non-empty")
        .date
        .format("%Y%m%d");
    let info = PeriodInfo {
        period: period.to_string(),
        image_dates: format!("{first}-{last}"),
        model_version: classifier.version(),
        timeline: Timeline::Job { period, archived },
    };
    let spinner = progress(0, "vectorise", opts.quiet);
    spinner.set_style(
        ProgressStyle::with_template("{prefix:>10} {spinner} polygons and attributes ({elapsed})")
            .expect("valid template"),
    );
    spinner.set_prefix("vectorise");
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut all_patches = change.into_patches(
        &grid,
        &admin,
        &info,
        |t| cfg.min_area_for(t.code()),
        // Persistence over periods, not a parcel share, filters the noise of one look.
        |_| true,
    )?;
    farmland.name_parcels(&mut all_patches)?;
    if let Some(townships) = &townships {
        townships.name_townships(&mut all_patches)?;
    }
    // Stable numbers and statuses from the ledger, which also re-checks rectified patches
    // against this period's land cover.
    let class_path = staging.path().join("class.tif");
    let class_ds = Dataset::open(&class_path).in_file(&class_path, "check free disk space")?;
    let cultivated = |g: &gdal::vector::Geometry| -> Result<Option<f64>> {
        let window = grid.window_around(&g.envelope(), 0);
        let inside = rasterize(&grid, window, std::slice::from_ref(g), &[1.0])?;
        let classes = read_grid_window::<u8>(&class_ds, 1, window, 0)?;
        Ok(grain_share(&classes, &inside))
    };
    let run_counties: Vec<String> = admin.counties.iter().map(|c| c.code.clone()).collect();
    let ledger = Ledger::open(&out_root)?.record_period(
        period,
        &run_counties,
        &mut all_patches,
        &cfg.ledger,
        &cultivated,
    )?;
    drop(class_ds);
    spinner.finish_and_clear();
    write_quicklook(
        &staging.path().join("class.tif"),
        &staging.path().join("flags.tif"),
        &staging.path().join("quicklook.png"),
        1024,
        None,
    )?;
    seconds.insert("vectorise", t_vec.elapsed().as_secs_f64());

    // Exports.
    let t_exp = Instant::now();
    let mut counties = Vec::new();
    let pb = progress(admin.counties.len() as u64, "export", opts.quiet);
    for county in &admin.counties {
        let mine: Vec<Patch> = all_patches
            .iter()
            .filter(|p| p.county_code == county.code)
            .cloned()
            .collect();
        let stem = format!("TB_{}_{}", county.code, period);
        let dir = staging.path().join("counties").join(&county.code);
        let files = write_county(
            &dir,
            &stem,
            &grid_srs,
            &mine,
            &cfg.output.shapefile_encoding,
            &[],
        )?;
        counties.push(CountySummary {
            code: county.code.clone(),
            name: county.name.clone(),
            patches: totals_by_type(&mine),
            files: files
                .iter()
                .map(|f| {
                    format!(
                        "counties/{}/{}",
                        county.code,
                        f.file_name().unwrap_or_default().to_string_lossy()
                    )
                })
                .collect(),
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    let totals = totals_by_type(&all_patches);
    seconds.insert("export", t_exp.elapsed().as_secs_f64());
    seconds.insert("total", t_start.elapsed().as_secs_f64());

    let summary = RunSummary {
        job: cfg.job.name.clone(),
        period,
        classifier: classifier.version().to_string(),
        sensor: profile.name.to_string(),
        grid: GridSummary { crs: cfg.grid.crs.clone(), resolution: grid.resolution, width: grid.width, height: grid.height, tile_size: grid.tile_size },
        acquisitions: acquisitions.iter().map(|a| format!("{} {}", a.date, a.folder.display())).collect(),
        history_periods: (1..=history.len() as i32).map(|k| period.offset(-k).to_string()).collect(),
        archived_periods: archived,
        rules_not_yet_decidable: not_yet_decidable,
        later_periods_to_rerun: later_to_rerun,
        took_over_lock_of: lock.took_over.clone(),
        ledger,
        resume: ResumeSummary {
            checkpoints_discarded: earlier == Earlier::Discarded,
            tiles_resumed,
            tiles_redone_imagery_changed: tiles_redone,
        },
        tiles: tiles.len(),
        tiles_with_gaps,
        aoi_pixels,
        aoi_pixels_without_clear_observation: aoi_without_clear,
        counties,
        totals,
        seconds,
        inputs: Inputs {
            config: cfg.source.display().to_string(),
            admin: admin.path.display().to_string(),
            farmland: farmland.path.display().to_string(),
            farmland_parcels: farmland.parcel_count,
            imagery: cfg.resolve(&cfg.imagery.folder).display().to_string(),
        },
        rules: format!(
            "FNH: farmland built-up for {} consecutive periods; FLH: farmland under a non-grain crop, trees or water for {} consecutive periods (decided once {} earlier periods are archived); PH: farmland with no sign of cultivation (bare soil or dense canopy) for {} consecutive periods; minimum area (m2): FNH {}, FLH {}, PH {}",
            cfg.rules.fnh_min_periods,
            cfg.rules.flh_min_periods,
            rules.history_needed(ChangeType::FLH),
            cfg.rules.ph_min_periods,
            cfg.min_area_for("FNH"),
            cfg.min_area_for("FLH"),
            cfg.min_area_for("PH")
        ),
    };
    std::fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    commit(staging, &period_dir(cfg, period), &summary, &opts.counties)?;
    checkpoints.finish()?;
    Ok(summary)
}

/// Moves the staged results into place: the whole period, or only the counties of a county run.
fn commit(
    staging: StagingDir,
    final_dir: &Path,
    summary: &RunSummary,
    only: &[String],
) -> Result<()> {
    let json = serde_json::to_vec_pretty(summary).expect("serialisable");
    if only.is_empty() {
        std::fs::write(staging.path().join("summary.json"), &json)
            .map_err(|e| Error::io(staging.path(), e))?;
        return staging.replace(final_dir);
    }
    let counties_dir = final_dir.join("counties");
    std::fs::create_dir_all(&counties_dir).map_err(|e| Error::io(&counties_dir, e))?;
    crate::export::clean_stale(&counties_dir)?;
    for c in &summary.counties {
        let entry = Path::new("counties").join(&c.code);
        std::fs::write(staging.path().join(&entry).join("summary.json"), &json)
            .map_err(|e| Error::io(staging.path(), e))?;
        staging.move_entry(&entry, &counties_dir.join(&c.code))?;
    }
    Ok(())
}

pub fn num_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Consecutive periods before `period`, up to `reach`, whose archive entry exists; an entry
/// on another grid is an error.
fn archived_before(cfg: &JobConfig, period: Period, reach: usize, grid: &JobGrid) -> Result<usize> {
    let mut n = 0;
    for k in 1..=reach as i32 {
        let entry = ArchiveEntry::of(&period_dir(cfg, period.offset(-k)));
        if !entry.exists() {
            break;
        }
        let ds = Dataset::open(&entry.class)
            .map_err(|e| Error::input(&entry.class, e.to_string(), "re-run that period"))?;
        if ds.raster_size() != (grid.width, grid.height)
            || ds.geo_transform()? != grid.geo_transform()
        {
            return Err(Error::input(&entry.class, "the archived period lies on another grid than this job", "re-run the earlier periods with the current grid settings, or use a new output folder"));
        }
        if ds.raster_count() < 2 {
            return Err(Error::input(
                &entry.class,
                "the archived period has no confidence band (written by an older gengbao)",
                "re-run that period",
            ));
        }
        n += 1;
    }
    Ok(n)
}

/// The periods that have imagery in the job's folder, in order.
pub fn periods_with_imagery(cfg: &JobConfig) -> Result<Vec<Period>> {
    let profile = SensorProfile::by_name(&cfg.imagery.sensor)?;
    Ok(Catalog::scan(&cfg.resolve(&cfg.imagery.folder), profile)?.periods())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndvi_bytes_round_trip_to_a_hundredth() {
        for v in [-1.0f32, -0.37, 0.0, 0.25, 0.7, 1.0] {
            assert!((byte_to_ndvi(ndvi_to_byte(v)) - v).abs() <= 0.005, "{v}");
        }
        assert!(byte_to_ndvi(ndvi_to_byte(f32::NAN)).is_nan());
    }
}
