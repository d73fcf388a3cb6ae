//! Land-cover classification of a period composite. One interface ([`Classifier`]), two
//! implementations: [`IndexBaseline`], documented spectral-temporal index rules, and
//! [`TorchClassifier`], a libtorch model described by a model card.
//!
//! Takes: a [`Composite`] (reflectance of every profile band) and the earlier periods as the
//! archive keeps them (their NDVI statistics, and their bands for models that read them).
//! Gives: a class code per pixel ([`LandCover`]) and a confidence in 0..1.

use crate::domain::land_cover::LandCover;
use crate::domain::neighbourhood::window_mean_sd;
use crate::error::{Error, Result};
use crate::geo::composite::{ndvi, ArchivedPeriod, Composite, NdviStats};
use crate::geo::sensor::SensorProfile;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a classifier sees for one tile.
pub struct ClassifierInput<'a> {
    pub profile: &'static SensorProfile,
    pub composite: &'a Composite,
    /// The previous periods as archived, most recent first; may be empty. Their bands are
    /// needed only as far back as [`Classifier::earlier_bands_reach`].
    pub history: &'a [ArchivedPeriod],
    /// Also give each pixel's runner-up class (detect's spectral decision uses it; it costs
    /// the learned models a tenth of their time).
    pub runner_up: bool,
    /// Classify only the pixels marked here (one flag per composite pixel); the others are
    /// left unclassified, as if unobserved. `None`: every pixel. Spares a model the pixels
    /// whose class the caller would not read (detect's unchanged pixels at the later date).
    pub wanted: Option<&'a [bool]>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub classes: Vec<u8>,
    pub confidence: Vec<f32>,
    /// The next most likely class of each pixel (0 where unclassified) and its confidence
    /// given that the pixel is not of its first class (for a learned model, its probability
    /// divided by one minus the first class's): what the pixel is when it is known not to be
    /// its first class (detect's changed pixels whose class did not change). Empty unless
    /// [`ClassifierInput::runner_up`].
    pub runner_up: Vec<u8>,
    pub runner_up_confidence: Vec<f32>,
}

impl Classified {
    /// `n` pixels, none classified; room for runner-ups when asked for.
    pub fn unclassified(n: usize, runner_up: bool) -> Self {
        let m = if runner_up { n } else { 0 };
        Classified {
            classes: vec![0; n],
            confidence: vec![0.0; n],
            runner_up: vec![0; m],
            runner_up_confidence: vec![0.0; m],
        }
    }
}

pub trait Classifier: Send + Sync {
    /// Short version id written into every patch (`MXBB`).
    fn version(&self) -> &str;
    fn classify(&self, input: &ClassifierInput) -> Result<Classified>;
    /// Whether the confidence is the model's probability of the class (a learned model), not
    /// a rule's margin: only a probability can be held to a threshold such as detect's.
    fn probabilistic(&self) -> bool {
        false
    }
    /// How many earlier periods' bands (not only their NDVI) the classifier reads, most
    /// recent first: the caller reads that many back from the archive, and no more.
    fn earlier_bands_reach(&self) -> usize {
        0
    }
}

fn sure(margin: f32, scale: f32) -> f32 {
    // Confidence grows with the distance from the decisive threshold.
    0.5 + 0.5 * (margin / scale).tanh().abs()
}

/// Spectral-temporal index rules.
///
/// Spectral features of the period composite: NDVI = (NIR-Red)/(NIR+Red),
/// MNDWI = (Green-SWIR1)/(Green+SWIR1), NDWI = (Green-NIR)/(Green+NIR), and the red/blue ratio (iron-bearing soil reddens,
/// concrete and asphalt are flat). Temporal features over the current and the two previous
/// periods (half a year): the lowest and highest NDVI of any clear observation (trough, peak)
/// and the mean of the period medians.
///
/// 1. MNDWI > 0.1 or NDWI > 0.2, and NDVI < 0.1: water. NDWI uses only 10 m bands on
///    Sentinel-2, so it still sees water where the 20 m SWIR band mixes in the bank.
/// 2. NDVI < 0.25 (not vegetated): soil-like (red/blue > 1.6 and SWIR1 > NIR) is cropland in a
///    bare phase (grain); anything else is built-up / hardened.
/// 3. Vegetated, with 3 periods known: trough >= 0.45 (green all the time) is forest when the
///    mean is >= 0.75, else a non-grain perennial crop; a bare-soil trough (<= 0.25) or a dense
///    green-up (peak >= 0.7) is a crop cycle (grain); a growing signal without either
///    (peak >= 0.4) is grass/shrub; anything else is dormant cropland (grain).
/// 4. Vegetated, fewer than 3 periods known: forest when NDVI >= 0.8 and SWIR1 < 0.15 (dark,
///    shadowed canopy), else grain. One period cannot tell perennial crops or abandonment from
///    grain; that needs history.
pub struct IndexBaseline;

impl IndexBaseline {
    pub(crate) const VERSION: &'static str = "index-v1";

    fn needs_swir(profile: &SensorProfile) -> Error {
        Error::usage(
            format!(
                "the index rules read shortwave infrared, which the sensor profile `{}` lacks",
                profile.name
            ),
            "classify with a learned model: `kind = \"auto\"` (the shipped four-band model) or a model file",
        )
    }
}

impl Classifier for IndexBaseline {
    fn version(&self) -> &str {
        Self::VERSION
    }

    fn classify(&self, input: &ClassifierInput) -> Result<Classified> {
        let c = input.composite;
        let [blue, green, red, nir] = c.canonical(input.profile);
        let Some([swir1, _]) = c.swir(input.profile) else {
            return Err(IndexBaseline::needs_swir(input.profile));
        };
        let n = c.len();
        let mut out = Classified::unclassified(n, input.runner_up);
        let recent: Vec<&NdviStats> = input.history.iter().take(2).map(|p| &p.ndvi).collect();
        for i in (0..n).filter(|&i| input.wanted.is_none_or(|w| w[i])) {
            let (b, g, r, nr, s1) = (blue[i], green[i], red[i], nir[i], swir1[i]);
            if [b, g, r, nr, s1].iter().any(|v| !v.is_finite()) {
                continue;
            }
            let v = ndvi(r, nr);
            let mndwi = (g - s1) / (g + s1).max(1e-6);
            let ndwi = (g - nr) / (g + nr).max(1e-6);
            let (class, conf, second) = if (mndwi > 0.1 || ndwi > 0.2) && v < 0.1 {
                (
                    LandCover::Water,
                    sure((mndwi - 0.1).max(ndwi - 0.2), 0.1),
                    LandCover::Built,
                )
            } else if v < 0.25 {
                let red_blue = r / b.max(1e-3);
                if red_blue > 1.6 && s1 > nr {
                    (
                        LandCover::Grain,
                        sure(red_blue - 1.6, 0.3),
                        LandCover::Built,
                    )
                } else {
                    (
                        LandCover::Built,
                        sure(1.6 - red_blue, 0.3),
                        LandCover::Grain,
                    )
                }
            } else if recent.len() == 2 && recent.iter().all(|h| h.median[i].is_finite()) {
                let trough = recent
                    .iter()
                    .map(|h| h.min[i])
                    .chain([c.ndvi.min[i]])
                    .filter(|x| x.is_finite())
                    .fold(v, f32::min);
                let peak = recent
                    .iter()
                    .map(|h| h.max[i])
                    .chain([c.ndvi.max[i]])
                    .filter(|x| x.is_finite())
                    .fold(v, f32::max);
                let mean = (v + recent[0].median[i] + recent[1].median[i]) / 3.0;
                if trough >= 0.45 {
                    if mean >= 0.75 {
                        (
                            LandCover::Forest,
                            sure(mean - 0.75, 0.05),
                            LandCover::NonGrain,
                        )
                    } else {
                        let (to_forest, to_crop) =
                            (sure(0.75 - mean, 0.05), sure(trough - 0.45, 0.1));
                        let nearest = if to_forest < to_crop {
                            LandCover::Forest
                        } else {
                            LandCover::Grain
                        };
                        (LandCover::NonGrain, to_forest.min(to_crop), nearest)
                    }
                } else if trough <= 0.25 || peak >= 0.7 {
                    (
                        LandCover::Grain,
                        sure((0.25 - trough).max(peak - 0.7), 0.1),
                        LandCover::Grass,
                    )
                } else if peak >= 0.4 {
                    (
                        LandCover::Grass,
                        sure(0.7 - peak, 0.1).min(sure(trough - 0.25, 0.1)),
                        LandCover::Grain,
                    )
                } else {
                    (LandCover::Grain, sure(0.4 - peak, 0.1), LandCover::Grass)
                }
            } else if v >= 0.8 && s1 < 0.15 {
                (LandCover::Forest, sure(0.15 - s1, 0.03), LandCover::Grain)
            } else {
                (LandCover::Grain, 0.5, LandCover::Grass)
            };
            out.classes[i] = class.code();
            out.confidence[i] = conf;
            if input.runner_up {
                out.runner_up[i] = second.code();
                out.runner_up_confidence[i] = 1.0 - conf;
            }
        }
        Ok(out)
    }
}

/// How a learned model's file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFormat {
    /// A TorchScript module (`torch.jit.trace`/`script`, or saved by tch).
    Torchscript,
    /// A tch VarStore of a per-pixel MLP with the card's `hidden` layer sizes.
    VarstoreMlp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Normalisation {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalisation {
    /// Leaves `inputs` values as they are: how raw inputs are gathered before their own
    /// statistics are known.
    pub fn identity(inputs: usize) -> Self {
        Normalisation {
            mean: vec![0.0; inputs],
            std: vec![1.0; inputs],
        }
    }
}

/// The model card: everything the pipeline needs to feed a model and trust its output.
/// Fields beyond these (training data, metrics...) are kept but not interpreted here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub name: String,
    pub format: ModelFormat,
    /// Input band names in the order the model expects them.
    pub input_bands: Vec<String>,
    pub normalisation: Normalisation,
    /// gengbao class code of each model output, in output order.
    pub classes: Vec<u8>,
    #[serde(default = "one")]
    pub periods: usize,
    #[serde(default)]
    pub hidden: Vec<i64>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn one() -> usize {
    1
}

impl ModelCard {
    pub fn card_path(model: &Path) -> PathBuf {
        let mut p = model.as_os_str().to_owned();
        p.push(".json");
        PathBuf::from(p)
    }

    /// Writes the card beside `model`.
    pub fn save(&self, model: &Path) -> Result<()> {
        let path = Self::card_path(model);
        let text = serde_json::to_string_pretty(self).expect("serialisable") + "\n";
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
    }

    pub fn load(model: &Path) -> Result<Self> {
        let path = Self::card_path(model);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::input(
                &path,
                format!("cannot read the model card: {e}"),
                "every model needs a JSON card beside it named <model file>.json",
            )
        })?;
        let card: ModelCard = serde_json::from_str(&text).map_err(|e| {
            Error::input(
                &path,
                format!("invalid model card: {e}"),
                "see the card format in README.md",
            )
        })?;
        card.check_shape(&path)?;
        Ok(card)
    }

    fn check_shape(&self, path: &Path) -> Result<()> {
        let nb = self.input_bands.len();
        if nb == 0 || self.normalisation.mean.len() != nb || self.normalisation.std.len() != nb {
            return Err(Error::input(
                path,
                format!(
                    "{} input bands but {} means and {} stds",
                    nb,
                    self.normalisation.mean.len(),
                    self.normalisation.std.len()
                ),
                "give one normalisation mean and std per input band",
            ));
        }
        if self
            .normalisation
            .std
            .iter()
            .any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(Error::input(
                path,
                format!(
                    "normalisation std {:?} has a value that is not positive",
                    self.normalisation.std
                ),
                "give each input band's standard deviation (> 0)",
            ));
        }
        if self.classes.is_empty() || self.classes.iter().any(|&c| !(1..=6).contains(&c)) {
            return Err(Error::input(
                path,
                format!(
                    "classes {:?} are not gengbao land-cover codes",
                    self.classes
                ),
                "list, per model output, a code from 1 (grain) to 6 (forest)",
            ));
        }
        if !(1..=MAX_PERIODS).contains(&self.periods) {
            return Err(Error::input(
                path,
                format!("the model consumes {} periods", self.periods),
                format!("use a model of 1 to {MAX_PERIODS} periods (the archive keeps one year)"),
            ));
        }
        Ok(())
    }

    /// Refuses a model whose inputs the imagery cannot provide, or whose `periods` disagrees
    /// with the history its inputs reach back to.
    pub(crate) fn check_against(
        &self,
        profile: &SensorProfile,
        card_path: &Path,
    ) -> Result<FeatureLayout> {
        let layout = FeatureLayout::parse(&self.input_bands, profile).map_err(|unknown| {
            Error::input(
                card_path,
                format!(
                    "the model expects inputs {:?} but the imagery profile `{}` has bands {:?}; not available: {:?}",
                    self.input_bands, profile.name, profile.bands, unknown
                ),
                format!("use a model trained for this sensor, or a sensor profile that provides these bands; besides band names, inputs may be {}", FeatureLayout::DERIVED_HELP),
            )
        })?;
        if layout.periods() != self.periods {
            return Err(Error::input(
                card_path,
                format!(
                    "the card says periods = {} but its inputs reach back {} period(s)",
                    self.periods,
                    layout.periods() - 1
                ),
                format!("set periods = {}", layout.periods()),
            ));
        }
        Ok(layout)
    }
}

/// Periods a model may consume: the current one and the archive's year of history.
pub(crate) const MAX_PERIODS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Feature {
    /// Reflectance of a profile band in the composite of the period `lag` periods back
    /// (0 = this period).
    Band { band: usize, lag: usize },
    /// NDVI statistic of the period `lag` periods back (0 = this period).
    Ndvi { lag: usize, stat: NdviStat },
    /// Mean or standard deviation of a profile band over the `side` × `side` neighbourhood
    /// of the pixel in the period composite.
    Local {
        band: usize,
        side: usize,
        stat: LocalStat,
    },
    /// Normalised difference (a - b) / (a + b) of two profile bands in the composite of the
    /// period `lag` periods back: a ratio that holds when illumination, season or the
    /// atmosphere scale every band alike (MNDWI for water, NDBI for built-up, red-edge
    /// indices for canopies).
    NormalisedDifference { a: usize, b: usize, lag: usize },
}

impl Feature {
    fn lag(&self) -> usize {
        match *self {
            Feature::Band { lag, .. }
            | Feature::Ndvi { lag, .. }
            | Feature::NormalisedDifference { lag, .. } => lag,
            Feature::Local { .. } => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LocalStat {
    Mean,
    Sd,
}

/// Neighbourhood sides a model may ask for: odd, up to a few hundred metres at 10 m.
pub(crate) const LOCAL_SIDES: std::ops::RangeInclusive<usize> = 3..=31;

#[derive(Debug, Clone, Copy, PartialEq)]
enum NdviStat {
    Median,
    Min,
    Max,
}

/// The per-pixel inputs of a learned model, parsed from the names in its card: profile band
/// names (reflectance of the composite), `NDVI_MIN` and `NDVI_MAX` (lowest and highest NDVI
/// of the period's clear observations), `<band>_MEAN<side>` / `<band>_SD<side>` (the band's
/// mean and standard deviation over the pixel's side × side neighbourhood within the tile,
/// [`crate::domain::neighbourhood`]), and `ND_<a>_<b>` (the normalised difference of bands a
/// and b). A suffix `-k` reads a band, a normalised difference or an NDVI statistic of the
/// period k periods back, as archived (`B04-1`, `ND_B03_B11-2`, `NDVI_MED-1`; the median NDVI
/// only from earlier periods, since the period's own is its bands' ratio). The same code
/// builds the inputs for training and for the pipeline, so a model sees at run time exactly
/// what it learned from.
#[derive(Debug, Clone)]
pub struct FeatureLayout {
    features: Vec<Feature>,
    /// Every profile band an input reads, of any period, and red and NIR (the period's
    /// NDVI): a pixel is classified only where the period itself observed all of them (a
    /// pixel the period did not see is not classified from its history alone; earlier
    /// periods stand in for each other, see [`FeatureLayout::push_pixels`]).
    bands: Vec<usize>,
}

impl FeatureLayout {
    pub(crate) const DERIVED_HELP: &'static str =
        "NDVI_MIN, NDVI_MAX, <band>_MEANs / <band>_SDs for an odd neighbourhood side s from 3 to 31, ND_<a>_<b> for the normalised difference of two bands, and <band>-k, ND_<a>_<b>-k, NDVI_MED-k, NDVI_MIN-k, NDVI_MAX-k for the period k = 1..5 periods back";

    /// Parses input names; the error lists the names the profile cannot provide.
    pub fn parse(
        names: &[String],
        profile: &SensorProfile,
    ) -> std::result::Result<Self, Vec<String>> {
        let mut features = Vec::with_capacity(names.len());
        let mut unknown = Vec::new();
        for name in names {
            let (base, lag) = match name.rsplit_once('-') {
                Some((base, k)) => match k.parse::<usize>() {
                    Ok(lag) if (1..MAX_PERIODS).contains(&lag) => (base, lag),
                    _ => {
                        unknown.push(name.clone());
                        continue;
                    }
                },
                None => (name.as_str(), 0),
            };
            let local = || -> Option<Feature> {
                let (band, stat) = base.rsplit_once('_')?;
                let band = profile.input_band(band)?;
                let (stat, side) = if let Some(side) = stat.strip_prefix("MEAN") {
                    (LocalStat::Mean, side)
                } else {
                    (LocalStat::Sd, stat.strip_prefix("SD")?)
                };
                let side: usize = side.parse().ok()?;
                (LOCAL_SIDES.contains(&side) && side % 2 == 1).then_some(Feature::Local {
                    band,
                    side,
                    stat,
                })
            };
            // Band names may hold `_` themselves (Landsat's SR_B4): try every split.
            let normalised_difference = || -> Option<Feature> {
                let pair = base.strip_prefix("ND_")?;
                pair.match_indices('_').find_map(|(at, _)| {
                    let a = profile.input_band(&pair[..at])?;
                    let b = profile.input_band(&pair[at + 1..])?;
                    (a != b).then_some(Feature::NormalisedDifference { a, b, lag })
                })
            };
            let ndvi = |stat| Some(Feature::Ndvi { lag, stat });
            let f = if let Some(band) = profile.input_band(base) {
                Some(Feature::Band { band, lag })
            } else if let Some(f) = normalised_difference() {
                Some(f)
            } else {
                match base {
                    "NDVI_MED" if lag > 0 => ndvi(NdviStat::Median),
                    "NDVI_MIN" => ndvi(NdviStat::Min),
                    "NDVI_MAX" => ndvi(NdviStat::Max),
                    _ if lag == 0 => local(),
                    _ => None,
                }
            };
            match f {
                Some(f) => features.push(f),
                None => unknown.push(name.clone()),
            }
        }
        if !unknown.is_empty() || features.is_empty() {
            return Err(unknown);
        }
        let ndvi_bands = [2, 3].map(|k| profile.band_index(profile.canonical[k]));
        let mut bands: Vec<usize> = features
            .iter()
            .flat_map(|f| match *f {
                Feature::Band { band, .. } | Feature::Local { band, .. } => vec![band],
                Feature::NormalisedDifference { a, b, .. } => vec![a, b],
                Feature::Ndvi { .. } => vec![],
            })
            .chain(ndvi_bands.into_iter().flatten())
            .collect();
        bands.sort_unstable();
        bands.dedup();
        Ok(FeatureLayout { features, bands })
    }

    /// The inputs gengbao's own models use: `bands` (every band of a profile, or the common
    /// names of those a model reads on every sensor), the period's NDVI range, the NDVI
    /// statistics of `periods - 1` earlier periods, and each band's neighbourhood mean and
    /// standard deviation for each side of `neighbourhoods`.
    pub fn default_names(bands: &[&str], periods: usize, neighbourhoods: &[usize]) -> Vec<String> {
        let mut names: Vec<String> = bands.iter().map(|b| b.to_string()).collect();
        names.extend(["NDVI_MIN".to_string(), "NDVI_MAX".to_string()]);
        for k in 1..periods {
            for stat in ["NDVI_MED", "NDVI_MIN", "NDVI_MAX"] {
                names.push(format!("{stat}-{k}"));
            }
        }
        for side in neighbourhoods {
            for band in bands {
                names.push(format!("{band}_MEAN{side}"));
                names.push(format!("{band}_SD{side}"));
            }
        }
        names
    }

    pub fn len(&self) -> usize {
        self.features.len()
    }

    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// The current period and as many earlier ones as the inputs reach back to.
    pub fn periods(&self) -> usize {
        1 + self.features.iter().map(Feature::lag).max().unwrap_or(0)
    }

    /// How many periods back an input reads bands (not only NDVI); 0 when none does.
    pub fn earlier_bands_reach(&self) -> usize {
        self.features
            .iter()
            .filter(|f| {
                matches!(
                    f,
                    Feature::Band { .. } | Feature::NormalisedDifference { .. }
                )
            })
            .map(Feature::lag)
            .max()
            .unwrap_or(0)
    }

    /// The pixels of `c` observed in every band the model reads, in row-major order.
    pub fn observed_pixels(&self, c: &Composite) -> Vec<usize> {
        let bands = c.pixels();
        (0..c.len())
            .filter(|&i| self.bands.iter().all(|&b| bands[[b, i]].is_finite()))
            .collect()
    }

    /// What the inputs of a tile's pixels are made from: the composite, the earlier periods
    /// (most recent first) and the neighbourhood statistics the layout reads, computed once
    /// per tile.
    pub fn tile_inputs<'a>(
        &self,
        c: &'a Composite,
        history: &'a [ArchivedPeriod],
    ) -> TileInputs<'a> {
        let bands = c.pixels();
        let mut local: Vec<(usize, usize, Vec<f32>, Vec<f32>)> = Vec::new();
        for f in &self.features {
            if let Feature::Local { band, side, .. } = *f {
                if !local.iter().any(|l| (l.0, l.1) == (band, side)) {
                    let row = bands.row(band);
                    let values = row
                        .as_slice()
                        .map_or_else(|| row.to_vec().into(), Cow::Borrowed);
                    let (mean, sd) = window_mean_sd(&values, c.width(), side);
                    local.push((band, side, mean, sd));
                }
            }
        }
        TileInputs {
            composite: c,
            history,
            local,
        }
    }

    /// Appends the inputs of each of `pixels` of a tile, normalised, one row per pixel. An
    /// earlier period that is not archived yet, had no clear view of the pixel, or whose
    /// bands were not kept, is stood in for by the nearest later one (at worst the current
    /// period): the model then sees "no change", never a made-up value.
    pub fn push_pixels(
        &self,
        tile: &TileInputs,
        pixels: &[usize],
        norm: &Normalisation,
        out: &mut Vec<f32>,
    ) {
        let (c, history) = (tile.composite, tile.history);
        let bands = c.pixels();
        let earlier_band = |p: &ArchivedPeriod, b: usize, i: usize| {
            p.bands.as_ref().map_or(f32::NAN, |bands| bands[[b, i]])
        };
        let nd = |a: f32, b: f32| (a - b) / (a + b);
        out.reserve(pixels.len() * self.features.len());
        for &i in pixels {
            for (k, f) in self.features.iter().enumerate() {
                let v = match *f {
                    Feature::Band { band, lag: 0 } => bands[[band, i]],
                    Feature::Band { band, lag } => {
                        stand_in(history, lag, |p| earlier_band(p, band, i), bands[[band, i]])
                    }
                    Feature::Ndvi { lag, stat } => {
                        let pick = |s: &NdviStats| match stat {
                            NdviStat::Median => s.median[i],
                            NdviStat::Min => s.min[i],
                            NdviStat::Max => s.max[i],
                        };
                        stand_in(history, lag, |p| pick(&p.ndvi), pick(&c.ndvi))
                    }
                    Feature::NormalisedDifference { a, b, lag: 0 } => {
                        nd(bands[[a, i]], bands[[b, i]])
                    }
                    Feature::NormalisedDifference { a, b, lag } => stand_in(
                        history,
                        lag,
                        |p| nd(earlier_band(p, a, i), earlier_band(p, b, i)),
                        nd(bands[[a, i]], bands[[b, i]]),
                    ),
                    Feature::Local { band, side, stat } => {
                        let (_, _, mean, sd) = tile
                            .local
                            .iter()
                            .find(|l| (l.0, l.1) == (band, side))
                            .expect("tile_inputs computes every neighbourhood of the layout");
                        match stat {
                            LocalStat::Mean => mean[i],
                            LocalStat::Sd => sd[i],
                        }
                    }
                };
                let v = if v.is_finite() { v } else { norm.mean[k] };
                out.push((v - norm.mean[k]) / norm.std[k]);
            }
        }
    }
}

/// The value `read` gives of the period `lag` back, or of the nearest later one that has it,
/// or `now`.
fn stand_in(
    history: &[ArchivedPeriod],
    lag: usize,
    read: impl Fn(&ArchivedPeriod) -> f32,
    now: f32,
) -> f32 {
    (1..=lag.min(history.len()))
        .rev()
        .map(|l| read(&history[l - 1]))
        .find(|v| v.is_finite())
        .unwrap_or(now)
}

/// A tile made ready for [`FeatureLayout::push_pixels`].
pub struct TileInputs<'a> {
    composite: &'a Composite,
    history: &'a [ArchivedPeriod],
    /// (band, side, mean, standard deviation) of every neighbourhood the layout reads.
    local: Vec<(usize, usize, Vec<f32>, Vec<f32>)>,
}

enum TorchModel {
    Script(tch::CModule),
    Mlp(tch::nn::Sequential, #[allow(dead_code)] tch::nn::VarStore),
}

/// A libtorch model classifying pixels in batches, without gradients.
///
/// Batches run in parallel on the caller's rayon pool, each on one libtorch thread with its
/// own copy of the model (a module is not shared between threads; copies of a small model
/// cost nothing). On 2 cores libtorch's own intra-op threads were slower than this: one
/// 512 x 512 tile ran at 2.1 Mpx/s on 2 libtorch threads and 4.1 Mpx/s on one.
pub struct TorchClassifier {
    card: ModelCard,
    path: PathBuf,
    layout: FeatureLayout,
    version: String,
    bytes: Cow<'static, [u8]>,
    /// Loaded copies of the model not in use by a batch right now.
    idle: Mutex<Vec<TorchModel>>,
    batch: usize,
}

/// libtorch's random generator and intra-op thread count belong to the process. Every
/// network built (which draws initial weights), every seed (only through [`build_mlp`]) and
/// every TorchScript load holds this lock, so that a seeded network gets the same weights
/// while other threads (tests, harnesses training several folds) build theirs.
static TORCH_GLOBALS: Mutex<()> = Mutex::new(());

/// Takes libtorch's process-wide state and sets it to one intra-op thread: the tile engine
/// parallelises over tiles, and a network trained here must come out the same on a machine
/// whose libtorch would default to more threads (their reductions sum in another order).
fn torch_globals() -> std::sync::MutexGuard<'static, ()> {
    let guard = TORCH_GLOBALS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::set_num_threads(1);
    guard
}

/// A per-pixel MLP: inputs -> hidden layers with ReLU -> class logits. With a seed its initial
/// weights depend on the seed alone; without, they are drawn from wherever the generator is
/// (for a network whose weights are loaded next).
pub fn build_mlp(
    vs: &tch::nn::Path,
    inputs: i64,
    hidden: &[i64],
    outputs: i64,
    seed: Option<u64>,
) -> tch::nn::Sequential {
    let _globals = torch_globals();
    if let Some(seed) = seed {
        tch::manual_seed(seed as i64);
    }
    let mut seq = tch::nn::seq();
    let mut width = inputs;
    for (i, &h) in hidden.iter().enumerate() {
        seq = seq
            .add(tch::nn::linear(
                vs / format!("layer{i}"),
                width,
                h,
                Default::default(),
            ))
            .add_fn(|x| x.relu());
        width = h;
    }
    seq.add(tch::nn::linear(
        vs / "out",
        width,
        outputs,
        Default::default(),
    ))
}

/// Hash of a model file's bytes, shortened: the model version written into patches.
fn bytes_version(bytes: &[u8]) -> String {
    crate::short_sha256(bytes, 6)
}

/// Which classifier a job or a detection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierKind {
    /// The learned model shipped in gengbao when the imagery provides its inputs (it is
    /// trained on Sentinel-2), else the index rules.
    #[default]
    Auto,
    /// The learned model shipped in gengbao, or an error naming the missing inputs.
    Learned,
    /// The documented spectral-temporal index rules.
    Index,
    /// The model file given (its card beside it as `<model>.json`).
    Torch,
}

/// The classifier of `kind`; a `model` file, when given, is used whatever the kind. A broken
/// shipped model is an error, never a silent fall back to the index rules.
pub fn select(
    kind: ClassifierKind,
    model: Option<&Path>,
    profile: &SensorProfile,
) -> Result<Box<dyn Classifier>> {
    Ok(match (kind, model) {
        (_, Some(model)) => Box::new(TorchClassifier::load(model, profile)?),
        (ClassifierKind::Learned, None) => Box::new(TorchClassifier::builtin(profile)?),
        (ClassifierKind::Auto, None) if TorchClassifier::builtin_reads(profile) => {
            Box::new(TorchClassifier::builtin(profile)?)
        }
        (ClassifierKind::Torch, None) => {
            return Err(Error::usage(
                "the torch classifier needs a model file",
                "give the model (its card is <model>.json), or use the auto kind",
            ))
        }
        (ClassifierKind::Auto | ClassifierKind::Index, None) if profile.swir.is_none() => {
            return Err(IndexBaseline::needs_swir(profile))
        }
        (ClassifierKind::Auto | ClassifierKind::Index, None) => Box::new(IndexBaseline),
    })
}

/// A model shipped inside gengbao (`models/`), made by `gengbao train --config
/// models/<name>.train.toml`.
struct Builtin {
    path: &'static str,
    bytes: &'static [u8],
    card: &'static str,
    /// Profiles whose product it learned from; it serves them before any other model.
    profiles: &'static [&'static str],
}

/// The shipped models, in order of preference. A profile no model lists takes the first
/// whose inputs it provides.
const BUILTINS: &[Builtin] = &[
    // Multi-period land cover on surface reflectance (real Flanders series and generated
    // cities): the job's model.
    Builtin {
        path: "models/gengbao-s2-v1.ot",
        bytes: include_bytes!("../../models/gengbao-s2-v1.ot"),
        card: include_str!("../../models/gengbao-s2-v1.ot.json"),
        profiles: &["sentinel2-l2a", "sentinel2-l2a-12"],
    },
    // Single-look land cover on top-of-atmosphere reflectance with neighbourhood texture
    // (real EuroSAT patches): detect's model for L1C pairs.
    Builtin {
        path: "models/gengbao-s2-l1c-v2.ot",
        bytes: include_bytes!("../../models/gengbao-s2-l1c-v2.ot"),
        card: include_str!("../../models/gengbao-s2-l1c-v2.ot.json"),
        profiles: &["sentinel2-l1c"],
    },
    // Single-look land cover from blue, green, red and NIR alone, named by their common
    // names (real EuroSAT patches): the model of sensors without shortwave infrared.
    Builtin {
        path: "models/gengbao-4band-v1.ot",
        bytes: include_bytes!("../../models/gengbao-4band-v1.ot"),
        card: include_str!("../../models/gengbao-4band-v1.ot.json"),
        profiles: &["gf1-wfv", "gf2-pms", "gf6-wfv"],
    },
];

impl Builtin {
    fn card(&self) -> ModelCard {
        serde_json::from_str(self.card).expect("a shipped card is valid JSON")
    }

    fn reads(&self, profile: &SensorProfile) -> bool {
        FeatureLayout::parse(&self.card().input_bands, profile).is_ok()
    }

    /// The shipped model that serves `profile`: the one made for it, else, for a sensor
    /// without shortwave infrared (which the index rules need), the first that reads it,
    /// else the first (whose refusal names what is missing, and `auto` then takes the index
    /// rules: a model learned on another sensor is not put in their place unmeasured).
    fn for_profile(profile: &SensorProfile) -> &'static Builtin {
        BUILTINS
            .iter()
            .find(|b| b.profiles.contains(&profile.name))
            .or_else(|| {
                profile
                    .swir
                    .is_none()
                    .then(|| BUILTINS.iter().find(|b| b.reads(profile)))
                    .flatten()
            })
            .unwrap_or(&BUILTINS[0])
    }
}

impl TorchClassifier {
    pub fn load(model: &Path, profile: &SensorProfile) -> Result<Self> {
        let card = ModelCard::load(model)?;
        let bytes = std::fs::read(model).map_err(|e| Error::io(model, e))?;
        Self::from_parts(card, model, Cow::Owned(bytes), profile)
    }

    /// Whether a shipped model reads `profile`.
    pub(crate) fn builtin_reads(profile: &SensorProfile) -> bool {
        Builtin::for_profile(profile).reads(profile)
    }

    /// The shipped model that serves `profile` ([`BUILTINS`]), or an error naming the inputs
    /// the imagery lacks.
    pub fn builtin(profile: &SensorProfile) -> Result<Self> {
        let b = Builtin::for_profile(profile);
        let path = Path::new(b.path);
        let card = b.card();
        card.check_shape(path)?;
        Self::from_parts(card, path, Cow::Borrowed(b.bytes), profile)
    }

    /// `path` names the model in messages; `bytes` are its file's content.
    fn from_parts(
        card: ModelCard,
        path: &Path,
        bytes: Cow<'static, [u8]>,
        profile: &SensorProfile,
    ) -> Result<Self> {
        let layout = card.check_against(profile, &ModelCard::card_path(path))?;
        let first = load_model(&card, path, &bytes)?;
        Ok(TorchClassifier {
            version: bytes_version(&bytes),
            path: path.to_path_buf(),
            card,
            layout,
            bytes,
            idle: Mutex::new(vec![first]),
            // Measured on one 512 x 512 tile: 4096 pixels per batch ran at 4.1 Mpx/s per
            // thread, 65536 at 3.3 (the activations no longer fit in cache).
            batch: 4096,
        })
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Runs the model on a batch with a copy of the model no other thread is using.
    fn forward(&self, x: &tch::Tensor) -> Result<tch::Tensor> {
        use tch::nn::Module;
        let lock = || {
            self.idle
                .lock()
                .expect("a panicking batch poisons the run anyway")
        };
        let popped = lock().pop();
        let model = match popped {
            Some(m) => m,
            None => load_model(&self.card, &self.path, &self.bytes)?,
        };
        let out = match &model {
            TorchModel::Script(m) => m.forward_ts(&[x]),
            TorchModel::Mlp(seq, _) => Ok(seq.forward(x)),
        };
        lock().push(model);
        Ok(out?)
    }

    /// Classes and probabilities of the pixels `chunk` of one tile.
    fn classify_batch(
        &self,
        input: &ClassifierInput,
        tile: &TileInputs,
        chunk: &[usize],
    ) -> Result<Batch> {
        // Gradient mode is per thread in libtorch.
        let _guard = tch::no_grad_guard();
        let nb = self.layout.len();
        let mut features = Vec::new();
        self.layout
            .push_pixels(tile, chunk, &self.card.normalisation, &mut features);
        let x = tch::Tensor::of_slice(&features).view([chunk.len() as i64, nb as i64]);
        let logits = self.forward(&x)?;
        if logits.size() != [chunk.len() as i64, self.card.classes.len() as i64] {
            return Err(Error::input(
                &self.path,
                format!(
                    "model `{}` returned shape {:?}, expected [{}, {}]",
                    self.card.name,
                    logits.size(),
                    chunk.len(),
                    self.card.classes.len()
                ),
                "the card's classes must list one gengbao code per model output",
            ));
        }
        let logits = Vec::<f32>::from(&logits.to_kind(tch::Kind::Float).flatten(0, -1));
        Ok(Batch::of_logits(
            &logits,
            self.card.classes.len(),
            input.runner_up,
        ))
    }
}

/// Output index and probability of each pixel of a batch, and of its runner-up.
#[derive(Debug, PartialEq)]
struct Batch {
    first: Vec<i64>,
    first_probability: Vec<f32>,
    second: Vec<i64>,
    second_probability: Vec<f32>,
}

impl Batch {
    /// The softmax's first class and probability of each row of `logits` (`classes` a row),
    /// and with `runner_up` the next class with its probability given that the pixel is not
    /// of its first class. Ties go to the lower index. Computed here rather than by
    /// libtorch: its softmax over a handful of classes cost more than the network itself.
    fn of_logits(logits: &[f32], classes: usize, runner_up: bool) -> Batch {
        let rows = logits.len() / classes;
        let mut batch = Batch {
            first: Vec::with_capacity(rows),
            first_probability: Vec::with_capacity(rows),
            second: Vec::new(),
            second_probability: Vec::new(),
        };
        for row in logits.chunks_exact(classes) {
            let first = argmax(row, None).expect("a model has at least one class");
            let top = row[first];
            let sum: f32 = row.iter().map(|&l| (l - top).exp()).sum();
            let p_first = 1.0 / sum;
            batch.first.push(first as i64);
            batch.first_probability.push(p_first);
            if runner_up {
                // A one-class model has no runner-up: its own class, never likely.
                let (second, p_second) = match argmax(row, Some(first)) {
                    Some(k) => (k, (row[k] - top).exp() / sum),
                    None => (first, 0.0),
                };
                batch.second.push(second as i64);
                batch
                    .second_probability
                    .push(p_second / (1.0 - p_first).max(1e-6));
            }
        }
        batch
    }
}

/// The index of the largest value of `row` (the first of equals), leaving out `skip`; `None`
/// when nothing is left.
fn argmax(row: &[f32], skip: Option<usize>) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (k, &v) in row.iter().enumerate() {
        if Some(k) != skip && best.is_none_or(|b| v > row[b]) {
            best = Some(k);
        }
    }
    best
}

/// libtorch's message for the user (its first line), the whole text kept for the run log.
fn torch_message(e: &tch::TchError) -> String {
    crate::progress::library_message(format!("libtorch: {e}"));
    crate::error::torch_head(e)
}

/// A model file libtorch could not load: damaged when it is not even an archive (cut short
/// or overwritten), else `problem` with libtorch's first line and `fix`.
fn model_error(path: &Path, e: &tch::TchError, problem: &str, fix: &str) -> Error {
    damaged(path, e)
        .unwrap_or_else(|| Error::input(path, format!("{problem}: {}", torch_message(e)), fix))
}

/// A model file libtorch cannot open as an archive at all: cut short or overwritten.
fn damaged(path: &Path, e: &tch::TchError) -> Option<Error> {
    let text = e.to_string();
    (text.contains("zip archive") || text.contains("PytorchStreamReader")).then(|| {
        Error::input(
            path,
            format!(
                "is damaged or incomplete, not a whole model file ({})",
                torch_message(e)
            ),
            "copy the model file again from models/ of the release (or retrain it with `gengbao train`)",
        )
    })
}

/// Loads the model file's bytes as the card describes them.
fn load_model(card: &ModelCard, path: &Path, bytes: &[u8]) -> Result<TorchModel> {
    Ok(match card.format {
        ModelFormat::Torchscript => {
            let _globals = torch_globals();
            let mut m = tch::CModule::load_data(&mut std::io::Cursor::new(bytes)).map_err(|e| {
                model_error(
                    path,
                    &e,
                    "not a loadable TorchScript module",
                    "export it with torch.jit.trace or torch.jit.script and torch.jit.save",
                )
            })?;
            m.set_eval();
            TorchModel::Script(m)
        }
        ModelFormat::VarstoreMlp => {
            let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
            let seq = build_mlp(
                &vs.root(),
                card.input_bands.len() as i64,
                &card.hidden,
                card.classes.len() as i64,
                None,
            );
            vs.load_from_stream(std::io::Cursor::new(bytes))
                .map_err(|e| {
                    model_error(
                        path,
                        &e,
                        "the weights do not fit the card's architecture",
                        "check `hidden` and `input_bands` in the card",
                    )
                })?;
            TorchModel::Mlp(seq, vs)
        }
    })
}

impl Classifier for TorchClassifier {
    fn version(&self) -> &str {
        &self.version
    }

    fn probabilistic(&self) -> bool {
        true
    }

    fn earlier_bands_reach(&self) -> usize {
        self.layout.earlier_bands_reach()
    }

    fn classify(&self, input: &ClassifierInput) -> Result<Classified> {
        let c = input.composite;
        let mut out = Classified::unclassified(c.len(), input.runner_up);
        let mut valid = self.layout.observed_pixels(c);
        if let Some(wanted) = input.wanted {
            valid.retain(|&i| wanted[i]);
        }
        let tile = self.layout.tile_inputs(c, input.history);
        let batches: Vec<Batch> = valid
            .par_chunks(self.batch)
            .map(|chunk| self.classify_batch(input, &tile, chunk))
            .collect::<Result<_>>()?;
        let code = |k: i64| self.card.classes[k as usize];
        for (chunk, b) in valid.chunks(self.batch).zip(&batches) {
            for (k, &i) in chunk.iter().enumerate() {
                out.classes[i] = code(b.first[k]);
                out.confidence[i] = b.first_probability[k];
                if input.runner_up {
                    out.runner_up[i] = code(b.second[k]);
                    out.runner_up_confidence[i] = b.second_probability[k];
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    /// The initial weights of a network built with `seed`, flattened.
    fn seeded_weights(seed: u64) -> Vec<f32> {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        build_mlp(&vs.root(), 10, &[16], 6, Some(seed));
        let mut named = vs.variables().into_iter().collect::<Vec<_>>();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
            .iter()
            .flat_map(|(_, t)| Vec::<f32>::from(t.flatten(0, -1)))
            .collect()
    }

    #[test]
    fn a_seeded_network_starts_the_same_while_other_threads_build_theirs() {
        let alone = seeded_weights(7);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            // Loading models draws from the same process-wide generator.
            for _ in 0..2 {
                s.spawn(|| {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
                        build_mlp(&vs.root(), 10, &[16], 6, None);
                    }
                });
            }
            let same = (0..300).all(|_| seeded_weights(7) == alone);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(same, "another thread's draw got in");
        });
        assert!(seeded_weights(8) != alone);
    }

    #[test]
    fn ties_go_to_the_lower_class_and_a_one_class_model_has_no_likely_runner_up() {
        let tie = Batch::of_logits(&[2.0, 2.0, 0.0], 3, true);
        assert_eq!((tie.first[0], tie.second[0]), (0, 1));
        let e = 2f32.exp();
        assert!((tie.first_probability[0] - e / (2.0 * e + 1.0)).abs() < 1e-6);
        // Given that the pixel is not class 0, class 1 holds e of the remaining e + 1.
        assert!((tie.second_probability[0] - e / (e + 1.0)).abs() < 1e-6);
        let one = Batch::of_logits(&[0.3, -1.0], 1, true);
        assert_eq!(one.first, vec![0, 0]);
        assert_eq!(one.first_probability, vec![1.0, 1.0]);
        assert_eq!(one.second_probability, vec![0.0, 0.0]);
        assert!(Batch::of_logits(&[0.3, -1.0], 2, false).second.is_empty());
    }

    #[test]
    fn a_normalised_difference_is_read_per_pixel_and_needs_both_bands_observed() {
        let s2 = SensorProfile::by_name("sentinel2-l2a").unwrap();
        let layout = FeatureLayout::parse(&["ND_B08_B04".into(), "B02".into()], s2).unwrap();
        let mut bands = Array3::from_elem((s2.bands.len(), 1, 3), 0.1_f32);
        let nir = s2.band_index("B08").unwrap();
        bands[[nir, 0, 0]] = 0.5;
        bands[[nir, 0, 1]] = f32::NAN;
        bands[[nir, 0, 2]] = 0.3;
        let c = Composite::single(s2, bands);
        let observed = layout.observed_pixels(&c);
        assert_eq!(
            observed,
            vec![0, 2],
            "a pixel without NIR has no NIR/red ratio"
        );
        let identity = Normalisation::identity(2);
        let mut x = Vec::new();
        layout.push_pixels(&layout.tile_inputs(&c, &[]), &observed, &identity, &mut x);
        let expected = [0.4 / 0.6, 0.1, 0.2 / 0.4, 0.1];
        for (got, want) in x.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{x:?}");
        }
    }

    #[test]
    fn a_model_of_earlier_bands_alone_does_not_classify_a_pixel_the_period_did_not_see() {
        let s2 = SensorProfile::by_name("sentinel2-l2a").unwrap();
        let names = ["B04-1", "NDVI_MIN"].map(String::from);
        let layout = FeatureLayout::parse(&names, s2).unwrap();
        let mut bands = Array3::from_elem((s2.bands.len(), 1, 3), 0.2_f32);
        bands[[s2.band_index("B04").unwrap(), 0, 1]] = f32::NAN;
        bands[[s2.band_index("B08").unwrap(), 0, 2]] = f32::NAN;
        let c = Composite::single(s2, bands);
        // Pixel 1 lacks red, pixel 2 NIR (the period's NDVI).
        assert_eq!(layout.observed_pixels(&c), vec![0]);
    }

    #[test]
    fn an_earlier_band_is_read_from_the_archive_or_stood_in_for_by_a_later_period() {
        let s2 = SensorProfile::by_name("sentinel2-l2a").unwrap();
        let names = ["B04-2", "ND_B08_B04-1", "B04"].map(String::from);
        let layout = FeatureLayout::parse(&names, s2).unwrap();
        assert_eq!(layout.periods(), 3);
        assert_eq!(layout.earlier_bands_reach(), 2);
        let (red, nir) = (s2.band_index("B04").unwrap(), s2.band_index("B08").unwrap());
        let now = |r: f32| {
            let mut bands = Array3::from_elem((s2.bands.len(), 1, 3), 0.2_f32);
            bands.slice_mut(ndarray::s![red, .., ..]).fill(r);
            Composite::single(s2, bands)
        };
        let (c, one_back, two_back) = (now(0.1), now(0.3), now(0.05));
        // Pixel 1 was not seen two periods back; pixel 2 in neither earlier period.
        let mut two = two_back.as_archived(true);
        two.bands.as_mut().unwrap()[[red, 1]] = f32::NAN;
        let mut one = one_back.as_archived(true);
        one.bands.as_mut().unwrap()[[red, 2]] = f32::NAN;
        one.bands.as_mut().unwrap()[[nir, 2]] = f32::NAN;
        let two_missing_2 = {
            let mut t = two.clone();
            t.bands.as_mut().unwrap()[[red, 2]] = f32::NAN;
            t
        };
        let history = [one, two_missing_2];
        let mut x = Vec::new();
        let identity = Normalisation::identity(3);
        layout.push_pixels(
            &layout.tile_inputs(&c, &history),
            &[0, 1, 2],
            &identity,
            &mut x,
        );
        let nd = |r: f32| (0.2 - r) / (0.2 + r);
        let expected = [
            [0.05, nd(0.3), 0.1],
            [0.3, nd(0.3), 0.1],
            [0.1, nd(0.1), 0.1],
        ];
        for (got, want) in x.chunks(3).zip(expected) {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-4, "{x:?}");
            }
        }
        // An archive without looks (kept before they were): the period itself stands in.
        let no_looks = [one_back.as_archived(false), two.clone()];
        x.clear();
        layout.push_pixels(&layout.tile_inputs(&c, &no_looks), &[0], &identity, &mut x);
        assert!((x[1] - nd(0.1)).abs() < 1e-4, "{x:?}");
        for bad in ["B04-0", "B04-6", "B04_MEAN3-1", "NDVI_MED"] {
            assert_eq!(
                FeatureLayout::parse(&[bad.into()], s2).unwrap_err(),
                vec![bad.to_string()]
            );
        }
    }

    #[test]
    fn a_model_of_common_band_names_reads_sentinel_2_and_gaofen_alike() {
        let names = ["blue", "nir_MEAN5", "ND_green_nir", "red-1"].map(String::from);
        for sensor in ["sentinel2-l1c", "gf2-pms", "gf6-wfv"] {
            let p = SensorProfile::by_name(sensor).unwrap();
            let layout = FeatureLayout::parse(&names, p).unwrap();
            assert_eq!(layout.periods(), 2, "{sensor}");
        }
        let gf1 = SensorProfile::by_name("gf1-wfv").unwrap();
        assert_eq!(
            FeatureLayout::parse(&["ND_green_swir16".into()], gf1).unwrap_err(),
            vec!["ND_green_swir16".to_string()]
        );
        // The index rules need SWIR: refused by name, never a map of unclassified pixels.
        let err = select(ClassifierKind::Index, None, gf1)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("gf1-wfv") && err.contains("shortwave"),
            "{err}"
        );
    }

    #[test]
    fn normalised_difference_names_split_band_names_that_hold_underscores() {
        let tm = SensorProfile::by_name("landsat-tm-sr").unwrap();
        assert!(FeatureLayout::parse(&["ND_SR_B4_SR_B3".into()], tm).is_ok());
        for bad in ["ND_SR_B4_SR_B4", "ND_SR_B4", "ND_SR_B4_B3"] {
            assert_eq!(
                FeatureLayout::parse(&[bad.into()], tm).unwrap_err(),
                vec![bad.to_string()]
            );
        }
    }
}
