//! The sample generator: a synthetic city that looks like real inputs, with planted changes
//! and their truth, deterministic for a seed.
//!
//! Gives, under the output folder:
//! - `admin.gpkg` (layer `counties`: XZQDM, XZQMC): two counties split by a wavy border;
//! - `townships.gpkg` (layer `townships`: XZQDM, XZQMC): each county cut into a northern and a
//!   southern township;
//! - `farmland.gpkg` (layer `farmland`: BSM, DLBM 0101/0102/0103, DLMC, JBNT): field parcels;
//! - `imagery/<acquisition>/T50SKE_<date>_<band>_<res>.tif`: Sentinel-2 L2A-like acquisitions,
//!   four per bimonthly period, bands B02 B03 B04 B08 at 10 m and B05 B06 B07 B8A B11 B12 and
//!   SCL at 20 m, UTM 50N, DN = reflectance x 10000 + 1000 (baseline 04.00), with clouds,
//!   haze and shadows;
//! - `truth/class_<period>.tif`, `truth/change_<period>.tif` and `truth/changes.gpkg` (planted
//!   changes with type BHLX and onset period QSQS);
//! - `truth/passing.gpkg`: land that changes for a while and comes back, which no rule may
//!   flag (BHLX names the type it could be mistaken for): a parcel left fallow for two periods
//!   and then cultivated again (PH), a parcel flooded for one period (FLH);
//! - `job.toml`, a job config for the city.
//!
//! The land: 64-px blocks of cropland (split into parcels with ridges), forest, villages,
//! fish ponds, orchards and grass, 2-px roads between blocks, a river. Spectra are linear
//! mixtures of endmembers (green canopy, forest canopy, soil, litter, concrete, roof, water)
//! following a phenology per class: double-cropped wheat and maize or single rice with harvest
//! and tillage, evergreen orchards and forest, grass with a soft summer peak.

mod imagery;
mod land;
mod map_layers;

pub use land::PlantedChange;

use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::job::config::EXAMPLE;
use crate::job::staging::StagingDir;
use chrono::NaiveDate;
use gdal::spatial_ref::SpatialRef;
use imagery::{acquisition_dates, grid_at, write_acquisition, write_tif};
use land::{classes_at, make_land, plant_changes, plant_passing};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

pub const EPSG: u32 = 32650;
const ORIGIN: (f64, f64) = (500_000.0, 3_500_000.0);
const RES: f64 = 10.0;
/// Changes are placed across multiples of this many pixels, so tilings of 128, 256 or 512 px
/// cut some of them.
pub(crate) const SEAM_STEP: usize = 128;

#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub size: usize,
    pub periods: usize,
    pub seed: u64,
    pub start: Period,
    /// Tile size written into the generated job config.
    pub tile_size: usize,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            size: 768,
            periods: 8,
            seed: 1,
            start: Period {
                year: 2025,
                index: 1,
            },
            tile_size: 512,
        }
    }
}

pub struct SampleCity {
    pub dir: PathBuf,
    pub job_config: PathBuf,
    pub periods: Vec<Period>,
    pub changes: Vec<PlantedChange>,
    /// Passing changes (with `until`), not to be flagged.
    pub passing: Vec<PlantedChange>,
}

/// The config text with the commented-out section `header` switched on: its header line and
/// the commented lines that follow it, up to a blank line.
fn uncomment_section(config: &str, header: &str) -> String {
    let commented_header = format!("# {header}");
    let mut inside = false;
    let mut out = String::new();
    for line in config.lines() {
        if line.starts_with(&commented_header) {
            inside = true;
        } else if !line.starts_with("# ") {
            inside = false;
        }
        out += if inside { &line[2..] } else { line };
        out += "\n";
    }
    out
}

/// A hand-made 非农化 patch: a square of `side` metres at (`x`, `y`) in the job's grid CRS, of
/// county `county`, seen in `period` (benchmarks and tests of the ledger, which need many
/// patches without running a period).
pub fn square_patch(
    county: &str,
    x: f64,
    y: f64,
    side: f64,
    period: &str,
) -> crate::engine::patches::Patch {
    use crate::domain::change::ChangeType;
    use crate::domain::land_cover::LandCover;
    let wkt = format!(
        "POLYGON(({x} {y},{} {y},{} {},{x} {},{x} {y}))",
        x + side,
        x + side,
        y + side,
        y + side
    );
    let geometry = gdal::vector::Geometry::from_wkt(&wkt).expect("a square is valid WKT");
    let area = geometry.area();
    crate::engine::patches::Patch {
        tbbh: String::new(),
        county_code: county.into(),
        county_name: format!("{county}县"),
        township_code: String::new(),
        township_name: String::new(),
        change: ChangeType::FNH,
        before: LandCover::Grain,
        after: LandCover::Built,
        before_period: "基线".into(),
        after_period: period.into(),
        image_dates: "20260101-20260201".into(),
        first_seen: period.into(),
        persisted: 1,
        area_m2: area,
        area_mu: area / crate::engine::patches::SQM_PER_MU,
        farmland_m2: area,
        basic_farmland_m2: 0.0,
        centroid: (x + side / 2.0, y + side / 2.0),
        lon_lat: (120.0, 32.0),
        confidence: 0.9,
        model_version: "test".into(),
        parcel: 1,
        parcel_id: String::new(),
        status: crate::domain::status::Status::Detected,
        geometry,
    }
}

/// Generates the sample city into `out` (replacing it).
pub fn generate(out: &Path, opts: &SampleOptions) -> Result<SampleCity> {
    if opts.size < 128 || opts.periods < 3 {
        return Err(Error::usage(
            format!("size {} / periods {} too small", opts.size, opts.periods),
            "use --size >= 128 and --periods >= 3",
        ));
    }
    // Only a previous sample city may be replaced: never delete a user's folder.
    let is_city = out.join("job.toml").exists() && out.join("truth").join("changes.gpkg").exists();
    let is_empty = std::fs::read_dir(out)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if !is_city && !is_empty {
        return Err(Error::input(
            out,
            "exists, is not empty and is not a sample city",
            "choose a new or empty folder for --out",
        ));
    }
    let staging = StagingDir::beside(out)?;
    std::fs::create_dir_all(staging.path().join("truth"))
        .map_err(|e| Error::io(staging.path(), e))?;
    let result = write_city(staging.path(), opts)?;
    staging.replace(out)?;
    let (periods, changes, passing) = result;
    Ok(SampleCity {
        dir: out.to_path_buf(),
        job_config: out.join("job.toml"),
        periods,
        changes,
        passing,
    })
}

/// Writes the city; gives its periods, planted changes and passing changes.
type CityParts = (Vec<Period>, Vec<PlantedChange>, Vec<PlantedChange>);

/// Takes the staging folder and the options; writes the whole city into it.
fn write_city(dir: &Path, opts: &SampleOptions) -> Result<CityParts> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let srs = SpatialRef::from_epsg(EPSG)?;
    let wkt = srs.to_wkt()?;
    let land = make_land(opts.size, &mut rng);
    let changes = plant_changes(&land, opts.periods, &mut rng);
    let passing = plant_passing(&land, opts.periods, &changes, opts.seed);
    let every: Vec<PlantedChange> = changes.iter().chain(&passing).cloned().collect();
    let periods: Vec<Period> = (0..opts.periods)
        .map(|k| opts.start.offset(k as i32))
        .collect();

    map_layers::write_admin_layers(dir, &srs, opts.size)?;
    map_layers::write_farmland(dir, &srs, &land)?;
    map_layers::write_truth_layers(dir, &srs, &changes, &passing, &periods)?;

    // Rasters: truth per period, then the imagery, one acquisition per task.
    let class_per_period: Vec<Vec<u8>> = (0..periods.len())
        .map(|k| classes_at(&land, &every, k))
        .collect();
    write_truth_rasters(dir, &wkt, opts.size, &periods, &class_per_period, &changes)?;
    let jobs = schedule_acquisitions(&periods, &mut rng);
    jobs.par_iter().try_for_each(|(k, date, clear, seed)| {
        let name = format!("S2B_MSIL2A_{}T030549_T50SKE", date.format("%Y%m%d"));
        write_acquisition(
            &dir.join("imagery").join(name),
            *date,
            &class_per_period[*k],
            &land,
            &wkt,
            *seed,
            *clear,
        )
    })?;

    let config = uncomment_section(EXAMPLE, "[townships]").replace(
        "tile_size = 512 ",
        &format!("tile_size = {} ", opts.tile_size),
    );
    std::fs::write(dir.join("job.toml"), config).map_err(|e| Error::io(dir.join("job.toml"), e))?;
    Ok((periods, changes, passing))
}

/// Takes the city's side, the land cover of every period and the planted changes; writes
/// `truth/class_<period>.tif` and `truth/change_<period>.tif` (each change's flag from its
/// onset on).
fn write_truth_rasters(
    dir: &Path,
    wkt: &str,
    size: usize,
    periods: &[Period],
    class_per_period: &[Vec<u8>],
    changes: &[PlantedChange],
) -> Result<()> {
    let g10 = grid_at(size, RES, wkt);
    for (k, &period) in periods.iter().enumerate() {
        let classes = &class_per_period[k];
        write_tif(
            &dir.join("truth").join(format!("class_{period}.tif")),
            &g10,
            classes.clone(),
            Some(0.0),
        )?;
        let mut change = vec![0u8; classes.len()];
        for ch in changes.iter().filter(|c| c.onset <= k) {
            let (x0, y0, x1, y1) = ch.rect;
            for y in y0..y1 {
                for x in x0..x1 {
                    change[y * size + x] = ch.kind.flag();
                }
            }
        }
        write_tif(
            &dir.join("truth").join(format!("change_{period}.tif")),
            &g10,
            change,
            None,
        )?;
    }
    Ok(())
}

/// Takes the periods and the city's random stream; gives every acquisition to write: its
/// period's index, its date, whether it is the period's one clear sky, and its own seed.
fn schedule_acquisitions(
    periods: &[Period],
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, NaiveDate, bool, u64)> {
    let mut jobs = Vec::new();
    for (k, &period) in periods.iter().enumerate() {
        let dates = acquisition_dates(period, rng);
        let clear_one = rng.gen_range(0..dates.len());
        for (j, date) in dates.into_iter().enumerate() {
            jobs.push((k, date, j == clear_one, rng.gen::<u64>()));
        }
    }
    jobs
}
