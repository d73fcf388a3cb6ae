//! A period split into shards, each run by its own process, merges to the bytes one `run`
//! gives; the merge refuses while a shard is missing, unfinished or run with other inputs,
//! naming it; a shard run again resumes.

use crate::common::{city, config_text, copy_dir, run_all};
use gengbao::job::run::{run_period, RunOptions};
use gengbao::ledger::{Filter, Ledger};
use gengbao::JobConfig;
use std::path::Path;
use std::process::Command;

/// What a finished period gave: its rasters' bytes, each county's patches, the ledger's
/// entries and transitions (without their times).
fn period_bytes(cfg: &JobConfig, period: gengbao::Period) -> Vec<Vec<u8>> {
    let dir = cfg.layout().period(period).dir().to_path_buf();
    let mut out: Vec<Vec<u8>> = [
        "class.tif",
        "ndvi.tif",
        "composite.tif",
        "signals.tif",
        "flags.tif",
    ]
    .iter()
    .map(|f| std::fs::read(dir.join(f)).unwrap())
    .collect();
    for code in ["320901", "320902"] {
        out.push(
            std::fs::read(
                dir.join("counties")
                    .join(code)
                    .join(format!("TB_{code}_{period}.geojson")),
            )
            .unwrap(),
        );
    }
    let ledger = Ledger::open_existing(&cfg.layout().ledger_file()).unwrap();
    let entries = ledger.list(&Filter::default()).unwrap();
    out.push(format!("{entries:?}").into_bytes());
    let moves: Vec<_> = ledger
        .history(None, None)
        .unwrap()
        .into_iter()
        .map(|t| (t.tbbh, t.from, t.to, t.period, t.note))
        .collect();
    out.push(format!("{moves:?}").into_bytes());
    out
}

fn gengbao(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gengbao"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs the shards of `period` as `count` processes at once.
fn run_shards(config: &Path, period: &str, count: usize) {
    let children: Vec<_> = (0..count)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_gengbao"))
                .args(["run", "--quiet", "--period", period, "--shard"])
                .arg(format!("{i}/{count}"))
                .arg("--config")
                .arg(config)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "shard {i}/{count}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn one_three_and_seven_shards_merge_to_the_bytes_of_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let city = city(&tmp.path().join("city"), 256, 3, 64);
    let text = config_text(&city);
    let last = *city.periods.last().unwrap();
    let whole = run_all(
        &city,
        Some(text.replace("output = \"out\"", "output = \"whole\"")),
    );
    let expected = period_bytes(&whole, last);

    // The periods before the last, run once; each shard count starts from a copy of them.
    std::fs::write(&city.job_config, &text).unwrap();
    let cfg = JobConfig::load(&city.job_config).unwrap();
    for p in &city.periods[..city.periods.len() - 1] {
        run_period(&cfg, *p, &RunOptions::quiet()).unwrap();
    }
    let out = cfg.layout().root().to_path_buf();
    let before = tmp.path().join("before-last");
    copy_dir(&out, &before);
    let config = city.job_config.to_str().unwrap();
    let period = last.to_string();
    for count in [1usize, 3, 7] {
        std::fs::remove_dir_all(&out).unwrap();
        copy_dir(&before, &out);
        let (ok, said) = gengbao(&[
            "plan",
            "--config",
            config,
            "--period",
            &period,
            "--shards",
            &count.to_string(),
        ]);
        assert!(ok, "{said}");
        if count == 3 {
            // Shard 2 not run yet: the merge names it and commits nothing.
            run_shards_but(config, &period, count, 2);
            let (ok, said) =
                gengbao(&["merge", "--config", config, "--period", &period, "--quiet"]);
            assert!(!ok && said.contains("shard 2/3 has not run"), "{said}");
            assert!(!cfg.layout().period(last).summary().exists());
            // Run again after losing a tile: the shard resumes the others.
            let shard0 = out.join(".shards").join(&period).join("0-of-3");
            let saved: Vec<_> = std::fs::read_dir(&shard0)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "ckpt"))
                .collect();
            assert!(saved.len() >= 2, "shard 0 saved {} tiles", saved.len());
            std::fs::remove_file(&saved[0]).unwrap();
            let (ok, said) = gengbao(&[
                "run", "--quiet", "--config", config, "--period", &period, "--shard", "0/3",
            ]);
            assert!(ok, "{said}");
            assert!(
                said.contains(&format!("({} from an earlier attempt)", saved.len() - 1)),
                "{said}"
            );
            run_shards_only(config, &period, count, 2);
            // A shard that ran with other inputs than the plan: named, nothing committed.
            let key = out
                .join(".shards")
                .join(&period)
                .join("1-of-3")
                .join("run.key");
            let real = std::fs::read(&key).unwrap();
            std::fs::write(&key, "another run").unwrap();
            let (ok, said) =
                gengbao(&["merge", "--config", config, "--period", &period, "--quiet"]);
            assert!(
                !ok && said.contains("shard 1/3 ran with another config"),
                "{said}"
            );
            std::fs::write(&key, real).unwrap();
        } else {
            run_shards(Path::new(config), &period, count);
        }
        let (ok, said) = gengbao(&["merge", "--config", config, "--period", &period, "--quiet"]);
        assert!(ok, "{count} shards: {said}");
        // Every tile came from the shards: the merge composited and classified none.
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(cfg.layout().period(last).summary()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            summary["resume"]["tiles_resumed"], summary["tiles"],
            "{count} shards"
        );
        assert_eq!(summary["tiles"], 16);
        let merged = period_bytes(&cfg, last);
        for (k, (m, e)) in merged.iter().zip(&expected).enumerate() {
            assert!(m == e, "{count} shards: output {k} differs from one run's");
        }
        assert!(
            !out.join(".shards").join(&period).exists(),
            "the shards' folder is removed"
        );
    }
}

fn run_shards_but(config: &str, period: &str, count: usize, skipped: usize) {
    for i in (0..count).filter(|i| *i != skipped) {
        let (ok, said) = gengbao(&[
            "run",
            "--quiet",
            "--config",
            config,
            "--period",
            period,
            "--shard",
            &format!("{i}/{count}"),
        ]);
        assert!(ok, "{said}");
    }
}

fn run_shards_only(config: &str, period: &str, count: usize, only: usize) {
    let (ok, said) = gengbao(&[
        "run",
        "--quiet",
        "--config",
        config,
        "--period",
        period,
        "--shard",
        &format!("{only}/{count}"),
    ]);
    assert!(ok, "{said}");
}
