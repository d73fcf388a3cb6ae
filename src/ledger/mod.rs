//! Ledger (台账): the record of every patch for its whole life, one SQLite file per job
//! (`<output>/ledger.sqlite`).
//!
//! Takes: the patches of each period run (with the period's land-cover raster for the
//! re-check), status changes of inspectors, and the results counties return.
//! Gives: stable patch numbers (TBBH = county code + period of first detection + sequence),
//! each patch's status, the periods it was seen in with that period's attributes and outline,
//! an append-only history of transitions (when, who, from, to, note, attachments), and the
//! patches a county's dispatch package carries.
//!
//! Matching rule: a patch of a period is the same patch as a known one of the same county
//! that is not closed when their intersection covers at least `match_overlap` (default 30 %)
//! of the smaller of the two. Pairs are taken largest intersection first, each patch at most
//! once, so a known patch that splits keeps its number on its largest part and the other
//! parts become new patches. A closed patch found again is a new case with a new number.
//!
//! Every write is one SQLite transaction: a crash leaves the ledger as before the write.

use crate::domain::land_cover::LandCover;
use crate::domain::period::Period;
use crate::domain::status::{check_transition, county_path, refusal, By, Evidence, Status};
use crate::engine::patches::Patch;
use crate::error::{Error, Result};
use gdal::vector::Geometry;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use std::collections::{btree_map, BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use By::Inspector;
use Status::*;

/// How periods are matched to known patches and when an accepted patch is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerRules {
    /// Share of the smaller patch two patches must have in common to be the same patch.
    #[serde(default = "default_match_overlap")]
    pub match_overlap: f64,
    /// Growth beyond the area at acceptance (0.2 = 20 %) that dispatches an accepted patch
    /// again.
    #[serde(default = "default_regrowth_margin")]
    pub regrowth_margin: f64,
}

fn default_match_overlap() -> f64 {
    0.3
}
fn default_regrowth_margin() -> f64 {
    0.2
}

impl Default for LedgerRules {
    fn default() -> Self {
        LedgerRules {
            match_overlap: default_match_overlap(),
            regrowth_margin: default_regrowth_margin(),
        }
    }
}

/// Share of a patch's classified pixels under cultivation (grain) in a period, or None when
/// too few pixels were observed to tell.
pub type CultivatedShare<'a> = dyn Fn(&Geometry) -> Result<Option<f64>> + 'a;

/// A patch as the ledger lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub tbbh: String,
    pub county: String,
    pub change: String,
    pub status: Status,
    pub first_period: String,
    pub last_period: String,
    pub area_m2: f64,
    pub persisted: u32,
    pub evidence: Option<Evidence>,
}

/// One recorded transition.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    pub tbbh: String,
    pub at: String,
    pub who: String,
    pub from: Option<Status>,
    pub to: Status,
    pub period: Option<String>,
    pub note: String,
    pub attachments: Vec<String>,
}

/// Filters of `ledger list`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub county: Option<String>,
    pub change: Option<String>,
    pub status: Option<Status>,
    /// Seen in this period.
    pub period: Option<String>,
}

/// What a period run did to the ledger.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PeriodLedger {
    /// New patch numbers.
    pub new: Vec<String>,
    /// Known patches seen again.
    pub continued: Vec<String>,
    /// Accepted patches that grew beyond the margin and go out again.
    pub regrown: Vec<String>,
    /// Rectified patches with cultivation back: proposed for closing.
    pub proposed_for_closing: Vec<String>,
    /// Rectified patches without cultivation back: rectifying again.
    pub back_to_rectifying: Vec<String>,
    /// Rectified patches too cloudy this period to tell.
    pub recheck_undecided: Vec<String>,
}

/// One row of a county's returned results.
#[derive(Debug, Clone, Default)]
pub struct ReturnRow {
    /// Row number in the file (spreadsheet row, or feature id).
    pub row: usize,
    pub tbbh: String,
    /// 核查结果: 核查中 / 举证 / 需整改, or empty.
    pub result: String,
    /// 举证类型.
    pub evidence: String,
    /// 整改状态: 整改中 / 已整改, or empty.
    pub rectification: String,
    pub note: String,
    /// Photo and document paths, as given (relative to the file's folder).
    pub attachments: Vec<String>,
}

pub const RESULT_VALUES: [&str; 3] = ["核查中", "举证", "需整改"];
pub const RECTIFICATION_VALUES: [&str; 2] = ["整改中", "已整改"];

impl ReturnRow {
    /// The status the row asks for (None: nothing to change) and the evidence type.
    fn target(&self) -> std::result::Result<(Option<Status>, Option<Evidence>), String> {
        let evidence = match self.evidence.trim() {
            "" => None,
            e => Some(Evidence::parse(e).ok_or_else(|| {
                format!(
                    "举证类型 `{e}` is not one of {}",
                    Evidence::ALL.map(|e| e.label_zh()).join(" / ")
                )
            })?),
        };
        let rect = match self.rectification.trim() {
            "" => None,
            "整改中" | "rectifying" => Some(Rectifying),
            "已整改" | "rectified" => Some(Rectified),
            r => {
                return Err(format!(
                    "整改状态 `{r}` is not one of {}",
                    RECTIFICATION_VALUES.join(" / ")
                ))
            }
        };
        let target = match (self.result.trim(), evidence, rect) {
            ("举证" | "evidence", Some(_), None) => Some(EvidenceSubmitted),
            ("举证" | "evidence", None, _) => {
                return Err("核查结果 举证 needs a 举证类型".into());
            }
            ("举证" | "evidence", Some(_), Some(_)) => {
                return Err("举证 and a 整改状态 in one row: choose one".into());
            }
            ("需整改" | "rectify", None, r) => Some(r.unwrap_or(RectificationRequired)),
            ("核查中" | "verifying", None, None) => Some(Verifying),
            ("", None, r) => r,
            ("需整改" | "rectify" | "核查中" | "verifying" | "", Some(_), _) => {
                return Err("举证类型 given but 核查结果 is not 举证".into());
            }
            ("核查中" | "verifying", None, Some(_)) => {
                return Err("整改状态 given but 核查结果 is 核查中".into());
            }
            (other, _, _) => {
                return Err(format!(
                    "核查结果 `{other}` is not one of {}",
                    RESULT_VALUES.join(" / ")
                ))
            }
        };
        Ok((target, evidence))
    }
}

/// What an import found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// Patches changed, with the statuses they went through.
    pub applied: Vec<(String, Vec<Status>)>,
    /// Rows asking for the status the patch already has.
    pub unchanged: usize,
    /// (row number, reason) of every bad row.
    pub bad_rows: Vec<(usize, String)>,
}

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS patches (
    tbbh TEXT PRIMARY KEY,
    county TEXT NOT NULL,
    change TEXT NOT NULL,
    status TEXT NOT NULL,
    first_period TEXT NOT NULL,
    last_period TEXT NOT NULL,
    area_m2 REAL NOT NULL,
    persisted INTEGER NOT NULL,
    evidence TEXT,
    accepted_area_m2 REAL,
    minx REAL NOT NULL, miny REAL NOT NULL, maxx REAL NOT NULL, maxy REAL NOT NULL,
    geometry BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS patches_county ON patches (county, status);
CREATE TABLE IF NOT EXISTS sightings (
    tbbh TEXT NOT NULL REFERENCES patches (tbbh),
    period TEXT NOT NULL,
    record TEXT NOT NULL,
    geometry BLOB NOT NULL,
    PRIMARY KEY (tbbh, period)
);
CREATE INDEX IF NOT EXISTS sightings_period ON sightings (period);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tbbh TEXT NOT NULL REFERENCES patches (tbbh),
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    period TEXT,
    note TEXT NOT NULL,
    attachments TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS history_no_update BEFORE UPDATE ON history
    BEGIN SELECT RAISE(ABORT, 'the history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS history_no_delete BEFORE DELETE ON history
    BEGIN SELECT RAISE(ABORT, 'the history is append-only'); END;
";

fn now() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A failed read or write of the ledger.
fn db_error(path: &Path) -> impl Fn(rusqlite::Error) -> Error + Copy + '_ {
    move |e| {
        Error::input(
            path,
            e.to_string(),
            "check free disk space and that no other program holds the ledger",
        )
    }
}

/// A stored record or outline that cannot be read back.
fn damaged_record(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::input(
        path,
        format!("a stored outline cannot be read: {e}"),
        "the ledger is damaged: restore it from a backup",
    )
}

impl Ledger {
    /// Opens the ledger file `path`, creating it (and its folder) when missing. The caller
    /// holds the job's lock.
    pub fn open(path: &Path) -> Result<Ledger> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        Self::open_file(path)
    }

    /// Opens the ledger file `path` for the ledger commands: it must exist.
    pub fn open_existing(path: &Path) -> Result<Ledger> {
        if !path.exists() {
            return Err(Error::input(
                path,
                "no ledger yet",
                "run a period of the job first (`gengbao run --config JOB --period P`)",
            ));
        }
        Self::open_file(path)
    }

    fn open_file(path: &Path) -> Result<Ledger> {
        let fix = "check that the file is a gengbao ledger and the folder is writable";
        let conn = Connection::open(path).map_err(|e| Error::input(path, e.to_string(), fix))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .and_then(|_| conn.busy_timeout(std::time::Duration::from_secs(30)))
        .and_then(|_| conn.execute_batch(SCHEMA))
        .map_err(|e| Error::input(path, e.to_string(), fix))?;
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn begin(&mut self) -> Result<Transaction<'_>> {
        let path = &self.path;
        self.conn.transaction().map_err(|e| {
            Error::input(
                path,
                e.to_string(),
                "another program holds the ledger: close it and retry",
            )
        })
    }

    fn db<T>(&self, r: rusqlite::Result<T>) -> Result<T> {
        r.map_err(db_error(&self.path))
    }

    /// Records the patches of a period run: re-checks rectified patches of `counties`
    /// against the period's land cover, matches the patches to known ones, numbers the new
    /// ones, and sets every patch's `tbbh` and `status`. Re-running a period updates the
    /// same patches, never duplicates them.
    pub fn record_period(
        &mut self,
        period: Period,
        counties: &[String],
        patches: &mut [Patch],
        rules: &LedgerRules,
        cultivated: &CultivatedShare,
    ) -> Result<PeriodLedger> {
        let path = self.path.clone();
        let tx = self.begin()?;
        let summary = record_in(&tx, &path, period, counties, patches, rules, cultivated)?;
        tx.commit().map_err(db_error(&path))?;
        Ok(summary)
    }

    /// One transition made by a person.
    #[allow(clippy::too_many_arguments)]
    pub fn set_status(
        &mut self,
        tbbh: &str,
        county: &str,
        to: Status,
        who: &str,
        note: &str,
        evidence: Option<Evidence>,
        attachments: &[String],
    ) -> Result<()> {
        let path = self.path.clone();
        let tx = self.begin()?;
        let entry = entry_in(&tx, &path, tbbh)?;
        check_owner(&entry, county, tbbh)?;
        check_transition(entry.status, to, Inspector).map_err(|m| {
            Error::usage(format!("{tbbh}: {m}"), "choose one of the allowed statuses")
        })?;
        if to == EvidenceSubmitted && evidence.is_none() {
            return Err(Error::usage(
                format!("{tbbh}: evidence submitted without its type"),
                format!(
                    "add --evidence with one of {}",
                    Evidence::ALL.map(|e| e.label_zh()).join(" / ")
                ),
            ));
        }
        transition(
            &tx,
            &path,
            tbbh,
            entry.status,
            to,
            who,
            None,
            note,
            attachments,
            evidence,
        )?;
        tx.commit().map_err(db_error(&path))
    }

    /// Applies a county's returned results. Every row is checked first; nothing is applied
    /// when a row is bad unless `apply_valid` is set, and then only the valid rows are.
    pub fn import(
        &mut self,
        rows: &[ReturnRow],
        county: &str,
        who: &str,
        base: &Path,
        apply_valid: bool,
    ) -> Result<ImportReport> {
        let path = self.path.clone();
        let tx = self.begin()?;
        let mut report = ImportReport::default();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut plans = Vec::new();
        for row in rows {
            match plan_row(&tx, &path, row, county, base, &mut seen) {
                Ok(Some(plan)) => plans.push(plan),
                Ok(None) => report.unchanged += 1,
                Err(reason) => report.bad_rows.push((row.row, reason)),
            }
        }
        if !report.bad_rows.is_empty() && !apply_valid {
            return Ok(report);
        }
        for (row, from, steps, evidence) in plans {
            let mut at = from;
            for (k, &to) in steps.iter().enumerate() {
                let last = k + 1 == steps.len();
                transition(
                    &tx,
                    &path,
                    &row.tbbh,
                    at,
                    to,
                    who,
                    None,
                    if last { &row.note } else { "" },
                    if last { &row.attachments } else { &[] },
                    evidence.filter(|_| to == EvidenceSubmitted),
                )?;
                at = to;
            }
            report.applied.push((row.tbbh.clone(), steps));
        }
        tx.commit().map_err(db_error(&path))?;
        Ok(report)
    }

    /// The patches a county's package for `period` carries: those seen in the period that
    /// are neither accepted nor closed, with that period's attributes and outline and their
    /// current status. Newly detected ones become dispatched once `write` has written the
    /// package: if it fails, the ledger is left as it was.
    pub fn dispatch(
        &mut self,
        period: Period,
        county: &str,
        write: impl FnOnce(&[Patch]) -> Result<()>,
    ) -> Result<Vec<Patch>> {
        let path = self.path.clone();
        let tx = self.begin()?;
        let mut patches = sighted_in(&tx, &path, &period.to_string(), county)?;
        patches.retain(|p| !matches!(p.status, Accepted | Closed));
        for p in &mut patches {
            if p.status == Detected {
                transition(
                    &tx,
                    &path,
                    &p.tbbh,
                    Detected,
                    Dispatched,
                    "gengbao export",
                    Some(&period.to_string()),
                    "",
                    &[],
                    None,
                )?;
                p.status = Dispatched;
            }
        }
        write(&patches)?;
        tx.commit().map_err(db_error(&path))?;
        Ok(patches)
    }

    pub fn list(&self, filter: &Filter) -> Result<Vec<Entry>> {
        let mut sql = String::from(
            "SELECT tbbh, county, change, status, first_period, last_period, area_m2, persisted, evidence FROM patches p WHERE 1",
        );
        let mut args: Vec<String> = Vec::new();
        if let Some(c) = &filter.county {
            sql.push_str(" AND county = ?");
            args.push(c.clone());
        }
        if let Some(t) = &filter.change {
            sql.push_str(" AND change = ?");
            args.push(t.clone());
        }
        if let Some(s) = filter.status {
            sql.push_str(" AND status = ?");
            args.push(s.code().into());
        }
        if let Some(p) = &filter.period {
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM sightings s WHERE s.tbbh = p.tbbh AND s.period = ?)",
            );
            args.push(p.clone());
        }
        sql.push_str(" ORDER BY tbbh");
        let mut stmt = self.db(self.conn.prepare(&sql))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), entry_from_row);
        let rows = self.db(rows)?;
        self.db(rows.collect())
    }

    pub fn entry(&self, tbbh: &str) -> Result<Entry> {
        entry_in(&self.conn, &self.path, tbbh)
    }

    /// The periods a patch was seen in, oldest first, with its area and confidence then.
    pub fn sightings(&self, tbbh: &str) -> Result<Vec<(String, f64, f64)>> {
        let mut stmt = self.db(self
            .conn
            .prepare("SELECT period, record FROM sightings WHERE tbbh = ? ORDER BY period"))?;
        let rows = self.db(stmt.query_map([tbbh], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        }))?;
        let mut out = Vec::new();
        for row in rows {
            let (period, record) = self.db(row)?;
            let p: Patch =
                serde_json::from_str(&record).map_err(|e| damaged_record(&self.path, e))?;
            out.push((period, p.area_m2, p.confidence));
        }
        Ok(out)
    }

    /// Transitions, oldest first: of one patch, or of all patches of a county (or all).
    pub fn history(&self, tbbh: Option<&str>, county: Option<&str>) -> Result<Vec<Transition>> {
        let mut stmt = self.db(self.conn.prepare(
            "SELECT h.tbbh, h.at, h.who, h.from_status, h.to_status, h.period, h.note, h.attachments
             FROM history h JOIN patches p ON p.tbbh = h.tbbh
             WHERE (?1 IS NULL OR h.tbbh = ?1) AND (?2 IS NULL OR p.county = ?2)
             ORDER BY h.id",
        ))?;
        let rows = self.db(stmt.query_map(params![tbbh, county], |r| {
            let from: Option<String> = r.get(3)?;
            let to: String = r.get(4)?;
            let attachments: String = r.get(7)?;
            Ok(Transition {
                tbbh: r.get(0)?,
                at: r.get(1)?,
                who: r.get(2)?,
                from: from.as_deref().and_then(Status::parse),
                to: Status::parse(&to).unwrap_or(Detected),
                period: r.get(5)?,
                note: r.get(6)?,
                attachments: attachments
                    .split('\n')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            })
        }))?;
        self.db(rows.collect())
    }
}

fn check_owner(entry: &Entry, county: &str, tbbh: &str) -> Result<()> {
    if entry.county != county {
        return Err(Error::usage(
            format!("{tbbh} belongs to county {}, not {county}", entry.county),
            "a county changes only its own patches: check --county and the patch number",
        ));
    }
    Ok(())
}

fn entry_from_row(r: &rusqlite::Row) -> rusqlite::Result<Entry> {
    let status: String = r.get(3)?;
    let evidence: Option<String> = r.get(8)?;
    Ok(Entry {
        tbbh: r.get(0)?,
        county: r.get(1)?,
        change: r.get(2)?,
        status: Status::parse(&status).unwrap_or(Detected),
        first_period: r.get(4)?,
        last_period: r.get(5)?,
        area_m2: r.get(6)?,
        persisted: r.get(7)?,
        evidence: evidence.as_deref().and_then(Evidence::parse),
    })
}

fn entry_in(conn: &Connection, path: &Path, tbbh: &str) -> Result<Entry> {
    conn.query_row(
        "SELECT tbbh, county, change, status, first_period, last_period, area_m2, persisted, evidence FROM patches WHERE tbbh = ?",
        [tbbh],
        entry_from_row,
    )
    .optional()
    .map_err(db_error(path))?
    .ok_or_else(|| {
        Error::usage(
            format!("no patch {tbbh} in {}", path.display()),
            "check the number (`gengbao ledger list`)",
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn transition(
    tx: &Connection,
    path: &Path,
    tbbh: &str,
    from: Status,
    to: Status,
    who: &str,
    period: Option<&str>,
    note: &str,
    attachments: &[String],
    evidence: Option<Evidence>,
) -> Result<()> {
    let db = |r: rusqlite::Result<usize>| r.map(|_| ()).map_err(db_error(path));
    db(tx.execute(
        "INSERT INTO history (tbbh, at, who, from_status, to_status, period, note, attachments) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        params![tbbh, now(), who, from.code(), to.code(), period, note, attachments.join("\n")],
    ))?;
    db(tx.execute(
        "UPDATE patches SET status = ?2 WHERE tbbh = ?1",
        params![tbbh, to.code()],
    ))?;
    if let Some(e) = evidence {
        db(tx.execute(
            "UPDATE patches SET evidence = ?2 WHERE tbbh = ?1",
            params![tbbh, e.code()],
        ))?;
    }
    if to == Accepted {
        // Growth is measured against the area when the evidence was accepted.
        db(tx.execute(
            "UPDATE patches SET accepted_area_m2 = area_m2 WHERE tbbh = ?1",
            params![tbbh],
        ))?;
    }
    Ok(())
}

type Plan = (ReturnRow, Status, Vec<Status>, Option<Evidence>);

fn plan_row(
    tx: &Connection,
    path: &Path,
    row: &ReturnRow,
    county: &str,
    base: &Path,
    seen: &mut BTreeMap<String, usize>,
) -> std::result::Result<Option<Plan>, String> {
    let tbbh = row.tbbh.trim();
    if tbbh.is_empty() {
        return Err("no 图斑编号 (TBBH)".into());
    }
    if let Some(first) = seen.insert(tbbh.to_string(), row.row) {
        return Err(format!("{tbbh} is also on row {first}"));
    }
    let entry = entry_in(tx, path, tbbh).map_err(|_| format!("{tbbh} is not in the ledger"))?;
    if entry.county != county {
        return Err(format!(
            "{tbbh} belongs to county {}, not {county}",
            entry.county
        ));
    }
    let (target, evidence) = row.target()?;
    for a in &row.attachments {
        if !base.join(a).exists() {
            return Err(format!(
                "attachment `{a}` not found beside the file (in {})",
                base.display()
            ));
        }
    }
    let Some(target) = target else {
        return Ok(None);
    };
    if target == entry.status {
        return Ok(None);
    }
    let steps = county_path(entry.status, target)
        .ok_or_else(|| format!("{tbbh}: {}", refusal(entry.status, target, Inspector)))?;
    let mut row = row.clone();
    row.tbbh = tbbh.to_string();
    Ok(Some((row, entry.status, steps, evidence)))
}

struct Known {
    tbbh: String,
    status: Status,
    area: f64,
    accepted_area: Option<f64>,
    geometry: Geometry,
}

fn record_in(
    tx: &Transaction,
    path: &Path,
    period: Period,
    counties: &[String],
    patches: &mut [Patch],
    rules: &LedgerRules,
    cultivated: &CultivatedShare,
) -> Result<PeriodLedger> {
    let db = db_error(path);
    let period_s = period.to_string();
    let mut summary = PeriodLedger::default();

    // The satellite re-check of rectified patches.
    let rectified: Vec<(String, String, Vec<u8>)> = {
        let mut stmt = tx
            .prepare("SELECT tbbh, county, geometry FROM patches WHERE status = ? ORDER BY tbbh")
            .map_err(db)?;
        let rows = stmt
            .query_map([Rectified.code()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)?
    };
    for (tbbh, county, wkb) in rectified {
        if !counties.contains(&county) {
            continue;
        }
        let geometry = Geometry::from_wkb(&wkb).map_err(|e| damaged_record(path, e))?;
        match cultivated(&geometry)? {
            None => summary.recheck_undecided.push(tbbh),
            Some(share) if share >= 0.5 => {
                let note = format!(
                    "卫星复核: cultivation back on {:.0} % of the patch in {period_s}",
                    share * 100.0
                );
                transition(
                    tx,
                    path,
                    &tbbh,
                    Rectified,
                    ClosingProposed,
                    "gengbao satellite re-check",
                    Some(&period_s),
                    &note,
                    &[],
                    None,
                )?;
                summary.proposed_for_closing.push(tbbh);
            }
            Some(share) => {
                let note = format!(
                    "卫星复核: cultivation not back, {:.0} % of the patch cultivated in {period_s} (50 % needed)",
                    share * 100.0
                );
                transition(
                    tx,
                    path,
                    &tbbh,
                    Rectified,
                    Rectifying,
                    "gengbao satellite re-check",
                    Some(&period_s),
                    &note,
                    &[],
                    None,
                )?;
                summary.back_to_rectifying.push(tbbh);
            }
        }
    }

    // Candidate pairs (patch index, known patch, shared area) over the open patches.
    let mut pairs: Vec<(usize, usize, f64)> = Vec::new();
    let mut known: Vec<Known> = Vec::new();
    let mut known_index: BTreeMap<String, usize> = BTreeMap::new();
    {
        let mut stmt = tx
            .prepare(
                "SELECT tbbh, status, area_m2, accepted_area_m2, geometry FROM patches
                 WHERE county = ? AND status != 'closed' AND first_period <= ?
                   AND maxx >= ? AND minx <= ? AND maxy >= ? AND miny <= ? ORDER BY tbbh",
            )
            .map_err(db)?;
        for (i, p) in patches.iter().enumerate() {
            let env = p.geometry.envelope();
            let rows = stmt
                .query_map(
                    params![
                        p.county_code,
                        period_s,
                        env.MinX,
                        env.MaxX,
                        env.MinY,
                        env.MaxY
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, f64>(2)?,
                            r.get::<_, Option<f64>>(3)?,
                            r.get::<_, Vec<u8>>(4)?,
                        ))
                    },
                )
                .map_err(db)?;
            for row in rows {
                let (tbbh, status, area, accepted_area, wkb) = row.map_err(db)?;
                let k = match known_index.get(&tbbh) {
                    Some(&k) => k,
                    None => {
                        known.push(Known {
                            tbbh: tbbh.clone(),
                            status: Status::parse(&status).unwrap_or(Detected),
                            area,
                            accepted_area,
                            geometry: Geometry::from_wkb(&wkb)
                                .map_err(|e| damaged_record(path, e))?,
                        });
                        known_index.insert(tbbh, known.len() - 1);
                        known.len() - 1
                    }
                };
                let shared = p
                    .geometry
                    .intersection(&known[k].geometry)
                    .map_or(0.0, |g| surface_area(&g));
                let smaller = p.geometry.area().min(known[k].area).max(f64::MIN_POSITIVE);
                if shared >= rules.match_overlap * smaller && shared > 0.0 {
                    pairs.push((i, k, shared));
                }
            }
        }
    }
    pairs.sort_by(|a, b| {
        b.2.total_cmp(&a.2)
            .then(a.0.cmp(&b.0))
            .then(known[a.1].tbbh.cmp(&known[b.1].tbbh))
    });
    let mut matched: BTreeMap<usize, usize> = BTreeMap::new();
    let mut taken: BTreeSet<usize> = BTreeSet::new();
    for (i, k, _) in pairs {
        if !matched.contains_key(&i) && !taken.contains(&k) {
            matched.insert(i, k);
            taken.insert(k);
        }
    }

    let compact = period_s.replace('-', "");
    // The last number given under each county-and-period prefix, read once per prefix.
    let mut last_seq: BTreeMap<String, u32> = BTreeMap::new();
    for (i, p) in patches.iter_mut().enumerate() {
        let env = p.geometry.envelope();
        let wkb = p.geometry.wkb().map_err(|e| damaged_record(path, e))?;
        match matched.get(&i) {
            Some(&k) => {
                let k = &known[k];
                p.tbbh = k.tbbh.clone();
                p.status = k.status;
                if k.status == Accepted {
                    let at_acceptance = k.accepted_area.unwrap_or(k.area);
                    if p.area_m2 > at_acceptance * (1.0 + rules.regrowth_margin) {
                        let note = format!(
                            "grew from {at_acceptance:.0} m² at acceptance to {:.0} m² (more than {:.0} %): to be verified again",
                            p.area_m2,
                            rules.regrowth_margin * 100.0
                        );
                        transition(
                            tx,
                            path,
                            &p.tbbh,
                            Accepted,
                            Detected,
                            "gengbao run",
                            Some(&period_s),
                            &note,
                            &[],
                            None,
                        )?;
                        p.status = Detected;
                        summary.regrown.push(p.tbbh.clone());
                    }
                }
                tx.execute(
                    "UPDATE patches SET change = ?2, last_period = max(last_period, ?3), area_m2 = ?4,
                        persisted = ?5, minx = ?6, miny = ?7, maxx = ?8, maxy = ?9, geometry = ?10
                     WHERE tbbh = ?1",
                    params![p.tbbh, p.change.code(), period_s, p.area_m2, p.persisted, env.MinX, env.MinY, env.MaxX, env.MaxY, wkb],
                )
                .map_err(db)?;
                summary.continued.push(p.tbbh.clone());
            }
            None => {
                let prefix = format!("{}{compact}", p.county_code);
                let seq = match last_seq.entry(prefix.clone()) {
                    btree_map::Entry::Occupied(seq) => seq.into_mut(),
                    btree_map::Entry::Vacant(slot) => {
                        let last: Option<String> = tx
                            .query_row(
                                "SELECT max(tbbh) FROM patches WHERE tbbh LIKE ? || '%' AND length(tbbh) = ?",
                                params![prefix, prefix.len() + 5],
                                |r| r.get(0),
                            )
                            .map_err(db)?;
                        slot.insert(
                            last.and_then(|t| t[prefix.len()..].parse::<u32>().ok())
                                .unwrap_or(0),
                        )
                    }
                };
                *seq += 1;
                p.tbbh = format!("{prefix}{seq:05}");
                p.status = Detected;
                tx.execute(
                    "INSERT INTO patches (tbbh, county, change, status, first_period, last_period, area_m2, persisted, minx, miny, maxx, maxy, geometry)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    params![p.tbbh, p.county_code, p.change.code(), Detected.code(), period_s, p.area_m2, p.persisted, env.MinX, env.MinY, env.MaxX, env.MaxY, wkb],
                )
                .map_err(db)?;
                let note = format!(
                    "{} {:.0} m², first seen {}",
                    p.change.label_zh(),
                    p.area_m2,
                    p.first_seen
                );
                tx.execute(
                    "INSERT INTO history (tbbh, at, who, from_status, to_status, period, note, attachments) VALUES (?, ?, 'gengbao run', NULL, ?, ?, ?, '')",
                    params![p.tbbh, now(), Detected.code(), period_s, note],
                )
                .map_err(db)?;
                summary.new.push(p.tbbh.clone());
            }
        }
        let record = serde_json::to_string(&*p).expect("serialisable");
        tx.execute(
            "INSERT OR REPLACE INTO sightings (tbbh, period, record, geometry) VALUES (?, ?, ?, ?)",
            params![p.tbbh, period_s, record, wkb],
        )
        .map_err(db)?;
    }
    Ok(summary)
}

/// Area of the surfaces of a geometry; 0 for the points and lines where outlines only touch.
fn surface_area(g: &Geometry) -> f64 {
    use gdal_sys::OGRwkbGeometryType::{wkbGeometryCollection, wkbMultiPolygon, wkbPolygon};
    // SAFETY: a pure function of the type code.
    let flat = unsafe { gdal_sys::OGR_GT_Flatten(g.geometry_type()) };
    if flat == wkbPolygon || flat == wkbMultiPolygon {
        g.area()
    } else if flat == wkbGeometryCollection {
        (0..g.geometry_count())
            .map(|i| surface_area(&g.get_geometry(i)))
            .sum()
    } else {
        0.0
    }
}

/// The patches seen in `period` in `county`, as recorded then, with their current status.
fn sighted_in(tx: &Connection, path: &Path, period: &str, county: &str) -> Result<Vec<Patch>> {
    let db = db_error(path);
    let mut stmt = tx
        .prepare(
            "SELECT s.record, s.geometry, p.status FROM sightings s JOIN patches p ON p.tbbh = s.tbbh
             WHERE s.period = ? AND p.county = ? ORDER BY s.tbbh",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([period, county], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (record, wkb, status) = row.map_err(db)?;
        let mut p: Patch = serde_json::from_str(&record).map_err(|e| damaged_record(path, e))?;
        p.geometry = Geometry::from_wkb(&wkb).map_err(|e| damaged_record(path, e))?;
        p.status = Status::parse(&status).unwrap_or(Detected);
        out.push(p);
    }
    Ok(out)
}

/// Share of the observed pixels of `classes` (a window's land cover) inside `inside` that
/// are grain; None when fewer than half of the inside pixels were observed.
pub fn grain_share(classes: &[u8], inside: &[i32]) -> Option<f64> {
    let (mut total, mut seen, mut grain) = (0u32, 0u32, 0u32);
    for (&c, &m) in classes.iter().zip(inside) {
        if m == 0 {
            continue;
        }
        total += 1;
        if c != LandCover::NoData.code() {
            seen += 1;
            grain += u32::from(c == LandCover::Grain.code());
        }
    }
    (total > 0 && seen * 2 >= total).then(|| f64::from(grain) / f64::from(seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn county_paths_walk_the_lifecycle_without_the_authority_decisions() {
        assert_eq!(
            county_path(Dispatched, Rectified),
            Some(vec![
                Verifying,
                RectificationRequired,
                Rectifying,
                Rectified
            ])
        );
        assert_eq!(
            county_path(Dispatched, EvidenceSubmitted),
            Some(vec![Verifying, EvidenceSubmitted])
        );
        assert_eq!(county_path(EvidenceSubmitted, RectificationRequired), None);
        assert_eq!(county_path(Accepted, Verifying), None);
    }

    #[test]
    fn grain_share_needs_half_the_patch_observed() {
        assert_eq!(grain_share(&[1, 1, 3, 0], &[1, 1, 1, 1]), Some(2.0 / 3.0));
        assert_eq!(grain_share(&[1, 0, 0, 0], &[1, 1, 1, 1]), None);
        assert_eq!(grain_share(&[1, 1, 3, 3], &[0, 0, 1, 1]), Some(0.0));
    }
}
