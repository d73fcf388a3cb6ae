//! Training and evaluating learned models: training lowers the loss, a saved model reloads and
//! classifies exactly like the trained network, an interrupted run resumes from its checkpoint,
//! the shipped model keeps the figures of its card on the held-out real pixels, and a model is
//! refused by imagery that lacks its inputs.

use gengbao::classify::{
    select, Classifier, ClassifierInput, ClassifierKind, FeatureLayout, ModelCard, ModelFormat,
    TorchClassifier,
};
use gengbao::geo::sensor::SensorProfile;
use gengbao::train::{
    evaluate_classifier, extract, fit, train, visit_labelled, DatasetInfo, FitOptions, SampleSet,
    Split, TrainConfig,
};
use std::path::Path;
use tch::nn::Module;

/// A training config over one small generated city.
fn tiny_config(dir: &Path, epochs: usize) -> TrainConfig {
    let text = format!(
        r#"
[model]
output = "model.ot"
name = "tiny"
periods = 3
hidden = [16]
epochs = {epochs}
batch = 512
work_dir = "work"

[split]
block = 32
buffer = 1

[[dataset]]
name = "generated"
kind = "samples"
seed = 5
size = 128
periods = ["all"]
"#
    );
    let path = dir.join("train.toml");
    std::fs::write(&path, text).unwrap();
    TrainConfig::load(&path).unwrap()
}

/// The labelled pixels of a tiny config, with the default inputs of three periods.
fn samples_of(cfg: &TrainConfig) -> (SampleSet, Vec<DatasetInfo>) {
    let profile = cfg.profile();
    let layout = FeatureLayout::parse(
        &FeatureLayout::default_names(profile.bands, 3, &[]),
        profile,
    )
    .unwrap();
    extract(cfg, &layout).unwrap()
}

fn options(cfg: &TrainConfig) -> FitOptions {
    FitOptions::from(&cfg.model)
}

#[test]
fn training_lowers_the_loss_and_a_rerun_resumes_from_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 3);
    let (set, infos) = samples_of(&cfg);
    assert!(set.len() > 10_000, "{} labelled pixels", set.len());
    assert!(infos[0].pixels.len() >= 5, "classes {:?}", infos[0].pixels);
    // Every split has pixels.
    for s in [Split::Train, Split::Validation, Split::Test] {
        assert!(set.split.contains(&s), "{s:?} is empty");
    }

    let untrained = fit(
        &set,
        &FitOptions {
            epochs: 0,
            ..options(&cfg)
        },
        None,
        true,
    )
    .unwrap();
    let train_idx = set.indices(Split::Train);
    let before = untrained.loss(&set, &train_idx);
    let ckpt = tmp.path().join("ckpt");
    let trained = fit(&set, &options(&cfg), Some(&ckpt), true).unwrap();
    let after = trained.loss(&set, &train_idx);
    assert!(after < 0.5 * before, "loss {before} -> {after}");
    assert_eq!(trained.state.epochs_done, 3);

    // Running the same training again finds it finished in its checkpoint and redoes nothing.
    let again = fit(&set, &options(&cfg), Some(&ckpt), true).unwrap();
    assert_eq!(again.state.epochs_done, trained.state.epochs_done);
    for (a, b) in again.state.train_loss.iter().zip(&trained.state.train_loss) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }
    assert_eq!(
        again.predict(&set, &train_idx),
        trained.predict(&set, &train_idx)
    );
}

/// A fitted network's weights by name, flattened.
fn weights(fitted: &gengbao::train::Fitted) -> Vec<(String, Vec<f32>)> {
    let mut named: Vec<(String, Vec<f32>)> = fitted
        .vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, Vec::<f32>::from(t.flatten(0, -1))))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

#[test]
fn weight_averaging_keeps_the_mean_of_the_last_epochs_and_a_finished_run_returns_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 4);
    let (set, _) = samples_of(&cfg);
    let run = |epochs, average_from, patience, ckpt: Option<&Path>| {
        let opts = FitOptions {
            epochs,
            average_from,
            patience,
            ..options(&cfg)
        };
        fit(&set, &opts, ckpt, true).unwrap()
    };
    // The same seed and shuffles: the first three epochs of a four-epoch run are a
    // three-epoch run.
    let third = weights(&run(3, None, 100, None));
    let fourth = weights(&run(4, None, 100, None));
    assert!(third != fourth);
    // Averaging from the third epoch; patience 1 does not apply.
    let ckpt = tmp.path().join("ckpt");
    let averaged = run(4, Some(3), 1, Some(&ckpt));
    assert_eq!(averaged.state.epochs_done, 4);
    assert!(!averaged.state.stopped_early);
    assert_eq!(averaged.state.averaged_epochs, 2);
    let mean = weights(&averaged);
    assert!(mean.len() == third.len() && mean.len() == fourth.len() && !mean.is_empty());
    for ((name, m), ((_, a), (_, b))) in mean.iter().zip(third.iter().zip(&fourth)) {
        assert!(m.len() == a.len() && m.len() == b.len(), "{name}");
        for ((m, a), b) in m.iter().zip(a).zip(b) {
            assert!(
                (m - (a + b) / 2.0).abs() < 1e-6,
                "{name}: {m} against {a} and {b}"
            );
        }
    }
    // Run again, the finished run gives back the mean from its checkpoint, not the last epoch.
    let again = run(4, Some(3), 1, Some(&ckpt));
    assert_eq!(again.state.averaged_epochs, 2);
    assert!(weights(&again) == mean);

    // A state that disagrees with the saved mean (a crash between the two files) is named.
    let state = ckpt.join("state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    let edited = text.replace("\"averaged_epochs\": 2", "\"averaged_epochs\": 1");
    assert!(edited != text, "{text}");
    std::fs::write(&state, edited).unwrap();
    let opts = FitOptions {
        epochs: 4,
        average_from: Some(3),
        patience: 1,
        ..options(&cfg)
    };
    let err = fit(&set, &opts, Some(&ckpt), true)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("average.ot") && err.contains("delete the checkpoint folder"),
        "{err}"
    );
    // An epoch the run does not have is refused before training.
    let err = fit(
        &set,
        &FitOptions {
            average_from: Some(5),
            ..opts
        },
        None,
        true,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("average_from = 5"), "{err}");
}

#[test]
fn a_saved_model_reloads_and_classifies_like_the_trained_network() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 2);
    let report = train(&cfg, true).unwrap();
    assert!(report.model.exists() && ModelCard::card_path(&report.model).exists());
    let card = &report.card;
    assert_eq!(card.format, ModelFormat::VarstoreMlp);
    assert_eq!(card.periods, 3);
    for key in ["version", "created", "architecture", "training", "metrics"] {
        assert!(card.extra.contains_key(key), "card lacks {key}");
    }
    let generated = &card.extra["metrics"]["generated_holdout"];
    assert!(generated["macro_f1"].as_f64().unwrap() > 0.5, "{generated}");
    assert!(card.extra["metrics"]["real_holdout"].is_null());

    // The network rebuilt from the file, fed through the card, against the classifier the
    // pipeline uses: same classes and probabilities on a whole tile with history.
    let profile = cfg.profile();
    let clf = TorchClassifier::load(&report.model, profile).unwrap();
    assert_eq!(clf.version(), card.extra["version"].as_str().unwrap());
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = gengbao::classify::build_mlp(
        &vs.root(),
        card.input_bands.len() as i64,
        &card.hidden,
        6,
        None,
    );
    vs.load(&report.model).unwrap();
    let layout = FeatureLayout::parse(&card.input_bands, profile).unwrap();
    let mut compared = 0;
    visit_labelled(&cfg, false, |t| {
        if t.history.len() < 2 || compared > 0 {
            return Ok(());
        }
        let out = clf
            .classify(&ClassifierInput {
                profile,
                composite: t.composite,
                history: t.history,
                runner_up: false,
                wanted: None,
            })
            .unwrap();
        let pixels = layout.observed_pixels(t.composite);
        let mut x = Vec::new();
        let tile = layout.tile_inputs(t.composite, t.history);
        layout.push_pixels(&tile, &pixels, &card.normalisation, &mut x);
        let x = tch::Tensor::of_slice(&x).view([pixels.len() as i64, layout.len() as i64]);
        let (prob, idx) = net
            .forward(&x)
            .softmax(-1, tch::Kind::Float)
            .max_dim(-1, false);
        let (prob, idx) = (Vec::<f32>::from(&prob), Vec::<i64>::from(&idx));
        for (k, &i) in pixels.iter().enumerate() {
            assert_eq!(out.classes[i], card.classes[idx[k] as usize], "pixel {i}");
            assert!((out.confidence[i] - prob[k]).abs() < 1e-6, "pixel {i}");
        }
        compared = pixels.len();
        Ok(())
    })
    .unwrap();
    assert!(compared > 1000, "compared {compared} pixels");
    // Scoring the saved model again gives the card's figures.
    let again = evaluate_classifier(&cfg, &clf, &[Split::Test])
        .unwrap()
        .remove(0);
    assert_eq!(
        serde_json::to_value(&again.generated_holdout).unwrap(),
        *generated
    );
}

#[test]
fn the_shipped_model_keeps_its_card_figures_on_held_out_real_pixels() {
    if crate::common::real_data("worldcereal-s2", "00002806639B424A/B02.tif").is_none() {
        eprintln!("SKIPPED: ../shared/data/worldcereal-s2 not found (set GENGBAO_REAL_DATA to the data folder)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = TrainConfig::load(&root.join("models/gengbao-s2-v1.train.toml")).unwrap();
    let profile = cfg.profile();
    let clf = TorchClassifier::builtin(profile).unwrap();
    let metrics = &clf.card().extra["metrics"];
    let e = evaluate_classifier(&cfg, &clf, &[Split::Test])
        .unwrap()
        .remove(0);
    let real = e.real_holdout.expect("real test pixels");
    let card_f1 = metrics["real_holdout"]["macro_f1"].as_f64().unwrap();
    println!(
        "real held-out: {} (card macro-F1 {card_f1:.3})",
        real.short()
    );
    assert!(real.pixels > 5_000, "{} real test pixels", real.pixels);
    assert!(
        real.macro_f1 >= card_f1 - 0.02,
        "macro-F1 {} < card {card_f1} - 0.02",
        real.macro_f1
    );
    let generated = e.generated_holdout.expect("generated test pixels");
    let card_gen = metrics["generated_holdout"]["macro_f1"].as_f64().unwrap();
    assert!(generated.macro_f1 >= card_gen - 0.02);
}

#[test]
fn the_shipped_model_is_refused_by_imagery_without_its_bands() {
    let landsat = SensorProfile::by_name("landsat-tm-sr").unwrap();
    let err = TorchClassifier::builtin(landsat).err().expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("B02") && msg.contains("landsat-tm-sr"),
        "{msg}"
    );
    // `learned` insists; `auto` falls back to the index rules and says so in its version.
    assert!(select(ClassifierKind::Learned, None, landsat).is_err());
    assert_eq!(
        select(ClassifierKind::Auto, None, landsat)
            .unwrap()
            .version(),
        "index-v1"
    );
    let s2 = SensorProfile::by_name("sentinel2-l2a").unwrap();
    assert_ne!(
        select(ClassifierKind::Auto, None, s2).unwrap().version(),
        "index-v1"
    );
}
