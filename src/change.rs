//! Change rules: from land-cover classes to flags.
//!
//! Takes, per pixel: whether it is watched (on the farmland layer and inside the area of
//! interest), the baseline class it should have, the class now, and for how many consecutive
//! periods (now included) it has shown no sign of cultivation. Gives a flag code: 0 none, 1 FNH, 2 FLH,
//! 3 PH, 255 outside data.
//!
//! This version's rules (the time-series rules with persistence come later):
//! - FNH 非农化: cropland in the baseline (grain or non-grain crop) and built-up/hardened now.
//! - FLH 非粮化: grain in the baseline and a non-grain perennial crop, tree cover or water now.
//! - PH 撂荒: grain-like or grass/shrub now, and no sign of cultivation in each of the last
//!   `ph_min_periods` periods: no clear observation showed bare soil (NDVI <= 0.25: tillage,
//!   harvest) nor a dense crop canopy (NDVI >= 0.7). Judged on NDVI, not on classes, because
//!   in winter abandoned land and dormant fields get the same class.
//!
//! In `gengbao run` the baseline is the farmland layer (耕地 is grain land), so a violation is
//! reported in every period while it lasts. In `gengbao detect` the baseline is the class of
//! the earlier image.

use crate::classify::LandCover;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum ChangeType {
    FNH = 1,
    FLH = 2,
    PH = 3,
}

pub const FLAG_NONE: u8 = 0;
pub const FLAG_OUTSIDE: u8 = 255;

impl ChangeType {
    pub const ALL: [ChangeType; 3] = [ChangeType::FNH, ChangeType::FLH, ChangeType::PH];

    pub fn code(self) -> &'static str {
        match self {
            ChangeType::FNH => "FNH",
            ChangeType::FLH => "FLH",
            ChangeType::PH => "PH",
        }
    }

    pub fn label_zh(self) -> &'static str {
        match self {
            ChangeType::FNH => "非农化",
            ChangeType::FLH => "非粮化",
            ChangeType::PH => "撂荒",
        }
    }

    pub fn flag(self) -> u8 {
        self as u8
    }

    pub fn from_flag(flag: u8) -> Option<Self> {
        match flag {
            1 => Some(ChangeType::FNH),
            2 => Some(ChangeType::FLH),
            3 => Some(ChangeType::PH),
            _ => None,
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        ChangeType::ALL.into_iter().find(|t| t.code() == code)
    }
}

/// Earlier periods a non-grain class needs before it raises FLH: a perennial crop is told
/// from a grain crop only over half a year (this period and two before).
pub const PERENNIAL_MIN_HISTORY: usize = 2;

/// The rule for one pixel. `history_periods`: earlier periods known (archived).
pub fn flag_pixel(
    watched: bool,
    before: u8,
    now: u8,
    uncultivated: usize,
    ph_min_periods: usize,
    history_periods: usize,
) -> u8 {
    use LandCover::*;
    let now = LandCover::from_code(now);
    if now == NoData {
        return FLAG_OUTSIDE;
    }
    if !watched {
        return FLAG_NONE;
    }
    let before = LandCover::from_code(before);
    let was_crop = matches!(before, Grain | NonGrain);
    match now {
        Built if was_crop => ChangeType::FNH.flag(),
        NonGrain if before == Grain && history_periods >= PERENNIAL_MIN_HISTORY => {
            ChangeType::FLH.flag()
        }
        Forest | Water if before == Grain => ChangeType::FLH.flag(),
        Grass | Grain if uncultivated >= ph_min_periods && was_crop => ChangeType::PH.flag(),
        _ => FLAG_NONE,
    }
}

/// NDVI of a bare, tilled or harvested field: at or below this, a period shows cultivation.
pub const BARE_SOIL_NDVI: f32 = 0.25;
/// NDVI of a dense crop canopy: at or above this, a period shows cultivation.
pub const CROP_CANOPY_NDVI: f32 = 0.7;

/// Consecutive periods, ending now, whose lowest and highest NDVI (`(min, max)`, most recent
/// first) show no sign of cultivation. An unknown period (NaN) ends the run.
pub fn uncultivated_run(periods: impl IntoIterator<Item = (f32, f32)>) -> usize {
    periods
        .into_iter()
        .take_while(|&(lo, hi)| {
            lo.is_finite() && hi.is_finite() && lo > BARE_SOIL_NDVI && hi < CROP_CANOPY_NDVI
        })
        .count()
}

/// Otsu's threshold of non-negative values (histogram of 256 bins between min and max).
pub fn otsu_threshold(values: &[f32]) -> f32 {
    let finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = finite
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if finite.is_empty() || hi <= lo {
        return hi;
    }
    let bins = 256usize;
    let width = (hi - lo) / bins as f32;
    let mut hist = vec![0f64; bins];
    for &v in &finite {
        hist[(((v - lo) / width) as usize).min(bins - 1)] += 1.0;
    }
    let total = finite.len() as f64;
    let sum_all: f64 = hist.iter().enumerate().map(|(i, &h)| i as f64 * h).sum();
    let (mut w0, mut sum0, mut best, mut best_t) = (0f64, 0f64, -1f64, 0usize);
    for (t, &h) in hist.iter().enumerate() {
        w0 += h;
        sum0 += t as f64 * h;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let between = w0 * w1 * (sum0 / w0 - (sum_all - sum0) / w1).powi(2);
        if between > best {
            best = between;
            best_t = t;
        }
    }
    lo + (best_t as f32 + 1.0) * width
}

/// Change vector analysis with an Otsu threshold: the classical unsupervised change detector,
/// kept as a yardstick for the class-based rules. Bands are co-registered reflectance stacks;
/// returns true where the spectral change magnitude exceeds the threshold.
pub fn change_vector_otsu(before: &[Vec<f32>], after: &[Vec<f32>]) -> Vec<bool> {
    let n = before[0].len();
    let magnitude: Vec<f32> = (0..n)
        .map(|i| {
            before
                .iter()
                .zip(after)
                .map(|(b, a)| (a[i] - b[i]).powi(2))
                .sum::<f32>()
                .sqrt()
        })
        .collect();
    let t = otsu_threshold(&magnitude);
    magnitude.iter().map(|&m| m.is_finite() && m > t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_flag_the_three_kinds() {
        assert_eq!(flag_pixel(true, 1, 3, 0, 3, usize::MAX), 1);
        assert_eq!(flag_pixel(true, 1, 2, 0, 3, usize::MAX), 2);
        assert_eq!(flag_pixel(true, 1, 4, 0, 3, usize::MAX), 2);
        assert_eq!(flag_pixel(true, 1, 5, 3, 3, usize::MAX), 3);
        assert_eq!(
            flag_pixel(true, 1, 1, 3, 3, usize::MAX),
            3,
            "dormant-looking but never cultivated"
        );
        assert_eq!(
            flag_pixel(true, 1, 5, 2, 3, usize::MAX),
            0,
            "too short for abandonment"
        );
        assert_eq!(flag_pixel(true, 1, 1, 0, 3, usize::MAX), 0);
        assert_eq!(flag_pixel(false, 1, 3, 0, 3, usize::MAX), 0, "not farmland");
        assert_eq!(flag_pixel(true, 1, 0, 0, 3, usize::MAX), 255);
        assert_eq!(
            flag_pixel(true, 6, 3, 0, 3, usize::MAX),
            0,
            "forest to built is not farmland loss"
        );
    }

    #[test]
    fn cultivation_signs_end_the_uncultivated_run() {
        let grass = (0.33, 0.6);
        assert_eq!(
            uncultivated_run([grass, grass, (0.2, 0.6), grass]),
            2,
            "a tilled period ends it"
        );
        assert_eq!(
            uncultivated_run([grass, (0.4, 0.8), grass]),
            1,
            "a dense canopy ends it"
        );
        assert_eq!(
            uncultivated_run([grass, (f32::NAN, f32::NAN), grass]),
            1,
            "a gap ends it"
        );
    }

    #[test]
    fn otsu_splits_two_modes() {
        let mut v = vec![1.0f32; 100];
        v.extend(vec![10.0f32; 50]);
        let t = otsu_threshold(&v);
        assert!(t > 1.0 && t < 10.0, "{t}");
    }
}
