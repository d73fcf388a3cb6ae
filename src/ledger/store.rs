//! The ledger's SQLite tables and the reads and writes its operations share.
//!
//! Takes: a connection (inside the caller's transaction for writes) and the ledger file's
//! path, which every error message names.
//! Gives: the schema, entries read from rows, recorded transitions, the patches sighted in a
//! period, and the errors of a failed or damaged ledger.

use super::Entry;
use crate::domain::status::{Evidence, Status};
use crate::engine::patches::Patch;
use crate::error::{Error, Result};
use gdal::vector::Geometry;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use Status::*;

pub(super) const SCHEMA: &str = "
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
    geometry BLOB NOT NULL,
    township TEXT NOT NULL DEFAULT ''
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
";

/// The triggers that keep `table` append-only: SQLite refuses to change or remove its rows.
pub(crate) fn append_only(table: &str) -> String {
    ["UPDATE", "DELETE"]
        .map(|action| {
            format!(
                "CREATE TRIGGER IF NOT EXISTS {table}_no_{} BEFORE {action} ON {table}
                 BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;",
                action.to_ascii_lowercase()
            )
        })
        .join("\n")
}

/// A list of lines as one text column (attachments, warnings), and back.
pub(crate) fn lines_to_text(lines: &[String]) -> String {
    lines.join("\n")
}

pub(crate) fn text_to_lines(text: &str) -> Vec<String> {
    text.split('\n')
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

pub(crate) fn now() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A failed read or write of the ledger.
pub(crate) fn db_error(path: &Path) -> impl Fn(rusqlite::Error) -> Error + Copy + '_ {
    move |e| {
        use rusqlite::ErrorCode::*;
        let fix = match e.sqlite_error_code() {
            Some(DatabaseCorrupt | NotADatabase) => {
                "the ledger file is damaged (cut short or overwritten): put back a copy from a backup; `sqlite3 ledger.sqlite .recover` salvages what is left into a new file"
            }
            Some(DatabaseBusy | DatabaseLocked) => {
                "another program holds the ledger (a SQLite browser, a copy in progress): close it and retry"
            }
            Some(DiskFull) => "free space on the disk holding the ledger and retry",
            Some(ReadOnly | CannotOpen | PermissionDenied) => {
                "make the ledger file and its folder writable by this user"
            }
            _ => "check free disk space and that no other program holds the ledger",
        };
        Error::input(path, e.to_string(), fix)
    }
}

/// A stored record or outline that cannot be read back.
pub(super) fn damaged_record(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::input(
        path,
        format!("a stored outline cannot be read: {e}"),
        "the ledger is damaged: restore it from a backup",
    )
}

/// Brings a ledger written by an earlier version to the current schema: the township column
/// (from each patch's latest sighting) and the indexes of the portal's list.
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let has_township = |c: &Connection| {
        c.prepare("SELECT 1 FROM pragma_table_info('patches') WHERE name = 'township'")?
            .exists([])
    };
    if !has_township(conn)? {
        // Another program may open the same old ledger at once: the one that takes the
        // write lock first migrates, the other finds it done.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if !has_township(&tx)? {
            tx.execute_batch(
                "ALTER TABLE patches ADD COLUMN township TEXT NOT NULL DEFAULT '';
                 UPDATE patches SET township = coalesce((SELECT json_extract(s.record, '$.township_code')
                     FROM sightings s WHERE s.tbbh = patches.tbbh AND s.period = patches.last_period), '');",
            )?;
        }
        tx.commit()?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS patches_county_number ON patches (county, tbbh);
         CREATE INDEX IF NOT EXISTS patches_township ON patches (county, township, tbbh);",
    )
}

/// The columns of `patches p` that [`entry_from_row`] reads, in its order.
pub(super) const ENTRY_COLUMNS: &str =
    "p.tbbh, p.county, p.change, p.status, p.first_period, p.last_period, p.area_m2, p.persisted, p.evidence";

pub(super) fn entry_from_row(r: &rusqlite::Row) -> rusqlite::Result<Entry> {
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

pub(super) fn entry_in(conn: &Connection, path: &Path, tbbh: &str) -> Result<Entry> {
    conn.query_row(
        &format!("SELECT {ENTRY_COLUMNS} FROM patches p WHERE p.tbbh = ?"),
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
pub(super) fn transition(
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
        params![tbbh, now(), who, from.code(), to.code(), period, note, lines_to_text(attachments)],
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

/// The patches seen in `period` in `county`, as recorded then, with their current status.
pub(super) fn sighted_in(
    tx: &Connection,
    path: &Path,
    period: &str,
    county: &str,
) -> Result<Vec<Patch>> {
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
