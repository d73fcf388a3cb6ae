//! Surviving the real world: a run killed with SIGKILL at several points resumes from its
//! per-tile checkpoints and ends with exactly the outputs of an uninterrupted run; changed
//! imagery is redone; a second run on the same job is refused; the schedule finds the gaps.

use crate::common::{city, config_text, copy_dir};
use gengbao::job::config::JobConfig;
use gengbao::job::run::{run_period, RunOptions};
use gengbao::job::schedule::{plan, State};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn spawn_run(config: &Path, period: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gengbao"))
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--period",
            period,
            "--quiet",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn checkpoints(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "ckpt"))
            .count()
    })
}

/// Starts a run and SIGKILLs it once `at_least` tiles are checkpointed.
fn kill_after(config: &Path, period: &str, ckpt_dir: &Path, at_least: usize) {
    let mut child = spawn_run(config, period);
    let t0 = Instant::now();
    while checkpoints(ckpt_dir) < at_least {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {at_least} tiles were checkpointed"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "run too slow");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before it could be killed"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// The files of a period that must not depend on interruptions, with their bytes.
fn outputs(dir: &Path, period: &str) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = ["class.tif", "ndvi.tif", "signals.tif", "flags.tif"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for code in ["320901", "320902"] {
        for ext in ["geojson", "shp", "shx"] {
            names.push(format!("counties/{code}/TB_{code}_{period}.{ext}"));
        }
    }
    names
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap_or_else(|e| panic!("{n}: {e}"));
            (n, bytes)
        })
        .collect()
}

#[test]
fn killed_runs_resume_to_the_same_outputs_and_changed_imagery_is_redone() {
    let tmp = tempfile::tempdir().unwrap();
    // 144 tiles of 64 px, so that there is time to kill the run between tiles.
    let city = city(&tmp.path().join("city"), 768, 3, 64);
    let cfg = JobConfig::load(&city.job_config).unwrap();
    for p in &city.periods[..2] {
        run_period(&cfg, *p, &RunOptions::quiet()).unwrap();
    }
    let last = city.periods[2];
    // The uninterrupted reference, from a copy of the same archive.
    copy_dir(cfg.layout().root(), &city.dir.join("ref"));
    let ref_config = city.dir.join("ref.toml");
    std::fs::write(
        &ref_config,
        config_text(&city).replace("output = \"out\"", "output = \"ref\""),
    )
    .unwrap();
    let ref_cfg = JobConfig::load(&ref_config).unwrap();
    run_period(&ref_cfg, last, &RunOptions::quiet()).unwrap();
    let expected = outputs(ref_cfg.layout().period(last).dir(), &last.to_string());

    let ckpt = cfg.layout().checkpoints(last);
    let period = last.to_string();
    kill_after(&city.job_config, &period, &ckpt, 1);
    kill_after(&city.job_config, &period, &ckpt, 72);
    // Every tile done: killed while assembling, vectorising or exporting.
    kill_after(&city.job_config, &period, &ckpt, 144);
    assert!(
        !cfg.layout().period(last).dir().exists(),
        "nothing committed by a killed run"
    );
    let resumed = run_period(&cfg, last, &RunOptions::quiet()).unwrap();
    assert_eq!(resumed.resume.tiles_resumed, 144, "{:?}", resumed.resume);
    assert!(resumed.resume.tiles_redone_imagery_changed.is_empty());
    let got = outputs(cfg.layout().period(last).dir(), &period);
    for ((name, a), (_, b)) in got.iter().zip(&expected) {
        assert!(a == b, "{name} differs from the uninterrupted run");
    }
    assert!(
        !ckpt.exists(),
        "checkpoints are removed once the period is committed"
    );

    // Imagery replaced after an interruption: the tiles that read it are redone.
    kill_after(&city.job_config, &period, &ckpt, 20);
    let acquisition = city
        .dir
        .join("imagery")
        .read_dir()
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.to_string_lossy()
                .contains(&last.first_day().format("%Y").to_string())
        })
        .max()
        .unwrap();
    let band = acquisition
        .read_dir()
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let bytes = std::fs::read(&band).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&band, bytes).unwrap(); // same content, new modification time
    let redone = run_period(&cfg, last, &RunOptions::quiet()).unwrap();
    assert!(
        !redone.resume.tiles_redone_imagery_changed.is_empty(),
        "{:?}",
        redone.resume
    );
    assert!(redone.human().contains("changed since the interrupted run"));
    let got = outputs(cfg.layout().period(last).dir(), &period);
    assert!(got == expected, "same content, same outputs");
}

#[test]
fn a_second_run_on_the_same_job_is_refused_while_the_first_works() {
    let tmp = tempfile::tempdir().unwrap();
    let city = city(&tmp.path().join("city"), 512, 3, 64);
    let period = city.periods[0].to_string();
    let cfg = JobConfig::load(&city.job_config).unwrap();
    let lock = cfg.layout().lock_file();
    let mut first = spawn_run(&city.job_config, &period);
    let t0 = Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |s| s.is_empty()) {
        assert!(first.try_wait().unwrap().is_none(), "first run ended early");
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1));
    }
    let second = spawn_run(&city.job_config, &period)
        .wait_with_output()
        .unwrap();
    let still_running = first.try_wait().unwrap().is_none();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("another gengbao run is working on this job"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    assert!(still_running, "the first run must still hold the lock");
    assert!(
        first.wait().unwrap().success(),
        "the first run is not disturbed"
    );
}

#[test]
fn schedule_lists_the_gaps_in_order_and_due_runs_them() {
    let tmp = tempfile::tempdir().unwrap();
    let city = city(&tmp.path().join("city"), 256, 4, 128);
    let cfg = JobConfig::load(&city.job_config).unwrap();
    let p = &city.periods;
    run_period(&cfg, p[0], &RunOptions::quiet()).unwrap();
    run_period(&cfg, p[2], &RunOptions::quiet()).unwrap();
    // Long after the last period; one more period has ended without imagery.
    let today = p[3].next().last_day() + chrono::Duration::days(30);
    let schedule = plan(&cfg, today).unwrap();
    assert_eq!(schedule.due(), vec![p[1], p[3]], "missing periods in order");
    assert_eq!(schedule.of(State::NoImagery), vec![p[3].next()]);
    assert_eq!(schedule.of(State::Done), vec![p[0], p[2]]);
    // The imagery of the current period is not due until its delay has passed.
    let early = plan(&cfg, p[1].last_day()).unwrap();
    assert_eq!(early.due(), vec![]);

    let out = Command::new(env!("CARGO_BIN_EXE_gengbao"))
        .args([
            "run",
            "--config",
            city.job_config.to_str().unwrap(),
            "--period",
            "due",
            "--quiet",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // By the clock, periods after the city's last have ended without imagery: the run does
    // what it can and says what waits (exit code 4).
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("skipped, no imagery yet in"), "{stderr}");
    assert!(stderr.contains(&p[3].next().to_string()), "{stderr}");
    let after = plan(&cfg, today).unwrap();
    assert_eq!(after.of(State::Done), p.to_vec());
    let log = std::fs::read_to_string(cfg.layout().log_file()).unwrap();
    let order: Vec<usize> = [p[1], p[3]]
        .iter()
        .map(|q| log.find(&format!("{q}: done")).expect("logged"))
        .collect();
    assert!(order[0] < order[1], "{log}");
}
