//! Accuracy against truth.
//!
//! Object matching for patches (the same rule as the peer benchmark): a reported patch is
//! correct when at least half of its pixels are planted change of its type; a planted change is
//! found when at least half of its pixels are covered by reported patches of its type.
//! Pixel scores for binary change maps: precision, recall and F1 of "changed" on the pixels a
//! reference labels changed or unchanged (unlabelled pixels do not count).

use crate::change::ChangeType;
use crate::error::{Error, GdalContext, Result};
use crate::grid::JobGrid;
use crate::raster::rasterize;
use gdal::vector::{Geometry, LayerAccess};
use gdal::Dataset;
use serde::Serialize;
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

fn grid_of(path: &Path) -> Result<JobGrid> {
    let ds = Dataset::open(path).in_file(path, "check the path")?;
    JobGrid::of_dataset(&ds, path)
}

/// Object scores per change type of `reported` polygons against the truth of a generated city
/// (`truth/change_<period>.tif` and `truth/changes.gpkg`).
pub fn score_against_truth(
    truth_dir: &Path,
    period: &str,
    reported: &[(ChangeType, Geometry)],
) -> Result<BTreeMap<&'static str, ObjectScore>> {
    let truth_raster = truth_dir.join(format!("change_{period}.tif"));
    let grid = grid_of(&truth_raster)?;
    let (_, _, truth) = crate::raster::read_band_f64(&truth_raster, 1)?;
    let whole = grid.full_window();
    // Patches may be in another CRS than the truth (a job on a Gauss-Krüger grid).
    let truth_srs = grid.spatial_ref()?;
    let rep_geoms: Vec<Geometry> = reported
        .iter()
        .map(|(_, g)| match g.spatial_ref() {
            Some(mut srs) if srs != truth_srs => {
                srs.set_axis_mapping_strategy(
                    gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder,
                );
                let mut g = g.clone();
                g.transform_inplace(&gdal::spatial_ref::CoordTransform::new(&srs, &truth_srs)?)?;
                Ok(g)
            }
            _ => Ok(g.clone()),
        })
        .collect::<Result<_>>()?;
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

/// Land-cover accuracy of a class raster against a truth raster on the same grid: overall
/// accuracy, Cohen's kappa and per-class F1 over the pixels both label (codes 1..=6).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ClassScore {
    pub pixels: u64,
    pub overall_accuracy: f64,
    pub kappa: f64,
    /// Class code -> F1.
    pub f1: BTreeMap<u8, f64>,
    /// confusion[truth - 1][predicted - 1]
    pub confusion: [[u64; 6]; 6],
}

pub fn class_score(truth: &[f64], predicted: &[f64]) -> ClassScore {
    let mut s = ClassScore::default();
    for (&t, &p) in truth.iter().zip(predicted) {
        let (t, p) = (t as usize, p as usize);
        if (1..=6).contains(&t) && (1..=6).contains(&p) {
            s.confusion[t - 1][p - 1] += 1;
            s.pixels += 1;
        }
    }
    let n = s.pixels as f64;
    let diag: u64 = (0..6).map(|k| s.confusion[k][k]).sum();
    s.overall_accuracy = diag as f64 / n;
    let row = |k: usize| s.confusion[k].iter().sum::<u64>() as f64;
    let col = |k: usize| (0..6).map(|r| s.confusion[r][k]).sum::<u64>() as f64;
    let expected: f64 = (0..6).map(|k| row(k) * col(k)).sum::<f64>() / (n * n);
    s.kappa = (s.overall_accuracy - expected) / (1.0 - expected);
    for k in 0..6 {
        let tp = s.confusion[k][k] as f64;
        if row(k) + col(k) > 0.0 {
            s.f1.insert(k as u8 + 1, 2.0 * tp / (row(k) + col(k)));
        }
    }
    s
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
