//! The training config, `TRAIN.toml`.
//!
//! Takes: the TOML text of a training config. Gives: a validated [`TrainConfig`] (model,
//! split and path sections, datasets, with their defaults) and the paths it names, resolved
//! against the config file.

use crate::classify::FeatureLayout;
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::geo::sensor::SensorProfile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `TRAIN.toml`. Relative paths are relative to the file; `{real_data}` in a path stands for
/// `[paths] real_data`, overridden by the environment variable `GENGBAO_REAL_DATA`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSection,
    #[serde(default)]
    pub split: SplitSection,
    #[serde(default)]
    pub paths: PathsSection,
    #[serde(rename = "dataset")]
    pub datasets: Vec<DatasetSpec>,
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Model file to write; its card is `<output>.json`.
    pub output: PathBuf,
    pub name: String,
    #[serde(default = "default_sensor")]
    pub sensor: String,
    /// Periods consumed: the current one and `periods - 1` earlier ones.
    #[serde(default = "default_periods")]
    pub periods: usize,
    /// The bands the default inputs read, by profile or common name (`["blue", "green",
    /// "red", "nir"]`: a model for every sensor with those four); every profile band when
    /// empty.
    #[serde(default)]
    pub bands: Vec<String>,
    /// Sides (odd, 3..31 pixels) of the neighbourhoods whose per-band mean and standard
    /// deviation are inputs too: texture and context for models of single looks.
    #[serde(default)]
    pub neighbourhoods: Vec<usize>,
    /// Inputs beyond those, by the names a card gives them (e.g. `ND_B03_B11`, the
    /// normalised difference of green and SWIR: open water).
    #[serde(default)]
    pub extra_inputs: Vec<String>,
    #[serde(default = "default_hidden")]
    pub hidden: Vec<i64>,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_batch")]
    pub batch: usize,
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// L2 penalty on the weights: small data whose pixels are alike (a patch is one field)
    /// needs it.
    #[serde(default)]
    pub weight_decay: f64,
    /// Stop when the validation loss has not improved for this many epochs.
    #[serde(default = "default_patience")]
    pub patience: usize,
    /// Average the weights of every epoch from this one on (stochastic weight averaging):
    /// the run goes on to `epochs` and keeps the mean, which holds better on imagery unlike
    /// the training data than any one epoch's weights. Absent: stop early by `patience`.
    pub average_from: Option<usize>,
    /// Checkpoints, extracted samples and generated cities; default `<output>.work/`.
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSection {
    /// Side of the square blocks, in label pixels, that go to one split as a whole.
    #[serde(default = "default_block")]
    pub block: usize,
    /// Pixels this close to a block edge are used by no split.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    #[serde(default = "default_fraction")]
    pub validation: f64,
    #[serde(default = "default_fraction")]
    pub test: f64,
}

impl Default for SplitSection {
    fn default() -> Self {
        SplitSection {
            block: default_block(),
            buffer: default_buffer(),
            validation: default_fraction(),
            test: default_fraction(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathsSection {
    pub real_data: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub name: String,
    /// `acquisitions` (a folder of acquisitions as jobs read them), `band-stacks` (one GeoTIFF
    /// per band named `<band>.tif`, one GDAL band per date listed in `dates.txt`, as the
    /// WorldCereal patches), `patches` (single-look image patches labelled by the folder they
    /// are in, `<folder>/<name>.tif`, as EuroSAT: read as `detect` reads an image) or
    /// `samples` (a city made by gengbao's generator).
    pub kind: String,
    #[serde(default)]
    pub path: Option<String>,
    /// Label raster; `{period}` in the name is replaced by each labelled period.
    #[serde(default)]
    pub labels: Option<String>,
    /// Label value -> gengbao class code (1..6); other values are unlabelled. For `patches`,
    /// folder name -> code; other folders are left out.
    #[serde(default)]
    pub class_map: BTreeMap<String, u8>,
    /// For `patches`: the names of the files' bands in their own order, when it is not the
    /// profile's (as `detect --bands`).
    #[serde(default)]
    pub bands: Option<Vec<String>>,
    /// Labelled periods, `YYYY-Pn`, or `all` (every period with imagery).
    #[serde(default)]
    pub periods: Vec<String>,
    /// Real imagery (reported under `real_holdout`) or generated.
    #[serde(default)]
    pub real: bool,
    #[serde(default)]
    pub add_offset: Option<f32>,
    /// Weight of this dataset's pixels in the loss.
    #[serde(default = "default_weight")]
    pub weight: f32,
    /// Generator seed and size for `samples`.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub size: Option<usize>,
}

fn default_sensor() -> String {
    "sentinel2-l2a".into()
}
fn default_periods() -> usize {
    3
}
fn default_hidden() -> Vec<i64> {
    vec![32, 32]
}
fn default_seed() -> u64 {
    1
}
fn default_epochs() -> usize {
    60
}
fn default_batch() -> usize {
    256
}
fn default_learning_rate() -> f64 {
    0.003
}
fn default_patience() -> usize {
    8
}
fn default_block() -> usize {
    32
}
fn default_buffer() -> usize {
    1
}
fn default_fraction() -> f64 {
    0.2
}
fn default_weight() -> f32 {
    1.0
}

impl TrainConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// A config's text, as if read from `path` (which its relative paths are relative to).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut cfg: TrainConfig = toml::from_str(text).map_err(|e| {
            Error::input(
                path,
                format!("invalid training config: {e}"),
                "see models/gengbao-s2-v1.train.toml for a complete example",
            )
        })?;
        cfg.source = path.to_path_buf();
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let bad = |key: &str, what: String, fix: &str| -> Result<()> {
            Err(Error::config(&self.source, key, what, fix))
        };
        SensorProfile::by_name(&self.model.sensor)?;
        if let Some(problem) = super::FitOptions::from(&self.model).averaging_problem() {
            return bad("model.average_from", problem, super::fit::AVERAGE_FROM_FIX);
        }
        if !(1..=crate::classify::MAX_PERIODS).contains(&self.model.periods) {
            return bad(
                "model.periods",
                format!(
                    "{} is outside 1..{}",
                    self.model.periods,
                    crate::classify::MAX_PERIODS
                ),
                "use 1 (the period alone) to 6 (a year)",
            );
        }
        if let Some(side) = self
            .model
            .neighbourhoods
            .iter()
            .find(|&&s| !crate::classify::LOCAL_SIDES.contains(&s) || s % 2 == 0)
        {
            return bad(
                "model.neighbourhoods",
                format!("side {side}"),
                "give odd neighbourhood sides from 3 to 31 pixels",
            );
        }
        if let Some(band) = self
            .model
            .bands
            .iter()
            .find(|b| self.profile().input_band(b).is_none())
        {
            return bad(
                "model.bands",
                format!("{} has no band `{band}`", self.model.sensor),
                &format!(
                    "name bands of the profile ({}) or their common names (blue, green, red, nir...)",
                    self.profile().bands.join(" ")
                ),
            );
        }
        if !self.model.extra_inputs.is_empty() {
            // The default inputs reach `periods` exactly; only an extra one can reach further.
            let reach = match FeatureLayout::parse(&self.model.extra_inputs, self.profile()) {
                Ok(extra) => extra.periods(),
                Err(unknown) => {
                    return bad(
                        "model.extra_inputs",
                        format!("{} cannot read {}", self.model.sensor, unknown.join(", ")),
                        &format!(
                            "give band names of the profile or derived inputs: {}",
                            FeatureLayout::DERIVED_HELP
                        ),
                    )
                }
            };
            if reach > self.model.periods {
                return bad(
                    "model.extra_inputs",
                    format!("an input reaches {} periods back", reach - 1),
                    &format!("raise model.periods to {reach} or drop that input"),
                );
            }
        }
        let s = &self.split;
        if s.block < 4 || 2 * s.buffer >= s.block {
            return bad(
                "split.block",
                format!("block {} with buffer {}", s.block, s.buffer),
                "use blocks of at least 4 pixels and a buffer below half a block",
            );
        }
        if !(s.validation > 0.0 && s.test > 0.0 && s.validation + s.test < 1.0) {
            return bad(
                "split",
                format!("validation {} and test {}", s.validation, s.test),
                "give both fractions above 0, summing to less than 1",
            );
        }
        if self.datasets.is_empty() {
            return bad("dataset", "no datasets".into(), "add [[dataset]] tables");
        }
        for d in &self.datasets {
            let key = format!("dataset `{}`", d.name);
            match d.kind.as_str() {
                "samples" => {}
                "patches" => {
                    if d.path.is_none() || d.class_map.is_empty() {
                        return bad(
                            &key,
                            "kind `patches` without path or class_map".into(),
                            "give the folder of class folders and map folder names to codes",
                        );
                    }
                }
                "acquisitions" | "band-stacks" => {
                    if d.path.is_none() || d.labels.is_none() || d.class_map.is_empty() {
                        return bad(
                            &key,
                            format!("kind `{}` without path, labels or class_map", d.kind),
                            "give the imagery path, the label raster and the class map",
                        );
                    }
                }
                other => {
                    return bad(
                        &key,
                        format!("unknown kind `{other}`"),
                        "use acquisitions, band-stacks, patches or samples",
                    )
                }
            }
            for (value, &code) in &d.class_map {
                let named = d.kind == "patches" || value.parse::<i64>().is_ok();
                if !named || !(1..=6).contains(&code) {
                    return bad(
                        &key,
                        format!("class_map entry {value} = {code}"),
                        "map integer label values (folder names for patches) to gengbao codes 1 (grain) .. 6 (forest)",
                    );
                }
            }
            for p in &d.periods {
                if p != "all" {
                    p.parse::<Period>().map_err(|e| {
                        Error::config(&self.source, &key, e.to_string(), "use YYYY-Pn or all")
                    })?;
                }
            }
        }
        Ok(())
    }

    /// A dataset path with `{real_data}` expanded, relative to the config file.
    pub(crate) fn resolve(&self, path: &str) -> PathBuf {
        let real = std::env::var("GENGBAO_REAL_DATA")
            .ok()
            .or_else(|| self.paths.real_data.clone())
            .unwrap_or_else(|| "../shared/data".into());
        let expanded = PathBuf::from(path.replace("{real_data}", &real));
        if expanded.is_absolute() {
            expanded
        } else {
            self.source
                .parent()
                .unwrap_or(Path::new("."))
                .join(expanded)
        }
    }

    pub fn output(&self) -> PathBuf {
        self.resolve(&self.model.output.to_string_lossy())
    }

    pub fn work_dir(&self) -> PathBuf {
        match &self.model.work_dir {
            Some(w) => self.resolve(&w.to_string_lossy()),
            None => {
                let mut p = self.output().into_os_string();
                p.push(".work");
                PathBuf::from(p)
            }
        }
    }

    pub fn profile(&self) -> &'static SensorProfile {
        SensorProfile::by_name(&self.model.sensor).expect("validated")
    }

    /// The model's input names: gengbao's defaults for the periods and neighbourhoods, then
    /// the extra inputs.
    pub fn input_names(&self) -> Vec<String> {
        let bands: Vec<&str> = if self.model.bands.is_empty() {
            self.profile().bands.to_vec()
        } else {
            self.model.bands.iter().map(String::as_str).collect()
        };
        let mut names =
            FeatureLayout::default_names(&bands, self.model.periods, &self.model.neighbourhoods);
        names.extend(self.model.extra_inputs.iter().cloned());
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINGLE_LOOK: &str = include_str!("../../models/gengbao-s2-l1c-v2.train.toml");

    /// The single-look config with its extra inputs replaced by `inputs` (TOML).
    fn with_extra(inputs: &str) -> std::result::Result<TrainConfig, String> {
        let shipped = SINGLE_LOOK
            .lines()
            .find(|l| l.starts_with("extra_inputs"))
            .expect("the shipped config has extra inputs");
        let text = SINGLE_LOOK.replace(shipped, &format!("extra_inputs = {inputs}"));
        TrainConfig::parse(&text, Path::new("/x/train.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn extra_inputs_follow_the_defaults_and_unknown_ones_are_named() {
        let cfg = with_extra(r#"["ND_B03_B11"]"#).unwrap();
        let names = cfg.input_names();
        assert_eq!(names.last().map(String::as_str), Some("ND_B03_B11"));
        assert_eq!(
            names.len(),
            68,
            "the 67 defaults of the single-look model, then MNDWI"
        );

        let err = with_extra(r#"["ND_B03_B99", "B04"]"#).unwrap_err();
        assert!(
            err.contains("model.extra_inputs") && err.contains("ND_B03_B99"),
            "{err}"
        );
        assert!(
            !err.contains("B04,"),
            "only the unknown input is named: {err}"
        );

        let err = with_extra(r#"["NDVI_MED-2"]"#).unwrap_err();
        assert!(err.contains("model.periods"), "{err}");
    }
}
