//! The city seen from orbit: spectra, skies and acquisitions.
//!
//! Takes: the land, its land cover in a period and an acquisition's date and seed. Gives: the
//! acquisition's Sentinel-2 L2A-like band files (10 m and 20 m DN, and SCL) with clouds, haze
//! and shadows, and the dates of a period's acquisitions.

use super::land::Land;
use super::{ORIGIN, RES};
use crate::domain::land_cover::LandCover;
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::geo::grid::JobGrid;
use crate::geo::raster::GridTiff;
use chrono::{Datelike, Duration, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

const ACQ_PER_PERIOD: usize = 4;

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

pub(super) fn acquisition_dates(period: Period, rng: &mut ChaCha8Rng) -> Vec<NaiveDate> {
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
pub(super) fn write_tif<T: gdal::raster::GdalType + Copy>(
    path: &Path,
    grid: &JobGrid,
    data: Vec<T>,
    nodata: Option<f64>,
) -> Result<()> {
    let mut t = GridTiff::create::<T>(path, grid, 1, nodata)?;
    t.write(1, grid.full_window(), data)?;
    t.close()
}

pub(super) fn grid_at(size: usize, res: f64, wkt: &str) -> JobGrid {
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

/// Takes an acquisition's folder, date, land cover and seed (and whether it is the period's
/// clear one); writes its band files and its SCL.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_acquisition(
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
    // The sky first: the reflectances draw from the stream after it.
    let sky = make_sky(size, clear, &mut rng);
    let refl = reflectances(land, classes, &sky, date.ordinal() as f32, &mut rng);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let stamp = date.format("%Y%m%d").to_string();
    let g10 = grid_at(size, RES, wkt);
    let half = size.div_ceil(2);
    let g20 = grid_at(half, RES * 2.0, wkt);
    for (k, band) in BANDS.iter().enumerate() {
        let (data, grid, tag) = if TEN_M[k] {
            (
                refl.iter().map(|s| dn(s[k])).collect::<Vec<u16>>(),
                &g10,
                "10m",
            )
        } else {
            (band_at_20m(&refl, size, k), &g20, "20m")
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

/// Takes the land, its land cover, the sky and the day of the year; gives every pixel's
/// reflectance in the ten bands, with noise, clouds, shadows and haze, drawn pixel by pixel.
fn reflectances(
    land: &Land,
    classes: &[u8],
    sky: &Sky,
    doy: f32,
    rng: &mut ChaCha8Rng,
) -> Vec<[f32; 10]> {
    let n = land.size * land.size;
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
            *v = (*v * b * (1.0 + 0.03 * gauss(rng)) + 0.004 * gauss(rng)).max(0.0005);
        }
        match sky.state[i] {
            2 => s = std::array::from_fn(|k| 0.45 + 0.05 * (k as f32 / 10.0) + 0.02 * gauss(rng)),
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
    refl
}

/// Takes a reflectance; gives its DN as products of processing baseline 04.00 on store it:
/// reflectance x 10000 + 1000.
fn dn(v: f32) -> u16 {
    (v * 10_000.0 + 1000.0).round().clamp(1.0, 65_535.0) as u16
}

/// Takes the 10 m reflectances and a band index; gives the band at 20 m, the DN of the mean
/// of each 2 x 2 block (of the pixels inside the city at its edge).
fn band_at_20m(refl: &[[f32; 10]], size: usize, k: usize) -> Vec<u16> {
    let half = size.div_ceil(2);
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
    d
}
