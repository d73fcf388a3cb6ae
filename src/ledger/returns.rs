//! The results counties return, row by row.
//!
//! Takes: the rows read from a county's returned file, the ledger's current entries, and the
//! folder the file's attachments are relative to.
//! Gives: for each row, the chain of statuses that brings its patch to the status the row asks
//! for (with the evidence type), nothing when the patch is there already, or why the row is
//! bad; and the report of an import.

use super::store::entry_in;
use crate::domain::status::{county_path, refusal, By, Evidence, Status};
use rusqlite::Connection;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use By::Inspector;
use Status::*;

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

pub(crate) const RESULT_VALUES: [&str; 3] = ["核查中", "举证", "需整改"];
pub(crate) const RECTIFICATION_VALUES: [&str; 2] = ["整改中", "已整改"];

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

/// The row as checked, the status its patch has, the statuses to go through, the evidence.
pub(super) type Plan = (ReturnRow, Status, Vec<Status>, Option<Evidence>);

/// Takes one returned row; gives its plan, None when its patch needs no change, or why the
/// row is bad. `seen` holds the numbers of the rows before, so a patch on two rows is refused.
pub(super) fn plan_row(
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
    // A number of another county reads as one the ledger does not hold: a county's return
    // (the portal takes them from county officers) must not learn another county's patches.
    let not_here = || format!("{tbbh} is not a patch of county {county}");
    let entry = entry_in(tx, path, tbbh).map_err(|_| not_here())?;
    if entry.county != county {
        return Err(not_here());
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
}
