//! Statistics of each pixel's square neighbourhood in a raster window.
//!
//! Takes: the values of one window (row-major, `width` columns; NaN = unobserved) and an odd
//! side. Gives: per pixel, the mean and standard deviation of the finite values in the
//! side × side square around it, cut at the window's edges (an edge pixel's neighbourhood is
//! the part inside the window). What the spectral change decision smooths with, and what a
//! model's neighbourhood inputs (texture: a village's mixed roofs and gardens against a
//! field's even cover) are made of. The sums run over summed-area tables in f64, so the cost
//! does not grow with the side and rounding does not drift over a tile.

/// Mean and standard deviation of every pixel's neighbourhood (NaN where it holds no finite
/// value). `side` must be odd.
pub fn window_mean_sd(values: &[f32], width: usize, side: usize) -> (Vec<f32>, Vec<f32>) {
    let sums = SummedArea::of(values, width, true);
    let mut mean = vec![f32::NAN; values.len()];
    let mut sd = vec![f32::NAN; values.len()];
    sums.each_window(side, |i, n, sum, squares| {
        let m = sum / n;
        mean[i] = m as f32;
        sd[i] = (squares / n - m * m).max(0.0).sqrt() as f32;
    });
    (mean, sd)
}

/// The mean of every pixel's neighbourhood (NaN where it holds no finite value).
pub fn window_mean(values: &[f32], width: usize, side: usize) -> Vec<f32> {
    let sums = SummedArea::of(values, width, false);
    let mut mean = vec![f32::NAN; values.len()];
    sums.each_window(side, |i, n, sum, _| mean[i] = (sum / n) as f32);
    mean
}

/// Summed-area tables of the finite values, their squares (when asked for: a mean does not
/// need them) and their count, with a row and a column of zeros in front.
struct SummedArea {
    width: usize,
    height: usize,
    sum: Vec<f64>,
    squares: Vec<f64>,
    count: Vec<f64>,
}

impl SummedArea {
    fn of(values: &[f32], width: usize, with_squares: bool) -> Self {
        assert!(
            width > 0 && values.len().is_multiple_of(width),
            "whole rows of {width} values"
        );
        let height = values.len() / width;
        let stride = width + 1;
        let size = stride * (height + 1);
        let (mut sum, mut count) = (vec![0.0; size], vec![0.0; size]);
        let mut squares = vec![0.0; if with_squares { size } else { 0 }];
        for r in 0..height {
            let (mut row_sum, mut row_squares, mut row_count) = (0.0, 0.0, 0.0);
            for c in 0..width {
                let v = values[r * width + c];
                if v.is_finite() {
                    let v = f64::from(v);
                    row_sum += v;
                    row_squares += v * v;
                    row_count += 1.0;
                }
                let (above, here) = (r * stride + c + 1, (r + 1) * stride + c + 1);
                sum[here] = sum[above] + row_sum;
                count[here] = count[above] + row_count;
                if with_squares {
                    squares[here] = squares[above] + row_squares;
                }
            }
        }
        SummedArea {
            width,
            height,
            sum,
            squares,
            count,
        }
    }

    /// Calls `f(pixel, count, sum, sum of squares)` for each pixel whose neighbourhood holds
    /// a finite value (the sum of squares is 0 when the tables were made without them).
    fn each_window(&self, side: usize, mut f: impl FnMut(usize, f64, f64, f64)) {
        assert!(
            !side.is_multiple_of(2),
            "a neighbourhood has an odd side, not {side}"
        );
        let half = side / 2;
        let stride = self.width + 1;
        let boxed = |t: &[f64], r0: usize, c0: usize, r1: usize, c1: usize| {
            t[r1 * stride + c1] - t[r0 * stride + c1] - t[r1 * stride + c0] + t[r0 * stride + c0]
        };
        for r in 0..self.height {
            let (r0, r1) = (r.saturating_sub(half), (r + half + 1).min(self.height));
            for c in 0..self.width {
                let (c0, c1) = (c.saturating_sub(half), (c + half + 1).min(self.width));
                let n = boxed(&self.count, r0, c0, r1, c1);
                if n > 0.0 {
                    let squares = if self.squares.is_empty() {
                        0.0
                    } else {
                        boxed(&self.squares, r0, c0, r1, c1)
                    };
                    f(
                        r * self.width + c,
                        n,
                        boxed(&self.sum, r0, c0, r1, c1),
                        squares,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statistics by brute force.
    fn direct(values: &[f32], width: usize, side: usize, i: usize) -> Option<(f64, f64)> {
        let height = values.len() / width;
        let (r, c, h) = (
            (i / width) as isize,
            (i % width) as isize,
            (side / 2) as isize,
        );
        let mut seen = Vec::new();
        for rr in (r - h).max(0)..(r + h + 1).min(height as isize) {
            for cc in (c - h).max(0)..(c + h + 1).min(width as isize) {
                let v = values[rr as usize * width + cc as usize];
                if v.is_finite() {
                    seen.push(f64::from(v));
                }
            }
        }
        if seen.is_empty() {
            return None;
        }
        let n = seen.len() as f64;
        let m = seen.iter().sum::<f64>() / n;
        let var = seen.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
        Some((m, var.sqrt()))
    }

    #[test]
    fn matches_brute_force_with_gaps_and_edges() {
        let (width, height) = (7, 5);
        let values: Vec<f32> = (0..width * height)
            .map(|i| {
                if i % 11 == 3 {
                    f32::NAN
                } else {
                    ((i * 37) % 13) as f32 * 0.1
                }
            })
            .collect();
        for side in [1, 3, 5, 9] {
            let (mean, sd) = window_mean_sd(&values, width, side);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&window_mean(&values, width, side)), bits(&mean));
            for i in 0..values.len() {
                let Some((m, s)) = direct(&values, width, side, i) else {
                    assert!(mean[i].is_nan() && sd[i].is_nan(), "side {side} pixel {i}");
                    continue;
                };
                assert!(
                    (f64::from(mean[i]) - m).abs() < 1e-5,
                    "side {side} pixel {i}"
                );
                assert!((f64::from(sd[i]) - s).abs() < 1e-4, "side {side} pixel {i}");
            }
        }
    }

    #[test]
    fn a_window_without_values_is_nan() {
        let mut values = vec![f32::NAN; 25];
        values[0] = 1.0;
        let (mean, sd) = window_mean_sd(&values, 5, 3);
        assert_eq!((mean[6], sd[6]), (1.0, 0.0));
        assert!(mean[24].is_nan() && sd[24].is_nan());
    }
}
