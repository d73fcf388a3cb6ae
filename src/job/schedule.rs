//! The bimonthly schedule of a job: which periods are done, due or still waiting, the entries
//! that make cron or systemd run the job after each period, and the job's run log.
//!
//! Takes: a [`JobConfig`] and today's date. Gives: the status of every period from the job's
//! start to the last one that has ended ([`plan`]), ready-to-install timer entries
//! ([`cron_entry`], [`systemd_units`]) and an append-only log line per event ([`log`]).
//!
//! A period is done when its results folder has a `summary.json` (the last file a run moves
//! into place); it is due once it has ended and its imagery delay has passed.

use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::job::config::{from_root, JobConfig};
use crate::job::run::periods_with_imagery;
use chrono::{Duration, NaiveDate};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Results are in place.
    Done,
    /// Over, not run yet, imagery present: `run --period due` runs it.
    Due,
    /// Over and not run, but no imagery in the job's folder yet.
    NoImagery,
}

#[derive(Debug, Clone)]
pub struct PeriodStatus {
    pub period: Period,
    pub state: State,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub today: NaiveDate,
    pub periods: Vec<PeriodStatus>,
    /// The next period to end, and the day its run is expected.
    pub next: (Period, NaiveDate),
}

/// The day a period's run may start: the day after it ends plus the imagery delay.
pub(crate) fn due_on(cfg: &JobConfig, period: Period) -> NaiveDate {
    period.last_day() + Duration::days(1 + i64::from(cfg.schedule.delay_days))
}

pub(crate) fn is_done(cfg: &JobConfig, period: Period) -> bool {
    cfg.layout().period(period).summary().exists()
}

/// The status of every period from the job's start to the last one due by `today`.
pub fn plan(cfg: &JobConfig, today: NaiveDate) -> Result<Plan> {
    let with_imagery = periods_with_imagery(cfg)?;
    let start = match &cfg.schedule.start {
        Some(s) => s.parse()?,
        None => *with_imagery.first().ok_or_else(|| {
            Error::config(
                &cfg.source,
                "schedule.start",
                format!(
                    "no start period given and no imagery in {}",
                    cfg.imagery_source().display()
                ),
                "set start = \"YYYY-Pn\" under [schedule], or add the first period's imagery",
            )
        })?,
    };
    let mut periods = Vec::new();
    let mut p = start;
    while due_on(cfg, p) <= today {
        let state = if is_done(cfg, p) {
            State::Done
        } else if with_imagery.contains(&p) {
            State::Due
        } else {
            State::NoImagery
        };
        periods.push(PeriodStatus { period: p, state });
        p = p.next();
    }
    Ok(Plan {
        today,
        periods,
        next: (p, due_on(cfg, p)),
    })
}

impl Plan {
    pub fn due(&self) -> Vec<Period> {
        self.of(State::Due)
    }

    pub fn of(&self, state: State) -> Vec<Period> {
        self.periods
            .iter()
            .filter(|s| s.state == state)
            .map(|s| s.period)
            .collect()
    }

    /// A few lines for the terminal.
    pub fn human(&self, cfg: &JobConfig) -> String {
        let mut s = format!(
            "job {}, today {}, imagery expected {} days after a period ends\n",
            cfg.job.name, self.today, cfg.schedule.delay_days
        );
        for p in &self.periods {
            let what = match p.state {
                State::Done => "done".to_string(),
                State::Due => "due".to_string(),
                State::NoImagery => {
                    format!("missing: no imagery in {}", cfg.imagery_source().display())
                }
            };
            s += &format!("  {}  {what}\n", p.period);
        }
        s += &format!(
            "  next: {} ends {}, due from {}",
            self.next.0,
            self.next.0.last_day(),
            self.next.1
        );
        s
    }
}

/// Months in which a period's run fires (the month after each period ends).
const RUN_MONTHS: [u32; 6] = [1, 3, 5, 7, 9, 11];

/// What both timer kinds need: the day of the month a run fires (the day `due_on` gives),
/// the months as `format` writes each, and the config's absolute path.
fn timer(cfg: &JobConfig, month: impl Fn(u32) -> String) -> (u32, String, PathBuf) {
    let months: Vec<String> = RUN_MONTHS.iter().map(|&m| month(m)).collect();
    (
        cfg.schedule.delay_days + 1,
        months.join(","),
        from_root(&cfg.source),
    )
}

/// The job's unit name: the ASCII of its name (runs of anything else become one `-`) and a
/// hash of its config's path, so that two jobs never share a unit whatever their names
/// (a Chinese name has no ASCII at all). `longest_name` cuts the ASCII part where a unit's
/// name must stay short (a Kubernetes Job's, with the period and the step, keeps to 63).
/// `config` is the config's path from the root.
fn unit_name(cfg: &JobConfig, config: &Path, longest_name: Option<usize>) -> String {
    use sha2::{Digest, Sha256};
    let mut slug = String::new();
    for c in cfg.job.name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug: String = slug
        .chars()
        .take(longest_name.unwrap_or(usize::MAX))
        .collect();
    let slug = slug.trim_matches('-');
    let hash = Sha256::digest(config.to_string_lossy().as_bytes());
    let hash: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    if slug.is_empty() {
        format!("gengbao-{hash}")
    } else {
        format!("gengbao-{slug}-{hash}")
    }
}

fn quoted(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// The timer entries `gengbao schedule --emit` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// A crontab line.
    Cron,
    /// A systemd service and timer.
    Systemd,
    /// A script that submits one period to Slurm as shards: the plan, a job array of the
    /// shards, and the merge once every shard succeeded (`--dependency=afterok`).
    Slurm,
    /// A script that runs one period on Kubernetes as shards: a Job of the plan, an Indexed
    /// Job of the shards, a Job of the merge, each after the one before completed.
    K8s,
}

/// `s` inside double quotes in a shell script, taken literally.
fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A script (`bash SCRIPT 2026-P3`) that submits a period to Slurm as the job's
/// `[cluster] shards`, with the resources `[cluster]` gives. Each task's output goes to
/// `<output>/slurm/`.
pub fn slurm_script(cfg: &JobConfig, exe: &Path) -> String {
    let c = &cfg.cluster;
    let config = from_root(&cfg.source);
    let unit = unit_name(cfg, &config, None);
    let logs = from_root(cfg.layout().root()).join("slurm");
    let partition = if c.partition.is_empty() {
        String::new()
    } else {
        format!(" --partition={}", double_quoted(&c.partition))
    };
    // The command each task runs, for `sh -c`: single-quoted paths, the period and the
    // array index expanded where they are known.
    let command = |args: &str| {
        double_quoted(&format!(
            "{} {args} --config {} --quiet",
            quoted(&from_root(exe)),
            quoted(&config)
        ))
        .replace("@PERIOD@", "$period")
        .replace("@INDEX@", "\\${SLURM_ARRAY_TASK_ID}")
    };
    format!(
        "#!/bin/bash\n\
         # gengbao job {name}: one period as {n} shards on Slurm, then the merge.\n\
         # Usage: bash THIS_SCRIPT 2026-P3 (on a login node). Every node must see the job\n\
         # folder at the same path and run gengbao from the same path.\n\
         set -euo pipefail\n\
         period=\"${{1:?give the period, e.g. 2026-P3}}\"\n\
         logs={logs}\n\
         mkdir -p \"$logs\"\n\
         {exe} plan --config {config} --period \"$period\" --shards {n}\n\
         shards=$(sbatch --parsable --job-name={unit}-shards --array=0-{last} \\\n\
         \x20   --cpus-per-task={cpus} --mem={mem} --time={time}{partition} \\\n\
         \x20   --output=\"$logs/$period-shard-%a-%A.out\" \\\n\
         \x20   --wrap={shard})\n\
         merge=$(sbatch --parsable --job-name={unit}-merge --dependency=afterok:\"${{shards%%;*}}\" \\\n\
         \x20   --cpus-per-task={cpus} --mem={mem_merge} --time={time}{partition} \\\n\
         \x20   --output=\"$logs/$period-merge-%j.out\" \\\n\
         \x20   --wrap={merge})\n\
         echo \"$period: shards job ${{shards%%;*}} ({n} tasks), merge job ${{merge%%;*}} after all succeed\"\n",
        name = cfg.job.name,
        n = c.shards,
        last = c.shards.saturating_sub(1),
        logs = double_quoted(&logs.display().to_string()),
        exe = quoted(&from_root(exe)),
        config = quoted(&config),
        cpus = c.cpus_per_shard,
        mem = double_quoted(&c.memory_per_shard),
        mem_merge = double_quoted(&c.memory_merge),
        time = double_quoted(&c.time_limit),
        shard = command(&format!("run --period @PERIOD@ --shard @INDEX@/{}", c.shards)),
        merge = command("merge --period @PERIOD@"),
    )
}

/// A script (`bash SCRIPT 2026-P3`, with `kubectl` on the PATH) that runs a period on
/// Kubernetes as the job's `[cluster] shards`: the image `[cluster] image` with gengbao on
/// its PATH, the job folder from the volume claim `[cluster] volume_claim` mounted at its
/// own path, each Job given `[cluster] time_limit` (`activeDeadlineSeconds`: a pod that
/// never starts fails the Job too). Each Job of an earlier attempt at the period is deleted
/// before its step, so the script can be run again after a failure; it stops at the first
/// Job that fails, naming it. Refused when the job folder's path holds a character the
/// script's quoting cannot carry, or the time limit does not read.
pub fn k8s_script(cfg: &JobConfig) -> Result<String> {
    let c = &cfg.cluster;
    let config = from_root(&cfg.source);
    let unit = unit_name(cfg, &config, Some(24));
    let folder = config.parent().unwrap_or(Path::new("/")).to_path_buf();
    // The path goes into a YAML string, inside a shell's single quotes, inside a heredoc
    // that expands `$`.
    if let Some(bad) = config
        .to_string_lossy()
        .chars()
        .find(|c| matches!(c, '\'' | '"' | '\\' | '$' | '`') || c.is_control())
    {
        return Err(Error::input(
            &config,
            format!("holds {bad:?}, which the Kubernetes script cannot pass to its pods"),
            "keep the job in a folder whose path has no quotes, backslashes, `$` or backticks",
        ));
    }
    let deadline = match TimeLimit::read(&c.time_limit) {
        Some(TimeLimit::Seconds(seconds)) => format!("  activeDeadlineSeconds: {seconds}\n"),
        Some(TimeLimit::Unlimited) => String::new(),
        None => {
            return Err(Error::config(
                &cfg.source,
                "cluster.time_limit",
                format!("\"{}\" is not a time limit", c.time_limit),
                "write it as Slurm does: \"04:00:00\", \"1-00:00:00\", \"90\" (minutes) or \"UNLIMITED\"",
            ))
        }
    };
    let gi = |m: &str| {
        let m = m.trim();
        match m.strip_suffix('G').or_else(|| m.strip_suffix('M')) {
            Some(number) => format!("{number}{}i", &m[m.len() - 1..]),
            None => m.to_string(),
        }
    };
    // One Job document and the wait for it; `extra` goes into its spec, `command` is the
    // container's shell command.
    let job = |suffix: &str, extra: &str, command: &str, memory: &str| {
        format!(
            "kubectl delete job \"$name-{suffix}\" --ignore-not-found --cascade=foreground\n\
             kubectl apply -f - <<EOF\n\
             apiVersion: batch/v1\n\
             kind: Job\n\
             metadata:\n  name: $name-{suffix}\n\
             spec:\n{extra}{deadline}  backoffLimit: 2\n  template:\n    spec:\n      restartPolicy: Never\n\
             \x20     containers:\n\
             \x20     - name: gengbao\n\
             \x20       image: {image}\n\
             \x20       command: [\"sh\", \"-c\", {command}]\n\
             \x20       resources:\n          requests: {{cpu: \"{cpus}\", memory: \"{memory}\"}}\n\
             \x20       volumeMounts: [{{name: job, mountPath: {folder}}}]\n\
             \x20     volumes: [{{name: job, persistentVolumeClaim: {{claimName: {claim}}}}}]\n\
             EOF\n\
             wait_for \"$name-{suffix}\"\n",
            image = c.image,
            cpus = c.cpus_per_shard,
            folder = double_quoted(&folder.display().to_string()),
            claim = double_quoted(&c.volume_claim),
        )
    };
    let gengbao = |args: &str| format!("\"exec gengbao {args} --config '{}'\"", config.display());
    Ok(format!(
        "#!/bin/bash\n\
         # gengbao job {name}: one period as {n} shards on Kubernetes, then the merge.\n\
         # Usage: bash THIS_SCRIPT 2026-P3\n\
         set -euo pipefail\n\
         period=\"${{1:?give the period, e.g. 2026-P3}}\"\n\
         name=\"{unit}-$(echo \"$period\" | tr 'A-Z' 'a-z')\"\n\
         # Returns when the Job completed; stops the script when it failed (`kubectl wait`\n\
         # for completion would wait for ever on a failed Job), or when its state could not\n\
         # be read for five minutes.\n\
         wait_for() {{\n\
         \x20 local errors=0 state\n\
         \x20 while :; do\n\
         \x20   if state=\" $(kubectl get job \"$1\" -o 'jsonpath={{.status.conditions[?(@.status==\"True\")].type}}') \"; then\n\
         \x20     errors=0\n\
         \x20     case \"$state\" in\n\
         \x20       *\" Complete \"*) return 0 ;;\n\
         \x20       *\" Failed \"*) echo \"$1 failed: kubectl describe job/$1; kubectl logs -l job-name=$1 --prefix\" >&2; exit 1 ;;\n\
         \x20     esac\n\
         \x20   elif [ $((errors += 1)) -ge 30 ]; then\n\
         \x20     echo \"$1: its state could not be read 30 times in a row (it may still run): kubectl get job/$1\" >&2; exit 1\n\
         \x20   fi\n\
         \x20   sleep 10\n\
         \x20 done\n\
         }}\n\
         {plan}{shards}{merge}\
         echo \"$period: merged\"\n",
        name = cfg.job.name,
        n = c.shards,
        plan = job(
            "plan",
            "",
            &gengbao(&format!("plan --period $period --shards {}", c.shards)),
            &gi(&c.memory_per_shard)
        ),
        shards = job(
            "shards",
            &format!(
                "  completionMode: Indexed\n  completions: {n}\n  parallelism: {n}\n",
                n = c.shards
            ),
            &gengbao(&format!(
                "run --quiet --period $period --shard \\$JOB_COMPLETION_INDEX/{}",
                c.shards
            )),
            &gi(&c.memory_per_shard)
        ),
        merge = job(
            "merge",
            "",
            &gengbao("merge --quiet --period $period"),
            &gi(&c.memory_merge)
        ),
    ))
}

/// A Slurm time limit (`--time`).
#[derive(Debug, PartialEq, Eq)]
enum TimeLimit {
    Seconds(u64),
    /// `UNLIMITED` or `INFINITE`.
    Unlimited,
}

impl TimeLimit {
    /// Reads Slurm's forms: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
    /// days-hours:minutes, days-hours:minutes:seconds; None when `text` is none of them or
    /// no time at all.
    fn read(text: &str) -> Option<TimeLimit> {
        let text = text.trim();
        if ["UNLIMITED", "INFINITE"].contains(&text.to_ascii_uppercase().as_str()) {
            return Some(TimeLimit::Unlimited);
        }
        // At most u32 each, so that no sum below can overflow.
        let number = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse::<u32>().ok().map(u64::from)
        };
        let (days, rest) = match text.split_once('-') {
            Some((d, rest)) => (Some(number(d)?), rest),
            None => (None, text),
        };
        let parts: Vec<u64> = rest.split(':').map(number).collect::<Option<_>>()?;
        let seconds = match (days, parts.as_slice()) {
            (None, [m]) => m * 60,
            (None, [m, s]) => m * 60 + s,
            (None, [h, m, s]) => h * 3600 + m * 60 + s,
            (Some(d), [h]) => d * 86400 + h * 3600,
            (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
            (Some(d), [h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
            _ => return None,
        };
        (seconds > 0).then_some(TimeLimit::Seconds(seconds))
    }
}

/// A crontab line running the job's due periods on the day its imagery is expected, at
/// 02:30, appending to the job's log.
pub fn cron_entry(cfg: &JobConfig, exe: &Path) -> String {
    let (day, months, config) = timer(cfg, |m| m.to_string());
    let log = from_root(&cfg.layout().log_file());
    format!(
        "# gengbao job {}: runs every period that is due, {} days after each period ends\n\
         30 2 {day} {months} * {} run --config {} --period due --quiet >> {} 2>&1\n",
        cfg.job.name,
        cfg.schedule.delay_days,
        quoted(&from_root(exe)),
        quoted(&config),
        quoted(&log)
    )
}

/// A systemd service and timer; `Persistent=true` catches up a run missed while the machine
/// was off.
pub fn systemd_units(cfg: &JobConfig, exe: &Path) -> String {
    let (day, months, config) = timer(cfg, |m| format!("{m:02}"));
    let unit = unit_name(cfg, &config, None);
    let workdir = config.parent().unwrap_or(Path::new("/"));
    // systemd splits ExecStart at spaces unless the word is quoted.
    let quote = |p: &Path| format!("\"{}\"", p.display().to_string().replace('"', "\\\""));
    format!(
        "# /etc/systemd/system/{unit}.service\n\
         [Unit]\n\
         Description=gengbao job {name}: run the periods that are due\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         WorkingDirectory={wd}\n\
         ExecStart={exe} run --config {cfgp} --period due --quiet\n\
         \n\
         # /etc/systemd/system/{unit}.timer\n\
         [Unit]\n\
         Description=gengbao job {name}, {delay} days after each bimonthly period\n\
         \n\
         [Timer]\n\
         OnCalendar=*-{months}-{day:02} 02:30:00\n\
         Persistent=true\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n\
         \n\
         # then: systemctl daemon-reload && systemctl enable --now {unit}.timer\n",
        name = cfg.job.name,
        wd = workdir.display(),
        exe = quote(&from_root(exe)),
        cfgp = quote(&config),
        delay = cfg.schedule.delay_days,
    )
}

/// Appends a timestamped line to `<output>/gengbao.log`.
pub fn log(cfg: &JobConfig, line: &str) -> Result<()> {
    let layout = cfg.layout();
    let dir = layout.root();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = layout.log_file();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    writeln!(
        f,
        "{} pid {} {}",
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S"),
        std::process::id(),
        line.replace('\n', " | ")
    )
    .map_err(|e| Error::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::config::EXAMPLE;

    fn job(name: &str, path: &str) -> JobConfig {
        let text = EXAMPLE.replace("name = \"sample-city\"", &format!("name = \"{name}\""));
        JobConfig::parse(&text, Path::new(path)).unwrap()
    }

    fn unit_of(name: &str, path: &str) -> String {
        unit_name(&job(name, path), &from_root(Path::new(path)), None)
    }

    #[test]
    fn timer_entries_name_every_path_from_the_root() {
        // As `gengbao schedule --config job.toml` is typed: a path relative to where it is typed.
        let cfg = job("sample-city", "job.toml");
        let exe = Path::new("/usr/local/bin/gengbao");
        let cron = cron_entry(&cfg, exe);
        let here = std::env::current_dir().unwrap();
        let config = format!("'{}'", here.join("job.toml").display());
        let log = format!("'{}'", here.join("out").join("gengbao.log").display());
        assert!(cron.contains(&config) && cron.contains(&log), "{cron}");
        let units = systemd_units(&cfg, exe);
        assert!(
            units.contains(&format!("WorkingDirectory={}", here.display())),
            "{units}"
        );
        assert!(
            units.contains(&format!(
                "ExecStart=\"/usr/local/bin/gengbao\" run --config \"{}\"",
                here.join("job.toml").display()
            )),
            "{units}"
        );
    }

    #[test]
    fn unit_names_are_ascii_and_differ_between_jobs() {
        let a = unit_of("泰州耕地监测", "/srv/taizhou/job.toml");
        let b = unit_of("泰州耕地监测", "/srv/jiangyan/job.toml");
        let c = unit_of("Taizhou 2025 耕地", "/srv/taizhou/job.toml");
        for u in [&a, &b, &c] {
            assert!(
                u.starts_with("gengbao-") && u.is_ascii() && !u.contains("--"),
                "{u}"
            );
        }
        assert_ne!(a, b, "two jobs of one name");
        assert!(c.starts_with("gengbao-taizhou-2025-"), "{c}");
        let long = job(
            "Taizhou municipal cultivated land supervision, every county",
            "/srv/taizhou/job.toml",
        );
        let config = from_root(Path::new("/srv/taizhou/job.toml"));
        let k8s = unit_name(&long, &config, Some(24));
        assert!(
            k8s.starts_with("gengbao-taizhou-municipal-cultiv-") && k8s.len() <= 41,
            "{k8s}: with `-2026-P3-shards` over Kubernetes' 63 characters"
        );
        // Timers keep the whole name (a unit already installed keeps its name).
        assert!(unit_name(&long, &config, None).contains("every-county"));
    }

    #[test]
    fn slurm_time_limits_read_in_every_form_slurm_takes() {
        for (text, seconds) in [
            ("90", Some(TimeLimit::Seconds(5400))),
            ("90:30", Some(TimeLimit::Seconds(5430))),
            ("04:00:00", Some(TimeLimit::Seconds(14400))),
            ("1-12", Some(TimeLimit::Seconds(129600))),
            ("1-00:30", Some(TimeLimit::Seconds(88200))),
            ("2-01:02:03", Some(TimeLimit::Seconds(176523))),
            ("unlimited", Some(TimeLimit::Unlimited)),
            ("", None),
            ("4h", None),
            ("1-2-3", None),
            ("1:2:3:4", None),
            ("00:00:00", None),
            ("99999999999-00", None),
            (
                "4294967295-23:59:59",
                Some(TimeLimit::Seconds(371085174374399)),
            ),
        ] {
            assert_eq!(TimeLimit::read(text), seconds, "{text:?}");
        }
    }

    #[test]
    fn the_kubernetes_script_refuses_paths_and_time_limits_it_cannot_carry() {
        let mut cfg = job("sample-city", "/srv/job$x/job.toml");
        let e = k8s_script(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("/srv/job$x/job.toml") && e.contains("'$'"),
            "{e}"
        );
        cfg = job("sample-city", "/srv/city/job.toml");
        cfg.cluster.time_limit = "4h".into();
        let e = k8s_script(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("cluster.time_limit") && e.contains("\"4h\""),
            "{e}"
        );
        cfg.cluster.time_limit = "04:00:00".into();
        let script = k8s_script(&cfg).unwrap();
        assert_eq!(
            script.matches("activeDeadlineSeconds: 14400").count(),
            3,
            "{script}"
        );
    }
}
