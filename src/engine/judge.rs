//! The per-pixel change step, written once for `run` and `detect`: from what is observed at a
//! pixel (its classes, a sign of cultivation, the runs of the change signals up to the period
//! before) to the runs up to now, the flag, the patch key and the attributes the patch stage
//! reads.

use crate::domain::change::{extend_runs, signals, ChangeType, Rules, Runs, FLAG_OUTSIDE};
use crate::engine::patches::attr_band;
use crate::geo::vectorise::patch_key;

/// What is known of one pixel inside the area of interest before its change is judged.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// 1-based county index.
    pub county: u16,
    /// On a watched farmland parcel.
    pub watched: bool,
    /// On permanent basic farmland.
    pub basic: bool,
    /// The class the pixel should have (the farmland layer's, or the earlier image's).
    pub baseline: u8,
    pub now: u8,
    pub confidence: f32,
    /// Whether the period showed a sign of cultivation (see [`crate::domain::change`]).
    pub cultivation: Option<bool>,
    /// Runs of the change signals up to the period before.
    pub runs_before: Runs,
    /// Whether the classes are sure enough for a signal to be raised at all.
    pub sure: bool,
    /// Whether the ground departed from the look it is compared with (the scene's spectral
    /// decision, [`crate::engine::scene_change`]); `None` where there is no such look or a
    /// look did not see the pixel.
    pub departed: Option<bool>,
}

/// The archived classes and confidences (as bytes) of the earlier periods over one tile, most
/// recent first, and how many consecutive earlier periods are archived (it may reach further
/// back than the classes kept here).
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    pub classes: &'a [Vec<u8>],
    pub confidences: &'a [Vec<u8>],
    pub periods: usize,
}

impl History<'_> {
    /// A pair is judged as given: its classes are all there is.
    pub(crate) const PAIR: History<'static> = History {
        classes: &[],
        confidences: &[],
        periods: usize::MAX,
    };
}

/// The change step's output for one tile's core, pixel by pixel.
pub struct ChangeTile {
    /// Runs of the FNH, FLH and PH signals up to now (what the next period reads).
    pub runs: [Vec<u8>; 3],
    pub flag: Vec<u8>,
    pub key: Vec<u16>,
    pub attrs: [Vec<u8>; attr_band::COUNT],
}

/// Judges every pixel of a tile's core: `observe(i)` gives what is known of pixel `i`, or
/// None outside the area of interest (flagged [`FLAG_OUTSIDE`]).
pub fn judge_tile(
    len: usize,
    rules: &Rules,
    history: History,
    observe: impl Fn(usize) -> Option<Observation>,
) -> ChangeTile {
    let mut out = ChangeTile {
        runs: std::array::from_fn(|_| vec![0u8; len]),
        flag: vec![FLAG_OUTSIDE; len],
        key: vec![0; len],
        attrs: std::array::from_fn(|_| vec![0u8; len]),
    };
    for i in 0..len {
        let Some(o) = observe(i) else { continue };
        let runs = if o.watched && o.sure {
            extend_runs(o.runs_before, gated(&o))
        } else {
            [0; 3]
        };
        for (k, &r) in runs.iter().enumerate() {
            out.runs[k][i] = r;
        }
        let j = judge(&o, runs, &history, i, rules);
        out.flag[i] = j.flag;
        out.key[i] = j.key;
        for (b, v) in j.attrs.into_iter().enumerate() {
            out.attrs[b][i] = v;
        }
    }
    out
}

/// The change signals of a pixel, of which FNH and FLH may begin only where the ground
/// departed from its compared look: a class that differs from the baseline over ground that
/// looks as it did is a classification error, not a change. Once begun, a change goes on as
/// long as the classes show it: built ground stays built without departing again. PH is not
/// gated: abandonment shows as a year without signs of cultivation, which its own rule reads.
fn gated(o: &Observation) -> [bool; 3] {
    let mut s = signals(o.baseline, o.now, o.cultivation);
    for t in [ChangeType::FNH, ChangeType::FLH] {
        let k = t as usize - 1;
        if o.runs_before[k] == 0 && o.departed == Some(false) {
            s[k] = false;
        }
    }
    s
}

struct Judgement {
    flag: u8,
    key: u16,
    attrs: [u8; attr_band::COUNT],
}

/// Applies the change rules to one pixel and encodes what the patch stage needs. The class
/// before (QDL) is the one of the period before the change began, when archived. The
/// confidence of a lasting change combines the classifier's confidences over its periods
/// (1 - product of the doubts, each period being independent evidence), so it rises as the
/// change persists.
fn judge(o: &Observation, runs: Runs, history: &History, at: usize, rules: &Rules) -> Judgement {
    let (flag, run) = rules.flag(o.watched, o.now, runs, history.periods);
    let key = if ChangeType::from_flag(flag).is_some() {
        patch_key(o.county, flag)
    } else {
        0
    };
    let earlier = usize::from(run.max(1)) - 1;
    let observed_before = history
        .classes
        .get(earlier)
        .map(|h| h[at])
        .filter(|&c| c != 0)
        .unwrap_or(o.baseline);
    let doubt = history.confidences[..earlier.min(history.confidences.len())]
        .iter()
        .fold(1.0 - o.confidence, |d, h| {
            d * (1.0 - byte_to_confidence(h[at]))
        });
    let mut attrs = [0u8; attr_band::COUNT];
    attrs[attr_band::BEFORE - 1] = observed_before;
    attrs[attr_band::NOW - 1] = o.now;
    attrs[attr_band::CONFIDENCE - 1] = confidence_to_byte(1.0 - doubt);
    attrs[attr_band::FARMLAND - 1] = if o.basic { 2 } else { u8::from(o.watched) };
    attrs[attr_band::PERSISTED - 1] = run;
    Judgement { flag, key, attrs }
}

/// Confidences are archived and passed on as bytes, 0..=250.
pub(crate) fn confidence_to_byte(c: f32) -> u8 {
    (c.clamp(0.0, 1.0) * 250.0).round() as u8
}

pub(crate) fn byte_to_confidence(b: u8) -> f32 {
    f32::from(b) / 250.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::change::FLAG_NONE;
    use crate::domain::land_cover::LandCover;

    /// A watched grain pixel the classes now call built-up.
    fn built(departed: Option<bool>, runs_before: Runs) -> Observation {
        Observation {
            county: 1,
            watched: true,
            basic: false,
            baseline: LandCover::Grain.code(),
            now: LandCover::Built.code(),
            confidence: 0.9,
            cultivation: Some(true),
            runs_before,
            sure: true,
            departed,
        }
    }

    fn judged(o: Observation) -> (u8, u8) {
        let j = judge_tile(1, &Rules::new(1, 1, 6), History::PAIR, |_| Some(o));
        (j.flag[0], j.runs[0][0])
    }

    #[test]
    fn a_change_begins_only_where_the_ground_departed_from_its_compared_look() {
        let fnh = ChangeType::FNH.flag();
        assert_eq!(judged(built(Some(false), [0; 3])), (FLAG_NONE, 0));
        assert_eq!(judged(built(Some(true), [0; 3])), (fnh, 1));
        // Without a look to compare with (a job's first year, a cloud in either look), the
        // classes alone begin it.
        assert_eq!(judged(built(None, [0; 3])), (fnh, 1));
    }

    #[test]
    fn a_change_under_way_goes_on_while_the_classes_show_it() {
        assert_eq!(
            judged(built(Some(false), [3, 0, 0])),
            (ChangeType::FNH.flag(), 4)
        );
    }
}
