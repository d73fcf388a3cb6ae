//! Several periods of a job in one command: every period with imagery (`all`), every period
//! that is over and not run yet (`due`, the catch-up after an outage), or one period; with
//! the job's run log and the exit code that cron and systemd read.

use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::job::config::JobConfig;
use crate::job::run::{periods_with_imagery, run_period, RunOptions};
use crate::job::schedule::{self, State};
use crate::job::summary::RunSummary;

/// Exit code of a run that did all it could while periods that are over still wait for
/// imagery.
pub(crate) const EXIT_WAITING_FOR_IMAGERY: u8 = 4;
/// Exit code when another run holds the job's lock.
pub(crate) const EXIT_LOCKED: u8 = 3;
/// Exit code of a command that failed (the message names the file and the fix).
pub(crate) const EXIT_FAILED: u8 = 1;
/// A period had no clear observation of the counties: nothing was committed.
pub(crate) const EXIT_NO_USABLE_IMAGERY: u8 = 5;

/// The exit code of a failed command.
pub fn exit_code_of(e: &Error) -> u8 {
    match e {
        Error::Locked { .. } => EXIT_LOCKED,
        Error::NoUsableImagery { .. } => EXIT_NO_USABLE_IMAGERY,
        _ => EXIT_FAILED,
    }
}

/// Which periods a run takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodSelector {
    One(Period),
    /// Every period with imagery, in order.
    All,
    /// Every period that is over and not run yet, oldest first.
    Due,
}

impl std::str::FromStr for PeriodSelector {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "all" => PeriodSelector::All,
            "due" => PeriodSelector::Due,
            p => PeriodSelector::One(p.parse()?),
        })
    }
}

impl std::fmt::Display for PeriodSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeriodSelector::One(p) => write!(f, "{p}"),
            PeriodSelector::All => f.write_str("all"),
            PeriodSelector::Due => f.write_str("due"),
        }
    }
}

/// What a multi-period run did besides the periods' own summaries.
#[derive(Debug, Clone, Default)]
pub struct CycleOutcome {
    /// Periods run, in order.
    pub ran: Vec<Period>,
    /// Periods that are over but have no imagery yet (with `due`).
    pub waiting: Vec<Period>,
    /// Where the imagery was looked for.
    pub imagery: String,
}

impl CycleOutcome {
    /// The periods skipped for want of imagery, for the terminal and the log.
    pub fn waiting_message(&self) -> Option<String> {
        if self.waiting.is_empty() {
            return None;
        }
        let list: Vec<String> = self.waiting.iter().map(|p| p.to_string()).collect();
        Some(format!(
            "skipped, no imagery yet in {}: {}",
            self.imagery,
            list.join(" ")
        ))
    }

    pub fn exit_code(&self) -> u8 {
        if self.waiting.is_empty() {
            0
        } else {
            EXIT_WAITING_FOR_IMAGERY
        }
    }
}

/// Runs the selected periods in order, calling `done` after each, and logs the start, each
/// period and the end in the job's run log. Stops at the first period that fails.
pub fn run_periods(
    cfg: &JobConfig,
    selector: PeriodSelector,
    opts: &RunOptions,
    mut done: impl FnMut(Period, &RunSummary),
) -> Result<CycleOutcome> {
    let mut outcome = CycleOutcome {
        imagery: cfg.imagery_source().display().to_string(),
        ..Default::default()
    };
    let periods: Vec<Period> = match selector {
        PeriodSelector::All => periods_with_imagery(cfg)?,
        PeriodSelector::Due => {
            let plan = schedule::plan(cfg, chrono::Local::now().date_naive())?;
            outcome.waiting = plan.of(State::NoImagery);
            plan.due()
        }
        PeriodSelector::One(p) => vec![p],
    };
    let log = |line: &str| {
        if let Err(e) = schedule::log(cfg, line) {
            eprintln!("warning: cannot write the run log: {e}");
        }
    };
    log(&format!(
        "start: run --period {selector}: {} period(s) to run",
        periods.len()
    ));
    for p in periods {
        eprintln!("== {} {p}", cfg.job.name);
        match run_period(cfg, p, opts) {
            Ok(s) => {
                let totals: Vec<String> = s
                    .totals
                    .iter()
                    .map(|(t, v)| format!("{t} {}", v.count))
                    .collect();
                log(&format!(
                    "{p}: done in {:.1} s, {}",
                    s.seconds.get("total").copied().unwrap_or(0.0),
                    totals.join(", ")
                ));
                for d in crate::progress::take_library_messages() {
                    log(&format!("{p}: library: {}", d.replace('\n', " | ")));
                }
                done(p, &s);
                outcome.ran.push(p);
            }
            Err(e) => {
                log(&format!("{p}: failed: {e}"));
                // Whole, traces included; the command line prints their first lines.
                for d in crate::progress::library_messages() {
                    log(&format!("{p}: library: {}", d.replace('\n', " | ")));
                }
                return Err(e);
            }
        }
    }
    if let Some(msg) = outcome.waiting_message() {
        log(&msg);
    } else {
        log("end: ok");
    }
    Ok(outcome)
}
