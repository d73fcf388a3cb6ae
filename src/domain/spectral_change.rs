//! The spectral change decision between two looks at the same ground.
//!
//! Takes: the co-registered band values of both looks (band × pixel), pixels by pixel or tile
//! by tile. Gives: a change magnitude per pixel and a threshold computed from the scene
//! itself, so that the decision adapts to each scene's sensor, season and atmosphere.
//!
//! Post-classification comparison multiplies two classification errors; the classes name the
//! type of a change, but whether the ground changed at all is decided here, from both looks
//! together:
//! - **Relative normalisation.** Each band of each look is standardised by its own scene mean
//!   and standard deviation ([`Standardisation`]): a hazier, brighter or differently
//!   calibrated look does not read as change, and no sensor's scale is assumed. The moments
//!   can be taken over the pixels a first decision found unchanged
//!   ([`BandMoments::add_where`]), so that the changes do not widen the spread they are
//!   measured against.
//! - **Magnitude.** The Euclidean length of the difference of the standardised band vectors
//!   (change vector analysis), averaged over each pixel's 3 × 3 neighbourhood
//!   ([`smooth_3x3`]): one odd pixel at a field edge, or a half-pixel misregistration, is not
//!   a change, a change of a few pixels' extent is.
//! - **Threshold.** Kittler and Illingworth's minimum-error threshold on the scene's histogram
//!   of magnitudes ([`change_threshold`]): it models the histogram as two Gaussian
//!   populations of unequal size and spread, which is what a scene with a few per cent of
//!   changed ground gives. Otsu's threshold ([`otsu_threshold`]) assumes populations of
//!   similar spread and splits the no-change population itself when changes are rare. A
//!   magnitude is the root of a sum of squares, skewed to the right (a chi distribution, the
//!   more so the fewer the bands): the threshold is found on magnitudes raised to the power
//!   2/3, the cube root of the sum of squares, which Wilson and Hilferty (1931) showed to be
//!   close to normal for a chi-square. The smoothed magnitudes of unchanged ground are
//!   near enough to that for the transform to take most of the skew that two Gaussians
//!   cannot describe (changed ground follows no such law; README, "How detect decides
//!   change", has what it gained on real pairs).
//!
//! Nothing here is fitted to a scene: the statistics and the threshold are the scene's own.

use super::neighbourhood::window_mean;
use ndarray::{Array1, ArrayView2, Zip};

/// Running sums of each band of both looks over the pixels observed in every band of both.
/// Sums of tiles merge; merged in a fixed order they give the same bytes every run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BandMoments {
    pixels: u64,
    /// Per band: sum and sum of squares, before then after.
    sums: Vec<[f64; 4]>,
}

impl BandMoments {
    /// Adds the pixels of one window (`before` and `after`: band × pixel, same shape).
    pub fn add(&mut self, before: ArrayView2<f32>, after: ArrayView2<f32>) {
        self.add_where(before, after, |_| true);
    }

    /// Adds the pixels `i` of one window for which `keep(i)` holds.
    pub fn add_where(
        &mut self,
        before: ArrayView2<f32>,
        after: ArrayView2<f32>,
        keep: impl Fn(usize) -> bool,
    ) {
        assert_eq!(before.dim(), after.dim(), "both looks on one window");
        let bands = before.nrows();
        if self.sums.is_empty() {
            self.sums = vec![[0.0; 4]; bands];
        }
        assert_eq!(self.sums.len(), bands, "moments of one band layout");
        for i in (0..before.ncols()).filter(|&i| keep(i) && observed_both(&before, &after, i)) {
            self.pixels += 1;
            for (b, s) in self.sums.iter_mut().enumerate() {
                let (x, y) = (f64::from(before[[b, i]]), f64::from(after[[b, i]]));
                s[0] += x;
                s[1] += x * x;
                s[2] += y;
                s[3] += y * y;
            }
        }
    }

    pub fn merge(&mut self, other: BandMoments) {
        if self.sums.is_empty() {
            *self = other;
            return;
        }
        if other.sums.is_empty() {
            return;
        }
        self.pixels += other.pixels;
        for (s, o) in self.sums.iter_mut().zip(other.sums) {
            for k in 0..4 {
                s[k] += o[k];
            }
        }
    }

    pub fn pixels(&self) -> u64 {
        self.pixels
    }

    /// Each band's mean and standard deviation in each look; `None` with fewer than two
    /// observed pixels. A band that is constant in either look (saturated, or empty) weighs
    /// nothing in the magnitude.
    pub fn standardisation(&self) -> Option<Standardisation> {
        if self.pixels < 2 {
            return None;
        }
        let n = self.pixels as f64;
        let moments = |sum: f64, sq: f64| {
            let mean = sum / n;
            let var = (sq / n - mean * mean).max(0.0);
            (mean, var.sqrt())
        };
        let mut s = Standardisation::default();
        for sums in &self.sums {
            let (mb, sb) = moments(sums[0], sums[1]);
            let (ma, sa) = moments(sums[2], sums[3]);
            // A band constant in either look says nothing about change: it weighs nothing in
            // both.
            let (ib, ia) = if sb <= 1e-12 || sa <= 1e-12 {
                (0.0, 0.0)
            } else {
                ((1.0 / sb) as f32, (1.0 / sa) as f32)
            };
            s.before.push((mb as f32, ib));
            s.after.push((ma as f32, ia));
        }
        Some(s)
    }
}

/// Each band's scene mean and inverse standard deviation in each look.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Standardisation {
    before: Vec<(f32, f32)>,
    after: Vec<(f32, f32)>,
}

impl Standardisation {
    /// The change magnitude of every pixel of a window (band × pixel); NaN where a band of
    /// either look is unobserved.
    pub fn magnitude(&self, before: ArrayView2<f32>, after: ArrayView2<f32>) -> Vec<f32> {
        assert_eq!(before.dim(), after.dim(), "both looks on one window");
        // Band after band over the rows of the band × pixel views: a pixel's bands lie a
        // band's length apart, so the pixel-outer order missed the cache on every band.
        // An unobserved value (NaN, or infinite) leaves its pixel's sum NaN or infinite.
        let mut sums = Array1::<f32>::zeros(before.ncols());
        for (b, (zb, za)) in self.before.iter().zip(&self.after).enumerate() {
            Zip::from(&mut sums)
                .and(before.row(b))
                .and(after.row(b))
                .for_each(|sum, &x, &y| {
                    let d = (y - za.0) * za.1 - (x - zb.0) * zb.1;
                    *sum += d * d;
                });
        }
        sums.iter()
            .map(|&sum| {
                if sum.is_finite() {
                    sum.sqrt()
                } else {
                    f32::NAN
                }
            })
            .collect()
    }
}

/// Whether pixel `i` is observed in every band of both looks.
fn observed_both(before: &ArrayView2<f32>, after: &ArrayView2<f32>, i: usize) -> bool {
    before.column(i).iter().all(|v| v.is_finite()) && after.column(i).iter().all(|v| v.is_finite())
}

/// The mean of the finite values in each pixel's 3 × 3 neighbourhood (`values`: `width`
/// columns, row-major); NaN stays NaN.
pub fn smooth_3x3(values: &[f32], width: usize) -> Vec<f32> {
    let mut out = window_mean(values, width, 3);
    for (o, v) in out.iter_mut().zip(values) {
        if !v.is_finite() {
            *o = f32::NAN;
        }
    }
    out
}

/// A histogram of the finite values, 256 bins between the lowest and a top quantile; the
/// values above it count in the last bin.
struct Histogram {
    lo: f32,
    width: f32,
    counts: Vec<f64>,
}

impl Histogram {
    const BINS: usize = 256;

    fn of(values: &[f32], top_quantile: f64) -> Option<Histogram> {
        let mut finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            return None;
        }
        let lo = finite.iter().copied().fold(f32::INFINITY, f32::min);
        let top = ((finite.len() - 1) as f64 * top_quantile).round() as usize;
        let (_, &mut hi, _) = finite.select_nth_unstable_by(top, f32::total_cmp);
        if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        let width = (hi - lo) / Self::BINS as f32;
        let mut counts = vec![0f64; Self::BINS];
        for &v in &finite {
            counts[(((v - lo) / width) as usize).min(Self::BINS - 1)] += 1.0;
        }
        Some(Histogram { lo, width, counts })
    }

    /// The upper edge of bin `t`: values above it are on the changed side.
    fn upper_edge(&self, t: usize) -> f32 {
        self.lo + (t as f32 + 1.0) * self.width
    }

    /// Bin centres' prefix sums of count, count × centre and count × centre².
    fn prefix_moments(&self) -> Vec<[f64; 3]> {
        let mut acc = [0f64; 3];
        self.counts
            .iter()
            .enumerate()
            .map(|(t, &h)| {
                let x = t as f64 + 0.5;
                acc = [acc[0] + h, acc[1] + h * x, acc[2] + h * x * x];
                acc
            })
            .collect()
    }
}

/// Otsu's threshold of the finite values: the split that maximises the between-class
/// variance, on a histogram from the lowest to the highest value (the classical definition:
/// it is the yardstick's). `None` when the values do not spread.
pub fn otsu_threshold(values: &[f32]) -> Option<f32> {
    let h = Histogram::of(values, 1.0)?;
    let m = h.prefix_moments();
    let [total, sum_all, _] = m[m.len() - 1];
    let mut best: Option<(f64, usize)> = None;
    for (t, &[w0, s0, _]) in m.iter().enumerate() {
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let between = w0 * w1 * (s0 / w0 - (sum_all - s0) / w1).powi(2);
        if best.is_none_or(|(b, _)| between > b) {
            best = Some((between, t));
        }
    }
    best.map(|(_, t)| h.upper_edge(t))
}

/// The scene's change threshold of smoothed magnitudes: the minimum-error threshold of their
/// Wilson-Hilferty transform (magnitude^(2/3), near normal for each population), given back
/// as a magnitude. `None` when the magnitudes do not spread into two populations.
pub fn change_threshold(magnitudes: &[f32]) -> Option<f32> {
    let near_normal: Vec<f32> = magnitudes.iter().map(|m| m.powf(2.0 / 3.0)).collect();
    minimum_error_threshold(&near_normal).map(|t| t.max(0.0).powf(1.5))
}

/// Kittler and Illingworth's minimum-error threshold of the finite values: the split whose
/// two Gaussian populations (each with its own share, mean and spread) best explain the
/// histogram. The histogram stops at the 99.9th percentile (higher values count in its last
/// bin): a few extreme values (a cloud in one image, saturated pixels) would otherwise squeeze
/// everything else into a few bins. `None` when no split leaves two populations with a
/// spread.
pub fn minimum_error_threshold(values: &[f32]) -> Option<f32> {
    let h = Histogram::of(values, 0.999)?;
    let m = h.prefix_moments();
    let [total, sum_all, sq_all] = m[m.len() - 1];
    let mut best: Option<(f64, usize)> = None;
    for (t, &[n0, s0, q0]) in m.iter().enumerate().take(m.len() - 1) {
        let n1 = total - n0;
        let (p0, p1) = (n0 / total, n1 / total);
        if p0 < 1e-6 || p1 < 1e-6 {
            continue;
        }
        let (mean0, mean1) = (s0 / n0, (sum_all - s0) / n1);
        let var0 = q0 / n0 - mean0 * mean0;
        let var1 = (sq_all - q0) / n1 - mean1 * mean1;
        if var0 <= 1e-9 || var1 <= 1e-9 {
            continue;
        }
        let error = 1.0 + p0 * var0.ln() + p1 * var1.ln() - 2.0 * (p0 * p0.ln() + p1 * p1.ln());
        if best.is_none_or(|(b, _)| error < b) {
            best = Some((error, t));
        }
    }
    best.map(|(_, t)| h.upper_edge(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};

    /// Normal draws (Box-Muller) with the given mean and spread.
    fn normal(rng: &mut impl Rng, n: usize, mean: f32, sd: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let (u, v): (f32, f32) = (rng.gen_range(1e-6..1.0), rng.gen());
                mean + sd * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
            })
            .collect()
    }

    #[test]
    fn the_minimum_error_threshold_finds_a_rare_population_that_otsu_cuts_through() {
        // 97 % unchanged (magnitude ~ N(2, 0.6)), 3 % changed (~ N(7, 1.5)): the rare,
        // wider population of a scene with little change.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut values = normal(&mut rng, 97_000, 2.0, 0.6);
        values.extend(normal(&mut rng, 3_000, 7.0, 1.5));
        let ki = minimum_error_threshold(&values).unwrap();
        assert!((3.5..5.0).contains(&ki), "minimum-error threshold {ki}");
        let misclassified = |t: f32| {
            values[..97_000].iter().filter(|&&v| v > t).count()
                + values[97_000..].iter().filter(|&&v| v <= t).count()
        };
        let otsu = otsu_threshold(&values).unwrap();
        assert!(
            misclassified(ki) <= misclassified(otsu),
            "KI {ki} ({} wrong) against Otsu {otsu} ({} wrong)",
            misclassified(ki),
            misclassified(otsu)
        );
    }

    #[test]
    fn the_change_threshold_is_in_magnitude_units_and_fits_skewed_no_change_better() {
        // Unchanged ground of four standardised bands: the magnitude is chi-distributed with
        // four degrees of freedom (skewed to the right); 3 % changed ground far out.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut values: Vec<f32> = (0..97_000)
            .map(|_| {
                (0..4)
                    .map(|_| normal(&mut rng, 1, 0.0, 1.0)[0].powi(2))
                    .sum::<f32>()
                    .sqrt()
            })
            .collect();
        values.extend(normal(&mut rng, 3_000, 7.0, 1.2));
        let t = change_threshold(&values).unwrap();
        assert!((3.0..6.0).contains(&t), "threshold {t}, in magnitude units");
        let misclassified = |t: f32| {
            values[..97_000].iter().filter(|&&v| v > t).count()
                + values[97_000..].iter().filter(|&&v| v <= t).count()
        };
        let raw = minimum_error_threshold(&values).unwrap();
        assert!(
            misclassified(t) < misclassified(raw),
            "transformed {t} ({} wrong) against raw {raw} ({} wrong)",
            misclassified(t),
            misclassified(raw)
        );
    }

    #[test]
    fn otsu_splits_two_modes() {
        let mut v = vec![1.0f32; 100];
        v.extend(vec![10.0f32; 50]);
        let t = otsu_threshold(&v).unwrap();
        assert!(t > 1.0 && t < 10.0, "{t}");
    }

    #[test]
    fn a_few_extreme_values_do_not_move_the_threshold() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut values = normal(&mut rng, 97_000, 2.0, 0.6);
        values.extend(normal(&mut rng, 3_000, 7.0, 1.5));
        let plain = minimum_error_threshold(&values).unwrap();
        // Fifty pixels of cloud in one image, hundreds of times as far as any change.
        values.extend(std::iter::repeat_n(5000.0, 50));
        let clouded = minimum_error_threshold(&values).unwrap();
        assert!((plain - clouded).abs() < 0.3, "{plain} against {clouded}");
    }

    #[test]
    fn thresholds_need_values_that_spread() {
        assert_eq!(minimum_error_threshold(&[1.0; 10]), None);
        assert_eq!(otsu_threshold(&[f32::NAN, 2.0]), None);
    }

    #[test]
    fn a_uniformly_brighter_look_is_no_change_after_standardisation() {
        // Look 2 is look 1 with twice the gain and an offset in every band: no change.
        let before = Array2::from_shape_fn((3, 50), |(b, i)| (b * 7 + i % 13) as f32 / 100.0);
        let after = before.mapv(|v| 2.0 * v + 0.1);
        let mut moments = BandMoments::default();
        moments.add(before.view(), after.view());
        let z = moments.standardisation().unwrap();
        let m = z.magnitude(before.view(), after.view());
        assert!(m.iter().all(|&v| v.abs() < 1e-4), "{m:?}");
        // One pixel whose bands all rise: a change, far above the rest.
        let mut changed = after.clone();
        changed.column_mut(10).mapv_inplace(|v| v + 0.5);
        let m = z.magnitude(before.view(), changed.view());
        assert!(m[10] > 5.0 && m[11] < 1e-4, "{} {}", m[10], m[11]);
    }

    #[test]
    fn moments_of_tiles_merge_to_those_of_the_whole() {
        let before = Array2::from_shape_fn((2, 40), |(b, i)| ((b + 1) * i) as f32);
        let after = before.mapv(|v| v * 0.5 + 1.0);
        let mut whole = BandMoments::default();
        whole.add(before.view(), after.view());
        let mut parts = BandMoments::default();
        for k in 0..4 {
            let mut part = BandMoments::default();
            let cols = ndarray::s![.., k * 10..(k + 1) * 10];
            part.add(before.slice(cols), after.slice(cols));
            parts.merge(part);
        }
        assert_eq!(parts.pixels(), whole.pixels());
        let (a, b) = (
            parts.standardisation().unwrap(),
            whole.standardisation().unwrap(),
        );
        for (x, y) in a
            .before
            .iter()
            .chain(&a.after)
            .zip(b.before.iter().chain(&b.after))
        {
            assert!((x.0 - y.0).abs() < 1e-4 && (x.1 - y.1).abs() < 1e-6);
        }
    }

    #[test]
    fn a_constant_band_weighs_nothing() {
        let before = Array2::from_shape_fn((2, 20), |(b, i)| if b == 0 { 0.3 } else { i as f32 });
        // Band 0 is constant before and varies after: still no evidence of change.
        let after = Array2::from_shape_fn(
            (2, 20),
            |(b, i)| if b == 0 { (i % 3) as f32 } else { i as f32 },
        );
        let mut moments = BandMoments::default();
        moments.add(before.view(), after.view());
        let m = moments
            .standardisation()
            .unwrap()
            .magnitude(before.view(), after.view());
        assert!(m.iter().all(|&v| v == 0.0), "{m:?}");
    }

    #[test]
    fn unobserved_pixels_have_no_magnitude_and_do_not_count() {
        let mut before = Array2::from_shape_fn((2, 6), |(b, i)| (b + i) as f32);
        before[[1, 2]] = f32::NAN;
        let after = before.mapv(|v| v + 1.0);
        let mut moments = BandMoments::default();
        moments.add(before.view(), after.view());
        assert_eq!(moments.pixels(), 5);
        let m = moments
            .standardisation()
            .unwrap()
            .magnitude(before.view(), after.view());
        assert!(m[2].is_nan() && m[3].is_finite());
    }

    #[test]
    fn smoothing_averages_finite_neighbours_and_keeps_gaps() {
        // 3 x 3, a spike in the centre and a gap in a corner.
        let v = [0.0, 0.0, f32::NAN, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0];
        let s = smooth_3x3(&v, 3);
        assert!(s[2].is_nan());
        assert!((s[4] - 9.0 / 8.0).abs() < 1e-6, "{}", s[4]);
        assert!((s[0] - 9.0 / 4.0).abs() < 1e-6, "{}", s[0]);
    }
}
