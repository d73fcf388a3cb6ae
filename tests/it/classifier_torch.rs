//! The libtorch classifier: models trained in gengbao (VarStore) and TorchScript modules from
//! PyTorch load with a model card, classify tiles in batches, and a card that does not match
//! the imagery is refused.

use gengbao::classify::{build_mlp, Classifier, ClassifierInput, ModelCard, TorchClassifier};
use gengbao::geo::composite::Composite;
use gengbao::geo::sensor::SensorProfile;
use gengbao::job::config::JobConfig;
use gengbao::job::run::{run_period, RunOptions};
use std::path::Path;
use std::process::Command;
use tch::nn::Module;

const S2: [&str; 10] = [
    "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12",
];

/// Saves a freshly initialised MLP for `bands` with its card; returns the store and network.
fn save_mlp(
    model: &Path,
    bands: &[&str],
    hidden: &[i64],
) -> (tch::nn::VarStore, tch::nn::Sequential) {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = build_mlp(&vs.root(), bands.len() as i64, hidden, 6, Some(1));
    vs.save(model).unwrap();
    write_card(model, "varstore-mlp", bands, hidden);
    (vs, net)
}

fn write_card(model: &Path, format: &str, bands: &[&str], hidden: &[i64]) {
    write_card_of_periods(model, format, bands, hidden, 1);
}

fn write_card_of_periods(
    model: &Path,
    format: &str,
    bands: &[&str],
    hidden: &[i64],
    periods: usize,
) {
    let card = serde_json::json!({
        "name": "test-model",
        "format": format,
        "input_bands": bands,
        "normalisation": { "mean": vec![0.0; bands.len()], "std": vec![1.0; bands.len()] },
        "classes": [1, 2, 3, 4, 5, 6],
        "periods": periods,
        "hidden": hidden,
        "training_data": "none: a test fixture"
    });
    std::fs::write(
        ModelCard::card_path(model),
        serde_json::to_vec_pretty(&card).unwrap(),
    )
    .unwrap();
}

/// A 4x5 composite whose pixel i has reflectance (i + 1 + band) / 100 in every band.
fn composite(profile: &SensorProfile) -> Composite {
    let bands = ndarray::Array3::from_shape_fn((profile.bands.len(), 4, 5), |(b, r, c)| {
        (r * 5 + c + 1 + b) as f32 / 100.0
    });
    Composite::single(profile, bands)
}

fn classify(
    clf: &TorchClassifier,
    profile: &'static SensorProfile,
    comp: &Composite,
) -> gengbao::classify::Classified {
    clf.classify(&ClassifierInput {
        profile,
        composite: comp,
        history: &[],
        runner_up: false,
        wanted: None,
    })
    .unwrap()
}

/// libtorch's softmax of `net` over the pixels of `comp` (pixels × classes), the network the
/// loaded classifier must agree with.
fn libtorch_probabilities(net: &tch::nn::Sequential, comp: &Composite) -> tch::Tensor {
    // One row of 10 band values per pixel: the bands axis last.
    let x: Vec<f32> = comp.pixels().t().iter().copied().collect();
    net.forward(&tch::Tensor::of_slice(&x).view([comp.len() as i64, 10]))
        .softmax(-1, tch::Kind::Float)
}

#[test]
fn a_varstore_model_reloads_and_classifies_like_the_trained_network() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("mlp.ot");
    let (_vs, net) = save_mlp(&model, &S2, &[16, 8]);

    let profile = SensorProfile::by_name("sentinel2-l2a").unwrap();
    let clf = TorchClassifier::load(&model, profile).unwrap();
    let comp = composite(profile);
    let out = classify(&clf, profile, &comp);

    let expected = libtorch_probabilities(&net, &comp);
    let (p, idx) = expected.max_dim(-1, false);
    let (p, idx) = (Vec::<f32>::from(&p), Vec::<i64>::from(&idx));
    for i in 0..20 {
        assert_eq!(out.classes[i] as i64, idx[i] + 1, "pixel {i}");
        assert!((out.confidence[i] - p[i]).abs() < 1e-6);
    }
    assert_eq!(clf.version().len(), 12, "version is a short content hash");
}

#[test]
fn only_the_wanted_pixels_are_classified_with_the_runner_up_libtorch_would_give() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("mlp.ot");
    let (_vs, net) = save_mlp(&model, &S2, &[16, 8]);
    let profile = SensorProfile::by_name("sentinel2-l2a").unwrap();
    let clf = TorchClassifier::load(&model, profile).unwrap();
    let comp = composite(profile);
    let wanted: Vec<bool> = (0..20).map(|i| i % 3 != 0).collect();
    let out = clf
        .classify(&ClassifierInput {
            profile,
            composite: &comp,
            history: &[],
            runner_up: true,
            wanted: Some(&wanted),
        })
        .unwrap();

    let p = libtorch_probabilities(&net, &comp);
    let p: Vec<Vec<f32>> = (0..20).map(|i| Vec::<f32>::from(&p.get(i))).collect();
    for i in 0..20 {
        if !wanted[i] {
            assert_eq!(out.classes[i], 0, "pixel {i} was not wanted");
            assert_eq!(out.runner_up[i], 0, "pixel {i} was not wanted");
            continue;
        }
        let mut order: Vec<usize> = (0..6).collect();
        order.sort_by(|&a, &b| p[i][b].total_cmp(&p[i][a]));
        let (first, second) = (order[0], order[1]);
        assert_eq!(out.classes[i] as usize, first + 1, "pixel {i}");
        assert!((out.confidence[i] - p[i][first]).abs() < 1e-6, "pixel {i}");
        assert_eq!(out.runner_up[i] as usize, second + 1, "pixel {i}");
        let given_not_first = p[i][second] / (1.0 - p[i][first]);
        assert!(
            (out.runner_up_confidence[i] - given_not_first).abs() < 1e-5,
            "pixel {i}: {} against {given_not_first}",
            out.runner_up_confidence[i]
        );
    }
}

#[test]
fn a_torchscript_module_from_pytorch_is_used_as_is() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("picker.pt");
    // Output k is 100 x band k: the class is the band with the highest reflectance among the
    // first six.
    let script = format!(
        "import torch\nm = torch.nn.Linear(10, 6, bias=False)\nw = torch.zeros(6, 10)\nfor k in range(6): w[k, k] = 100.0\nm.weight.data = w\ntorch.jit.save(torch.jit.trace(m, torch.zeros(2, 10)), r'{}')\n",
        model.display()
    );
    let made = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!("SKIPPED: Debian's python3-torch could not make the TorchScript fixture ({other:?}); run scripts/setup.sh");
            return;
        }
    }
    write_card(&model, "torchscript", &S2, &[]);
    let profile = SensorProfile::by_name("sentinel2-l2a").unwrap();
    let clf = TorchClassifier::load(&model, profile).unwrap();
    let mut comp = composite(profile);
    for ((b, r, c), v) in comp.bands.indexed_iter_mut() {
        *v = if b == (r * 5 + c) % 6 { 0.5 } else { 0.1 };
    }
    let out = classify(&clf, profile, &comp);
    let expected: Vec<u8> = (0..20).map(|i| (i % 6) as u8 + 1).collect();
    assert_eq!(out.classes, expected);
    assert!(out.confidence.iter().all(|&c| c > 0.99));
}

#[test]
fn a_card_that_does_not_match_the_imagery_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("l1c.ot");
    save_mlp(&model, &["B01", "B09", "B10"], &[4]);
    let profile = SensorProfile::by_name("sentinel2-l2a").unwrap();
    let err = TorchClassifier::load(&model, profile)
        .err()
        .expect("must refuse")
        .to_string();
    assert!(
        err.contains("l1c.ot.json") && err.contains("B10") && err.contains("sentinel2-l2a"),
        "{err}"
    );

    // Weights that do not fit the card's architecture.
    write_card(&model, "varstore-mlp", &S2, &[32]);
    let err = TorchClassifier::load(&model, profile)
        .err()
        .expect("must refuse")
        .to_string();
    assert!(err.contains("l1c.ot") && err.contains("fix:"), "{err}");
}

/// A job config that classifies with the model file `model` beside it.
fn with_model(config: &str, model: &str) -> String {
    let auto = "kind = \"auto\"";
    assert!(
        config.contains(auto),
        "the sample config picks its classifier"
    );
    config.replace(auto, &format!("kind = \"torch\"\nmodel = \"{model}\""))
}

#[test]
fn the_job_runs_with_a_torch_model() {
    let tmp = tempfile::tempdir().unwrap();
    let city = crate::common::city(&tmp.path().join("city"), 128, 3, 64);
    let model = city.dir.join("mlp.ot");
    save_mlp(&model, &S2, &[8]);
    let text = with_model(&crate::common::config_text(&city), "mlp.ot");
    std::fs::write(&city.job_config, text).unwrap();
    let cfg = JobConfig::load(&city.job_config).unwrap();
    let s = run_period(&cfg, city.periods[0], &RunOptions::quiet()).unwrap();
    assert_eq!(s.classifier.len(), 12);
    let class =
        gengbao::geo::raster::read_band_f64(&cfg.layout().period(city.periods[0]).class(), 1)
            .unwrap()
            .2;
    assert!(class.iter().all(|&c| (0.0..=6.0).contains(&c)) && class.iter().any(|&c| c > 0.0));
}

#[test]
fn a_model_that_reads_the_period_before_sees_its_archived_bands_in_a_job() {
    let tmp = tempfile::tempdir().unwrap();
    let city = crate::common::city(&tmp.path().join("city"), 128, 3, 64);
    let job = |p| {
        let cfg = JobConfig::load(&city.job_config).unwrap();
        run_period(&cfg, p, &RunOptions::quiet()).unwrap();
        cfg.layout().period(p)
    };
    let text = crate::common::config_text(&city);
    std::fs::write(&city.job_config, &text).unwrap();
    let before = job(city.periods[0]);
    // The red band of the period before, as archived (B04 is the third band of the look).
    let red_before: Vec<f32> = gengbao::geo::raster::read_band_f64(&before.look(), 3)
        .unwrap()
        .2
        .iter()
        .map(|&v| {
            if v == -32768.0 {
                f32::NAN
            } else {
                v as f32 / 10_000.0
            }
        })
        .collect();
    let mut seen: Vec<f32> = red_before
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    seen.sort_by(f32::total_cmp);
    // Half a step of the archive's 0.0001 between two values: no pixel sits on the cut.
    let cut = seen[seen.len() / 2] + 0.5e-4;

    // A linear model of one input, B04-1: class 1 where last period's red is above `cut`,
    // class 2 below it.
    let model = city.dir.join("red-before.ot");
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = build_mlp(&vs.root(), 1, &[], 6, None);
    tch::no_grad(|| {
        let mut vars = vs.variables();
        let mut w = vec![0f32; 6];
        w[0] = 1000.0;
        let mut b = vec![-1000.0f32; 6];
        b[0] = 0.0;
        b[1] = 1000.0 * cut;
        let mut set = |name: &str, values: tch::Tensor| {
            vars.get_mut(name).expect("a linear layer").copy_(&values);
        };
        set("out.weight", tch::Tensor::of_slice(&w).view([6, 1]));
        set("out.bias", tch::Tensor::of_slice(&b));
    });
    vs.save(&model).unwrap();
    write_card_of_periods(&model, "varstore-mlp", &["B04-1"], &[], 2);
    std::fs::write(&city.job_config, with_model(&text, "red-before.ot")).unwrap();
    let now = job(city.periods[1]);
    let class = gengbao::geo::raster::read_band_f64(&now.class(), 1)
        .unwrap()
        .2;
    let red_now = gengbao::geo::raster::read_band_f64(&now.look(), 3)
        .unwrap()
        .2;
    let (mut checked, mut now_differs) = (0, 0);
    for i in 0..class.len() {
        if class[i] == 0.0 || !red_before[i].is_finite() {
            continue;
        }
        let want = if red_before[i] > cut { 1.0 } else { 2.0 };
        assert_eq!(class[i], want, "pixel {i}: red before {}", red_before[i]);
        checked += 1;
        let from_now = if red_now[i] as f32 / 10_000.0 > cut {
            1.0
        } else {
            2.0
        };
        now_differs += usize::from(from_now != want);
    }
    assert!(checked > 10_000, "{checked} pixels classified");
    assert!(
        now_differs > 100,
        "this period's red would give other classes on {now_differs} pixels: the test needs both"
    );
}

#[test]
fn detect_runs_with_a_torch_model() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("mlp.ot");
    save_mlp(&model, &S2, &[8]);
    for (name, level) in [("t1.tif", 1500u16), ("t2.tif", 3000)] {
        crate::common::geotiff(&tmp.path().join(name), 32, 10, 10.0, |b, _| {
            level + 100 * b as u16
        });
    }
    let out = tmp.path().join("out");
    let s = gengbao::detect::detect(&gengbao::detect::DetectOptions {
        model: Some(model),
        ..gengbao::detect::DetectOptions::new(
            tmp.path().join("t1.tif"),
            tmp.path().join("t2.tif"),
            out.clone(),
        )
    })
    .unwrap();
    assert_eq!(
        s.classifier.len(),
        12,
        "the model's hash, not the index baseline"
    );
    let classes = gengbao::geo::raster::read_band_f64(&out.join("class_after.tif"), 1)
        .unwrap()
        .2;
    assert!(classes.iter().all(|&c| (1.0..=6.0).contains(&c)));
}
