//! One period of the bimonthly job, end to end, as a short sequence of phases: check the
//! inputs, take the lock and plan against the archive, the tile stage (through the engine),
//! the patch stage, the ledger, the county files, and the commit.
//!
//! Takes: a [`JobConfig`] and a period. Gives, under `<output>/<period>/` (see
//! [`PeriodFiles`]): `class.tif`, `quicklook.png`, `ndvi.tif` and `signals.tif` (with the
//! classes, the time-series memory read by later periods), `flags.tif`, per county
//! `counties/<code>/TB_<code>_<period>.{gpkg,shp,geojson}`, and `summary.json`.
//!
//! Everything is written into a staging folder first and moved into place only when the whole
//! period succeeded, so a failed run leaves the previous results untouched and no half file.

use crate::classify::Classifier;
use crate::domain::change::{ChangeType, Rules};
use crate::domain::coverage::Coverage;
use crate::domain::period::Period;
use crate::engine::change_rasters::ChangeRasters;
use crate::engine::judge::ChangeTile;
use crate::engine::patch_record::write_county;
use crate::engine::patches::{self, totals_by_type, Patch, PeriodInfo, Timeline};
use crate::engine::tiles::{for_each_tile, pool};
use crate::error::{Error, GdalContext, Result};
use crate::geo::composite::{cloud_margin, LOOK_NODATA, NDVI_NODATA};
use crate::geo::grid::{overlaps, JobGrid, Tile};
use crate::geo::imagery::date_span;
use crate::geo::layers::{Admin, Farmland, FarmlandSource};
use crate::geo::raster::{rasterize, read_grid_window, to_cog, CogContent, GridTiff};
use crate::geo::sensor::SensorProfile;
use crate::geo::user_image::{check_elevation_covers, ground_points};
use crate::job::checkpoint::{acquisition_identity, file_identity, key_of, Checkpoints, Earlier};
use crate::job::config::JobConfig;
use crate::job::layout::{OutputLayout, PeriodFiles};
use crate::job::lock::JobLock;
use crate::job::period_tiles::{
    ComparedLook, Ground, Located, PeriodContext, TileOutput, TileSource,
};
use crate::job::staging::{clean_stale, StagingDir};
use crate::job::summary::{
    ChangeDecision, CountySummary, CoverageSummary, GridSummary, Inputs, ResumeSummary, RunSummary,
};
use crate::ledger::{grain_share, Ledger, PeriodLedger};
use crate::progress::{progress, spinner};
use crate::render::MapSheet;
use gdal::spatial_ref::SpatialRef;
use gdal::vector::Envelope;
use gdal::Dataset;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// How many earlier periods a run looks back at (one year with the current one).
pub(crate) const HISTORY: usize = 5;

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

/// The classifier the job names.
pub(crate) fn load_classifier(
    cfg: &JobConfig,
    profile: &SensorProfile,
) -> Result<Box<dyn Classifier>> {
    let model = cfg.classifier.model.as_ref().map(|m| cfg.resolve(m));
    crate::classify::select(cfg.classifier.kind, model.as_deref(), profile)
}

/// The periods that have imagery in the job's folder, in order.
pub(crate) fn periods_with_imagery(cfg: &JobConfig) -> Result<Vec<Period>> {
    let profile = SensorProfile::by_name(&cfg.imagery.sensor)?;
    Ok(cfg.catalog(profile)?.periods())
}

/// The checked inputs of a period: nothing is written before they are all read.
pub(super) struct PeriodInputs<'c> {
    period: Period,
    /// The period's acquisitions in date order, located in the grid CRS.
    acquisitions: Vec<Located>,
    /// Acquisitions of the period whose ground does not reach the job's area (read by no
    /// tile): `path: its ground`.
    off_area: Vec<String>,
    /// Imagery files of the folder in no acquisition (relative to it).
    unplaced: Vec<String>,
    /// Damaged products left out: `path: what is wrong`.
    damaged: Vec<String>,
    profile: &'static SensorProfile,
    grid_srs: SpatialRef,
    grid: JobGrid,
    admin: Admin,
    townships: Option<Admin>,
    farmland: Farmland,
    classifier: Box<dyn Classifier>,
    cfg: &'c JobConfig,
}

/// What the archive of earlier periods holds for this run.
pub(super) struct ArchivePlan {
    rules: Rules,
    archived: usize,
    history: Vec<PeriodFiles>,
    not_yet_decidable: Vec<String>,
    later_to_rerun: Vec<String>,
}

/// What the tile stage gives besides the rasters.
#[derive(Default)]
struct TileStage {
    /// The tiles that touch a county, in grid order.
    tiles: Vec<Tile>,
    coverage: Coverage,
    tiles_with_gaps: Vec<String>,
    resume: ResumeSummary,
}

/// Runs one period of the job.
pub fn run_period(cfg: &JobConfig, period: Period, opts: &RunOptions) -> Result<RunSummary> {
    let t_start = Instant::now();
    let mut seconds = BTreeMap::new();
    let inputs = check_inputs(cfg, period, opts)?;

    // Nothing is written before the inputs are checked and the job's lock is held.
    let layout = cfg.layout();
    let lock = JobLock::acquire(&layout)?;
    // A run killed mid-replacement may have set an earlier period aside: put it back first.
    clean_stale(layout.root())?;
    let CheckedPeriod {
        mut inputs,
        plan,
        run_key,
    } = CheckedPeriod::against_archive(inputs, opts)?;
    let staging = StagingDir::beside(layout.period(period).dir())?;
    let staged = PeriodFiles::in_dir(staging.path());
    let work = staged.work();
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    seconds.insert("check_inputs", t_start.elapsed().as_secs_f64());
    let t_place = Instant::now();
    place_products_on_grid(&mut inputs, &work)?;
    seconds.insert("place_products", t_place.elapsed().as_secs_f64());

    let t_tiles = Instant::now();
    let (checkpoints, earlier) = Checkpoints::open(&layout, period, &run_key)?;
    let ctx = period_context(&inputs, &plan);
    let pool = job_pool(cfg)?;
    let mut tile_stage = tile_stage(&inputs, &ctx, &pool, &staged, &checkpoints, opts)?;
    tile_stage.resume.checkpoints_discarded = earlier == Earlier::Discarded;
    seconds.insert("tiles", t_tiles.elapsed().as_secs_f64());
    // An empty look is no result: committing it would replace the period's earlier results
    // with an empty map and mark the period done, so that it is never tried again.
    let short = tile_stage.coverage.short_of(cfg.imagery.min_clear_share);
    if !short.is_empty() {
        let counties = short
            .iter()
            .map(|&k| {
                let c = &inputs.admin.counties[usize::from(k) - 1];
                let seen = tile_stage.coverage.county(k);
                format!(
                    "{} {}: {:.1}% of {} watched pixels seen clear",
                    c.name,
                    c.code,
                    100.0 * seen.share().unwrap_or(0.0),
                    seen.watched
                )
            })
            .collect();
        return Err(Error::NoUsableImagery {
            imagery: cfg.imagery_source(),
            period: period.to_string(),
            counties,
            floor: cfg.imagery.min_clear_share,
        });
    }

    let t_change = Instant::now();
    let compared = match ComparedLook::archived_for(&layout, period) {
        Some((p, files)) => pool.install(|| {
            ComparedLook::learn(p, files, inputs.profile, &staged, &tile_stage.tiles)
        })?,
        None => None,
    };
    let mut change = ChangeRasters::create(&staged.flags(), &work, &inputs.grid)?;
    change_stage(
        &ctx,
        &pool,
        &tile_stage.tiles,
        &staged,
        compared.as_ref(),
        &mut change,
    )?;
    seconds.insert("change", t_change.elapsed().as_secs_f64());

    let t_vec = Instant::now();
    let info = PeriodInfo {
        period: period.to_string(),
        image_dates: date_span(inputs.acquisitions.iter().map(|a| &a.acquisition))
            .expect("a period runs with acquisitions"),
        model_version: inputs.classifier.version(),
        timeline: Timeline::Job {
            period,
            archived: plan.archived,
        },
    };
    let spinner = spinner("vectorise", "polygons and attributes", opts.quiet);
    let mut all_patches = change.into_patches(
        &inputs.grid,
        &inputs.admin,
        &info,
        |t| cfg.min_area_for(t.code()),
        // Persistence over periods, not a parcel share, filters the noise of one look.
        |_| true,
    )?;
    patches::name_parcels(&inputs.farmland, &mut all_patches)?;
    if let Some(townships) = &inputs.townships {
        patches::name_townships(townships, &mut all_patches)?;
    }
    let ledger = record_in_ledger(&inputs, &layout, &staged, &mut all_patches)?;
    spinner.finish_and_clear();
    MapSheet {
        title: format!("{} {period} 快视图", cfg.job.name),
        subtitle: format!(
            "影像 {} · 晴空覆盖监测耕地 {} · 图斑 {} 处 · 模型 {}",
            info.image_dates,
            tile_stage
                .coverage
                .total()
                .share()
                .map_or("-".to_string(), |s| format!("{:.1}%", 100.0 * s)),
            all_patches.len(),
            info.model_version
        ),
        grid: &inputs.grid,
        window: inputs.grid.full_window(),
        class_tif: &staged.class(),
        ndvi_tif: &staged.ndvi(),
        patches: &all_patches,
        counties: &inputs.admin.counties,
    }
    .write(&staged.quicklook(), 1024)?;
    seconds.insert("vectorise", t_vec.elapsed().as_secs_f64());

    let t_exp = Instant::now();
    let counties = write_counties(&inputs, &staged, &all_patches, &tile_stage.coverage, opts)?;
    seconds.insert("export", t_exp.elapsed().as_secs_f64());
    let t_cog = Instant::now();
    for (raster, content) in [
        (staged.class(), CogContent::Codes),
        (staged.flags(), CogContent::Codes),
        (staged.look(), CogContent::Reflectance),
    ] {
        to_cog(&raster, content)?;
    }
    seconds.insert("cog", t_cog.elapsed().as_secs_f64());
    seconds.insert("total", t_start.elapsed().as_secs_f64());

    let (imagery_calibrated, imagery_calibration_notes) = calibrations(&inputs.acquisitions);
    let summary = RunSummary {
        job: cfg.job.name.clone(),
        period,
        classifier: inputs.classifier.version().to_string(),
        sensor: inputs.profile.name.to_string(),
        grid: GridSummary {
            crs: cfg.grid.crs.clone(),
            resolution: inputs.grid.resolution,
            width: inputs.grid.width,
            height: inputs.grid.height,
            tile_size: inputs.grid.tile_size,
        },
        acquisitions: inputs
            .acquisitions
            .iter()
            .map(|a| format!("{} {}", a.acquisition.date, a.acquisition.folder.display()))
            .collect(),
        history_periods: (1..=plan.history.len() as i32)
            .map(|k| period.offset(-k).to_string())
            .collect(),
        archived_periods: plan.archived,
        rules_not_yet_decidable: plan.not_yet_decidable,
        change_decision: ChangeDecision {
            compared_with: compared.as_ref().map(|c| c.period.to_string()),
            threshold: compared.as_ref().and_then(|c| c.scene.threshold()),
        },
        later_periods_to_rerun: plan.later_to_rerun,
        took_over_lock_of: lock.took_over.clone(),
        ledger,
        resume: tile_stage.resume,
        tiles: tile_stage.tiles.len(),
        tiles_with_gaps: tile_stage.tiles_with_gaps,
        coverage: CoverageSummary::of(tile_stage.coverage.total()),
        counties,
        totals: totals_by_type(&all_patches),
        seconds,
        inputs: Inputs {
            config: cfg.source.display().to_string(),
            admin: inputs.admin.path.display().to_string(),
            farmland: inputs.farmland.path.display().to_string(),
            farmland_parcels: inputs.farmland.parcel_count,
            farmland_repaired: inputs.farmland.repaired.clone(),
            admin_repaired: inputs.admin.repaired.clone(),
            imagery_unplaced: inputs.unplaced.clone(),
            imagery_damaged: inputs.damaged.clone(),
            imagery_off_area: inputs.off_area.clone(),
            imagery_offset_overridden: offset_overridden(cfg, &inputs.acquisitions),
            imagery_calibration_notes,
            imagery_calibrated,
            farmland_duplicate_ids: inputs.farmland.duplicate_ids.clone(),
            imagery: cfg.imagery_source().display().to_string(),
        },
        rules: rules_text(cfg, &plan.rules),
    };
    std::fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    commit(staging, &layout.period(period), &summary, &opts.counties)?;
    checkpoints.finish()?;
    Ok(summary)
}

/// A period checked as a run checks it, with the key of everything its tiles depend on: what
/// the shards of a period share with its run.
pub(super) struct CheckedPeriod<'c> {
    pub(super) inputs: PeriodInputs<'c>,
    pub(super) plan: ArchivePlan,
    pub(super) run_key: String,
}

impl<'c> CheckedPeriod<'c> {
    pub(super) fn new(cfg: &'c JobConfig, period: Period, opts: &RunOptions) -> Result<Self> {
        Self::against_archive(check_inputs(cfg, period, opts)?, opts)
    }

    /// Checked `inputs` planned against the archive of earlier periods, with their key.
    fn against_archive(inputs: PeriodInputs<'c>, opts: &RunOptions) -> Result<Self> {
        let cfg = inputs.cfg;
        let plan = plan_against_archive(cfg, &cfg.layout(), inputs.period, &inputs.grid)?;
        let run_key = run_key(&inputs, &plan, opts)?;
        Ok(CheckedPeriod {
            inputs,
            plan,
            run_key,
        })
    }

    /// The tiles that touch the counties run, in grid order.
    pub(super) fn tiles(&self) -> Result<Vec<Tile>> {
        period_tiles(&self.inputs)
    }

    /// Places products that need it on the grid (into `folder`).
    pub(super) fn place_products(&mut self, folder: &Path) -> Result<()> {
        place_products_on_grid(&mut self.inputs, folder)
    }

    pub(super) fn context(&self) -> PeriodContext<'_> {
        period_context(&self.inputs, &self.plan)
    }

    pub(super) fn farmland_watched(&self, tile: &Tile) -> Result<u64> {
        let burnt =
            self.inputs
                .farmland
                .rasterize(&self.inputs.grid, &self.inputs.grid_srs, tile.core)?;
        Ok(burnt.parcel.iter().filter(|p| **p != 0).count() as u64)
    }
}

/// The job's worker threads (`[output] threads`).
pub(super) fn job_pool(cfg: &JobConfig) -> Result<rayon::ThreadPool> {
    pool(cfg.output.threads).map_err(|e| {
        Error::config(
            &cfg.source,
            "output.threads",
            e.to_string(),
            "use 0 (all cores) or a smaller number",
        )
    })
}

/// The tiles that touch the counties run, in grid order.
fn period_tiles(inputs: &PeriodInputs) -> Result<Vec<Tile>> {
    let grid = &inputs.grid;
    let mut tiles = Vec::new();
    for t in grid.tiles() {
        if inputs.admin.touches(grid, t.core)? {
            tiles.push(t);
        }
    }
    Ok(tiles)
}

/// Reads and checks every input of the period: the catalog, the layers, the classifier.
fn check_inputs<'c>(
    cfg: &'c JobConfig,
    period: Period,
    opts: &RunOptions,
) -> Result<PeriodInputs<'c>> {
    let profile = SensorProfile::by_name(&cfg.imagery.sensor)?;
    let catalog = cfg.catalog(profile)?;
    let in_period = catalog.in_period(period);
    if in_period.is_empty() {
        return Err(Error::input(
            cfg.imagery_source(),
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
    if let (Some(calibrated), Some(_)) = (
        in_period.iter().find(|a| a.calibration.is_some()),
        cfg.imagery.add_offset,
    ) {
        return Err(Error::config(
            &cfg.source,
            "imagery.add_offset",
            format!(
                "is set, but {} is a Gaofen L1A product, calibrated from its .xml",
                calibrated.folder.display()
            ),
            "leave out add_offset: it applies to reflectance products",
        ));
    }
    let mut grid_srs = SpatialRef::from_definition(&cfg.grid.crs)?;
    grid_srs.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let acquisitions = in_period
        .into_iter()
        .map(|a| {
            Ok(Located {
                extent: a.check_and_locate(&grid_srs)?,
                identity: acquisition_identity(a)?,
                acquisition: a.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let all_counties = cfg.counties(&grid_srs)?;
    // Read before the tile stage, so that a bad township layer stops the run at once.
    let townships = cfg.townships(&grid_srs)?;
    // The grid always covers the whole job, so that archives line up whatever is run.
    let grid = JobGrid::covering(
        grid_srs.to_wkt()?,
        all_counties.envelope()?,
        cfg.grid.resolution,
        cfg.grid.tile_size,
        cfg.grid.halo,
    )?;
    let admin = all_counties.only(&opts.counties)?;
    // A product that does not reach the area is read by no tile: named. (When none does,
    // the tile stage finds no usable imagery.)
    let area = grid.window_bounds(grid.full_window());
    let off_area: Vec<String> = acquisitions
        .iter()
        .filter(|a| !overlaps(a.extent, area))
        .map(|a| {
            let (x0, y0, x1, y1) = a.extent;
            format!(
                "{}: its ground is x {x0:.0} to {x1:.0}, y {y0:.0} to {y1:.0}",
                a.acquisition.folder.display()
            )
        })
        .collect();
    check_products_elevation(cfg, &grid, &grid_srs, &admin, &acquisitions)?;
    let farmland_path = cfg.resolve(&cfg.farmland.path);
    let farmland = Farmland::open(FarmlandSource {
        path: &farmland_path,
        layer: cfg.farmland.layer.as_deref(),
        id_field: &cfg.farmland.id_field,
        class_field: &cfg.farmland.class_field,
        basic_field: cfg.farmland.basic_field.as_deref(),
        classes: &cfg.farmland.classes,
        invalid_geometries: cfg.farmland.invalid_geometries,
        encoding: cfg.farmland.encoding.as_deref(),
    })?;
    let classifier = load_classifier(cfg, profile)?;
    let unplaced = catalog
        .unplaced
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let damaged = catalog
        .damaged
        .iter()
        .map(|(p, why)| format!("{}: {why}", p.display()))
        .collect();
    Ok(PeriodInputs {
        period,
        acquisitions,
        off_area,
        unplaced,
        damaged,
        profile,
        grid_srs,
        grid,
        admin,
        townships,
        farmland,
        classifier,
        cfg,
    })
}

/// Refuses a `[grid] dem` that lacks heights where a product placed by RPCs shows the
/// counties run ([`check_elevation_covers`]).
fn check_products_elevation(
    cfg: &JobConfig,
    grid: &JobGrid,
    grid_srs: &SpatialRef,
    admin: &Admin,
    acquisitions: &[Located],
) -> Result<()> {
    if cfg.grid.dem.is_none()
        || acquisitions
            .iter()
            .all(|a| a.acquisition.calibration.is_none())
    {
        return Ok(());
    }
    let points = ground_points(grid, grid_srs, &admin.counties)?;
    let elevation = cfg.elevation();
    for a in acquisitions {
        check_elevation_covers(&a.acquisition.folder, &elevation, Some(&points))?;
    }
    Ok(())
}

/// Warps each product placed by RPCs (Gaofen L1A) once onto the grid where it meets the
/// tiles' reads, into `folder` ([`crate::geo::imagery::Acquisition::placed_on_grid`]); its checkpoint identity
/// stays that of the product as delivered.
fn place_products_on_grid(inputs: &mut PeriodInputs, folder: &Path) -> Result<()> {
    let grid = &inputs.grid;
    // Tiles read their halo, and the cloud test reads around that.
    let reach = grid.halo + cloud_margin(inputs.profile, grid.resolution) + 1;
    let read = grid.full_window().grown(reach);
    for (k, located) in inputs.acquisitions.iter_mut().enumerate() {
        let (x0, y0, x1, y1) = located.extent;
        let footprint = Envelope {
            MinX: x0,
            MinY: y0,
            MaxX: x1,
            MaxY: y1,
        };
        let Some(window) = grid.window_around(&footprint, reach).intersection(&read) else {
            continue;
        };
        if let Some(placed) = located
            .acquisition
            // Numbered: two products may share a file name in different folders.
            .placed_on_grid(
                inputs.profile,
                grid,
                window,
                &folder.join(format!("product-{k:03}-on-grid.tif")),
            )?
        {
            located.acquisition = placed;
        }
    }
    Ok(())
}

/// The period's products whose stated DN offset the job's `[imagery] add_offset` overrides.
fn offset_overridden(cfg: &JobConfig, acquisitions: &[Located]) -> Vec<String> {
    let Some(job) = cfg.imagery.add_offset else {
        return Vec::new();
    };
    acquisitions
        .iter()
        .filter_map(|a| {
            let stated = a.acquisition.offset.filter(|&o| o != job)?;
            let name = a.acquisition.folder.file_name()?.to_string_lossy();
            Some(format!("{name}: metadata {stated}, job {job}"))
        })
        .collect()
}

/// The period's products calibrated from their own metadata, with how (camera, coefficient
/// year, sun, Earth-Sun distance); and apart, those calibrated with another year's
/// coefficients than their own, with what was used.
fn calibrations(acquisitions: &[Located]) -> (Vec<String>, Vec<String>) {
    let mut calibrated = Vec::new();
    let mut notes = Vec::new();
    for a in acquisitions {
        let (Some(c), Some(name)) = (&a.acquisition.calibration, a.acquisition.folder.file_name())
        else {
            continue;
        };
        let name = name.to_string_lossy();
        calibrated.push(format!(
            "{name}: {} of {}, {} coefficients, sun {:.2}° from the zenith, Earth-Sun {:.4} AU",
            c.camera, c.date, c.coefficients_year, c.solar_zenith_deg, c.earth_sun_au
        ));
        notes.extend(c.note.as_ref().map(|note| format!("{name}: {note}")));
    }
    (calibrated, notes)
}

/// The earlier periods this run reads, the rules it can decide, and the later periods that
/// were judged against the archive entry this run replaces.
fn plan_against_archive(
    cfg: &JobConfig,
    layout: &OutputLayout,
    period: Period,
    grid: &JobGrid,
) -> Result<ArchivePlan> {
    let rules = cfg.rules.persistence();
    let reach = ChangeType::ALL
        .iter()
        .map(|&t| rules.history_needed(t))
        .max()
        .unwrap_or(0)
        .max(HISTORY);
    let archived = archived_before(layout, period, reach, grid)?;
    let history = (1..=archived.min(HISTORY) as i32)
        .map(|k| layout.period(period.offset(-k)))
        .collect();
    let not_yet_decidable = ChangeType::ALL
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
    let later_to_rerun = (1..=reach as i32)
        .map(|k| period.offset(k))
        .filter(|p| layout.period(*p).archived())
        .map(|p| p.to_string())
        .collect();
    Ok(ArchivePlan {
        rules,
        archived,
        history,
        not_yet_decidable,
        later_to_rerun,
    })
}

/// Everything a tile depends on besides its imagery: a change discards the checkpoints.
fn run_key(inputs: &PeriodInputs, plan: &ArchivePlan, opts: &RunOptions) -> Result<String> {
    let cfg = inputs.cfg;
    let mut key_parts = vec![
        env!("CARGO_PKG_VERSION").to_string(),
        std::fs::read_to_string(&cfg.source).map_err(|e| Error::io(&cfg.source, e))?,
        inputs.classifier.version().to_string(),
        opts.counties.join(","),
        plan.archived.to_string(),
        file_identity(&cfg.resolve(&cfg.aoi.path))?,
        file_identity(&cfg.resolve(&cfg.farmland.path))?,
    ];
    // The heights Gaofen L1A products are orthorectified on.
    if let Some(dem) = &cfg.grid.dem {
        key_parts.push(file_identity(&cfg.resolve(dem))?);
    }
    for entry in &plan.history {
        for f in [entry.class(), entry.ndvi(), entry.signals()] {
            key_parts.push(file_identity(&f)?);
        }
    }
    Ok(key_of(&key_parts))
}

/// What every tile of the period shares.
fn period_context<'a>(inputs: &'a PeriodInputs, plan: &'a ArchivePlan) -> PeriodContext<'a> {
    let cfg = inputs.cfg;
    PeriodContext {
        grid: &inputs.grid,
        profile: inputs.profile,
        acquisitions: &inputs.acquisitions,
        add_offset: cfg.imagery.add_offset,
        classifier: inputs.classifier.as_ref(),
        admin: &inputs.admin,
        farmland: &inputs.farmland,
        history: &plan.history,
        archived: plan.archived,
        rules: plan.rules,
    }
}

/// The first pass over the tiles that touch the counties run, from the imagery: the classes,
/// the NDVI and the look (archived), where each pixel lies (a scratch raster for the change
/// step), and what the period saw.
fn tile_stage(
    inputs: &PeriodInputs,
    ctx: &PeriodContext,
    pool: &rayon::ThreadPool,
    staged: &PeriodFiles,
    checkpoints: &Checkpoints,
    opts: &RunOptions,
) -> Result<TileStage> {
    let grid = &inputs.grid;
    let tiles = period_tiles(inputs)?;
    let mut class_tif = GridTiff::create::<u8>(&staged.class(), grid, 2, Some(0.0))?;
    let ndvi_nodata = Some(f64::from(NDVI_NODATA));
    let mut ndvi_tif = GridTiff::create::<u8>(&staged.ndvi(), grid, 3, ndvi_nodata)?;
    let bands = inputs.profile.bands.len();
    let look_nodata = Some(f64::from(LOOK_NODATA));
    let mut look_tif =
        GridTiff::create_measurements::<i16>(&staged.look(), grid, bands, look_nodata)?;
    let mut ground_tif =
        GridTiff::create_scratch::<i32>(&staged.ground(), grid, Ground::BANDS, None)?;
    let pb = progress(tiles.len() as u64, "tiles", opts.quiet);
    let mut stage = TileStage::default();
    for_each_tile(
        Some(pool),
        &tiles,
        |t| ctx.tile(t, checkpoints),
        |tile, (o, source): (TileOutput, TileSource)| {
            match source {
                TileSource::Resumed => stage.resume.tiles_resumed += 1,
                TileSource::ImageryChanged => {
                    stage.resume.tiles_redone_imagery_changed.push(tile.id())
                }
                TileSource::Processed => {}
            }
            let w = tile.core;
            class_tif.write(1, w, o.class)?;
            class_tif.write(2, w, o.confidence)?;
            for (b, data) in o.ndvi.into_iter().enumerate() {
                ndvi_tif.write(b + 1, w, data)?;
            }
            for (b, data) in o.look.chunks_exact(w.len()).enumerate() {
                look_tif.write(b + 1, w, data.to_vec())?;
            }
            o.ground.write(&mut ground_tif, w)?;
            stage.coverage.merge(&o.coverage);
            let seen = o.coverage.total();
            if seen.clear < seen.watched {
                stage.tiles_with_gaps.push(tile.id());
            }
            pb.inc(1);
            Ok(())
        },
    )?;
    pb.finish_and_clear();
    class_tif.close()?;
    ndvi_tif.close()?;
    look_tif.close()?;
    ground_tif.close()?;
    stage.tiles = tiles;
    Ok(stage)
}

/// The second pass over the tiles: every pixel judged through the engine's change step, the
/// signal runs archived and the change rasters written.
fn change_stage(
    ctx: &PeriodContext,
    pool: &rayon::ThreadPool,
    tiles: &[Tile],
    staged: &PeriodFiles,
    compared: Option<&ComparedLook>,
    change: &mut ChangeRasters,
) -> Result<()> {
    let mut signals_tif = GridTiff::create::<u8>(&staged.signals(), ctx.grid, 3, None)?;
    for_each_tile(
        Some(pool),
        tiles,
        |t| ctx.judge(t, staged, compared),
        |tile, (mut judged, parcel): (ChangeTile, Vec<i32>)| {
            let w = tile.core;
            for (b, data) in std::mem::take(&mut judged.runs).into_iter().enumerate() {
                signals_tif.write(b + 1, w, data)?;
            }
            change.write(w, judged, parcel)
        },
    )?;
    signals_tif.close()
}

/// Stable numbers and statuses from the ledger, which also re-checks rectified patches
/// against this period's land cover.
fn record_in_ledger(
    inputs: &PeriodInputs,
    layout: &OutputLayout,
    staged: &PeriodFiles,
    patches: &mut [Patch],
) -> Result<PeriodLedger> {
    let grid = &inputs.grid;
    let class_path = staged.class();
    let class_ds = Dataset::open(&class_path).in_file(&class_path, "check free disk space")?;
    let cultivated = |g: &gdal::vector::Geometry| -> Result<Option<f64>> {
        let window = grid.window_around(&g.envelope(), 0);
        let inside = rasterize(grid, window, std::slice::from_ref(g), &[1.0])?;
        let classes = read_grid_window::<u8>(&class_ds, 1, window, 0)?;
        Ok(grain_share(&classes, &inside))
    };
    let run_counties: Vec<String> = inputs
        .admin
        .counties
        .iter()
        .map(|c| c.code.clone())
        .collect();
    Ledger::open(&layout.ledger_file())?.record_period(
        inputs.period,
        &run_counties,
        patches,
        &inputs.cfg.ledger,
        &cultivated,
    )
}

/// Each county's patch files, in the three formats.
fn write_counties(
    inputs: &PeriodInputs,
    staged: &PeriodFiles,
    all_patches: &[Patch],
    coverage: &Coverage,
    opts: &RunOptions,
) -> Result<Vec<CountySummary>> {
    let mut counties = Vec::new();
    let pb = progress(inputs.admin.counties.len() as u64, "export", opts.quiet);
    for (k, county) in inputs.admin.counties.iter().enumerate() {
        let mine: Vec<Patch> = all_patches
            .iter()
            .filter(|p| p.county_code == county.code)
            .cloned()
            .collect();
        let entry = PeriodFiles::county_entry(&county.code);
        let files = write_county(
            &staged.dir().join(&entry),
            &PeriodFiles::county_stem(&county.code, inputs.period),
            &inputs.grid_srs,
            &mine,
            &inputs.cfg.output.shapefile_encoding,
            &[],
        )?;
        counties.push(CountySummary {
            code: county.code.clone(),
            name: county.name.clone(),
            patches: totals_by_type(&mine),
            coverage: CoverageSummary::of(coverage.county(k as u16 + 1)),
            files: files
                .iter()
                .map(|f| {
                    let name = f.file_name().unwrap_or_default();
                    entry.join(name).to_string_lossy().into_owned()
                })
                .collect(),
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(counties)
}

fn rules_text(cfg: &JobConfig, rules: &Rules) -> String {
    format!(
        "FNH: farmland built-up for {} consecutive periods; FLH: farmland under a non-grain crop, trees or water for {} consecutive periods (decided once {} earlier periods are archived); PH: farmland with no sign of cultivation ({}) for {} consecutive periods; minimum area (m2): FNH {}, FLH {}, PH {}",
        cfg.rules.fnh_min_periods,
        cfg.rules.flh_min_periods,
        rules.history_needed(ChangeType::FLH),
        rules.cultivation.describe(),
        cfg.rules.ph_min_periods,
        cfg.min_area_for("FNH"),
        cfg.min_area_for("FLH"),
        cfg.min_area_for("PH")
    )
}

/// Moves the staged results into place: the whole period, or only the counties of a county run.
fn commit(
    staging: StagingDir,
    target: &PeriodFiles,
    summary: &RunSummary,
    only: &[String],
) -> Result<()> {
    let json = serde_json::to_vec_pretty(summary).expect("serialisable");
    let staged = PeriodFiles::in_dir(staging.path());
    if only.is_empty() {
        std::fs::write(staged.summary(), &json).map_err(|e| Error::io(staging.path(), e))?;
        return staging.replace(target.dir());
    }
    let counties_dir = target.counties();
    std::fs::create_dir_all(&counties_dir).map_err(|e| Error::io(&counties_dir, e))?;
    clean_stale(&counties_dir)?;
    for c in &summary.counties {
        let entry = PeriodFiles::county_entry(&c.code);
        let county = PeriodFiles::in_dir(staging.path().join(&entry));
        std::fs::write(county.summary(), &json).map_err(|e| Error::io(staging.path(), e))?;
        staging.move_entry(&entry, &counties_dir.join(&c.code))?;
    }
    Ok(())
}

/// Consecutive periods before `period`, up to `reach`, whose archive entry exists; an entry
/// on another grid is an error.
fn archived_before(
    layout: &OutputLayout,
    period: Period,
    reach: usize,
    grid: &JobGrid,
) -> Result<usize> {
    let mut n = 0;
    for k in 1..=reach as i32 {
        let entry = layout.period(period.offset(-k));
        if !entry.archived() {
            break;
        }
        let class = entry.class();
        let ds = Dataset::open(&class)
            .map_err(|e| Error::input(&class, e.to_string(), "re-run that period"))?;
        if ds.raster_size() != (grid.width, grid.height)
            || ds.geo_transform()? != grid.geo_transform()
        {
            return Err(Error::input(&class, "the archived period lies on another grid than this job", "re-run the earlier periods with the current grid settings, or use a new output folder"));
        }
        if ds.raster_count() < 2 {
            return Err(Error::input(
                &class,
                "the archived period has no confidence band (written by an older gengbao)",
                "re-run that period",
            ));
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use crate::geo::composite::{byte_to_ndvi, ndvi_to_byte};

    #[test]
    fn ndvi_bytes_round_trip_to_a_hundredth() {
        for v in [-1.0f32, -0.37, 0.0, 0.25, 0.7, 1.0] {
            assert!((byte_to_ndvi(ndvi_to_byte(v)) - v).abs() <= 0.005, "{v}");
        }
        assert!(byte_to_ndvi(ndvi_to_byte(f32::NAN)).is_nan());
    }
}
