//! What a period's run reports: `summary.json` and the few lines printed at the end.

use crate::domain::coverage::Seen;
use crate::domain::period::Period;
use crate::engine::patches::TypeTotals;
use crate::error::{Error, Result};
use crate::ledger::PeriodLedger;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct CountySummary {
    pub code: String,
    pub name: String,
    pub patches: BTreeMap<&'static str, TypeTotals>,
    /// How much of the county's watched land the period saw clear.
    pub coverage: CoverageSummary,
    pub files: Vec<String>,
}

/// Watched pixels (farmland of the watched classes) and the share seen clear.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CoverageSummary {
    pub watched_pixels: u64,
    pub clear_pixels: u64,
    /// `clear_pixels / watched_pixels`; null without watched land.
    pub clear_share: Option<f64>,
}

/// Each county's clear share as the period's `summary.json` records it, by county code.
pub(crate) fn clear_shares(summary: &Path) -> Result<BTreeMap<String, Option<f64>>> {
    #[derive(serde::Deserialize)]
    struct Written {
        counties: Vec<County>,
    }
    #[derive(serde::Deserialize)]
    struct County {
        code: String,
        /// Absent from periods run before coverage was recorded.
        #[serde(default)]
        coverage: Option<Coverage>,
    }
    #[derive(serde::Deserialize)]
    struct Coverage {
        clear_share: Option<f64>,
    }
    let text = std::fs::read_to_string(summary).map_err(|e| Error::io(summary, e))?;
    let written: Written = serde_json::from_str(&text).map_err(|e| {
        Error::input(
            summary,
            format!("is not a run summary: {e}"),
            "re-run the period",
        )
    })?;
    Ok(written
        .counties
        .into_iter()
        .map(|c| (c.code, c.coverage.and_then(|v| v.clear_share)))
        .collect())
}

impl CoverageSummary {
    pub(crate) fn of(seen: Seen) -> Self {
        CoverageSummary {
            watched_pixels: seen.watched,
            clear_pixels: seen.clear,
            clear_share: seen.share(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub job: String,
    pub period: Period,
    pub classifier: String,
    pub sensor: String,
    pub grid: GridSummary,
    pub acquisitions: Vec<String>,
    pub history_periods: Vec<String>,
    /// Consecutive earlier periods in the archive.
    pub archived_periods: usize,
    /// Rules that cannot fire yet for lack of archived periods, and why.
    pub rules_not_yet_decidable: Vec<String>,
    /// The look the period was compared with, and the threshold of the change decision.
    pub change_decision: ChangeDecision,
    /// Later periods already run against the archive entry this run replaced: re-run them.
    pub later_periods_to_rerun: Vec<String>,
    /// The lock record of a run that died holding this job, when this run found one.
    pub took_over_lock_of: Option<String>,
    pub resume: ResumeSummary,
    /// What the run did to the job's ledger: new and continued patches, re-checks.
    pub ledger: PeriodLedger,
    pub tiles: usize,
    /// Tiles in which some watched pixels had no clear observation.
    pub tiles_with_gaps: Vec<String>,
    /// How much of the job's watched land the period saw clear (per county in `counties`).
    pub coverage: CoverageSummary,
    pub counties: Vec<CountySummary>,
    pub totals: BTreeMap<&'static str, TypeTotals>,
    pub seconds: BTreeMap<&'static str, f64>,
    pub rules: String,
    pub inputs: Inputs,
}

/// What FNH and FLH were compared with before they could begin (see `engine::judge`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct ChangeDecision {
    /// The archived period whose look this period was compared with; null when none was
    /// archived with its look (the first period, or an archive from before looks were kept):
    /// then the classes alone begin a change, as against the farmland layer.
    pub compared_with: Option<String>,
    /// The scene's threshold of the smoothed change magnitude (standardised units); null
    /// without a compared look or when the two looks showed no spread of change.
    pub threshold: Option<f32>,
}

/// What a run took over from an interrupted attempt at the same period.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ResumeSummary {
    /// The attempt used other settings, another model or another archive: nothing was kept.
    pub checkpoints_discarded: bool,
    /// Tiles finished by the attempt and not redone.
    pub tiles_resumed: usize,
    /// Tiles the attempt had finished but whose imagery changed since: redone.
    pub tiles_redone_imagery_changed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    pub config: String,
    pub admin: String,
    pub farmland: String,
    pub farmland_parcels: u64,
    /// Watched parcels whose invalid geometry was repaired (GEOS MakeValid), by id.
    pub farmland_repaired: Vec<String>,
    /// Counties whose invalid boundary was repaired (GEOS MakeValid), by code.
    pub admin_repaired: Vec<String>,
    /// Parcel ids carried by more than one watched parcel.
    pub farmland_duplicate_ids: Vec<String>,
    /// Imagery files in no acquisition (packed products, rasters without a band of the
    /// profile), relative to the imagery folder.
    pub imagery_unplaced: Vec<String>,
    /// Products in the imagery folder that cannot be read as delivered (a cut zip, an
    /// incomplete product), left out: `path: what is wrong`.
    pub imagery_damaged: Vec<String>,
    /// Acquisitions of the period whose ground does not reach the job's area (another
    /// scene, or a Gaofen product placed by wrong RPCs or heights), which no tile read:
    /// `path: its ground in the grid CRS`.
    pub imagery_off_area: Vec<String>,
    /// Products of the period whose metadata states another DN offset than the job's
    /// `[imagery] add_offset`, which was applied: `product: metadata X, job Y`.
    pub imagery_offset_overridden: Vec<String>,
    /// Products of the period calibrated with another year's coefficients than their own
    /// (the table lacks their year): `product: what was used`.
    pub imagery_calibration_notes: Vec<String>,
    /// Every product of the period calibrated from its own metadata (Gaofen L1A), with its
    /// camera, the coefficients' year, the sun's zenith angle and the Earth-Sun distance:
    /// what a reviewer needs to retrace its reflectance.
    pub imagery_calibrated: Vec<String>,
    pub imagery: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GridSummary {
    pub crs: String,
    pub resolution: f64,
    pub width: usize,
    pub height: usize,
    pub tile_size: usize,
}

impl RunSummary {
    /// A few lines for the terminal.
    pub fn human(&self) -> String {
        let mut s = format!(
            "{} {}: {} acquisitions, {} tiles, {:.1} s, classifier {}{}\n",
            self.job,
            self.period,
            self.acquisitions.len(),
            self.tiles,
            self.seconds.get("total").copied().unwrap_or(0.0),
            self.classifier,
            if self.history_periods.is_empty() {
                ", no earlier periods (single-period rules)".to_string()
            } else {
                format!(", history {}", self.history_periods.join(" "))
            }
        );
        for c in &self.counties {
            s += &format!("   {} {}:", c.code, c.name);
            for (t, v) in &c.patches {
                s += &format!("  {t} {} ({:.0} m²)", v.count, v.area_m2);
            }
            s += "\n";
        }
        let l = &self.ledger;
        s += &format!(
            "   ledger: {} new, {} seen again",
            l.new.len(),
            l.continued.len()
        );
        for (what, list) in [
            ("accepted but grown, sent again", &l.regrown),
            (
                "rectified, cultivation back: proposed for closing",
                &l.proposed_for_closing,
            ),
            (
                "rectified, not back: rectifying again",
                &l.back_to_rectifying,
            ),
            ("rectified, too cloudy to re-check", &l.recheck_undecided),
        ] {
            if !list.is_empty() {
                s += &format!("; {what}: {}", list.join(" "));
            }
        }
        s += "\n";
        if self.resume.tiles_resumed > 0 {
            s += &format!(
                "   resumed: {} tiles finished by an interrupted run were kept\n",
                self.resume.tiles_resumed
            );
        }
        if !self.resume.tiles_redone_imagery_changed.is_empty() {
            s += &format!(
                "   redone: the imagery of tiles {} changed since the interrupted run\n",
                self.resume.tiles_redone_imagery_changed.join(" ")
            );
        }
        if self.resume.checkpoints_discarded {
            s +=
                "   note: an interrupted run with other settings, model or archive was discarded\n";
        }
        if let Some(dead) = &self.took_over_lock_of {
            s += &format!("   note: took over the lock of a run that died: {dead}\n");
        }
        if let Some(p) = &self.change_decision.compared_with {
            s += &format!("   FNH and FLH begin where the ground departed from its look of {p}\n");
        }
        for r in &self.rules_not_yet_decidable {
            s += &format!("   not yet decidable: {r}\n");
        }
        if !self.later_periods_to_rerun.is_empty() {
            s += &format!(
                "   warning: later periods were judged against the replaced archive, re-run them: {}\n",
                self.later_periods_to_rerun.join(" ")
            );
        }
        if !self.inputs.farmland_repaired.is_empty() {
            s += &format!(
                "   warning: {}: {} parcels with invalid geometries were repaired (MakeValid): {}; fix them in the layer, or set [farmland] invalid_geometries = \"refuse\" to stop on them\n",
                self.inputs.farmland,
                self.inputs.farmland_repaired.len(),
                crate::geo::layers::listed(&self.inputs.farmland_repaired)
            );
        }
        if !self.inputs.imagery_unplaced.is_empty() {
            s += &format!(
                "   warning: {}: {} files are in no acquisition and were not read: {}\n",
                self.inputs.imagery,
                self.inputs.imagery_unplaced.len(),
                crate::geo::layers::listed(&self.inputs.imagery_unplaced)
            );
        }
        if !self.inputs.imagery_damaged.is_empty() {
            s += &format!(
                "   warning: {}: {} products were left out: {}; download again those cut short\n",
                self.inputs.imagery,
                self.inputs.imagery_damaged.len(),
                crate::geo::layers::listed(&self.inputs.imagery_damaged)
            );
        }
        if !self.inputs.imagery_off_area.is_empty() {
            s += &format!(
                "   warning: {} acquisitions of the period do not reach the job's area and were not read: {}\n",
                self.inputs.imagery_off_area.len(),
                crate::geo::layers::listed(&self.inputs.imagery_off_area)
            );
        }
        if !self.inputs.imagery_offset_overridden.is_empty() {
            s += &format!(
                "   warning: [imagery] add_offset overrides the DN offset {} products state: {}; remove add_offset to use each product's own\n",
                self.inputs.imagery_offset_overridden.len(),
                crate::geo::layers::listed(&self.inputs.imagery_offset_overridden)
            );
        }
        if !self.inputs.imagery_calibration_notes.is_empty() {
            s += &format!(
                "   warning: {} products were calibrated with another year's coefficients: {}; add their year with [imagery] calibration\n",
                self.inputs.imagery_calibration_notes.len(),
                crate::geo::layers::listed(&self.inputs.imagery_calibration_notes)
            );
        }
        if !self.inputs.admin_repaired.is_empty() {
            s += &format!(
                "   warning: {}: the boundaries of {} cross themselves and were repaired (MakeValid); fix them in the layer\n",
                self.inputs.admin,
                self.inputs.admin_repaired.join(", ")
            );
        }
        if !self.inputs.farmland_duplicate_ids.is_empty() {
            s += &format!(
                "   warning: {}: {} parcel ids are carried by more than one parcel (patches on them name an ambiguous parcel): {}\n",
                self.inputs.farmland,
                self.inputs.farmland_duplicate_ids.len(),
                crate::geo::layers::listed(&self.inputs.farmland_duplicate_ids)
            );
        }
        for c in &self.counties {
            let CoverageSummary {
                watched_pixels,
                clear_pixels,
                clear_share: Some(share),
            } = c.coverage
            else {
                continue;
            };
            if clear_pixels < watched_pixels {
                s += &format!(
                    "   warning: {} {}: {:.1}% of its watched land seen clear; {} pixels unobserved (hatched on the quicklook, tiles {})\n",
                    c.code,
                    c.name,
                    100.0 * share,
                    watched_pixels - clear_pixels,
                    self.tiles_with_gaps.join(" ")
                );
            }
        }
        s.trim_end().to_string()
    }
}
