//! The city's land and the changes planted on it.
//!
//! Takes: the city's side and the generator's random stream. Gives: the land cover, field
//! parcels, brightness and roofs of every pixel ([`Land`]), the planted and passing changes
//! ([`PlantedChange`]) on its parcels, and the land cover of each period with them applied.

use super::map_layers::rect_polygon;
use super::SEAM_STEP;
use crate::domain::change::ChangeType;
use crate::domain::land_cover::LandCover;
use crate::error::Result;
use gdal::vector::Geometry;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Side of the square blocks that each hold one kind of land, in pixels.
const BLOCK: usize = 64;

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
pub(super) struct Parcel {
    pub(super) rect: (usize, usize, usize, usize),
    pub(super) dlbm: &'static str,
    pub(super) basic: bool,
    pub(super) phase: f32,
}

pub(super) struct Land {
    pub(super) size: usize,
    pub(super) class: Vec<u8>,
    /// parcel index + 1, 0 = none
    pub(super) parcel: Vec<u32>,
    /// per-pixel brightness factor (per parcel or block)
    pub(super) bright: Vec<f32>,
    /// built pixels with a roof spectrum
    pub(super) roof: Vec<bool>,
    pub(super) parcels: Vec<Parcel>,
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

/// Takes the city's side and the random stream; gives the land: blocks of one kind each,
/// roads between some of them, and a river.
pub(super) fn make_land(size: usize, rng: &mut ChaCha8Rng) -> Land {
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
    let blocks = size.div_ceil(BLOCK);
    for by in 0..blocks {
        for bx in 0..blocks {
            let (x0, y0) = (bx * BLOCK, by * BLOCK);
            let (x1, y1) = ((x0 + BLOCK).min(size), (y0 + BLOCK).min(size));
            let near_river = (y0..y1).any(|y| {
                let rx = river_x(size, phase, y);
                rx + 4 >= x0 && rx < x1 + 2
            });
            lay_block(&mut land, (x0, y0, x1, y1), near_river, rng);
        }
    }
    lay_roads(&mut land, blocks, rng);
    lay_river(&mut land, phase);
    land
}

/// Takes the city's side, the river's phase and a row; gives the river's western edge there.
fn river_x(size: usize, phase: f32, y: usize) -> usize {
    let t = y as f32 / size as f32;
    ((0.68 + 0.1 * (t * 5.0 + phase).sin()) * size as f32) as usize
}

impl Land {
    /// Takes a rectangle (end exclusive), a class and a brightness; gives them to its pixels.
    fn fill(&mut self, rect: (usize, usize, usize, usize), c: LandCover, b: f32) {
        let (x0, y0, x1, y1) = rect;
        for y in y0..y1 {
            for x in x0..x1 {
                self.class[y * self.size + x] = c.code();
                self.bright[y * self.size + x] = b;
            }
        }
    }
}

/// Takes a block's rectangle and whether the river is near; draws its kind of land and lays it.
fn lay_block(
    land: &mut Land,
    rect: (usize, usize, usize, usize),
    near_river: bool,
    rng: &mut ChaCha8Rng,
) {
    let (x0, y0, x1, y1) = rect;
    let zone: f32 = rng.gen();
    // Drawn for every block, cropland included, so that the stream stays as it was.
    let bright: f32 = rng.gen_range(0.92..1.08);
    if near_river || (x1 - x0) < 30 || (y1 - y0) < 30 {
        land.fill(
            rect,
            if zone < 0.5 {
                LandCover::Grass
            } else {
                LandCover::Forest
            },
            bright,
        );
    } else if zone < 0.58 {
        lay_cropland(land, rect, rng);
    } else if zone < 0.68 {
        land.fill(rect, LandCover::Forest, bright);
    } else if zone < 0.78 {
        lay_village(land, rect, bright, rng);
    } else if zone < 0.84 {
        lay_fish_ponds(land, rect, bright);
    } else if zone < 0.92 {
        land.fill(rect, LandCover::NonGrain, bright);
    } else {
        land.fill(rect, LandCover::Grass, bright);
    }
}

/// Takes a block's rectangle; lays grain parcels in it, with 1-px ridges between them and a
/// 1-px margin for roads.
fn lay_cropland(land: &mut Land, rect: (usize, usize, usize, usize), rng: &mut ChaCha8Rng) {
    let (x0, y0, x1, y1) = rect;
    let size = land.size;
    let mut fields = Vec::new();
    split_fields(rng, (x0 + 1, y0 + 1, x1 - 1, y1 - 1), &mut fields);
    let dlbm = ["0101", "0102", "0103"][rng.gen_range(0..3)];
    for (fx0, fy0, fx1, fy1) in fields {
        let rect = (fx0, fy0, fx1 - 1, fy1 - 1);
        let idx = land.parcels.len() as u32 + 1;
        let b: f32 = rng.gen_range(0.92..1.08);
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
}

/// Takes a block's rectangle; lays a village in it: built-up with trees and yards, some of it
/// roofed.
fn lay_village(
    land: &mut Land,
    rect: (usize, usize, usize, usize),
    bright: f32,
    rng: &mut ChaCha8Rng,
) {
    let (x0, y0, x1, y1) = rect;
    let size = land.size;
    land.fill(rect, LandCover::Built, bright);
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
}

/// Takes a block's rectangle; lays fish ponds in it, with grass dikes every 16 px.
fn lay_fish_ponds(land: &mut Land, rect: (usize, usize, usize, usize), bright: f32) {
    let (x0, y0, x1, y1) = rect;
    let size = land.size;
    land.fill(rect, LandCover::Water, bright);
    for y in y0..y1 {
        for x in x0..x1 {
            if (x - x0) % 16 == 0 || (y - y0) % 16 == 0 {
                land.class[y * size + x] = LandCover::Grass.code();
            }
        }
    }
}

/// Takes the number of blocks per side; lays 2-px roads in some corridors between blocks,
/// never over a parcel.
fn lay_roads(land: &mut Land, blocks: usize, rng: &mut ChaCha8Rng) {
    let size = land.size;
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
}

/// Takes the river's phase; lays the 4-px river over whatever lies there.
fn lay_river(land: &mut Land, phase: f32) {
    let size = land.size;
    for y in 0..size {
        let rx = river_x(size, phase, y);
        for x in rx..(rx + 4).min(size) {
            land.class[y * size + x] = LandCover::Water.code();
            land.parcel[y * size + x] = 0;
        }
    }
}

pub(super) fn plant_changes(
    land: &Land,
    periods: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<PlantedChange> {
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
pub(super) fn plant_passing(
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
pub(super) fn classes_at(land: &Land, changes: &[PlantedChange], p: usize) -> Vec<u8> {
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

impl PlantedChange {
    /// Its rectangle in the city's map coordinates.
    pub fn footprint(&self) -> Result<Geometry> {
        rect_polygon(self.rect)
    }
}
