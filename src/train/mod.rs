//! Training and evaluating learned land-cover models.
//!
//! Takes: a training config (`TRAIN.toml`, see [`TrainConfig`]) naming labelled datasets:
//! folders of acquisitions or per-band time stacks with a label raster and a class map, and
//! generated sample cities. Gives: a model file with its card (`<model>.json`): inputs,
//! normalisation, architecture, training data with content hashes, which class was learned
//! from which data, and held-out figures on real and on generated data.
//!
//! Every labelled pixel is turned into model inputs by the pipeline's own code (the period
//! composite of [`composite::build`](crate::geo::composite::build), earlier periods as the archive stores them, and
//! [`FeatureLayout`]), so a model sees at run time what it learned from. Pixels are split into
//! train / validation / test by square blocks of the label grid, never pixel by pixel: the
//! pixels of one field are (nearly) always on one side, and a buffer at block edges is left
//! out so that a field crossing an edge does not leak.

mod config;
mod data;
mod evaluate;
mod fit;
mod point_model;

pub use config::TrainConfig;
pub use data::{
    extract, unpack_band_stacks, visit_labelled, DatasetInfo, LabelledTile, SampleSet, Split,
};
pub use evaluate::{evaluate_classifier, Evaluation};
pub use fit::{fit, FitOptions, Fitted};

pub(crate) use data::{files_with_extension, patch_files};
pub(crate) use fit::{save_weights, FitState};
pub(crate) use point_model::PointModel;

use crate::classify::{Classifier, FeatureLayout, ModelCard, TorchClassifier};
use crate::domain::land_cover::LandCover;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What `gengbao train` did.
pub struct TrainReport {
    pub model: PathBuf,
    pub card: ModelCard,
    pub state: FitState,
    pub test: Evaluation,
}

/// `gengbao train`: extract, fit, save the model and its card, and score it on the test split
/// through the pipeline's own classifier.
pub fn train(cfg: &TrainConfig, quiet: bool) -> Result<TrainReport> {
    let profile = cfg.profile();
    let names = cfg.input_names();
    let layout = FeatureLayout::parse(&names, profile).expect("validated with the config");
    if !quiet {
        eprintln!(
            "extracting labelled pixels from {} datasets",
            cfg.datasets.len()
        );
    }
    let (set, infos) = extract(cfg, &layout)?;
    let work = cfg.work_dir();
    let opts = FitOptions::from(&cfg.model);
    let fitted = fit(&set, &opts, Some(&work.join("checkpoints")), quiet)?;

    let output = cfg.output();
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let card_path = ModelCard::card_path(&output);
    // The model and its card replace the old pair only when both are complete.
    // tch picks the weight format by extension (`.pt` means a zipped state dict, which
    // `save_weights` does not write): gengbao's VarStore files are `.ot`.
    let partial_model = output.with_extension("partial.ot");
    save_weights(&fitted.vs, &partial_model)?;
    let mut card = fitted.card(&cfg.model.name, names, cfg.model.periods, &cfg.model.hidden);
    let partial_card = ModelCard::card_path(&partial_model);
    card.save(&partial_model)?;
    let classifier = TorchClassifier::load(&partial_model, profile)?;
    let [test, validation]: [Evaluation; 2] =
        evaluate_classifier(cfg, &classifier, &[Split::Test, Split::Validation])?
            .try_into()
            .expect("one evaluation per split");
    let learned_from: BTreeMap<String, Vec<String>> = LandCover::ALL
        .iter()
        .map(|c| {
            let from = infos
                .iter()
                .filter(|d| d.pixels.get(&c.code()).copied().unwrap_or(0) > 0)
                .map(|d| format!("{} ({})", d.name, if d.real { "real" } else { "generated" }))
                .collect();
            (format!("{} {}", c.code(), c.label_zh()), from)
        })
        .collect();
    let extra = serde_json::json!({
        "architecture": format!(
            "per-pixel MLP {} -> {} -> 6 (ReLU), softmax probability = confidence",
            layout.len(),
            cfg.model.hidden.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(" -> ")
        ),
        "version": classifier.version(),
        "created": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "command": format!("gengbao train --config {}", cfg.source.display()),
        "training": {
            "datasets": infos,
            "learned_from": learned_from,
            "split": cfg.split,
            "seed": cfg.model.seed,
            "epochs_run": fitted.state.epochs_done,
            "best_epoch": fitted.state.best_epoch,
            "stopped_early": fitted.state.stopped_early,
            "averaged_epochs": fitted.state.averaged_epochs,
            "learning_rate": cfg.model.learning_rate,
            "batch": cfg.model.batch,
        },
        "metrics": {
            "real_holdout": test.real_holdout,
            "generated_holdout": test.generated_holdout,
            "real_validation": validation.real_holdout,
            "generated_validation": validation.generated_holdout,
        },
    });
    if let serde_json::Value::Object(map) = extra {
        card.extra = map;
    }
    card.save(&partial_model)?;
    std::fs::rename(&partial_model, &output).map_err(|e| Error::io(&output, e))?;
    std::fs::rename(&partial_card, &card_path).map_err(|e| Error::io(&card_path, e))?;
    Ok(TrainReport {
        model: output,
        card,
        state: fitted.state,
        test,
    })
}
