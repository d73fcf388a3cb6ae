//! 撂荒 (PH) on real NDVI series: the UCR Crop set, 7,200 FORMOSAT-2 pixel series of one
//! year in south-west France (46 dates each), labelled with 24 covers among which wasteland
//! (friche) and fallow (jachère), the abandoned land, and eleven annual crops.
//!
//! Each series goes through the job's own change step ([`judge_tile`]), period by period: the
//! year cut into six periods (the set gives no dates; its 46 images are spread over the year,
//! so each period takes a sixth of them in order), each period's lowest and highest NDVI
//! rounded as the archive stores them, the sign of cultivation, the signals of a watched
//! field of grain land that still looks like vegetation, the runs, and the flag with the
//! job's default persistence; once with each choice of [`CultivationSigns`]. A series is flagged when the
//! rule flags PH in the year's last period. Scored: abandoned land flagged
//! (recall) against annual crops flagged (false alarms); meadows are shown, not scored.
//! Nothing is trained or tuned here.
//! Per pixel; the job then asks two thirds of a field ([`ParcelShares`]), which this set
//! without fields cannot show.
//!
//! [`ParcelShares`]: crate::domain::change::ParcelShares

use crate::domain::change::{ChangeType, CultivationSigns, Rules, Runs};
use crate::domain::land_cover::LandCover;
use crate::engine::judge::{judge_tile, History, Observation};
use crate::error::{Error, Result};
use crate::evaluate::{binary_score, BinaryScore};
use crate::geo::composite::{byte_to_ndvi, ndvi_to_byte};
use crate::job::config::RulesSection;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Periods in the set's year: the job's bimonthly periods.
const PERIODS: usize = 6;

/// The set's classes by what the rule should say of them.
const ABANDONED: [(u8, &str); 2] = [(8, "wasteland"), (9, "fallow")];
const ANNUAL_CROPS: [(u8, &str); 9] = [
    (1, "maize"),
    (2, "wheat"),
    (10, "soy"),
    (14, "sunflower"),
    (15, "sorghum"),
    (17, "rapeseed"),
    (18, "silage maize"),
    (19, "barley"),
    (20, "peas"),
];
/// Grass on fields, shown but not scored: a sown ley is worked but need not be bare within a
/// year, and a meadow on farmland is a use the inspector judges.
const MEADOWS: [(u8, &str); 2] = [(6, "temporary meadow"), (12, "meadow")];

/// The PH rule on one set of real series.
#[derive(Debug, Clone, Serialize)]
pub struct AbandonmentSet {
    pub set: String,
    /// The job's `[rules] cultivation_signs`.
    pub cultivation_signs: CultivationSigns,
    pub series: usize,
    /// "abandoned" = changed: recall is the share of abandoned series flagged, precision
    /// among abandoned and annual-crop series flagged.
    pub score: BinaryScore,
    /// Share of annual-crop series flagged PH.
    pub crops_flagged: f64,
    /// Per class: series and the share flagged.
    pub by_class: BTreeMap<String, (usize, f64)>,
}

/// Runs the UCR Crop series under `data` with each choice of signs, when present; nothing
/// when the folder is absent.
pub(super) fn ucr_crop(data: &Path) -> Result<Vec<AbandonmentSet>> {
    let path = data.join("ucr-crop").join("Crop_TRAIN.tsv");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut series = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let values: Vec<f32> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .ok()
            .filter(|v: &Vec<f32>| v.len() > PERIODS)
            .ok_or_else(|| {
                Error::input(
                    &path,
                    format!(
                        "line {}: expected a class and the NDVI of each date, separated by tabs",
                        n + 1
                    ),
                    "restore the file from the UCR time-series archive (Crop)",
                )
            })?;
        series.push((values[0] as u8, values[1..].to_vec()));
    }
    let is_in = |list: &[(u8, &str)], class: u8| list.iter().any(|&(c, _)| c == class);
    let changed: Vec<bool> = series.iter().map(|s| is_in(&ABANDONED, s.0)).collect();
    let unchanged: Vec<bool> = series.iter().map(|s| is_in(&ANNUAL_CROPS, s.0)).collect();
    let sets = CultivationSigns::ALL.map(|signs| {
        let rules = RulesSection::default()
            .persistence()
            .with_cultivation(signs);
        let flagged = flagged_abandoned(&series, &rules);
        let share = |keep: &dyn Fn(u8) -> bool| {
            let of: Vec<bool> = series
                .iter()
                .zip(&flagged)
                .filter(|((c, _), _)| keep(*c))
                .map(|(_, &f)| f)
                .collect();
            (
                of.len(),
                of.iter().filter(|&&f| f).count() as f64 / of.len().max(1) as f64,
            )
        };
        AbandonmentSet {
            set: "ucr-crop".into(),
            cultivation_signs: signs,
            series: series.len(),
            score: binary_score(&flagged, &changed, &unchanged),
            crops_flagged: share(&|c| is_in(&ANNUAL_CROPS, c)).1,
            by_class: ABANDONED
                .iter()
                .chain(&ANNUAL_CROPS)
                .chain(&MEADOWS)
                .map(|&(class, name)| (name.to_string(), share(&|c| c == class)))
                .collect(),
        }
    });
    Ok(sets.into())
}

/// Which of `series` (a year of NDVI each) the job's change step flags as abandoned at the
/// year's end, each a watched field of grain land that still looks like grain: period after
/// period, the lowest and highest NDVI as the archive stores them give the sign of
/// cultivation, and [`judge_tile`] extends the runs and flags, exactly as a job's tile.
fn flagged_abandoned(series: &[(u8, Vec<f32>)], rules: &Rules) -> Vec<bool> {
    let grain = LandCover::Grain.code();
    let archived = |v: f32| byte_to_ndvi(ndvi_to_byte(v));
    let mut runs: Vec<Runs> = vec![[0; 3]; series.len()];
    let mut flags = vec![0; series.len()];
    for period in 0..PERIODS {
        let judged = judge_tile(
            series.len(),
            rules,
            History {
                classes: &[],
                confidences: &[],
                periods: period,
            },
            |i| {
                let ndvi = &series[i].1;
                let dates = ndvi.chunks(ndvi.len().div_ceil(PERIODS)).nth(period)?;
                let lowest = dates.iter().copied().fold(f32::INFINITY, f32::min);
                let highest = dates.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                Some(Observation {
                    county: 1,
                    watched: true,
                    basic: false,
                    baseline: grain,
                    now: grain,
                    confidence: 1.0,
                    cultivation: rules.cultivation.seen(archived(lowest), archived(highest)),
                    runs_before: runs[i],
                    sure: true,
                    // PH is not gated by the look (see `engine::judge`).
                    departed: None,
                })
            },
        );
        for (i, r) in runs.iter_mut().enumerate() {
            *r = std::array::from_fn(|k| judged.runs[k][i]);
        }
        flags = judged.flag;
    }
    flags.iter().map(|&f| f == ChangeType::PH.flag()).collect()
}
