//! Whether the ground changed between two looks, decided over a whole scene: written once for
//! `detect` (the earlier image against the later) and `run` (a period's composite against the
//! archived look it is compared with).
//!
//! Takes: a grid's tiles and a reader giving both looks of a tile (band × pixel, NaN where a
//! look did not see a pixel or the pixel is not watched). Gives: the scene's [`SceneChange`]
//! (each band's standardisation in each look, and the change threshold of the 3 × 3 mean
//! magnitude, from [`crate::domain::spectral_change`]), which then decides each tile's
//! pixels.

use crate::domain::spectral_change::{change_threshold, smooth_3x3, BandMoments, Standardisation};
use crate::engine::tiles::in_tile;
use crate::error::Result;
use crate::geo::grid::Tile;
use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

/// Both looks of one tile's core: band × pixel, `width` pixels a row.
pub struct TileLooks {
    pub before: Array2<f32>,
    pub after: Array2<f32>,
    pub width: usize,
}

/// A pixel's decision where a look did not see it.
pub const UNOBSERVED: u8 = 255;

/// Pixels seen in both looks that teach the scene's change statistics: every tile of a scene
/// up to this size, tiles spread over the scene beyond (a million pixels give band moments
/// and a 256-bin histogram to well under a per cent).
const SCENE_SAMPLE_PIXELS: usize = 1_000_000;

/// The scene's spectral change decision: how each band is standardised, and the threshold of
/// the smoothed magnitude above which the ground changed. `None` threshold: the scene showed
/// no spread of magnitudes (e.g. the same image twice), so nothing changed.
#[derive(Debug, Clone)]
pub struct SceneChange {
    standardisation: Standardisation,
    threshold: Option<f32>,
}

impl SceneChange {
    /// Learns the scene's statistics from a sample of `tiles`: the band moments of both looks,
    /// then the threshold of the smoothed magnitudes they give. Tiles are taken in an order
    /// that spreads them over the scene, a round at a time, until the pixels seen in both
    /// looks reach [`SCENE_SAMPLE_PIXELS`] or every tile is read. `None` when fewer than two
    /// pixels were seen in both; the count is given back either way.
    pub fn learn(
        tiles: &[Tile],
        looks: impl Fn(&Tile) -> Result<TileLooks> + Sync,
    ) -> Result<(Option<SceneChange>, u64)> {
        let order = spread_order(tiles.len());
        let tile_pixels = tiles.first().map_or(1, |t| t.core.len().max(1));
        let per_round = SCENE_SAMPLE_PIXELS.div_ceil(tile_pixels).max(1);
        let (mut all, mut sample) = (BandMoments::default(), Vec::new());
        let mut cached = 0;
        for round in order.chunks(per_round) {
            if all.pixels() >= SCENE_SAMPLE_PIXELS as u64 {
                break;
            }
            let read = round
                .par_iter()
                .map(|&i| {
                    let l = looks(&tiles[i]).map_err(in_tile(&tiles[i]))?;
                    let mut m = BandMoments::default();
                    m.add(l.before.view(), l.after.view());
                    Ok((m, l))
                })
                .collect::<Result<Vec<_>>>()?;
            for (&i, (m, l)) in round.iter().zip(read) {
                all.merge(m);
                let keep = cached + tiles[i].core.len() <= CACHED_SAMPLE_PIXELS;
                cached += if keep { tiles[i].core.len() } else { 0 };
                sample.push(Sampled {
                    tile: &tiles[i],
                    looks: keep.then_some(l),
                });
            }
        }
        let seen = all.pixels();
        let Some(standardisation) = all.standardisation() else {
            return Ok((None, seen));
        };
        let mut scene = SceneChange {
            standardisation,
            threshold: None,
        };
        scene.threshold = scene.sample_threshold(&sample, &looks)?;
        if scene.threshold.is_none() {
            return Ok((Some(scene), seen));
        }
        // Changed ground widens each band's spread in the look where it changed, so that
        // ground which did not change reads as changed through the standardisation alone.
        // Learnt again from the pixels the first decision found unchanged, the statistics
        // are those of the ground both looks share.
        let unchanged = each_sampled(&sample, &looks, |l| {
            let changed = scene.changed(l.before.view(), l.after.view(), l.width);
            let mut m = BandMoments::default();
            m.add_where(l.before.view(), l.after.view(), |i| changed[i] == 0);
            m
        })?
        .into_iter()
        .fold(BandMoments::default(), |mut all, m| {
            all.merge(m);
            all
        });
        if let Some(standardisation) = unchanged.standardisation() {
            scene.standardisation = standardisation;
            scene.threshold = scene.sample_threshold(&sample, &looks)?;
        }
        Ok((Some(scene), seen))
    }

    /// The change threshold of the smoothed magnitudes of the sampled tiles.
    fn sample_threshold(
        &self,
        sample: &[Sampled],
        looks: &(impl Fn(&Tile) -> Result<TileLooks> + Sync),
    ) -> Result<Option<f32>> {
        let magnitudes = each_sampled(sample, looks, |l| {
            self.smoothed_magnitude(l.before.view(), l.after.view(), l.width)
        })?;
        Ok(change_threshold(&magnitudes.concat()))
    }

    /// The threshold of the smoothed magnitude (standardised units), if the scene had one.
    pub fn threshold(&self) -> Option<f32> {
        self.threshold
    }

    /// Whether each pixel of a tile changed between its two looks (band × pixel, `width`
    /// pixels a row): 1 changed, 0 not, [`UNOBSERVED`] where a look did not see it.
    pub fn changed(
        &self,
        before: ArrayView2<f32>,
        after: ArrayView2<f32>,
        width: usize,
    ) -> Vec<u8> {
        let threshold = self.threshold.unwrap_or(f32::INFINITY);
        self.smoothed_magnitude(before, after, width)
            .iter()
            .map(|&m| match m {
                m if m.is_nan() => UNOBSERVED,
                m => u8::from(m > threshold),
            })
            .collect()
    }

    /// The smoothed change magnitude of each pixel (NaN where unobserved).
    fn smoothed_magnitude(
        &self,
        before: ArrayView2<f32>,
        after: ArrayView2<f32>,
        width: usize,
    ) -> Vec<f32> {
        smooth_3x3(&self.standardisation.magnitude(before, after), width)
    }
}

/// Tile pixels of the sample kept in memory between its passes (both looks, band × pixel:
/// 40 MB at 10 bands); the tiles beyond are read again for each pass. A larger cache raised
/// detect's peak memory for no gain in time (README, "Speed").
const CACHED_SAMPLE_PIXELS: usize = SCENE_SAMPLE_PIXELS / 2;

/// A tile of the sample, with its looks when they are kept.
struct Sampled<'t> {
    tile: &'t Tile,
    looks: Option<TileLooks>,
}

/// `f` of the looks of every sampled tile, in sample order.
fn each_sampled<T: Send>(
    sample: &[Sampled],
    looks: &(impl Fn(&Tile) -> Result<TileLooks> + Sync),
    f: impl Fn(&TileLooks) -> T + Sync,
) -> Result<Vec<T>> {
    sample
        .par_iter()
        .map(|s| match &s.looks {
            Some(l) => Ok(f(l)),
            None => Ok(f(&looks(s.tile).map_err(in_tile(s.tile))?)),
        })
        .collect()
}

/// A pixel's decision as the change step reads it: `None` where unobserved.
pub fn departed(decision: u8) -> Option<bool> {
    match decision {
        UNOBSERVED => None,
        d => Some(d == 1),
    }
}

/// The indices `0..count` in an order whose every prefix spreads over the range: evenly
/// spaced indices first, then those halfway between, and so on. Over a row-major tile list
/// this spreads a sample over rows and, unless the spacing is a multiple of the row length,
/// columns.
fn spread_order(count: usize) -> Vec<usize> {
    let mut taken = vec![false; count];
    let mut order = Vec::with_capacity(count);
    let mut points = 2usize;
    while order.len() < count && points <= 2 * count {
        let last = count.saturating_sub(1) as f64;
        for j in 0..points {
            let i = (j as f64 * last / (points - 1) as f64).round() as usize;
            if !taken[i] {
                taken[i] = true;
                order.push(i);
            }
        }
        points = 2 * points - 1;
    }
    order.extend((0..count).filter(|&i| !taken[i]));
    order
}

#[cfg(test)]
mod tests {
    use super::spread_order;

    #[test]
    fn the_spread_order_visits_every_tile_once_and_starts_at_both_ends() {
        for count in [1, 2, 3, 7, 16, 256] {
            let order = spread_order(count);
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, (0..count).collect::<Vec<_>>(), "{count}");
        }
        assert_eq!(&spread_order(256)[..3], &[0, 255, 128]);
    }
}
