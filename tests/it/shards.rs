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
            run_each(config, &period, count, &[0, 1]);
            let (ok, said) =
                gengbao(&["merge", "--config", config, "--period", &period, "--quiet"]);
            assert!(!ok && said.contains("shard 2/3 has not run"), "{said}");
            assert!(
                !cfg.layout().checkpoints(last).exists(),
                "a refused merge wrote checkpoints"
            );
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
            run_each(config, &period, count, &[2]);
            // A shard that lost a tile since it ran: named as unfinished.
            let shard1 = out.join(".shards").join(&period).join("1-of-3");
            let tile = std::fs::read_dir(&shard1)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "ckpt"))
                .unwrap();
            let kept = std::fs::read(&tile).unwrap();
            std::fs::remove_file(&tile).unwrap();
            let (ok, said) =
                gengbao(&["merge", "--config", config, "--period", &period, "--quiet"]);
            assert!(!ok && said.contains("shard 1/3 has not finished"), "{said}");
            std::fs::write(&tile, kept).unwrap();
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

/// Runs shards `which` of `count`, one after the other.
fn run_each(config: &str, period: &str, count: usize, which: &[usize]) {
    for i in which {
        let shard = format!("{i}/{count}");
        let (ok, said) = gengbao(&[
            "run", "--quiet", "--config", config, "--period", period, "--shard", &shard,
        ]);
        assert!(ok, "{said}");
    }
}

/// The script `schedule --emit slurm` writes, run against a stand-in for `sbatch` that runs
/// each job at once (an array task by task, with SLURM_ARRAY_TASK_ID): it plans, runs the
/// shards as an array and merges after them, and the period is committed from the shards'
/// tiles.
#[test]
fn the_emitted_slurm_script_plans_runs_the_array_and_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let city = city(&tmp.path().join("city"), 256, 3, 64);
    let text = config_text(&city)
        .replace("shards = 4 ", "shards = 3 ")
        .replace("memory_per_shard = \"8G\"", "memory_per_shard = \"2G\"");
    assert!(
        text.contains("shards = 3 ") && text.contains("\"2G\""),
        "{text}"
    );
    std::fs::write(&city.job_config, &text).unwrap();
    let cfg = JobConfig::load(&city.job_config).unwrap();
    let last = *city.periods.last().unwrap();
    for p in &city.periods[..city.periods.len() - 1] {
        run_period(&cfg, *p, &RunOptions::quiet()).unwrap();
    }
    let config = city.job_config.to_str().unwrap();
    let (ok, script) = gengbao(&["schedule", "--config", config, "--emit", "slurm"]);
    assert!(ok, "{script}");
    assert!(
        script.contains("--array=0-2") && script.contains("--mem=\"2G\""),
        "{script}"
    );
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let sbatch = bin.join("sbatch");
    std::fs::write(
        &sbatch,
        r#"#!/bin/bash
set -euo pipefail
array=""; wrap=""
for a in "$@"; do
  case "$a" in --array=*) array="${a#--array=}";; --wrap=*) wrap="${a#--wrap=}";; esac
done
echo "$*" >> "$FAKE_SLURM/calls"
id=$(( $(cat "$FAKE_SLURM/next" 2>/dev/null || echo 100) + 1 )); echo "$id" > "$FAKE_SLURM/next"
if [ -n "$array" ]; then
  for i in $(seq "${array%-*}" "${array#*-}"); do SLURM_ARRAY_TASK_ID=$i sh -c "$wrap" > /dev/null; done
else
  sh -c "$wrap" > /dev/null
fi
echo "$id"
"#,
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&sbatch)
        .status()
        .unwrap();
    let script_file = tmp.path().join("period.sh");
    std::fs::write(&script_file, &script).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(&script_file)
        .arg(last.to_string())
        .env("PATH", path)
        .env("FAKE_SLURM", tmp.path())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    let calls = std::fs::read_to_string(tmp.path().join("calls")).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].contains("--array=0-2"), "{}", calls[0]);
    assert!(
        calls[1].contains("--dependency=afterok:101"),
        "{}",
        calls[1]
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cfg.layout().period(last).summary()).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["resume"]["tiles_resumed"], summary["tiles"]);
    assert!(
        said.contains(&format!("{last}: shards job 101 (3 tasks), merge job 102")),
        "{said}"
    );
}
