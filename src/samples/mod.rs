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

use crate::domain::change::ChangeType;
use crate::domain::land_cover::LandCover;
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::geo::grid::JobGrid;
use crate::geo::raster::GridTiff;
use crate::geo::vector::{write_layer, FieldSpec, Format};
use crate::job::config::EXAMPLE;
use crate::job::staging::StagingDir;
use chrono::{Datelike, Duration, NaiveDate};
use gdal::spatial_ref::SpatialRef;
use gdal::vector::{FieldValue, Geometry};
use gdal_sys::OGRFieldType::{OFTInteger, OFTString};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

pub const EPSG: u32 = 32650;
const ORIGIN: (f64, f64) = (500_000.0, 3_500_000.0);
const RES: f64 = 10.0;
const BLOCK: usize = 64;
/// Changes are placed across multiples of this many pixels, so tilings of 128, 256 or 512 px
/// cut some of them.
pub const SEAM_STEP: usize = 128;
const ACQ_PER_PERIOD: usize = 4;

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

/// A planted change.
#[derive(Debug, Clone)]
pub struct PlantedChange {
    pub id: usize,
    pub kind: ChangeType,
    pub to: LandCover,
    /// Index of the first period showing it.
    pub onset: usize,
    /// Index of the first period back to the former land, for a passing change.
    pub until: Option<usize>,
    /// Pixel rectangle (x0, y0, x1, y1), end exclusive.
    pub rect: (usize, usize, usize, usize),
    pub parcel: usize,
    pub whole_parcel: bool,
}

#[derive(Debug, Clone)]
struct Parcel {
    rect: (usize, usize, usize, usize),
    dlbm: &'static str,
    basic: bool,
    phase: f32,
}

pub struct SampleCity {
    pub dir: PathBuf,
    pub job_config: PathBuf,
    pub periods: Vec<Period>,
    pub changes: Vec<PlantedChange>,
    /// Passing changes (with `until`), not to be flagged.
    pub passing: Vec<PlantedChange>,
}

// Endmember reflectances, bands B02 B03 B04 B05 B06 B07 B08 B8A B11 B12.
const CANOPY: [f32; 10] = [
    0.030, 0.070, 0.035, 0.110, 0.300, 0.380, 0.420, 0.440, 0.210, 0.100,
];
const FOREST: [f32; 10] = [
    0.022, 0.045, 0.022, 0.080, 0.230, 0.290, 0.320, 0.335, 0.130, 0.055,
];
const SOIL: [f32; 10] = [
    0.070, 0.100, 0.150, 0.180, 0.200, 0.215, 0.225, 0.235, 0.310, 0.250,
];
const LITTER: [f32; 10] = [
    0.060, 0.085, 0.130, 0.150, 0.180, 0.200, 0.220, 0.230, 0.300, 0.210,
];
const CONCRETE: [f32; 10] = [
    0.120, 0.130, 0.140, 0.150, 0.160, 0.165, 0.170, 0.175, 0.200, 0.180,
];
const ROOF: [f32; 10] = [
    0.140, 0.120, 0.090, 0.090, 0.100, 0.100, 0.110, 0.110, 0.130, 0.110,
];
const WATER: [f32; 10] = [
    0.060, 0.065, 0.045, 0.035, 0.020, 0.015, 0.012, 0.010, 0.006, 0.004,
];
/// Relative haze brightening per band (aerosol scattering falls with wavelength).
const HAZE: [f32; 10] = [1.0, 0.85, 0.72, 0.62, 0.55, 0.5, 0.45, 0.43, 0.2, 0.12];
const BANDS: [&str; 10] = [
    "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12",
];
const TEN_M: [bool; 10] = [
    true, true, true, false, false, false, true, false, false, false,
];

fn bump(doy: f32, centre: f32, sigma: f32) -> f32 {
    (-0.5 * ((doy - centre) / sigma).powi(2)).exp()
}

/// Green cover fraction of a class on a day of the year.
fn cover(class: LandCover, paddy: bool, doy: f32, phase: f32) -> f32 {
    let d = doy - phase;
    match class {
        LandCover::Grain if paddy => (0.85 * bump(d, 215.0, 30.0)).max(0.03),
        LandCover::Grain => {
            let winter: f32 = if !(75.0..=295.0).contains(&d) {
                0.15
            } else {
                0.0
            };
            winter
                .max(0.85 * bump(d, 110.0, 25.0))
                .max(0.85 * bump(d, 225.0, 22.0))
                .max(0.03)
        }
        LandCover::NonGrain => 0.62 + 0.1 * bump(doy, 190.0, 60.0),
        LandCover::Forest => 0.88 + 0.07 * bump(doy, 190.0, 60.0),
        LandCover::Grass => 0.1 + 0.4 * bump(doy, 200.0, 55.0),
        _ => 0.0,
    }
}

fn spectrum(class: LandCover, paddy: bool, roof: bool, doy: f32, phase: f32) -> [f32; 10] {
    let f = cover(class, paddy, doy, phase);
    let mix = |a: &[f32; 10], b: &[f32; 10]| std::array::from_fn(|k| f * a[k] + (1.0 - f) * b[k]);
    match class {
        LandCover::Grain | LandCover::NonGrain => mix(&CANOPY, &SOIL),
        LandCover::Grass => mix(&CANOPY, &LITTER),
        LandCover::Forest => mix(&FOREST, &LITTER),
        LandCover::Built if roof => ROOF,
        LandCover::Built => CONCRETE,
        LandCover::Water => WATER,
        LandCover::NoData => [0.0; 10],
    }
}

fn gauss(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller: one normal deviate from two uniforms.
    let u1: f32 = rng.gen_range(1e-7..1.0);
    let u2: f32 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

struct Land {
    size: usize,
    class: Vec<u8>,
    /// parcel index + 1, 0 = none
    parcel: Vec<u32>,
    /// per-pixel brightness factor (per parcel or block)
    bright: Vec<f32>,
    /// built pixels with a roof spectrum
    roof: Vec<bool>,
    parcels: Vec<Parcel>,
}

fn split_fields(
    rng: &mut ChaCha8Rng,
    r: (usize, usize, usize, usize),
    out: &mut Vec<(usize, usize, usize, usize)>,
) {
    let (x0, y0, x1, y1) = r;
    let (w, h) = (x1 - x0, y1 - y0);
    let can_x = w >= 28;
    let can_y = h >= 28;
    if (w > 40 || h > 40 || rng.gen_bool(0.3)) && (can_x || can_y) {
        if can_x && (w >= h || !can_y) {
            let s = x0 + rng.gen_range(13..=w - 13);
            split_fields(rng, (x0, y0, s, y1), out);
            split_fields(rng, (s, y0, x1, y1), out);
        } else {
            let s = y0 + rng.gen_range(13..=h - 13);
            split_fields(rng, (x0, y0, x1, s), out);
            split_fields(rng, (x0, s, x1, y1), out);
        }
    } else {
        out.push(r);
    }
}

fn make_land(size: usize, rng: &mut ChaCha8Rng) -> Land {
    let n = size * size;
    let mut land = Land {
        size,
        class: vec![LandCover::Grass.code(); n],
        parcel: vec![0; n],
        bright: vec![1.0; n],
        roof: vec![false; n],
        parcels: Vec::new(),
    };
    // A river meandering north-south.
    let phase: f32 = rng.gen_range(0.0..std::f32::consts::TAU);
    let river_x = |y: usize| -> usize {
        let t = y as f32 / size as f32;
        ((0.68 + 0.1 * (t * 5.0 + phase).sin()) * size as f32) as usize
    };
    let blocks = size.div_ceil(BLOCK);
    for by in 0..blocks {
        for bx in 0..blocks {
            let (x0, y0) = (bx * BLOCK, by * BLOCK);
            let (x1, y1) = ((x0 + BLOCK).min(size), (y0 + BLOCK).min(size));
            let near_river = (y0..y1).any(|y| {
                let rx = river_x(y);
                rx + 4 >= x0 && rx < x1 + 2
            });
            let zone: f32 = rng.gen();
            let bright = rng.gen_range(0.92..1.08);
            let fill = |land: &mut Land, c: LandCover, b: f32| {
                for y in y0..y1 {
                    for x in x0..x1 {
                        land.class[y * size + x] = c.code();
                        land.bright[y * size + x] = b;
                    }
                }
            };
            if near_river || (x1 - x0) < 30 || (y1 - y0) < 30 {
                fill(
                    &mut land,
                    if zone < 0.5 {
                        LandCover::Grass
                    } else {
                        LandCover::Forest
                    },
                    bright,
                );
            } else if zone < 0.58 {
                // Cropland: parcels with 1-px ridges, a 1-px margin for roads.
                let mut fields = Vec::new();
                split_fields(rng, (x0 + 1, y0 + 1, x1 - 1, y1 - 1), &mut fields);
                let dlbm = ["0101", "0102", "0103"][rng.gen_range(0..3)];
                for (fx0, fy0, fx1, fy1) in fields {
                    let rect = (fx0, fy0, fx1 - 1, fy1 - 1);
                    let idx = land.parcels.len() as u32 + 1;
                    let b = rng.gen_range(0.92..1.08);
                    for y in rect.1..rect.3 {
                        for x in rect.0..rect.2 {
                            land.class[y * size + x] = LandCover::Grain.code();
                            land.parcel[y * size + x] = idx;
                            land.bright[y * size + x] = b;
                        }
                    }
                    land.parcels.push(Parcel {
                        rect,
                        dlbm,
                        basic: rng.gen_bool(0.7),
                        phase: rng.gen_range(-12.0..12.0),
                    });
                }
            } else if zone < 0.68 {
                fill(&mut land, LandCover::Forest, bright);
            } else if zone < 0.78 {
                // Village: built-up with trees and yards.
                fill(&mut land, LandCover::Built, bright);
                for _ in 0..rng.gen_range(3..8) {
                    let (cx, cy) = (rng.gen_range(x0..x1), rng.gen_range(y0..y1));
                    let c = if rng.gen_bool(0.6) {
                        LandCover::Forest
                    } else {
                        LandCover::Grass
                    };
                    for y in cy.saturating_sub(3)..(cy + 3).min(y1) {
                        for x in cx.saturating_sub(3)..(cx + 3).min(x1) {
                            land.class[y * size + x] = c.code();
                        }
                    }
                }
                let roofs = rng.gen_bool(0.4);
                for y in y0..y1 {
                    for x in x0..x1 {
                        land.roof[y * size + x] = roofs && (x / 6 + y / 6) % 3 == 0;
                    }
                }
            } else if zone < 0.84 {
                // Fish ponds with dikes.
                fill(&mut land, LandCover::Water, bright);
                for y in y0..y1 {
                    for x in x0..x1 {
                        if (x - x0) % 16 == 0 || (y - y0) % 16 == 0 {
                            land.class[y * size + x] = LandCover::Grass.code();
                        }
                    }
                }
            } else if zone < 0.92 {
                fill(&mut land, LandCover::NonGrain, bright);
            } else {
                fill(&mut land, LandCover::Grass, bright);
            }
        }
    }
    // Roads in some corridors between blocks.
    for k in 1..blocks {
        let line = k * BLOCK;
        let horizontal = rng.gen_bool(0.35);
        let vertical = rng.gen_bool(0.35);
        for t in 0..size {
            for d in [line - 1, line] {
                if d >= size {
                    continue;
                }
                for i in [
                    horizontal.then_some(d * size + t),
                    vertical.then_some(t * size + d),
                ]
                .into_iter()
                .flatten()
                {
                    if land.parcel[i] == 0 {
                        land.class[i] = LandCover::Built.code();
                    }
                }
            }
        }
    }
    for y in 0..size {
        let rx = river_x(y);
        for x in rx..(rx + 4).min(size) {
            land.class[y * size + x] = LandCover::Water.code();
            land.parcel[y * size + x] = 0;
        }
    }
    land
}

fn plant_changes(land: &Land, periods: usize, rng: &mut ChaCha8Rng) -> Vec<PlantedChange> {
    let per_type = (land.size * land.size / 30_000).max(4);
    let big: Vec<usize> = (0..land.parcels.len())
        .filter(|&i| {
            let (x0, y0, x1, y1) = land.parcels[i].rect;
            (x1 - x0) >= 10 && (y1 - y0) >= 10
        })
        .collect();
    let straddles = |i: &usize| {
        let (x0, y0, x1, y1) = land.parcels[*i].rect;
        let cut = |a: usize, b: usize| (a / SEAM_STEP) != ((b - 1) / SEAM_STEP);
        cut(x0, x1) || cut(y0, y1)
    };
    let mut seam: Vec<usize> = big.iter().copied().filter(straddles).collect();
    let mut inner: Vec<usize> = big.iter().copied().filter(|i| !straddles(i)).collect();
    let mut used = Vec::new();
    let mut changes = Vec::new();
    let last_onset = |k: ChangeType| match k {
        ChangeType::FNH => periods - 1,
        ChangeType::FLH => periods.saturating_sub(3).max(1),
        // Abandonment is decidable after a year of periods.
        ChangeType::PH => periods.saturating_sub(6).max(1),
    };
    for kind in ChangeType::ALL {
        for j in 0..per_type {
            let pool = if j % 3 == 0 && !seam.is_empty() {
                &mut seam
            } else {
                &mut inner
            };
            if pool.is_empty() {
                break;
            }
            let parcel = pool.swap_remove(rng.gen_range(0..pool.len()));
            used.push(parcel);
            let (x0, y0, x1, y1) = land.parcels[parcel].rect;
            let to = match kind {
                ChangeType::FNH => LandCover::Built,
                ChangeType::FLH if rng.gen_bool(0.3) => LandCover::Water,
                ChangeType::FLH => LandCover::NonGrain,
                ChangeType::PH => LandCover::Grass,
            };
            let whole = kind != ChangeType::FNH || rng.gen_bool(0.3);
            let rect = if whole {
                (x0, y0, x1, y1)
            } else {
                // Part of the parcel, across a seam line when the parcel has one.
                let w = rng.gen_range(6..=(x1 - x0).min(16));
                let h = rng.gen_range(6..=(y1 - y0).min(16));
                let place = |a: usize, b: usize, len: usize, rng: &mut ChaCha8Rng| {
                    let line = (a / SEAM_STEP + 1) * SEAM_STEP;
                    if line < b {
                        (line.saturating_sub(len / 2)).clamp(a, b - len)
                    } else {
                        rng.gen_range(a..=b - len)
                    }
                };
                let px = place(x0, x1, w, rng);
                let py = place(y0, y1, h, rng);
                (px, py, px + w, py + h)
            };
            changes.push(PlantedChange {
                id: changes.len() + 1,
                kind,
                to,
                onset: rng.gen_range(1..=last_onset(kind)),
                until: None,
                rect,
                parcel,
                whole_parcel: whole,
            });
        }
    }
    changes
}

/// Passing changes on whole parcels that no planted change uses: fallow for two periods, then
/// cultivated again; flooded for one period. From their own random stream, so that a seed
/// gives the same planted changes as before they existed.
fn plant_passing(
    land: &Land,
    periods: usize,
    changes: &[PlantedChange],
    seed: u64,
) -> Vec<PlantedChange> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5A55_1E55);
    let mut free: Vec<usize> = (0..land.parcels.len())
        .filter(|&i| {
            let (x0, y0, x1, y1) = land.parcels[i].rect;
            (x1 - x0) >= 10 && (y1 - y0) >= 10 && changes.iter().all(|c| c.parcel != i)
        })
        .collect();
    let per_kind = (land.size * land.size / 60_000).max(2);
    let mut out = Vec::new();
    for (kind, to, lasts) in [
        (ChangeType::PH, LandCover::Grass, 2),
        (ChangeType::FLH, LandCover::Water, 1),
    ] {
        for _ in 0..per_kind {
            if free.is_empty() || periods < lasts + 2 {
                break;
            }
            let parcel = free.swap_remove(rng.gen_range(0..free.len()));
            let onset = rng.gen_range(1..=periods - lasts - 1);
            out.push(PlantedChange {
                id: out.len() + 1,
                kind,
                to,
                onset,
                until: Some(onset + lasts),
                rect: land.parcels[parcel].rect,
                parcel,
                whole_parcel: true,
            });
        }
    }
    out
}

/// Land cover of every pixel in period `p` (index from the first period).
fn classes_at(land: &Land, changes: &[PlantedChange], p: usize) -> Vec<u8> {
    let mut c = land.class.clone();
    for ch in changes
        .iter()
        .filter(|c| c.onset <= p && c.until.is_none_or(|u| p < u))
    {
        let (x0, y0, x1, y1) = ch.rect;
        for y in y0..y1 {
            for x in x0..x1 {
                c[y * land.size + x] = ch.to.code();
            }
        }
    }
    c
}

fn acquisition_dates(period: Period, rng: &mut ChaCha8Rng) -> Vec<NaiveDate> {
    let days = (period.last_day() - period.first_day()).num_days();
    (0..ACQ_PER_PERIOD)
        .map(|k| {
            let slot = days as f64 / ACQ_PER_PERIOD as f64;
            let off = (slot * k as f64 + rng.gen_range(0.15..0.85) * slot) as i64;
            period.first_day() + Duration::days(off)
        })
        .collect()
}

struct Sky {
    /// 0 clear, 1 thin haze (unflagged), 2 cloud, 3 shadow, 4 thick haze (flagged)
    state: Vec<u8>,
    haze: Vec<f32>,
}

fn make_sky(size: usize, clear: bool, rng: &mut ChaCha8Rng) -> Sky {
    let n = size * size;
    let mut field = vec![0f32; n];
    if !clear {
        let heavy = rng.gen_bool(0.4);
        let blobs = if heavy {
            rng.gen_range(5..10)
        } else {
            rng.gen_range(2..5)
        };
        for _ in 0..blobs {
            let (cx, cy) = (rng.gen_range(0..size) as f32, rng.gen_range(0..size) as f32);
            let r = if heavy {
                rng.gen_range(30.0..90.0)
            } else {
                rng.gen_range(12.0..40.0)
            } * size as f32
                / 768.0;
            let reach = (r * 2.5) as isize;
            for y in (cy as isize - reach).max(0)..(cy as isize + reach).min(size as isize) {
                for x in (cx as isize - reach).max(0)..(cx as isize + reach).min(size as isize) {
                    let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                    let v = (-d2 / (2.0 * r * r)).exp();
                    let i = y as usize * size + x as usize;
                    field[i] = field[i].max(v);
                }
            }
        }
    }
    let (sx, sy) = (12usize, 8usize);
    let mut state = vec![0u8; n];
    let mut haze = vec![0f32; n];
    for y in 0..size {
        for x in 0..size {
            let i = y * size + x;
            let c = field[i];
            if c > 0.5 {
                state[i] = 2;
            } else if x >= sx && y >= sy && field[(y - sy) * size + x - sx] > 0.5 {
                state[i] = 3;
            } else if c > 0.4 {
                // Thick haze: the product flags it as medium-probability cloud.
                state[i] = 4;
            } else if c > 0.3 {
                // Thin haze the quality band misses.
                state[i] = 1;
                haze[i] = (c - 0.3) / 0.1;
            }
        }
    }
    Sky { state, haze }
}

fn scl_code(class: LandCover, sky: u8) -> u16 {
    match (sky, class) {
        (2, _) => 9,
        (4, _) => 8,
        (3, _) => 3,
        (_, LandCover::Water) => 6,
        (_, LandCover::Built) => 5,
        _ => 4,
    }
}

/// Writes a GeoTIFF laid on `grid` with one band of `data`.
fn write_tif<T: gdal::raster::GdalType + Copy>(
    path: &Path,
    grid: &JobGrid,
    data: Vec<T>,
    nodata: Option<f64>,
) -> Result<()> {
    let mut t = GridTiff::create::<T>(path, grid, 1, nodata)?;
    t.write(1, grid.full_window(), data)?;
    t.close()
}

fn grid_at(size: usize, res: f64, wkt: &str) -> JobGrid {
    JobGrid {
        crs_wkt: wkt.to_string(),
        origin_x: ORIGIN.0,
        origin_y: ORIGIN.1,
        resolution: res,
        width: size,
        height: size,
        tile_size: 512,
        halo: 0,
    }
}

#[allow(clippy::too_many_arguments)]
fn write_acquisition(
    dir: &Path,
    date: NaiveDate,
    classes: &[u8],
    land: &Land,
    wkt: &str,
    seed: u64,
    clear: bool,
) -> Result<()> {
    let size = land.size;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let sky = make_sky(size, clear, &mut rng);
    let doy = date.ordinal() as f32;
    let n = size * size;
    let mut refl: Vec<[f32; 10]> = vec![[0.0; 10]; n];
    for i in 0..n {
        let class = LandCover::from_code(classes[i]);
        let p = land.parcel[i] as usize;
        let (paddy, phase) = if p > 0 {
            (
                land.parcels[p - 1].dlbm == "0101",
                land.parcels[p - 1].phase,
            )
        } else {
            (false, 0.0)
        };
        let mut s = spectrum(class, paddy, land.roof[i], doy, phase);
        let b = land.bright[i];
        for v in s.iter_mut() {
            *v = (*v * b * (1.0 + 0.03 * gauss(&mut rng)) + 0.004 * gauss(&mut rng)).max(0.0005);
        }
        match sky.state[i] {
            2 => {
                s = std::array::from_fn(|k| {
                    0.45 + 0.05 * (k as f32 / 10.0) + 0.02 * gauss(&mut rng)
                })
            }
            3 => s.iter_mut().for_each(|v| *v *= 0.35),
            // Haze scatters short wavelengths most.
            1 => s
                .iter_mut()
                .enumerate()
                .for_each(|(k, v)| *v += 0.04 * sky.haze[i] * HAZE[k]),
            4 => s
                .iter_mut()
                .enumerate()
                .for_each(|(k, v)| *v += 0.12 * HAZE[k]),
            _ => {}
        }
        refl[i] = s;
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let stamp = date.format("%Y%m%d").to_string();
    let g10 = grid_at(size, RES, wkt);
    let half = size.div_ceil(2);
    let g20 = grid_at(half, RES * 2.0, wkt);
    // Like products of processing baseline 04.00 on: DN = reflectance x 10000 + 1000.
    let dn = |v: f32| (v * 10_000.0 + 1000.0).round().clamp(1.0, 65_535.0) as u16;
    for (k, band) in BANDS.iter().enumerate() {
        let (data, grid, tag) = if TEN_M[k] {
            (
                refl.iter().map(|s| dn(s[k])).collect::<Vec<u16>>(),
                &g10,
                "10m",
            )
        } else {
            let mut d = vec![0u16; half * half];
            for y in 0..half {
                for x in 0..half {
                    let (mut sum, mut cnt) = (0f32, 0f32);
                    for (yy, xx) in [
                        (2 * y, 2 * x),
                        (2 * y, 2 * x + 1),
                        (2 * y + 1, 2 * x),
                        (2 * y + 1, 2 * x + 1),
                    ] {
                        if yy < size && xx < size {
                            sum += refl[yy * size + xx][k];
                            cnt += 1.0;
                        }
                    }
                    d[y * half + x] = dn(sum / cnt);
                }
            }
            (d, &g20, "20m")
        };
        write_tif(
            &dir.join(format!("T50SKE_{stamp}_{band}_{tag}.tif")),
            grid,
            data,
            Some(0.0),
        )?;
    }
    let scl: Vec<u8> = (0..half * half)
        .map(|j| {
            let (y, x) = ((j / half) * 2, (j % half) * 2);
            scl_code(
                LandCover::from_code(classes[y * size + x]),
                sky.state[y * size + x],
            ) as u8
        })
        .collect();
    write_tif(
        &dir.join(format!("T50SKE_{stamp}_SCL_20m.tif")),
        &g20,
        scl,
        None,
    )
}

/// The two counties: split at a wavy north-south border.
fn county_polygons(size: usize) -> Result<[Geometry; 2]> {
    let border = |y: usize| (0.45 + 0.06 * (y as f64 / size as f64 * 7.0).sin()) * size as f64;
    let to_map = |x: f64, y: f64| (ORIGIN.0 + x * RES, ORIGIN.1 - y * RES);
    let mut ys: Vec<usize> = (0..=size).step_by(8).chain(std::iter::once(size)).collect();
    ys.dedup();
    let ring = |pts: Vec<(f64, f64)>| -> Result<Geometry> {
        let wkt = format!(
            "POLYGON(({}))",
            pts.iter()
                .chain(pts.first())
                .map(|(x, y)| format!("{x} {y}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        Ok(Geometry::from_wkt(&wkt)?)
    };
    let mut west = vec![to_map(0.0, 0.0)];
    for &y in &ys {
        west.push(to_map(border(y), y as f64));
    }
    west.push(to_map(0.0, size as f64));
    let east_ring = {
        let mut pts = vec![to_map(size as f64, 0.0)];
        for &y in &ys {
            pts.push(to_map(border(y), y as f64));
        }
        pts.push(to_map(size as f64, size as f64));
        pts.reverse();
        pts
    };
    Ok([ring(west)?, ring(east_ring)?])
}

impl PlantedChange {
    /// Its rectangle in the city's map coordinates.
    pub fn footprint(&self) -> Result<Geometry> {
        rect_polygon(self.rect)
    }
}

fn rect_polygon(r: (usize, usize, usize, usize)) -> Result<Geometry> {
    let (x0, y0) = (ORIGIN.0 + r.0 as f64 * RES, ORIGIN.1 - r.1 as f64 * RES);
    let (x1, y1) = (ORIGIN.0 + r.2 as f64 * RES, ORIGIN.1 - r.3 as f64 * RES);
    Ok(Geometry::from_wkt(&format!(
        "POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"
    ))?)
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

    // Vectors.
    let [west, east] = county_polygons(opts.size)?;
    let counties = [(west, "320901", "西河县"), (east, "320902", "东湖县")];
    let text = |name, alias| FieldSpec {
        name,
        ty: OFTString,
        width: 0,
        alias,
    };
    // Counties and townships: an administrative code and name per polygon.
    let admin_fields = [text("XZQDM", "行政区代码"), text("XZQMC", "行政区名称")];
    let admin_row = |g: Geometry, code: String, name: String| {
        (
            g,
            vec![FieldValue::StringValue(code), FieldValue::StringValue(name)],
        )
    };
    write_layer(
        &dir.join("admin.gpkg"),
        Format::GeoPackage,
        "counties",
        &srs,
        &admin_fields,
        counties
            .iter()
            .map(|(g, code, name)| admin_row(g.clone(), code.to_string(), name.to_string())),
        "UTF-8",
    )?;
    // Townships: each county's part north and south of the middle row.
    let middle = ORIGIN.1 - opts.size as f64 * RES / 2.0;
    let (x0, x1) = (ORIGIN.0, ORIGIN.0 + opts.size as f64 * RES);
    let halves = [
        ("北", Geometry::bbox(x0, middle, x1, ORIGIN.1)?),
        (
            "南",
            Geometry::bbox(x0, ORIGIN.1 - opts.size as f64 * RES, x1, middle)?,
        ),
    ];
    let mut townships = Vec::new();
    for (county, code, name) in &counties {
        for (k, (side, half)) in halves.iter().enumerate() {
            let part = county.intersection(half).ok_or_else(|| {
                Error::usage("a county cannot be cut into townships", "report this bug")
            })?;
            townships.push(admin_row(
                part,
                format!("{code}{:03}", k + 1),
                format!("{}{side}镇", name.trim_end_matches('县')),
            ));
        }
    }
    write_layer(
        &dir.join("townships.gpkg"),
        Format::GeoPackage,
        "townships",
        &srs,
        &admin_fields,
        townships,
        "UTF-8",
    )?;
    let parcels = land
        .parcels
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = match p.dlbm {
                "0101" => "水田",
                "0102" => "水浇地",
                _ => "旱地",
            };
            Ok((
                rect_polygon(p.rect)?,
                vec![
                    FieldValue::StringValue(format!("3209{:09}", i + 1)),
                    FieldValue::StringValue(p.dlbm.into()),
                    FieldValue::StringValue(name.into()),
                    FieldValue::IntegerValue(i32::from(p.basic)),
                ],
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let farm_fields = [
        text("BSM", "标识码"),
        text("DLBM", "地类编码"),
        text("DLMC", "地类名称"),
        FieldSpec {
            name: "JBNT",
            ty: OFTInteger,
            width: 0,
            alias: "永久基本农田",
        },
    ];
    write_layer(
        &dir.join("farmland.gpkg"),
        Format::GeoPackage,
        "farmland",
        &srs,
        &farm_fields,
        parcels,
        "UTF-8",
    )?;
    let truth_rows = |list: &[PlantedChange]| {
        list.iter()
            .map(|c| {
                Ok((
                    rect_polygon(c.rect)?,
                    vec![
                        FieldValue::IntegerValue(c.id as i32),
                        FieldValue::StringValue(c.kind.code().into()),
                        FieldValue::IntegerValue(c.to.code().into()),
                        FieldValue::StringValue(periods[c.onset].to_string()),
                        FieldValue::StringValue(format!("3209{:09}", c.parcel + 1)),
                        FieldValue::IntegerValue(i32::from(c.whole_parcel)),
                        FieldValue::StringValue(
                            c.until.map_or(String::new(), |u| periods[u].to_string()),
                        ),
                    ],
                ))
            })
            .collect::<Result<Vec<_>>>()
    };
    let truth_fields = [
        FieldSpec {
            name: "BH",
            ty: OFTInteger,
            width: 0,
            alias: "编号",
        },
        text("BHLX", "变化类型"),
        FieldSpec {
            name: "HDL",
            ty: OFTInteger,
            width: 0,
            alias: "后地类",
        },
        text("QSQS", "起始时相"),
        text("BSM", "耕地标识码"),
        FieldSpec {
            name: "ZTB",
            ty: OFTInteger,
            width: 0,
            alias: "整图斑",
        },
        text("JSQS", "恢复时相"),
    ];
    for (file, layer, list) in [
        ("changes.gpkg", "changes", &changes),
        ("passing.gpkg", "passing", &passing),
    ] {
        write_layer(
            &dir.join("truth").join(file),
            Format::GeoPackage,
            layer,
            &srs,
            &truth_fields,
            truth_rows(list)?,
            "UTF-8",
        )?;
    }

    // Rasters: truth per period, then the imagery, one acquisition per task.
    let g10 = grid_at(opts.size, RES, &wkt);
    let class_per_period: Vec<Vec<u8>> = (0..periods.len())
        .map(|k| classes_at(&land, &every, k))
        .collect();
    let mut jobs = Vec::new();
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
                    change[y * opts.size + x] = ch.kind.flag();
                }
            }
        }
        write_tif(
            &dir.join("truth").join(format!("change_{period}.tif")),
            &g10,
            change,
            None,
        )?;
        let dates = acquisition_dates(period, &mut rng);
        let clear_one = rng.gen_range(0..dates.len());
        for (j, date) in dates.into_iter().enumerate() {
            jobs.push((k, date, j == clear_one, rng.gen::<u64>()));
        }
    }
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
