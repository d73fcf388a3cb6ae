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
//!
//! Parts: `store` holds the tables and the reads and writes every operation shares, `record`
//! records a period run, `returns` reads the results counties return.

mod record;
mod returns;
mod store;

pub use returns::ReturnRow;

pub(crate) use record::grain_share;
pub(crate) use returns::{ImportReport, RECTIFICATION_VALUES, RESULT_VALUES};
/// The ledger's clock and its errors, for the tables other parts keep in the ledger file
/// (the portal's accounts and evidence).
pub(crate) use store::{append_only, db_error, lines_to_text, now, text_to_lines};

use crate::domain::period::Period;
use crate::domain::status::{check_transition, By, Evidence, Status};
use crate::engine::patches::Patch;
use crate::error::{Error, Result};
use gdal::vector::Geometry;
use record::record_in;
use returns::plan_row;
use rusqlite::{params, Connection, Transaction};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use store::{
    damaged_record, entry_from_row, entry_in, migrate, sighted_in, transition, ENTRY_COLUMNS,
    SCHEMA,
};
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
pub(crate) type CultivatedShare<'a> = dyn Fn(&Geometry) -> Result<Option<f64>> + 'a;

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

/// Filters of `ledger list` and of the portal's list and map.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub county: Option<String>,
    pub change: Option<String>,
    pub status: Option<Status>,
    /// Seen in this period.
    pub period: Option<String>,
    /// Township code (XZDM) of the patch's latest sighting.
    pub township: Option<String>,
    /// Bounding box `[minx, miny, maxx, maxy]` in the job's grid CRS the patch must touch.
    pub within: Option<[f64; 4]>,
}

impl Filter {
    /// The SQL condition over `patches p` and its arguments.
    fn condition(&self) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value::{Real, Text};
        let mut sql = String::from("1");
        let mut args = Vec::new();
        let mut text = |sql: &mut String, clause: &str, v: &str| {
            sql.push_str(clause);
            args.push(Text(v.to_string()));
        };
        if let Some(c) = &self.county {
            text(&mut sql, " AND p.county = ?", c);
        }
        if let Some(t) = &self.change {
            text(&mut sql, " AND p.change = ?", t);
        }
        if let Some(s) = self.status {
            text(&mut sql, " AND p.status = ?", s.code());
        }
        if let Some(t) = &self.township {
            text(&mut sql, " AND p.township = ?", t);
        }
        if let Some(p) = &self.period {
            text(
                &mut sql,
                " AND EXISTS (SELECT 1 FROM sightings o WHERE o.tbbh = p.tbbh AND o.period = ?)",
                p,
            );
        }
        if let Some([minx, miny, maxx, maxy]) = self.within {
            sql.push_str(" AND p.maxx >= ? AND p.minx <= ? AND p.maxy >= ? AND p.miny <= ?");
            args.extend([Real(minx), Real(maxx), Real(miny), Real(maxy)]);
        }
        (sql, args)
    }
}

/// A patch as the ledger lists it, with its latest sighting's record (township, classes,
/// confidence…) and the ledger's status on it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub entry: Entry,
    pub record: Patch,
}

/// A county and township patches lie in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub county: String,
    pub county_name: String,
    /// Empty when the job gives no townships.
    pub township: String,
    pub township_name: String,
}

/// One page of a filtered list, and how many patches the filter matches in all.
#[derive(Debug, Clone)]
pub struct Page {
    pub total: u64,
    pub patches: Vec<Listed>,
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

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
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
        let mut conn = Connection::open(path).map_err(db_error(path))?;
        // The wait comes first: another command's short write (a status set, an import)
        // must not fail this one, even while the journal mode is being read.
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .and_then(|_| {
                conn.execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
                )
            })
            .and_then(|_| conn.execute_batch(SCHEMA))
            .and_then(|_| migrate(&mut conn))
            .and_then(|_| conn.execute_batch(&append_only("history")))
        .map_err(db_error(path))?;
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// A write transaction, its lock taken at once: a transaction that read first and asked
    /// for the lock later would fail at once while another program writes, instead of
    /// waiting its turn.
    fn begin(&mut self) -> Result<Transaction<'_>> {
        self.conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_error(&self.path))
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

    /// One transition made by a person. With `seen`, the status the person saw: the change
    /// is refused when the patch has moved since (read and written in one transaction, so
    /// of two people changing one patch at once, the second is told).
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
        seen: Option<Status>,
    ) -> Result<()> {
        let path = self.path.clone();
        let tx = self.begin()?;
        let entry = entry_in(&tx, &path, tbbh)?;
        check_owner(&entry, county, tbbh)?;
        if seen.is_some_and(|s| s != entry.status) {
            return Err(Error::usage(
                format!(
                    "{tbbh} was moved meanwhile: it is now {}",
                    entry.status.both()
                ),
                "look at the patch again before changing it",
            ));
        }
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
    /// are not settled (neither accepted nor closed), with that period's attributes and outline and their
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
        patches.retain(|p| !p.status.is_settled());
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
        let (condition, args) = filter.condition();
        let mut stmt = self.db(self.conn.prepare(&format!(
            "SELECT {ENTRY_COLUMNS} FROM patches p WHERE {condition} ORDER BY p.tbbh"
        )))?;
        let rows =
            self.db(stmt.query_map(rusqlite::params_from_iter(args.iter()), entry_from_row))?;
        self.db(rows.collect())
    }

    /// The patches matching `filter` in patch-number order, `limit` of them from `offset`,
    /// with the count of all that match.
    pub fn page(&self, filter: &Filter, offset: u64, limit: u64) -> Result<Page> {
        let (condition, args) = filter.condition();
        let total: i64 = self.db(self.conn.query_row(
            &format!("SELECT count(*) FROM patches p WHERE {condition}"),
            rusqlite::params_from_iter(args.iter()),
            |r| r.get(0),
        ))?;
        // The record is read for the rows of the page only.
        let sql = format!(
            "SELECT {ENTRY_COLUMNS},
                    (SELECT s.record FROM sightings s WHERE s.tbbh = p.tbbh AND s.period = p.last_period)
             FROM patches p WHERE {condition} ORDER BY p.tbbh LIMIT ? OFFSET ?"
        );
        let mut stmt = self.db(self.conn.prepare(&sql))?;
        let mut args = args;
        // SQLite's integers are signed: "no limit" is its largest.
        args.push(rusqlite::types::Value::Integer(
            limit.min(i64::MAX as u64) as i64
        ));
        args.push(rusqlite::types::Value::Integer(
            offset.min(i64::MAX as u64) as i64
        ));
        let rows = self.db(
            stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok((entry_from_row(r)?, r.get::<_, String>(9)?))
            }),
        )?;
        let mut patches = Vec::new();
        for row in rows {
            let (entry, record) = self.db(row)?;
            patches.push(self.with_record(entry, &record)?);
        }
        Ok(Page {
            total: total as u64,
            patches,
        })
    }

    /// The bounding box `[minx, miny, maxx, maxy]` (grid CRS) of the patches matching
    /// `filter`; None when none match.
    pub fn extent(&self, filter: &Filter) -> Result<Option<[f64; 4]>> {
        let (condition, args) = filter.condition();
        let found: (Option<f64>, Option<f64>, Option<f64>, Option<f64>) =
            self.db(self.conn.query_row(
                &format!(
                    "SELECT min(p.minx), min(p.miny), max(p.maxx), max(p.maxy) FROM patches p WHERE {condition}"
                ),
                rusqlite::params_from_iter(args.iter()),
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            ))?;
        Ok(match found {
            (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
            _ => None,
        })
    }

    /// One patch with its latest sighting's record.
    pub fn listed(&self, tbbh: &str) -> Result<Listed> {
        let entry = self.entry(tbbh)?;
        let record: String = self.db(self.conn.query_row(
            "SELECT record FROM sightings WHERE tbbh = ? AND period = ?",
            [tbbh, entry.last_period.as_str()],
            |r| r.get(0),
        ))?;
        self.with_record(entry, &record)
    }

    /// `entry` with its latest sighting's record (as stored), carrying the ledger's status.
    fn with_record(&self, entry: Entry, record: &str) -> Result<Listed> {
        let mut record: Patch =
            serde_json::from_str(record).map_err(|e| damaged_record(&self.path, e))?;
        record.status = entry.status;
        Ok(Listed { entry, record })
    }

    /// The counties and townships the patches lie in (of `county` only, when given), as
    /// their latest sightings name them, in code order.
    pub fn places(&self, county: Option<&str>) -> Result<Vec<Place>> {
        // The names come from one patch's record per place: reading every record would cost
        // as much as the whole ledger.
        let mut stmt = self.db(self.conn.prepare(
            "SELECT g.county, g.township,
                    (SELECT json_extract(s.record, '$.county_name') FROM sightings s
                     WHERE s.tbbh = g.first ORDER BY s.period DESC LIMIT 1),
                    (SELECT json_extract(s.record, '$.township_name') FROM sightings s
                     WHERE s.tbbh = g.first ORDER BY s.period DESC LIMIT 1)
             FROM (SELECT county, township, min(tbbh) AS first FROM patches
                   WHERE ?1 IS NULL OR county = ?1 GROUP BY county, township) g
             ORDER BY 1, 2",
        ))?;
        let text =
            |r: &rusqlite::Row, i| r.get::<_, Option<String>>(i).map(Option::unwrap_or_default);
        let rows = self.db(stmt.query_map([county], |r| {
            Ok(Place {
                county: text(r, 0)?,
                township: text(r, 1)?,
                county_name: text(r, 2)?,
                township_name: text(r, 3)?,
            })
        }))?;
        self.db(rows.collect())
    }

    pub fn entry(&self, tbbh: &str) -> Result<Entry> {
        entry_in(&self.conn, &self.path, tbbh)
    }

    /// A patch's outline as the ledger keeps it (its latest sighting's), in the job's grid
    /// CRS.
    pub fn outline(&self, tbbh: &str) -> Result<Geometry> {
        let wkb: Vec<u8> = self.db(self.conn.query_row(
            "SELECT geometry FROM patches WHERE tbbh = ?",
            [tbbh],
            |r| r.get(0),
        ))?;
        Geometry::from_wkb(&wkb).map_err(|e| damaged_record(&self.path, e))
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
                attachments: text_to_lines(&attachments),
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
