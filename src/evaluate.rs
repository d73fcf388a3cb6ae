//! Accuracy against truth.
//!
//! Object matching for patches (the same rule as the peer benchmark): a reported patch is
//! correct when at least half of its pixels are planted change of its type; a planted change is
//! found when at least half of its pixels are covered by reported patches of its type.
//! Pixel scores for binary change maps: precision, recall and F1 of "changed" on the pixels a
//! reference labels changed or unchanged (unlabelled pixels do not count).

use crate::domain::change::ChangeType;
use crate::domain::period::Period;
use crate::domain::spectral_change::{otsu_threshold, BandMoments};
use crate::error::{Error, GdalContext, Result};
use crate::geo::grid::JobGrid;
use crate::geo::raster::{rasterize, read_band_f64};
use crate::job::layout::PeriodFiles;
use gdal::vector::{Geometry, LayerAccess};
use gdal::Dataset;
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ObjectScore {
    pub planted: usize,
    pub found: usize,
    pub reported: usize,
    pub correct: usize,
    pub recall: f64,
    pub precision: f64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BinaryScore {
    pub true_positive: u64,
    pub false_positive: u64,
    pub false_negative: u64,
    pub true_negative: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// Scores a binary change map against changed / unchanged reference masks.
pub fn binary_score(predicted: &[bool], changed: &[bool], unchanged: &[bool]) -> BinaryScore {
    let mut s = BinaryScore::default();
    for ((&p, &c), &u) in predicted.iter().zip(changed).zip(unchanged) {
        match (c, u, p) {
            (true, _, true) => s.true_positive += 1,
            (true, _, false) => s.false_negative += 1,
            (false, true, true) => s.false_positive += 1,
            (false, true, false) => s.true_negative += 1,
            _ => {}
        }
    }
    let (tp, fp, fn_) = (
        s.true_positive as f64,
        s.false_positive as f64,
        s.false_negative as f64,
    );
    s.precision = tp / (tp + fp);
    s.recall = tp / (tp + fn_);
    s.f1 = 2.0 * s.precision * s.recall / (s.precision + s.recall);
    s
}

/// The classical yardstick of change detection, as `../shared/data/README.md` anchors it:
/// change vector analysis of the bands of each look standardised on their own scene
/// statistics, with Otsu's threshold of the magnitudes. `before` and `after`: band × pixel;
/// unobserved pixels are unchanged.
pub fn change_vector_otsu(before: ArrayView2<f32>, after: ArrayView2<f32>) -> Vec<bool> {
    let mut moments = BandMoments::default();
    moments.add(before, after);
    let Some(z) = moments.standardisation() else {
        return vec![false; before.ncols()];
    };
    let magnitude = z.magnitude(before, after);
    match otsu_threshold(&magnitude) {
        Some(t) => magnitude.iter().map(|&m| m > t).collect(),
        None => vec![false; magnitude.len()],
    }
}

/// The second classical yardstick: iteratively reweighted multivariate alteration detection
/// (IR-MAD, Nielsen 2007). The canonical variates of the two looks are found by canonical
/// correlation analysis, each pixel weighted by its chance of no change, until the
/// correlations settle (at most [`IR_MAD_ITERATIONS`]). The length of each pixel's vector of
/// standardised MAD variates is then cut at Otsu's threshold, as the CVA yardstick's
/// magnitude is. (The textbook cut, the chi-square test at 1 %, flagged over half of the
/// Taizhou scene: real no-change pixels are far from Gaussian.) `before` and `after`: band ×
/// pixel; unobserved pixels are unchanged.
pub fn ir_mad(before: ArrayView2<f32>, after: ArrayView2<f32>) -> Vec<bool> {
    use statrs::distribution::{ChiSquared, ContinuousCDF};
    let bands = before.nrows();
    let observed: Vec<usize> = (0..before.ncols())
        .filter(|&i| {
            before.column(i).iter().all(|v| v.is_finite())
                && after.column(i).iter().all(|v| v.is_finite())
        })
        .collect();
    let mut changed = vec![false; before.ncols()];
    if observed.len() <= 2 * bands {
        return changed;
    }
    let chi2 = ChiSquared::new(bands as f64).expect("at least one band");
    let mut weight = vec![1.0; observed.len()];
    let mut statistic = vec![0.0; observed.len()];
    let mut last_rho: Vec<f64> = Vec::new();
    for _ in 0..IR_MAD_ITERATIONS {
        let Some(mad) = Mad::fit(before, after, &observed, &weight) else {
            return changed;
        };
        for (k, &i) in observed.iter().enumerate() {
            statistic[k] = mad.chi_square(before.column(i), after.column(i));
            weight[k] = 1.0 - chi2.cdf(statistic[k]);
        }
        let settled = last_rho.len() == mad.rho.len()
            && last_rho
                .iter()
                .zip(&mad.rho)
                .all(|(a, b)| (a - b).abs() < 1e-6);
        last_rho = mad.rho;
        if settled {
            break;
        }
    }
    let length: Vec<f32> = statistic.iter().map(|&z| z.sqrt() as f32).collect();
    if let Some(cut) = otsu_threshold(&length) {
        for (k, &i) in observed.iter().enumerate() {
            changed[i] = length[k] > cut;
        }
    }
    changed
}

/// Iterations of [`ir_mad`] at most; Nielsen's examples settle in well under this.
pub const IR_MAD_ITERATIONS: usize = 30;

/// The MAD transform of one iteration: weighted means, canonical vectors of each look and
/// the canonical correlations.
struct Mad {
    mean_x: Vec<f64>,
    mean_y: Vec<f64>,
    /// Column j: the j-th canonical vector of the before look (and of the after look).
    a: ndarray::Array2<f64>,
    b: ndarray::Array2<f64>,
    rho: Vec<f64>,
}

impl Mad {
    fn fit(
        before: ArrayView2<f32>,
        after: ArrayView2<f32>,
        observed: &[usize],
        weight: &[f64],
    ) -> Option<Mad> {
        use ndarray::Array2;
        let p = before.nrows();
        let total: f64 = weight.iter().sum();
        if total <= 0.0 {
            return None;
        }
        let mean = |look: ArrayView2<f32>| -> Vec<f64> {
            (0..p)
                .map(|b| {
                    observed
                        .iter()
                        .zip(weight)
                        .map(|(&i, w)| w * f64::from(look[[b, i]]))
                        .sum::<f64>()
                        / total
                })
                .collect()
        };
        let (mean_x, mean_y) = (mean(before), mean(after));
        // Weighted covariances of (x, y) stacked: 2p × 2p.
        let mut cov = Array2::<f64>::zeros((2 * p, 2 * p));
        let mut v = vec![0.0; 2 * p];
        for (&i, &w) in observed.iter().zip(weight) {
            for b in 0..p {
                v[b] = f64::from(before[[b, i]]) - mean_x[b];
                v[p + b] = f64::from(after[[b, i]]) - mean_y[b];
            }
            for r in 0..2 * p {
                for c in r..2 * p {
                    cov[[r, c]] += w * v[r] * v[c];
                }
            }
        }
        for r in 0..2 * p {
            for c in 0..r {
                cov[[r, c]] = cov[[c, r]];
            }
        }
        cov /= total;
        let sxx = cov.slice(ndarray::s![..p, ..p]).to_owned();
        let syy = cov.slice(ndarray::s![p.., p..]).to_owned();
        let sxy = cov.slice(ndarray::s![..p, p..]).to_owned();
        // Whitening of x, then the symmetric problem W Sxy Syy⁻¹ Syx W u = ρ² u.
        let w = symmetric_power(&sxx, -0.5)?;
        let syy_inv = symmetric_power(&syy, -1.0)?;
        let m = w.dot(&sxy).dot(&syy_inv).dot(&sxy.t()).dot(&w);
        let m = (&m + &m.t()) / 2.0;
        let (values, vectors) = symmetric_eigen(&m)?;
        let a = w.dot(&vectors);
        let mut b = syy_inv.dot(&sxy.t()).dot(&a);
        let mut rho = Vec::with_capacity(p);
        for (j, value) in values.iter().enumerate() {
            // Unit variance of the after variate, positively correlated with the before one.
            let col = b.column(j).to_owned();
            let var = col.dot(&syy.dot(&col));
            let sign = if a.column(j).dot(&sxy.dot(&col)) < 0.0 {
                -1.0
            } else {
                1.0
            };
            let scale = if var > 0.0 { sign / var.sqrt() } else { 0.0 };
            b.column_mut(j).mapv_inplace(|x| x * scale);
            rho.push(value.clamp(0.0, 1.0).sqrt());
        }
        Some(Mad {
            mean_x,
            mean_y,
            a,
            b,
            rho,
        })
    }

    /// Sum over the MAD variates of (U − V)² / (2 (1 − ρ)).
    fn chi_square(&self, x: ndarray::ArrayView1<f32>, y: ndarray::ArrayView1<f32>) -> f64 {
        let p = self.rho.len();
        (0..p)
            .map(|j| {
                let (mut u, mut v) = (0.0, 0.0);
                for b in 0..p {
                    u += self.a[[b, j]] * (f64::from(x[b]) - self.mean_x[b]);
                    v += self.b[[b, j]] * (f64::from(y[b]) - self.mean_y[b]);
                }
                let var = (2.0 * (1.0 - self.rho[j])).max(1e-12);
                (u - v).powi(2) / var
            })
            .sum()
    }
}

/// Eigenvalues and eigenvectors (columns) of a symmetric matrix.
fn symmetric_eigen(m: &ndarray::Array2<f64>) -> Option<(Vec<f64>, ndarray::Array2<f64>)> {
    use smartcore::linalg::basic::arrays::Array;
    use smartcore::linalg::traits::evd::EVDDecomposable;
    let n = m.nrows();
    let rows: Vec<Vec<f64>> = m.outer_iter().map(|r| r.to_vec()).collect();
    let dense = smartcore::linalg::basic::matrix::DenseMatrix::from_2d_vec(&rows).ok()?;
    let evd = dense.evd(true).ok()?;
    let vectors = ndarray::Array2::from_shape_fn((n, n), |(r, c)| *evd.V.get((r, c)));
    Some((evd.d, vectors))
}

/// A symmetric positive definite matrix raised to `power` through its eigen decomposition;
/// `None` when it is not positive definite (a constant band).
fn symmetric_power(m: &ndarray::Array2<f64>, power: f64) -> Option<ndarray::Array2<f64>> {
    let (values, vectors) = symmetric_eigen(m)?;
    if values.iter().any(|&l| l <= 1e-12) {
        return None;
    }
    let scaled = ndarray::Array2::from_shape_fn(vectors.dim(), |(r, c)| {
        vectors[[r, c]] * values[c].powf(power)
    });
    Some(scaled.dot(&vectors.t()))
}

/// Every patch polygon of a period's results (all counties) with its change type.
pub fn read_period_patches(period_dir: &Path) -> Result<Vec<(ChangeType, Geometry)>> {
    let counties = period_dir.join("counties");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&counties)
        .map_err(|e| Error::io(&counties, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for dir in files {
        let mut gpkgs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "gpkg"))
            .collect();
        gpkgs.sort();
        for g in gpkgs {
            out.extend(read_patches(&g, "BHLX")?);
        }
    }
    Ok(out)
}

/// Polygons of a layer with a change-type code field (FNH / FLH / PH).
pub fn read_patches(path: &Path, type_field: &str) -> Result<Vec<(ChangeType, Geometry)>> {
    let ds = Dataset::open(path).in_file(path, "check the path")?;
    let mut layer = ds.layer(0)?;
    let mut out = Vec::new();
    for f in layer.features() {
        let idx = f.field_index(type_field).map_err(|_| {
            Error::input(path, format!("no field {type_field}"), "give a patch layer")
        })?;
        let code = f.field_as_string(idx)?.unwrap_or_default();
        if let (Some(t), Some(g)) = (ChangeType::from_code(&code), f.geometry()) {
            out.push((t, g.clone()));
        }
    }
    Ok(out)
}

/// Object scores per change type of `reported` polygons against the truth of a generated city
/// (`truth/change_<period>.tif` and `truth/changes.gpkg`).
pub fn score_against_truth(
    truth_dir: &Path,
    period: &str,
    reported: &[(ChangeType, Geometry)],
) -> Result<BTreeMap<&'static str, ObjectScore>> {
    let truth_raster = truth_dir.join(format!("change_{period}.tif"));
    let truth_ds = Dataset::open(&truth_raster).in_file(&truth_raster, "check the path")?;
    let grid = JobGrid::of_dataset(&truth_ds, &truth_raster)?;
    let whole = grid.full_window();
    let truth = crate::geo::raster::read_grid_window::<f64>(&truth_ds, 1, whole, f64::NAN)?;
    // Patches may be in another CRS than the truth (a job on a Gauss-Krüger grid).
    let truth_srs = grid.spatial_ref()?;
    let mut rep_geoms: Vec<Geometry> = Vec::with_capacity(reported.len());
    for (_, g) in reported {
        let mut g = g.clone();
        if let Some(mut srs) = g.spatial_ref().filter(|s| *s != truth_srs) {
            srs.set_axis_mapping_strategy(
                gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder,
            );
            let to_truth = crate::geo::raster::transform_between(&srs, &truth_srs)?;
            g.transform_inplace(&to_truth)?;
        }
        rep_geoms.push(g);
    }
    let ids: Vec<f64> = (1..=reported.len()).map(|i| i as f64).collect();
    let rep_id = rasterize(&grid, whole, &rep_geoms, &ids)?;
    let planted_all = read_patches(&truth_dir.join("changes.gpkg"), "BHLX")?;
    let onset = read_onsets(&truth_dir.join("changes.gpkg"))?;
    let mut scores: BTreeMap<&'static str, ObjectScore> = BTreeMap::new();
    // Reported patches.
    let mut hits = vec![(0u64, 0u64); reported.len()];
    for (i, &id) in rep_id.iter().enumerate() {
        if id > 0 {
            let k = id as usize - 1;
            hits[k].1 += 1;
            if truth[i] as u8 == reported[k].0.flag() {
                hits[k].0 += 1;
            }
        }
    }
    for (k, (t, _)) in reported.iter().enumerate() {
        let s = scores.entry(t.code()).or_default();
        s.reported += 1;
        s.correct += usize::from(hits[k].1 > 0 && 2 * hits[k].0 >= hits[k].1);
    }
    // Planted changes present in this period.
    for ((t, g), on) in planted_all.iter().zip(&onset) {
        if on.as_str() > period {
            continue;
        }
        let mask = rasterize(&grid, whole, std::slice::from_ref(g), &[1.0])?;
        let (mut n, mut covered) = (0u64, 0u64);
        for (i, &m) in mask.iter().enumerate() {
            if m != 0 {
                n += 1;
                let id = rep_id[i];
                covered += u64::from(id > 0 && reported[id as usize - 1].0 == *t);
            }
        }
        let s = scores.entry(t.code()).or_default();
        s.planted += 1;
        s.found += usize::from(n > 0 && 2 * covered >= n);
    }
    for s in scores.values_mut() {
        s.recall = ratio(s.found, s.planted);
        s.precision = ratio(s.correct, s.reported);
    }
    Ok(scores)
}

/// A period's results scored against a generated city's truth: the patches (object scores
/// per type) and the land cover (per-class scores of `class.tif`).
pub fn score_period(city: &Path, results: &Path, period: Period) -> Result<serde_json::Value> {
    let truth_dir = city.join("truth");
    let reported = read_period_patches(results)?;
    let patches = score_against_truth(&truth_dir, &period.to_string(), &reported)?;
    let truth = read_band_f64(&truth_dir.join(format!("class_{period}.tif")), 1)?.2;
    let classes = read_band_f64(&PeriodFiles::in_dir(results).class(), 1)?.2;
    Ok(serde_json::json!({ "patches": patches, "land_cover": class_score(&truth, &classes) }))
}

fn read_onsets(path: &Path) -> Result<Vec<String>> {
    let ds = Dataset::open(path).in_file(path, "check the path")?;
    let mut layer = ds.layer(0)?;
    let mut out = Vec::new();
    for f in layer.features() {
        let idx = f.field_index("QSQS")?;
        if f.geometry().is_some()
            && f.field_as_string(f.field_index("BHLX")?)?
                .and_then(|c| ChangeType::from_code(&c))
                .is_some()
        {
            out.push(f.field_as_string(idx)?.unwrap_or_default());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ir_mad_finds_a_planted_change_through_a_recalibrated_look() {
        use rand::{Rng, SeedableRng};
        // Three correlated bands over 2,000 pixels; the after look is the before look through
        // another gain and offset per band, plus noise. 100 pixels become a bright roof.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let n = 2000;
        let mut before = ndarray::Array2::<f32>::zeros((3, n));
        let mut after = ndarray::Array2::<f32>::zeros((3, n));
        for i in 0..n {
            let (t, s): (f32, f32) = (rng.gen_range(0.0..1.0), rng.gen_range(0.0..1.0));
            let x = [t + 0.2 * s, 0.5 * t + s, t - 0.3 * s];
            for b in 0..3 {
                before[[b, i]] = x[b] + rng.gen_range(-0.01..0.01);
                let y = if i < 100 { [1.6, -0.2, 1.4][b] } else { x[b] };
                after[[b, i]] = 2.0 * y + 0.3 * b as f32 + rng.gen_range(-0.01..0.01);
            }
        }
        let changed = ir_mad(before.view(), after.view());
        let found = changed[..100].iter().filter(|c| **c).count();
        let false_alarms = changed[100..].iter().filter(|c| **c).count();
        assert!(found >= 90, "found {found} of 100");
        assert!(false_alarms <= 20, "{false_alarms} false alarms");
    }

    #[test]
    fn binary_score_ignores_unlabelled_pixels() {
        let p = [true, true, false, false, true];
        let c = [true, false, true, false, false];
        let u = [false, true, false, true, false];
        let s = binary_score(&p, &c, &u);
        assert_eq!(
            (
                s.true_positive,
                s.false_positive,
                s.false_negative,
                s.true_negative
            ),
            (1, 1, 1, 1)
        );
        assert!((s.f1 - 0.5).abs() < 1e-12);
    }
}

/// Land-cover accuracy against a reference, over the pixels both label (codes 1..=6):
/// overall accuracy, Cohen's kappa, per-class precision, recall and F1, and macro-F1 (the mean
/// F1 of the classes present in the reference; pixels given to absent classes still lower the
/// recall of the true ones).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClassScore {
    pub pixels: u64,
    pub overall_accuracy: f64,
    pub kappa: f64,
    pub macro_f1: f64,
    /// Class code -> F1, for classes in the reference or the prediction.
    pub f1: BTreeMap<u8, f64>,
    pub precision: BTreeMap<u8, f64>,
    pub recall: BTreeMap<u8, f64>,
    /// Class code -> reference pixels.
    pub pixels_by_class: BTreeMap<u8, u64>,
    /// confusion[truth - 1][predicted - 1]
    pub confusion: [[u64; 6]; 6],
}

pub fn class_score(truth: &[f64], predicted: &[f64]) -> ClassScore {
    let mut confusion = [[0u64; 6]; 6];
    for (&t, &p) in truth.iter().zip(predicted) {
        let (t, p) = (t as usize, p as usize);
        if (1..=6).contains(&t) && (1..=6).contains(&p) {
            confusion[t - 1][p - 1] += 1;
        }
    }
    class_score_counts(confusion)
}

/// The scores of a confusion matrix (rows reference, columns prediction, codes 1..=6).
pub(crate) fn class_score_counts(confusion: [[u64; 6]; 6]) -> ClassScore {
    let mut s = ClassScore {
        confusion,
        pixels: confusion.iter().flatten().sum(),
        ..Default::default()
    };
    let n = s.pixels as f64;
    let diag: u64 = (0..6).map(|k| s.confusion[k][k]).sum();
    s.overall_accuracy = diag as f64 / n;
    let row = |k: usize| s.confusion[k].iter().sum::<u64>() as f64;
    let col = |k: usize| (0..6).map(|r| s.confusion[r][k]).sum::<u64>() as f64;
    let expected: f64 = (0..6).map(|k| row(k) * col(k)).sum::<f64>() / (n * n);
    s.kappa = (s.overall_accuracy - expected) / (1.0 - expected);
    let mut present = Vec::new();
    for k in 0..6 {
        let tp = s.confusion[k][k] as f64;
        let code = k as u8 + 1;
        if row(k) > 0.0 {
            s.recall.insert(code, tp / row(k));
            s.pixels_by_class.insert(code, row(k) as u64);
        }
        if col(k) > 0.0 {
            s.precision.insert(code, tp / col(k));
        }
        if row(k) + col(k) > 0.0 {
            let f1 = 2.0 * tp / (row(k) + col(k));
            s.f1.insert(code, f1);
            if row(k) > 0.0 {
                present.push(f1);
            }
        }
    }
    s.macro_f1 = present.iter().sum::<f64>() / present.len().max(1) as f64;
    s
}

impl ClassScore {
    /// A Markdown report: headline figures, per-class table and confusion matrix.
    pub(crate) fn markdown(&self, title: &str) -> String {
        use crate::domain::land_cover::LandCover;
        let mut md = format!(
            "## {title}\n\n{} pixels, overall accuracy {:.3}, kappa {:.3}, macro-F1 {:.3}\n\n\
             | class | reference pixels | precision | recall | F1 |\n|---|---|---|---|---|\n",
            self.pixels, self.overall_accuracy, self.kappa, self.macro_f1
        );
        let fmt =
            |m: &BTreeMap<u8, f64>, c: u8| m.get(&c).map_or("-".into(), |v| format!("{v:.3}"));
        for c in LandCover::ALL {
            let code = c.code();
            if !self.f1.contains_key(&code) {
                continue;
            }
            md += &format!(
                "| {code} {} | {} | {} | {} | {} |\n",
                c.label_zh(),
                self.pixels_by_class.get(&code).copied().unwrap_or(0),
                fmt(&self.precision, code),
                fmt(&self.recall, code),
                fmt(&self.f1, code)
            );
        }
        md += "\nConfusion (rows reference, columns predicted):\n\n| | 1 | 2 | 3 | 4 | 5 | 6 |\n|---|---|---|---|---|---|---|\n";
        for (k, row) in self.confusion.iter().enumerate() {
            md += &format!(
                "| {} | {} |\n",
                k + 1,
                row.iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
        md
    }

    /// One line for the terminal.
    pub fn short(&self) -> String {
        format!(
            "{} px, OA {:.3}, kappa {:.3}, macro-F1 {:.3}, F1 {}",
            self.pixels,
            self.overall_accuracy,
            self.kappa,
            self.macro_f1,
            self.f1
                .iter()
                .map(|(c, f)| format!("{c}:{f:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

/// Draws the confusion matrix as a PNG: cells shaded by row share, with the counts, class
/// names and the headline figures (text in the font of [`crate::render::text_font`]).
pub(crate) fn confusion_png(score: &ClassScore, title: &str, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    crate::render::text_font()?;
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let (w, h) = (760u32, 640u32);
        let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let text = |size| ("sans-serif", size).into_font();
        root.draw(&Text::new(title.to_string(), (20, 12), text(22)))?;
        root.draw(&Text::new(
            format!(
                "{} px   OA {:.3}   kappa {:.3}   macro-F1 {:.3}",
                score.pixels, score.overall_accuracy, score.kappa, score.macro_f1
            ),
            (20, 42),
            text(16),
        ))?;
        let names = [
            "1 grain",
            "2 non-grain",
            "3 built-up",
            "4 water",
            "5 grass",
            "6 forest",
        ];
        let (x0, y0, cell) = (150i32, 110i32, 88i32);
        root.draw(&Text::new(
            "predicted",
            (x0 + 3 * cell - 30, y0 - 40),
            text(15),
        ))?;
        root.draw(&Text::new("reference", (10, y0 - 40), text(15)))?;
        for (k, name) in names.iter().enumerate() {
            let k = k as i32;
            root.draw(&Text::new(
                name.to_string(),
                (x0 + k * cell + 4, y0 - 20),
                text(13),
            ))?;
            root.draw(&Text::new(
                name.to_string(),
                (10, y0 + k * cell + cell / 2 - 7),
                text(13),
            ))?;
        }
        for (r, row) in score.confusion.iter().enumerate() {
            let total: u64 = row.iter().sum();
            for (c, &v) in row.iter().enumerate() {
                let share = if total > 0 {
                    v as f64 / total as f64
                } else {
                    0.0
                };
                let shade = (255.0 * (1.0 - share)) as u8;
                let colour = if r == c {
                    RGBColor(shade, 255 - (255 - shade) / 3, shade)
                } else {
                    RGBColor(255, shade, shade)
                };
                let (cx, cy) = (x0 + c as i32 * cell, y0 + r as i32 * cell);
                root.draw(&Rectangle::new(
                    [(cx, cy), (cx + cell, cy + cell)],
                    colour.filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(cx, cy), (cx + cell, cy + cell)],
                    BLACK.stroke_width(1),
                ))?;
                root.draw(&Text::new(
                    v.to_string(),
                    (cx + 8, cy + cell / 2 - 8),
                    text(15),
                ))?;
            }
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| {
        Error::input(
            path,
            format!("cannot draw the plot: {e}"),
            "check that the folder is writable",
        )
    })
}

#[cfg(test)]
mod class_tests {
    use super::*;

    #[test]
    fn class_score_counts_only_labelled_pixels() {
        let truth = [1.0, 1.0, 3.0, 3.0, 0.0];
        let pred = [1.0, 3.0, 3.0, 3.0, 1.0];
        let s = class_score(&truth, &pred);
        assert_eq!(s.pixels, 4);
        assert!((s.overall_accuracy - 0.75).abs() < 1e-12);
        assert!((s.f1[&1] - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.f1[&3] - 0.8).abs() < 1e-12);
    }
}
