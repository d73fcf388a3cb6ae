//! Change rules: from land-cover classes and their history to flags.
//!
//! Takes, per pixel and period: whether it is watched (on the farmland layer and inside the
//! area of interest), the baseline class it should have, the class now, whether the period
//! showed a sign of cultivation, and how many consecutive periods each change signal had been
//! seen up to the period before ([`Runs`], archived by the pipeline). Gives the runs up to now
//! and a flag code: 0 none, 1 FNH, 2 FLH, 3 PH, 255 outside data.
//!
//! Signals, seen or not in each period:
//! - FNH 非农化: cropland in the baseline (grain or non-grain crop) and built-up/hardened now.
//! - FLH 非粮化: grain in the baseline and a non-grain perennial crop, tree cover or water now.
//! - PH 撂荒: cropland in the baseline, vegetated or grain-like now (not built-up or water), and
//!   no sign of cultivation in the period ([`CultivationSigns`]): by default no clear
//!   observation showed bare soil (NDVI <= 0.25: tillage, sowing, harvest) nor a dense crop
//!   canopy (NDVI >= 0.7). Judged on NDVI, not on classes, because in winter abandoned land
//!   and dormant fields get the same class. A period without any clear observation ends the
//!   run: it may have hidden a harvest.
//!
//! A signal becomes a flag when it has lasted [`Rules::min_periods`] consecutive periods, now
//! included (defaults: FNH 2, since one bare period is as often a ploughed field as a
//! building site; FLH 2, since one odd period is rotation or flooding; PH 6, a year without a
//! crop cycle), and only once enough earlier periods are
//! archived for the rule to be decided ([`Rules::history_needed`]). The first of these wins
//! when several types are due: FNH, FLH, PH. The flag's run is the patch's persistence
//! (`CXQS`); its first period (`SCQS`) is the period the run began.
//!
//! In `gengbao run` the baseline is the farmland layer (耕地 is grain land), so a violation is
//! reported in every period while it lasts. In `gengbao detect` the baseline is the class of
//! the earlier image and the pair is judged as given ([`Rules::two_dates`]).

use crate::domain::land_cover::LandCover;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum ChangeType {
    FNH = 1,
    FLH = 2,
    PH = 3,
}

pub(crate) const FLAG_NONE: u8 = 0;
pub(crate) const FLAG_OUTSIDE: u8 = 255;

impl ChangeType {
    pub const ALL: [ChangeType; 3] = [ChangeType::FNH, ChangeType::FLH, ChangeType::PH];

    pub fn code(self) -> &'static str {
        match self {
            ChangeType::FNH => "FNH",
            ChangeType::FLH => "FLH",
            ChangeType::PH => "PH",
        }
    }

    /// Whether a change of this type happens to a field as a whole: a crop change (FLH) or
    /// an abandonment (PH) is the field's, so its parts on one parcel are one patch (one
    /// field, one visit). A conversion to buildings or roads (FNH) may take a corner, and two
    /// buildings on one field are two cases.
    pub fn is_whole_field(self) -> bool {
        matches!(self, ChangeType::FLH | ChangeType::PH)
    }

    pub fn label_zh(self) -> &'static str {
        match self {
            ChangeType::FNH => "非农化",
            ChangeType::FLH => "非粮化",
            ChangeType::PH => "撂荒",
        }
    }

    pub fn flag(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_flag(flag: u8) -> Option<Self> {
        match flag {
            1 => Some(ChangeType::FNH),
            2 => Some(ChangeType::FLH),
            3 => Some(ChangeType::PH),
            _ => None,
        }
    }

    pub(crate) fn from_code(code: &str) -> Option<Self> {
        ChangeType::ALL.into_iter().find(|t| t.code() == code)
    }
}

/// Earlier periods a non-grain class needs before it raises FLH: a perennial crop is told
/// from a grain crop only over half a year (this period and two before).
pub(crate) const PERENNIAL_MIN_HISTORY: usize = 2;

/// Consecutive periods, now included, that each change type's signal has been seen at a
/// pixel, indexed by `ChangeType as usize - 1`; saturates at 255.
pub type Runs = [u8; 3];

/// The persistence each change type needs before it is flagged, and what shows cultivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Consecutive periods, now included, indexed like [`Runs`].
    pub min_periods: [usize; 3],
    pub cultivation: CultivationSigns,
}

impl Rules {
    pub fn new(fnh: usize, flh: usize, ph: usize) -> Self {
        Rules {
            min_periods: [fnh, flh, ph],
            cultivation: CultivationSigns::default(),
        }
    }

    pub fn with_cultivation(self, cultivation: CultivationSigns) -> Self {
        Rules {
            cultivation,
            ..self
        }
    }

    /// Two images judged as given: FNH and FLH at first sight; PH only when the pair is taken
    /// as evidence of abandonment ([`pair_cultivation`]), else never (it needs a year).
    pub(crate) fn two_dates(abandonment: bool) -> Self {
        Rules::new(1, 1, if abandonment { 1 } else { usize::MAX })
    }

    pub(crate) fn min_periods(&self, t: ChangeType) -> usize {
        self.min_periods[t as usize - 1]
    }

    /// Earlier archived periods the rule of `t` needs before it can fire.
    pub(crate) fn history_needed(&self, t: ChangeType) -> usize {
        let run = self.min_periods(t).saturating_sub(1);
        match t {
            ChangeType::FLH => run.max(PERENNIAL_MIN_HISTORY),
            _ => run,
        }
    }

    /// The flag of a pixel from its runs, with `history_periods` earlier periods archived,
    /// and the run of the flagged type (0 when none).
    pub fn flag(&self, watched: bool, now: u8, runs: Runs, history_periods: usize) -> (u8, u8) {
        if LandCover::from_code(now) == LandCover::NoData {
            return (FLAG_OUTSIDE, 0);
        }
        if !watched {
            return (FLAG_NONE, 0);
        }
        ChangeType::ALL
            .into_iter()
            .find(|&t| {
                let run = usize::from(runs[t as usize - 1]);
                run >= self.min_periods(t).max(1) && history_periods >= self.history_needed(t)
            })
            .map_or((FLAG_NONE, 0), |t| (t.flag(), runs[t as usize - 1]))
    }
}

/// Which change signals a watched pixel shows in one period. `cultivation`: whether the
/// period showed a sign of cultivation, `None` when it had no clear observation.
pub fn signals(before: u8, now: u8, cultivation: Option<bool>) -> [bool; 3] {
    use LandCover::*;
    let before = LandCover::from_code(before);
    let now = LandCover::from_code(now);
    let was_crop = matches!(before, Grain | NonGrain);
    [
        now == Built && was_crop,
        matches!(now, NonGrain | Forest | Water) && before == Grain,
        was_crop && !matches!(now, Built | Water | NoData) && cultivation == Some(false),
    ]
}

/// Default of the share of its parcel a field-scale change must take ([`ParcelShares`]): a
/// clear majority. With one look per date a parcel near an even split is decided by noise
/// (on the peer harness's 2048 scene a grain field had 49 % of its pixels flagged).
pub const DEFAULT_MIN_PARCEL_SHARE: f64 = 2.0 / 3.0;

/// For each farmland parcel, the share of its observed pixels flagged FLH and PH. Growing
/// another crop (FLH) and leaving a field idle (PH) are decisions about a whole field; spots
/// of another class scattered in a field that is still mostly grain are mixed pixels or
/// classification noise, which a single look per date cannot outvote by persistence. A
/// building (FNH) may take a corner of a field, so FNH is not held to a share. Parcels are
/// the ids of the farmland raster (0 = none); counts from tiles add up, so the shares of a
/// parcel split by tile seams are those of the whole parcel.
#[derive(Debug, Default, Clone)]
pub struct ParcelShares {
    /// Per parcel: observed pixels, of them flagged FLH, flagged PH.
    counts: std::collections::HashMap<i32, [u32; 3]>,
}

impl ParcelShares {
    const FIELD_SCALE: [ChangeType; 2] = [ChangeType::FLH, ChangeType::PH];

    /// Counts one watched pixel of `parcel` with flag `flag`; pixels outside the data are
    /// not counted, so clouds do not dilute a change.
    pub fn add(&mut self, parcel: i32, flag: u8) {
        if parcel == 0 || flag == FLAG_OUTSIDE {
            return;
        }
        let c = self.counts.entry(parcel).or_default();
        c[0] += 1;
        for (k, t) in Self::FIELD_SCALE.into_iter().enumerate() {
            c[k + 1] += u32::from(flag == t.flag());
        }
    }

    pub(crate) fn merge(&mut self, other: ParcelShares) {
        for (parcel, c) in other.counts {
            let mine = self.counts.entry(parcel).or_default();
            for (m, v) in mine.iter_mut().zip(c) {
                *m += v;
            }
        }
    }

    /// The share of `parcel`'s observed pixels flagged `t`; `None` when `t` is not held to a
    /// share or the parcel has no observed pixel.
    pub fn share(&self, parcel: i32, t: ChangeType) -> Option<f64> {
        let k = Self::FIELD_SCALE.iter().position(|&f| f == t)?;
        let c = self.counts.get(&parcel)?;
        Some(f64::from(c[k + 1]) / f64::from(c[0]))
    }

    /// Whether a patch of type `t` on `parcel` takes at least `min_share` of it.
    pub fn keeps(&self, parcel: i32, t: ChangeType, min_share: f64) -> bool {
        self.share(parcel, t).is_none_or(|s| s >= min_share)
    }
}

/// Whether the later image of a pair shows cultivation, for PH from two dates: land that was
/// cropland and is now grass or shrub does not; any other cover does (or is another change).
pub(crate) fn pair_cultivation(now: u8) -> Option<bool> {
    Some(LandCover::from_code(now) != LandCover::Grass)
}

/// The runs up to now from those up to the period before and this period's signals.
pub(crate) fn extend_runs(before: Runs, signals: [bool; 3]) -> Runs {
    std::array::from_fn(|k| {
        if signals[k] {
            before[k].saturating_add(1)
        } else {
            0
        }
    })
}

/// NDVI of a bare, tilled or harvested field: at or below this, a period shows cultivation.
pub(crate) const BARE_SOIL_NDVI: f32 = 0.25;
/// NDVI of a dense crop canopy: at or above this, a period shows cultivation when the job
/// counts a canopy as a sign ([`CultivationSigns::BareSoilOrCanopy`]).
pub(crate) const CROP_CANOPY_NDVI: f32 = 0.7;

/// What a period must show to count as cultivated, for the PH rule (`[rules]
/// cultivation_signs`). The choice is the region's cropping system's: the bare window of a
/// worked field must be seen at least once a year, and weeds must not pass for a crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CultivationSigns {
    /// Bare soil or a dense canopy. Where fields are double-cropped (wheat then maize, two
    /// rice crops) the bare days between crops are few and may all pass under clouds, while
    /// each crop's peak is long; but weeds on abandoned land reach a crop's green too, so much
    /// real abandoned land goes unflagged (README: 撂荒 on real series).
    #[default]
    BareSoilOrCanopy,
    /// Bare soil only: where fields are single-cropped and lie bare for weeks before sowing or
    /// after harvest, every worked field shows it within a year and lush weeds do not.
    BareSoil,
}

impl CultivationSigns {
    pub const ALL: [CultivationSigns; 2] = [
        CultivationSigns::BareSoilOrCanopy,
        CultivationSigns::BareSoil,
    ];

    /// The name a job config gives it.
    pub fn name(self) -> &'static str {
        match self {
            CultivationSigns::BareSoilOrCanopy => "bare-soil-or-canopy",
            CultivationSigns::BareSoil => "bare-soil",
        }
    }

    /// What counts, in words (the run summary's rule text).
    pub fn describe(self) -> &'static str {
        match self {
            CultivationSigns::BareSoilOrCanopy => "bare soil or a dense canopy",
            CultivationSigns::BareSoil => "bare soil",
        }
    }

    /// Whether a period whose clear observations had NDVI between `min` and `max` showed a
    /// sign of cultivation; `None` without a clear observation.
    pub fn seen(self, min: f32, max: f32) -> Option<bool> {
        if !(min.is_finite() && max.is_finite()) {
            return None;
        }
        Some(match self {
            CultivationSigns::BareSoilOrCanopy => min <= BARE_SOIL_NDVI || max >= CROP_CANOPY_NDVI,
            CultivationSigns::BareSoil => min <= BARE_SOIL_NDVI,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRAIN: u8 = 1;
    const NON_GRAIN: u8 = 2;
    const BUILT: u8 = 3;
    const WATER: u8 = 4;
    const GRASS: u8 = 5;
    const FOREST: u8 = 6;

    /// Flags of a watched pixel of grain land over a sequence of (class, cultivation) periods,
    /// with the default rules and the archive starting at the first period.
    fn flags_over(periods: &[(u8, Option<bool>)]) -> Vec<u8> {
        let rules = Rules::new(1, 2, 6);
        let mut runs = [0; 3];
        periods
            .iter()
            .enumerate()
            .map(|(k, &(now, cult))| {
                runs = extend_runs(runs, signals(GRAIN, now, cult));
                rules.flag(true, now, runs, k).0
            })
            .collect()
    }

    #[test]
    fn fnh_is_flagged_at_once() {
        assert_eq!(flags_over(&[(BUILT, Some(true))]), [1]);
        assert_eq!(
            signals(FOREST, BUILT, None),
            [false; 3],
            "forest to built is not farmland loss"
        );
    }

    #[test]
    fn flh_needs_two_consecutive_periods_and_half_a_year_of_archive() {
        let g = (GRAIN, Some(true));
        let o = (NON_GRAIN, Some(true));
        assert_eq!(flags_over(&[g, g, o, g, g]), [0; 5], "one odd period");
        assert_eq!(flags_over(&[g, g, o, o, o]), [0, 0, 0, 2, 2]);
        assert_eq!(flags_over(&[g, g, (WATER, None), (WATER, None)])[3], 2);
        assert_eq!(
            flags_over(&[o, o, o]),
            [0, 0, 2],
            "not before two earlier periods are archived"
        );
    }

    #[test]
    fn ph_needs_a_year_without_cultivation() {
        let crop = (GRAIN, Some(true));
        let idle = (GRASS, Some(false));
        let mut year = vec![crop];
        year.extend([idle; 6]);
        assert_eq!(flags_over(&year), [0, 0, 0, 0, 0, 0, 3]);
        let fallow_then_cultivated = [crop, idle, idle, crop, idle, idle, idle, idle, idle];
        assert!(flags_over(&fallow_then_cultivated).iter().all(|&f| f == 0));
        let cloudy = [
            idle,
            idle,
            idle,
            (GRASS, None),
            idle,
            idle,
            idle,
            idle,
            idle,
        ];
        assert_eq!(
            flags_over(&cloudy),
            [0; 9],
            "a period without a clear view may hide a harvest"
        );
        assert_eq!(
            flags_over(&[(GRAIN, Some(false)); 6])[5],
            3,
            "dormant-looking but never cultivated"
        );
    }

    #[test]
    fn outside_data_and_unwatched_pixels() {
        let rules = Rules::new(1, 2, 6);
        assert_eq!(rules.flag(true, 0, [5; 3], 9), (FLAG_OUTSIDE, 0));
        assert_eq!(rules.flag(false, BUILT, [5; 3], 9), (FLAG_NONE, 0));
        assert_eq!(rules.flag(true, BUILT, [3, 0, 0], 9), (1, 3));
    }

    #[test]
    fn field_scale_changes_must_take_most_of_their_parcel() {
        let mut tile_a = ParcelShares::default();
        let mut tile_b = ParcelShares::default();
        // Parcel 7 across two tiles: 10 observed pixels, 7 of them flagged FLH.
        for k in 0..6 {
            tile_a.add(7, if k < 4 { 2 } else { 0 });
        }
        for k in 0..4 {
            tile_b.add(7, if k < 3 { 2 } else { 0 });
        }
        tile_b.add(7, FLAG_OUTSIDE);
        // Parcel 8: 2 of 10 pixels flagged FLH, one of them FNH.
        for k in 0..10 {
            tile_b.add(8, [2, 2, 1].get(k).copied().unwrap_or(0));
        }
        tile_b.add(0, 2);
        tile_a.merge(tile_b);
        assert_eq!(tile_a.share(7, ChangeType::FLH), Some(0.7));
        assert!(tile_a.keeps(7, ChangeType::FLH, DEFAULT_MIN_PARCEL_SHARE));
        assert!(!tile_a.keeps(8, ChangeType::FLH, DEFAULT_MIN_PARCEL_SHARE));
        assert!(tile_a.keeps(8, ChangeType::FNH, DEFAULT_MIN_PARCEL_SHARE));
        assert!(
            tile_a.keeps(0, ChangeType::FLH, DEFAULT_MIN_PARCEL_SHARE),
            "no parcel"
        );
        assert_eq!(tile_a.share(8, ChangeType::PH), Some(0.0));
        assert_eq!(tile_a.share(8, ChangeType::FNH), None);
    }

    #[test]
    fn cultivation_signs() {
        use CultivationSigns::*;
        for signs in CultivationSigns::ALL {
            assert_eq!(signs.seen(0.33, 0.6), Some(false));
            assert_eq!(signs.seen(0.2, 0.6), Some(true), "tilled");
            assert_eq!(signs.seen(f32::NAN, f32::NAN), None);
        }
        assert_eq!(BareSoilOrCanopy.seen(0.4, 0.8), Some(true), "dense canopy");
        assert_eq!(
            BareSoil.seen(0.4, 0.8),
            Some(false),
            "weeds as green as a crop, never bare"
        );
        for signs in CultivationSigns::ALL {
            let quoted = format!("\"{}\"", signs.name());
            assert_eq!(serde_json::to_string(&signs).unwrap(), quoted);
        }
    }
}
