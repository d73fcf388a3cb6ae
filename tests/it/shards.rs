//! A period split into shards, each run by its own process, merges to the bytes one `run`
//! gives; the merge refuses while a shard is missing, unfinished or run with other inputs,
//! naming it; a shard run again resumes.

use crate::common::{city, config_text, copy_dir, run_all};
use gengbao::job::run::{run_period, RunOptions};
use gengbao::ledger::{Filter, Ledger};
use gengbao::JobConfig;
use std::path::{Path, PathBuf};
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
    output_of(Command::new(env!("CARGO_BIN_EXE_gengbao")).args(args))
}

/// Runs `command`: whether it succeeded, and what it printed (stdout, then stderr).
fn output_of(command: &mut Command) -> (bool, String) {
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The tile checkpoints saved in a shard's folder (none when it does not exist yet).
fn saved_tiles(folder: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(folder)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
                .collect()
        })
        .unwrap_or_default()
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

/// A generated city ready for its last period to be sharded: the periods before it run,
/// a copy of the output folder as they left it, and the bytes one `run` of the last period
/// gives (in another output folder) to compare the merge with.
struct LastPeriod {
    city: gengbao::SampleCity,
    cfg: JobConfig,
    last: gengbao::Period,
    before: PathBuf,
    expected: Vec<Vec<u8>>,
}

impl LastPeriod {
    /// The city of `size` px in tiles of `tile` px under `dir`, its config text as
    /// `edit` leaves it.
    fn new(dir: &Path, size: usize, tile: usize, edit: impl Fn(String) -> String) -> Self {
        let city = city(&dir.join("city"), size, 3, tile);
        let text = edit(config_text(&city));
        assert!(text.contains("output = \"out\""), "{text}");
        let last = *city.periods.last().unwrap();
        let whole = run_all(
            &city,
            Some(text.replace("output = \"out\"", "output = \"whole\"")),
        );
        let expected = period_bytes(&whole, last);
        std::fs::remove_dir_all(whole.layout().root()).unwrap();
        std::fs::write(&city.job_config, &text).unwrap();
        let cfg = JobConfig::load(&city.job_config).unwrap();
        for p in &city.periods[..city.periods.len() - 1] {
            run_period(&cfg, *p, &RunOptions::quiet()).unwrap();
        }
        let before = dir.join("before-last");
        copy_dir(cfg.layout().root(), &before);
        LastPeriod {
            city,
            cfg,
            last,
            before,
            expected,
        }
    }

    fn config(&self) -> &str {
        self.city.job_config.to_str().unwrap()
    }

    fn out(&self) -> PathBuf {
        self.cfg.layout().root().to_path_buf()
    }

    /// The output folder back as the earlier periods left it, and a plan of `count` shards.
    fn plan(&self, count: usize) {
        std::fs::remove_dir_all(self.out()).unwrap();
        copy_dir(&self.before, &self.out());
        let (ok, said) = gengbao(&[
            "plan",
            "--config",
            self.config(),
            "--period",
            &self.last.to_string(),
            "--shards",
            &count.to_string(),
        ]);
        assert!(ok, "{said}");
    }

    /// `gengbao merge` of the last period: whether it succeeded, and what it said.
    fn merge(&self) -> (bool, String) {
        gengbao(&[
            "merge",
            "--config",
            self.config(),
            "--period",
            &self.last.to_string(),
            "--quiet",
        ])
    }

    /// The merge commits the bytes of one run, every tile taken from the shards.
    fn merge_gives_one_runs_bytes(&self, what: &str) {
        let (ok, said) = self.merge();
        assert!(ok, "{what}: {said}");
        self.committed_one_runs_bytes(what);
    }

    /// The committed last period's summary.
    fn summary(&self) -> serde_json::Value {
        let file = self.cfg.layout().period(self.last).summary();
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
    }

    /// The committed period has the bytes of one run, every tile taken from the shards.
    fn committed_one_runs_bytes(&self, what: &str) {
        let summary = self.summary();
        assert_eq!(
            summary["resume"]["tiles_resumed"], summary["tiles"],
            "{what}: the merge composited tiles itself"
        );
        let merged = period_bytes(&self.cfg, self.last);
        for (k, (m, e)) in merged.iter().zip(&self.expected).enumerate() {
            assert!(m == e, "{what}: output {k} differs from one run's");
        }
        assert!(
            !self
                .out()
                .join(".shards")
                .join(self.last.to_string())
                .exists(),
            "{what}: the shards' folder is left"
        );
    }
}

#[test]
fn one_three_and_seven_shards_merge_to_the_bytes_of_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = LastPeriod::new(tmp.path(), 256, 64, |text| text);
    let (cfg, last, out) = (&fixture.cfg, fixture.last, fixture.out());
    let config = fixture.config();
    let period = last.to_string();
    for count in [1usize, 3, 7] {
        fixture.plan(count);
        if count == 3 {
            // Shard 2 not run yet: the merge names it and commits nothing.
            run_each(config, &period, count, &[0, 1]);
            let (ok, said) = fixture.merge();
            assert!(!ok && said.contains("shard 2/3 has not run"), "{said}");
            assert!(
                !cfg.layout().checkpoints(last).exists(),
                "a refused merge wrote checkpoints"
            );
            assert!(!cfg.layout().period(last).summary().exists());
            // Run again after losing a tile: the shard resumes the others.
            let shard0 = out.join(".shards").join(&period).join("0-of-3");
            let saved = saved_tiles(&shard0);
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
            // Shard 2 given the config by a relative path, from the config's folder: the
            // same job, not "changed since the plan".
            let (ok, said) = output_of(
                Command::new(env!("CARGO_BIN_EXE_gengbao"))
                    .args([
                        "run", "--quiet", "--config", "job.toml", "--period", &period,
                    ])
                    .args(["--shard", "2/3"])
                    .current_dir(fixture.city.job_config.parent().unwrap()),
            );
            assert!(ok, "{said}");
            // A shard that lost a tile since it ran: named as unfinished.
            let shard1 = out.join(".shards").join(&period).join("1-of-3");
            let tile = saved_tiles(&shard1).swap_remove(0);
            let kept = std::fs::read(&tile).unwrap();
            std::fs::remove_file(&tile).unwrap();
            let (ok, said) = fixture.merge();
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
            let (ok, said) = fixture.merge();
            assert!(
                !ok && said.contains("shard 1/3 ran with another config"),
                "{said}"
            );
            std::fs::write(&key, real).unwrap();
        } else {
            run_shards(Path::new(config), &period, count);
        }
        fixture.merge_gives_one_runs_bytes(&format!("{count} shards"));
        assert_eq!(fixture.summary()["tiles"], 16);
    }
}

/// The 2048 px city (64 tiles of 256 px) as 1, 3 and 7 shards merges to the bytes of one
/// run; a shard killed with SIGKILL after saving a tile, run again, resumes what it saved.
#[test]
fn a_2048_px_city_in_shards_one_killed_and_rerun_merges_to_the_bytes_of_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = LastPeriod::new(tmp.path(), 2048, 256, |text| text);
    let (out, config) = (fixture.out(), fixture.config());
    let period = fixture.last.to_string();
    for count in [1usize, 3, 7] {
        fixture.plan(count);
        if count == 3 {
            // Shard 0 killed as soon as it has saved a tile, then run again with the others.
            // One worker (as a Slurm task of one CPU), so that tiles are left to do on any
            // machine when the kill comes.
            let folder = out.join(".shards").join(&period).join("0-of-3");
            let mut child = Command::new(env!("CARGO_BIN_EXE_gengbao"))
                .args(["run", "--quiet", "--config", config, "--period", &period])
                .args(["--shard", "0/3"])
                .env("SLURM_CPUS_PER_TASK", "1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            while saved_tiles(&folder).is_empty() {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "shard 0/3 ended before it saved a tile"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            child.kill().unwrap(); // SIGKILL
            let status = child.wait().unwrap();
            let kept = saved_tiles(&folder).len();
            assert!(
                status.code().is_none(),
                "shard 0/3 finished before the kill"
            );
            let (ok, said) = gengbao(&[
                "run", "--config", config, "--period", &period, "--shard", "0/3",
            ]);
            assert!(ok, "{said}");
            assert!(
                said.contains(&format!("({kept} from an earlier attempt)")),
                "kept {kept}: {said}"
            );
            // "… shard 0/3: N tiles done (k from …": some tiles were still to do.
            let tiles: usize = said
                .split(" tiles done")
                .next()
                .and_then(|head| head.rsplit(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no tile count in: {said}"));
            assert!(kept < tiles, "all {tiles} tiles were saved before the kill");
            run_each(config, &period, count, &[1, 2]);
        } else {
            run_shards(Path::new(config), &period, count);
        }
        fixture.merge_gives_one_runs_bytes(&format!("{count} shards"));
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

/// A one-node Slurm cluster on localhost (`scripts/slurm-local.sh`), stopped when dropped.
struct LocalSlurm {
    dir: PathBuf,
    conf: PathBuf,
}

impl LocalSlurm {
    /// Starts one in `dir`; None (with the reason) when this machine cannot (not root, Slurm
    /// or MUNGE not installed). A cluster that could start but did not is a failure.
    fn start(dir: &Path) -> Option<LocalSlurm> {
        // Both probes held open together, so that the two ports differ.
        let probes: Vec<_> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let port = |k: usize| probes[k].local_addr().unwrap().port();
        let (ctld, slurmd) = (port(0), port(1));
        drop(probes);
        let out = Command::new("bash")
            .arg(slurm_local())
            .arg("start")
            .arg(dir)
            .arg(ctld.to_string())
            .arg(slurmd.to_string())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).to_string();
        match out.status.code() {
            Some(0) => Some(LocalSlurm {
                dir: dir.to_path_buf(),
                conf: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
            }),
            // CI sets GENGBAO_REQUIRE_SLURM: there the round trip must run, never skip.
            Some(2) if std::env::var_os("GENGBAO_REQUIRE_SLURM").is_none() => {
                eprintln!("SKIPPED: no Slurm round trip: {}", said.trim());
                None
            }
            _ => {
                stop_slurm(dir);
                panic!("a local Slurm cluster did not start: {said}")
            }
        }
    }

    /// Runs a Slurm command against this cluster.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// The job's state (`COMPLETED`, `FAILED`, …), waiting while it is pending or running.
    fn wait_for(&self, job: &str, limit: std::time::Duration) -> String {
        let start = std::time::Instant::now();
        loop {
            let out = self
                .command("scontrol")
                .args(["show", "job", "-o", job])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            // A failed query (the controller busy) is asked again, not read as a state.
            let state = out
                .status
                .success()
                .then(|| {
                    text.split_whitespace()
                        .find_map(|w| w.strip_prefix("JobState="))
                        .map(str::to_string)
                })
                .flatten();
            match state {
                Some(s)
                    if !["PENDING", "RUNNING", "CONFIGURING", "COMPLETING"]
                        .contains(&s.as_str()) =>
                {
                    return s
                }
                _ => assert!(
                    start.elapsed() < limit,
                    "Slurm job {job} not over after {limit:?}: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

impl Drop for LocalSlurm {
    fn drop(&mut self) {
        stop_slurm(&self.dir);
    }
}

/// Stops the cluster of `dir`, its jobs first; whatever is left of it.
fn stop_slurm(dir: &Path) {
    Command::new("bash")
        .arg(slurm_local())
        .arg("stop")
        .arg(dir)
        .status()
        .ok();
}

fn slurm_local() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local.sh")
}

/// The script `schedule --emit slurm` writes, submitted to a real one-node Slurm: it plans,
/// runs the shards as a job array of four tasks and the merge after them, and the period
/// it commits has the bytes of one `run`, every tile taken from the shards.
#[test]
fn the_emitted_slurm_script_runs_on_a_real_slurm_and_merges_to_the_bytes_of_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(slurm) = LocalSlurm::start(&tmp.path().join("slurm")) else {
        return;
    };
    let fixture = LastPeriod::new(tmp.path(), 256, 64, |text| {
        let text = text
            .replace("cpus_per_shard = 2", "cpus_per_shard = 1")
            .replace("memory_per_shard = \"8G\"", "memory_per_shard = \"1G\"")
            .replace("memory_merge = \"16G\"", "memory_merge = \"2G\"");
        assert!(
            text.contains("cpus_per_shard = 1")
                && text.contains("memory_per_shard = \"1G\"")
                && text.contains("memory_merge = \"2G\""),
            "{text}"
        );
        text
    });
    let (cfg, last) = (&fixture.cfg, fixture.last);
    let config = fixture.config();
    let (ok, script) = gengbao(&["schedule", "--config", config, "--emit", "slurm"]);
    assert!(ok && script.contains("--array=0-3"), "{script}");
    let script_file = tmp.path().join("period.sh");
    std::fs::write(&script_file, &script).unwrap();
    let (ok, said) = output_of(
        slurm
            .command("bash")
            .arg(&script_file)
            .arg(last.to_string()),
    );
    assert!(ok, "{said}");
    // "<period>: shards job A (4 tasks), merge job B after all succeed"
    let line = said
        .lines()
        .find(|l| l.contains(": shards job "))
        .unwrap_or_else(|| panic!("no job numbers in: {said}"));
    let job_after = |label: &str| -> String {
        let rest = &line[line.find(label).unwrap_or_else(|| panic!("{line}")) + label.len()..];
        let number: String = rest.chars().take_while(char::is_ascii_digit).collect();
        assert!(
            !number.is_empty(),
            "no job number after `{label}` in {line}"
        );
        number
    };
    let (shards, merge) = (job_after("shards job "), job_after("merge job "));
    let logs = cfg.layout().root().join("slurm");
    let state = slurm.wait_for(&merge, std::time::Duration::from_secs(600));
    let log_text = || {
        std::fs::read_dir(&logs)
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        format!(
                            "{}:\n{}",
                            e.path().display(),
                            std::fs::read_to_string(e.path()).unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    assert_eq!(state, "COMPLETED", "merge job {merge}: {}", log_text());
    for task in 0..4 {
        let task = format!("{shards}_{task}");
        assert_eq!(
            slurm.wait_for(&task, std::time::Duration::from_secs(10)),
            "COMPLETED",
            "shard task {task}"
        );
    }
    fixture.committed_one_runs_bytes("the Slurm run");
    drop(slurm);
}

/// A stand-in for `kubectl` (no Kubernetes runs here): an applied Job's pods run at once on
/// this machine, one after the other, the Indexed Job's with `JOB_COMPLETION_INDEX`; the
/// Job's document is kept as `<name>.yaml`, its state as `<name>.status`, every call in
/// `calls`. As a cluster does: a Job applied again while it exists is left as it is,
/// deleting a Job that does not exist fails without `--ignore-not-found`, a finished Job's
/// true conditions come two by two (Kubernetes 1.31). Pod 1 of the Job whose name ends in
/// `KUBE_FAIL` fails; the first read of the merge Job's state fails (the API server away).
const STAND_IN_KUBECTL: &str = r#"#!/bin/bash
set -u
state="$KUBE_STATE"
echo "$*" >> "$state/calls"
case "$1 $2" in
  "delete job")
    if [ ! -e "$state/$3.status" ] && [ "$4" != --ignore-not-found ]; then
      echo "Error from server (NotFound): jobs.batch \"$3\" not found" >&2; exit 1
    fi
    rm -f "$state/$3.status" ;;
  "apply -f")
    doc=$(cat)
    name=$(printf '%s\n' "$doc" | sed -n 's/^  name: //p' | head -n 1)
    if [ -e "$state/$name.status" ]; then echo "job.batch/$name unchanged"; exit 0; fi
    printf '%s\n' "$doc" > "$state/$name.yaml"
    command=$(printf '%s\n' "$doc" | sed -n 's/^ *command: \["sh", "-c", "\(.*\)"\]$/\1/p')
    count=$(printf '%s\n' "$doc" | sed -n 's/^  completions: //p')
    status="SuccessCriteriaMet Complete"
    for i in $(seq 0 $(( ${count:-1} - 1 ))); do
      if [ -n "${KUBE_FAIL:-}" ] && [ "${name%"$KUBE_FAIL"}" != "$name" ] && [ "$i" = 1 ]; then
        status="FailureTarget Failed"; continue
      fi
      JOB_COMPLETION_INDEX=$i sh -c "$command" >> "$state/$name.log" 2>&1 || status="FailureTarget Failed"
    done
    echo "$status" > "$state/$name.status"
    echo "job.batch/$name created" ;;
  "get job")
    if [ "$4 $5" != '-o jsonpath={.status.conditions[?(@.status=="True")].type}' ]; then
      echo "stand-in kubectl: unexpected output asked: $*" >&2; exit 2
    fi
    if [ "${3%-merge}" != "$3" ] && [ ! -e "$state/$3.away" ]; then
      touch "$state/$3.away"
      echo "The connection to the server was refused" >&2; exit 1
    fi
    cat "$state/$3.status" ;;
  *) echo "stand-in kubectl: unexpected call: $*" >&2; exit 2 ;;
esac
"#;

/// The script `schedule --emit k8s` writes, run against a stand-in `kubectl`: its three
/// documents are Jobs as Kubernetes reads them (the shards an Indexed Job of `[cluster]
/// shards` pods with the job folder mounted at its own path); when a shard's pod fails the
/// script stops there, before the merge, and nothing is committed; run again, it replaces
/// the earlier attempt's Jobs and the period has the bytes of one `run`.
#[test]
fn the_emitted_kubernetes_script_stops_at_a_failed_shard_and_run_again_merges_to_one_runs_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = LastPeriod::new(tmp.path(), 256, 64, |text| text);
    let (cfg, last) = (&fixture.cfg, fixture.last.to_string());
    let (ok, script) = gengbao(&["schedule", "--config", fixture.config(), "--emit", "k8s"]);
    assert!(ok, "{script}");
    let script_file = tmp.path().join("period.sh");
    std::fs::write(&script_file, &script).unwrap();
    let (bin, state) = (tmp.path().join("bin"), tmp.path().join("kube"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let kubectl = bin.join("kubectl");
    std::fs::write(&kubectl, STAND_IN_KUBECTL).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let gengbao_dir = Path::new(env!("CARGO_BIN_EXE_gengbao")).parent().unwrap();
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        gengbao_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run_script = |fail: &str| {
        output_of(
            // A script that waits for ever fails the test instead of hanging it.
            Command::new("timeout")
                .arg("300")
                .arg("bash")
                .arg(&script_file)
                .arg(&last)
                .env("PATH", &path)
                .env("KUBE_STATE", &state)
                .env("KUBE_FAIL", fail),
        )
    };
    let documents = || -> Vec<(String, serde_yaml::Value)> {
        let mut docs: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                let doc = serde_yaml::from_str(&text)
                    .unwrap_or_else(|e| panic!("{} is not YAML: {e}\n{text}", p.display()));
                (p.file_stem().unwrap().to_string_lossy().into_owned(), doc)
            })
            .collect();
        docs.sort_by(|a, b| a.0.cmp(&b.0));
        docs
    };

    // The shards' Job fails: the script stops there, says which, and nothing is merged.
    let (ok, said) = run_script("-shards");
    assert!(!ok, "the script went on after a failed shard: {said}");
    let names: Vec<String> = documents().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.len() == 2 && names.iter().any(|n| n.ends_with("-plan")),
        "{names:?}"
    );
    let shards_job = names
        .iter()
        .find(|n| n.ends_with("-shards"))
        .unwrap()
        .clone();
    assert!(said.contains(&format!("{shards_job} failed")), "{said}");
    assert!(
        !cfg.layout().period(fixture.last).summary().exists(),
        "a period was committed after a failed shard"
    );

    // Run again: the failed attempt's Jobs are replaced (applied over, a failed Job would
    // stay failed), and the period has one run's bytes.
    let (ok, said) = run_script("");
    let calls = std::fs::read_to_string(state.join("calls")).unwrap();
    assert!(ok, "{said}\nkubectl calls:\n{calls}");
    fixture.committed_one_runs_bytes("the Kubernetes script");

    // The documents as Kubernetes reads them.
    let docs = documents();
    assert_eq!(docs.len(), 3, "{names:?}");
    let folder = cfg.layout().root().parent().unwrap().to_path_buf();
    for (name, doc) in &docs {
        assert_eq!(doc["apiVersion"], "batch/v1", "{name}");
        assert_eq!(doc["kind"], "Job", "{name}");
        assert!(
            name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name} is not a Kubernetes name"
        );
        let pod = &doc["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never", "{name}");
        let container = &pod["containers"][0];
        assert_eq!(container["image"], "gengbao:latest", "{name}");
        let mount = &container["volumeMounts"][0];
        assert_eq!(
            mount["mountPath"].as_str().map(Path::new),
            Some(folder.as_path()),
            "{name}: the job folder is not mounted at its own path"
        );
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"]["claimName"], "gengbao-data",
            "{name}"
        );
        assert_eq!(pod["volumes"][0]["name"], mount["name"], "{name}");
        assert_eq!(
            doc["spec"]["activeDeadlineSeconds"], 14400,
            "{name}: 04:00:00"
        );
        let memory = container["resources"]["requests"]["memory"].as_str();
        let wanted = if name.ends_with("-merge") {
            "16Gi"
        } else {
            "8Gi"
        };
        assert_eq!(memory, Some(wanted), "{name}");
    }
    let shards = &docs.iter().find(|(n, _)| n == &shards_job).unwrap().1["spec"];
    assert_eq!(shards["completionMode"], "Indexed");
    assert_eq!(shards["completions"], 4);
    assert_eq!(shards["parallelism"], 4);
}
