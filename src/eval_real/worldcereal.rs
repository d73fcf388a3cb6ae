//! The real WorldCereal series of Flanders: two 64 × 64 px Sentinel-2 L2A patches (2017-2019,
//! one GDAL band per date) labelled by the parcel register for one season (annual crops 1,
//! grassland 5, built-up 3).
//!
//! Leave-one-patch-out: for each patch, gengbao's multi-period model is retrained by its
//! shipped config (`models/gengbao-s2-v1.train.toml`) without that patch (the other patch
//! and the generated cities), and classifies the patch's labelled periods exactly as a job
//! does (period composites with their archived history). Beside it, a random forest on the
//! ten raw bands of the period composite, grown on the other patch's labelled pixels (every
//! fourth). Both are scored on the same pixels: labelled, and observed in every band.

use super::{forest_classes, grow_forest, LandCoverSet};
use crate::classify::{Classifier, ClassifierInput, TorchClassifier};
use crate::error::{Error, Result};
use crate::evaluate::class_score;
use crate::train::{train, visit_labelled, TrainConfig};
use std::path::Path;

/// The training config of the shipped multi-period model, which each fold retrains.
const MULTI_PERIOD_TRAINING: &str = include_str!("../../models/gengbao-s2-v1.train.toml");

/// Every fourth labelled pixel-period of the other patch grows the forest.
const TRAINING_STRIDE: usize = 4;

/// Runs the Flanders patches under `data`, when present; `None` when the folder is absent.
pub(super) fn worldcereal(data: &Path, work: &Path) -> Result<Option<LandCoverSet>> {
    if !data.join("worldcereal-s2").is_dir() {
        return Ok(None);
    }
    let data = std::path::absolute(data).map_err(|e| Error::io(data, e))?;
    let mut base = TrainConfig::parse(MULTI_PERIOD_TRAINING, &work.join("train.toml"))?;
    let real_data = data.to_string_lossy().into_owned();
    for d in &mut base.datasets {
        for p in [&mut d.path, &mut d.labels].into_iter().flatten() {
            *p = p.replace("{real_data}", &real_data);
        }
    }
    let real: Vec<usize> = (0..base.datasets.len())
        .filter(|&i| base.datasets[i].real)
        .collect();
    let (mut truth, mut gengbao, mut forest) = (Vec::new(), Vec::new(), Vec::new());
    let mut version = String::new();
    for &held_out in &real {
        let fold = work.join(format!("without-{}", base.datasets[held_out].name));
        let model = model_without(&base, held_out, &fold)?;
        version = model.version().to_string();
        let only = |keep: &dyn Fn(usize) -> bool| {
            let mut cfg = base.clone();
            cfg.datasets = (0..base.datasets.len())
                .filter(|&i| keep(i))
                .map(|i| base.datasets[i].clone())
                .collect();
            cfg
        };
        let others = only(&|i| real.contains(&i) && i != held_out);
        let yardstick = forest_of(&others)?;
        let scored = only(&|i| i == held_out);
        let profile = scored.profile();
        visit_labelled(&scored, false, |t| {
            let classified = model.classify(&ClassifierInput {
                profile,
                composite: t.composite,
                history: t.history,
                runner_up: false,
                wanted: None,
            })?;
            let (pixels, rows) = labelled_rows(&t);
            let classes = forest_classes(&yardstick, rows)?;
            for (&i, c) in pixels.iter().zip(classes) {
                truth.push(f64::from(t.labels[i]));
                gengbao.push(f64::from(classified.classes[i]));
                forest.push(f64::from(c));
            }
            Ok(())
        })?;
    }
    Ok(Some(LandCoverSet {
        set: "worldcereal-s2".into(),
        patches: real.len(),
        classifier: format!(
            "models/gengbao-s2-v1.train.toml retrained without each patch (last fold's version {version})"
        ),
        labels: "WorldCereal 11 annual crop 1, 60 built-up 3, 13 grassland 5".into(),
        gengbao: class_score(&truth, &gengbao),
        random_forest: class_score(&truth, &forest),
    }))
}

/// gengbao's multi-period model trained by its shipped config without dataset `held_out`,
/// under `work`.
fn model_without(base: &TrainConfig, held_out: usize, work: &Path) -> Result<TorchClassifier> {
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| Error::io(p, e));
    let mut cfg = base.clone();
    cfg.datasets.remove(held_out);
    cfg.model.output = absolute(&work.join("model.ot"))?;
    cfg.model.work_dir = Some(absolute(&work.join("train"))?);
    let report = train(&cfg, true)?;
    TorchClassifier::load(&report.model, cfg.profile())
}

/// The labelled pixels of a tile observed in every band, and their raw bands.
fn labelled_rows(t: &crate::train::LabelledTile) -> (Vec<usize>, Vec<Vec<f64>>) {
    let bands = t.composite.pixels();
    let mut pixels = Vec::new();
    let mut rows = Vec::new();
    for i in (0..t.labels.len()).filter(|&i| t.labels[i] != 0) {
        let row: Vec<f64> = bands.column(i).iter().map(|&v| f64::from(v)).collect();
        if row.iter().all(|v| v.is_finite()) {
            pixels.push(i);
            rows.push(row);
        }
    }
    (pixels, rows)
}

/// A forest grown on every fourth labelled pixel-period of the config's datasets.
fn forest_of(cfg: &TrainConfig) -> Result<super::Forest> {
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    visit_labelled(cfg, false, |t| {
        let (pixels, r) = labelled_rows(&t);
        for (k, (i, row)) in pixels.into_iter().zip(r).enumerate() {
            if k % TRAINING_STRIDE == 0 {
                rows.push(row);
                labels.push(t.labels[i]);
            }
        }
        Ok(())
    })?;
    grow_forest(rows, labels)
}
