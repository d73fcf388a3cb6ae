//! Training and evaluating learned land-cover models.
//!
//! Takes: a training config (`TRAIN.toml`, see [`TrainConfig`]) naming labelled datasets:
//! folders of acquisitions or per-band time stacks with a label raster and a class map, and
//! generated sample cities. Gives: a model file with its card (`<model>.json`): inputs,
//! normalisation, architecture, training data with content hashes, which class was learned
//! from which data, and held-out figures on real and on generated data.
//!
//! Every labelled pixel is turned into model inputs by the pipeline's own code (the period
//! composite of [`composite::build`], earlier periods as the archive stores them, and
//! [`FeatureLayout`]), so a model sees at run time what it learned from. Pixels are split into
//! train / validation / test by square blocks of the label grid, never pixel by pixel: the
//! pixels of one field are (nearly) always on one side, and a buffer at block edges is left
//! out so that a field crossing an edge does not leak.

use crate::classify::{
    build_mlp, Classifier, ClassifierInput, FeatureLayout, ModelCard, ModelFormat, Normalisation,
    TorchClassifier,
};
use crate::domain::land_cover::LandCover;
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::evaluate::{class_score_counts, ClassScore};
use crate::geo::composite::{self, Composite, NdviStats};
use crate::geo::grid::{overlaps, JobGrid, Window};
use crate::geo::imagery::Catalog;
use crate::geo::layers::LabelledPixel;
use crate::geo::raster::read_grid_window;
use crate::geo::sensor::SensorProfile;
use crate::samples::{generate, SampleOptions};
use gdal::Dataset;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
    /// Stop when the validation loss has not improved for this many epochs.
    #[serde(default = "default_patience")]
    pub patience: usize,
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
    /// WorldCereal patches) or `samples` (a city made by gengbao's generator).
    pub kind: String,
    #[serde(default)]
    pub path: Option<String>,
    /// Label raster; `{period}` in the name is replaced by each labelled period.
    #[serde(default)]
    pub labels: Option<String>,
    /// Label value -> gengbao class code (1..6); other values are unlabelled.
    #[serde(default)]
    pub class_map: BTreeMap<String, u8>,
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
        let mut cfg: TrainConfig = toml::from_str(&text).map_err(|e| {
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
                        "use acquisitions, band-stacks or samples",
                    )
                }
            }
            for (value, &code) in &d.class_map {
                if value.parse::<i64>().is_err() || !(1..=6).contains(&code) {
                    return bad(
                        &key,
                        format!("class_map entry {value} = {code}"),
                        "map integer label values to gengbao codes 1 (grain) .. 6 (forest)",
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
    pub fn resolve(&self, path: &str) -> PathBuf {
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
}

/// Which part of the labelled pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl std::str::FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "validation" => Ok(Split::Validation),
            "test" => Ok(Split::Test),
            other => Err(Error::usage(
                format!("unknown split `{other}`"),
                "use train, validation or test",
            )),
        }
    }
}

/// A dataset made ready: imagery catalog, label grid and labelled periods.
struct Prepared {
    catalog: Catalog,
    grid: JobGrid,
    /// (period, label raster), in period order; checked to lie on `grid`.
    labelled: Vec<(Period, Dataset)>,
    /// Label value -> gengbao class code.
    class_map: BTreeMap<i64, u8>,
    add_offset: f32,
    /// The label rasters, then the imagery files the catalog reads: what a model learns from.
    files: Vec<PathBuf>,
}

/// Writes one acquisition folder per date from per-band time stacks (`<band>.tif` with one
/// GDAL band per date, dates in `dates.txt`), so that they read like any other imagery.
pub fn unpack_band_stacks(stacks: &Path, profile: &SensorProfile, out: &Path) -> Result<PathBuf> {
    let imagery = out.join("imagery");
    if imagery.join(".complete").exists() {
        return Ok(imagery);
    }
    let dates_path = stacks.join("dates.txt");
    let dates: Vec<String> = std::fs::read_to_string(&dates_path)
        .map_err(|e| Error::io(&dates_path, e))?
        .lines()
        .map(|l| l.trim().replace('-', ""))
        .filter(|l| !l.is_empty())
        .collect();
    let gtiff = gdal::DriverManager::get_driver_by_name("GTiff")?;
    let mask = profile.mask_band.into_iter();
    for band in profile.bands.iter().copied().chain(mask) {
        let path = stacks.join(format!("{band}.tif"));
        let src = Dataset::open(&path).map_err(|e| {
            Error::input(
                &path,
                e.to_string(),
                format!(
                    "a band-stacks folder needs one file per band of `{}`",
                    profile.name
                ),
            )
        })?;
        if src.raster_count() != dates.len() {
            return Err(Error::input(
                &path,
                format!(
                    "{} GDAL bands but {} dates in dates.txt",
                    src.raster_count(),
                    dates.len()
                ),
                "store one GDAL band per date, in the order of dates.txt",
            ));
        }
        let (gt, wkt, (w, h)) = (src.geo_transform()?, src.projection(), src.raster_size());
        for (k, date) in dates.iter().enumerate() {
            let acq = imagery.join(format!("S2_{date}"));
            std::fs::create_dir_all(&acq).map_err(|e| Error::io(&acq, e))?;
            let mut buf = src
                .rasterband(k + 1)?
                .read_as::<u16>((0, 0), (w, h), (w, h), None)?;
            let dst = acq.join(format!("{band}_{date}.tif"));
            let mut ds = gtiff.create_with_band_type::<u16, _>(&dst, w, h, 1)?;
            ds.set_geo_transform(&gt)?;
            ds.set_projection(&wkt)?;
            let mut b = ds.rasterband(1)?;
            if Some(band) != profile.mask_band {
                b.set_no_data_value(Some(profile.nodata))?;
            }
            b.write((0, 0), (w, h), &mut buf)?;
        }
    }
    std::fs::write(imagery.join(".complete"), b"").map_err(|e| Error::io(&imagery, e))?;
    Ok(imagery)
}

/// Hash of the files' contents in the given order (repeats skipped): where the files lie
/// does not change it.
fn hash_files(paths: &[PathBuf]) -> Result<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut h = Sha256::new();
    for p in paths.iter().filter(|p| seen.insert(*p)) {
        let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
        h.update(Sha256::digest(&bytes));
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn prepare(cfg: &TrainConfig, d: &DatasetSpec) -> Result<Prepared> {
    let profile = cfg.profile();
    let work = cfg.work_dir().join("datasets").join(&d.name);
    let (imagery, labels) = match d.kind.as_str() {
        "samples" => {
            let opts = SampleOptions {
                seed: d.seed.unwrap_or(1),
                size: d.size.unwrap_or(256),
                ..Default::default()
            };
            if !work.join("job.toml").exists() {
                generate(&work, &opts)?;
            }
            (
                work.join("imagery"),
                work.join("truth")
                    .join("class_{period}.tif")
                    .to_string_lossy()
                    .into_owned(),
            )
        }
        kind => {
            let src = cfg.resolve(d.path.as_deref().expect("validated"));
            let imagery = if kind == "band-stacks" {
                unpack_band_stacks(&src, profile, &work)?
            } else {
                src
            };
            let labels = cfg.resolve(d.labels.as_deref().expect("validated"));
            (imagery, labels.to_string_lossy().into_owned())
        }
    };
    let catalog = Catalog::scan(&imagery, profile)?;
    let mut wanted: Vec<Period> = if d.periods.is_empty() || d.periods.iter().any(|p| p == "all") {
        catalog.periods()
    } else {
        d.periods
            .iter()
            .map(|p| p.parse().expect("validated"))
            .collect()
    };
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Err(Error::config(
            &cfg.source,
            format!("dataset `{}`", d.name),
            "no labelled periods",
            "list periods = [\"YYYY-Pn\", ...] that have imagery",
        ));
    }
    let label_paths: Vec<PathBuf> = wanted
        .iter()
        .map(|p| PathBuf::from(labels.replace("{period}", &p.to_string())))
        .collect();
    // The grid is the first label raster's; every other must lie on it.
    let mut grid: Option<JobGrid> = None;
    let mut labelled = Vec::with_capacity(wanted.len());
    for (&p, path) in wanted.iter().zip(&label_paths) {
        let ds = Dataset::open(path).map_err(|e| {
            Error::input(
                path,
                e.to_string(),
                "give a label raster per period, readable by GDAL",
            )
        })?;
        let g = grid.get_or_insert(JobGrid::of_dataset(&ds, path)?);
        if ds.raster_size() != (g.width, g.height) {
            return Err(Error::input(
                path,
                "label rasters of one dataset differ in size",
                "give every period's labels on the same grid",
            ));
        }
        labelled.push((p, ds));
    }
    let mut grid = grid.expect("at least one labelled period");
    grid.tile_size = 256;
    // Generated truth rasters hold gengbao codes already.
    let class_map: BTreeMap<i64, u8> = if d.kind == "samples" && d.class_map.is_empty() {
        (1..=6).map(|c| (i64::from(c), c)).collect()
    } else {
        d.class_map
            .iter()
            .map(|(k, v)| (k.parse().expect("validated"), *v))
            .collect()
    };
    // What the model is trained on: the labels in period order, then the imagery files the
    // catalog reads, in its (date, folder, band) order.
    let mut files = label_paths;
    files.extend(
        catalog
            .acquisitions
            .iter()
            .flat_map(|a| a.files.values().cloned()),
    );
    Ok(Prepared {
        add_offset: d.add_offset.unwrap_or(profile.add_offset),
        files,
        catalog,
        grid,
        labelled,
        class_map,
    })
}

/// One tile of one labelled period: what the classifier sees, and the reference.
pub struct LabelledTile<'a> {
    pub dataset: usize,
    pub composite: &'a Composite,
    /// Earlier periods, most recent first, as the archive stores them.
    pub history: &'a [NdviStats],
    /// gengbao class per pixel of the composite (0 = unlabelled or left out by the buffer).
    pub labels: Vec<u8>,
    pub split: Vec<Option<Split>>,
}

/// The split of every block of a grid: seeded, per dataset, at least one block in validation
/// and in test when there are three blocks or more.
fn assign_blocks(cfg: &TrainConfig, dataset: usize, grid: &JobGrid) -> Vec<Split> {
    let b = cfg.split.block;
    let n = grid.width.div_ceil(b) * grid.height.div_ceil(b);
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.model.seed ^ ((dataset as u64 + 1) * 0x9E37_79B9));
    order.shuffle(&mut rng);
    let count = |f: f64| ((n as f64 * f).round() as usize).max(usize::from(n >= 3));
    let (n_test, n_val) = (count(cfg.split.test), count(cfg.split.validation));
    let mut split = vec![Split::Train; n];
    for (rank, &block) in order.iter().enumerate() {
        if rank < n_test {
            split[block] = Split::Test;
        } else if rank < n_test + n_val {
            split[block] = Split::Validation;
        }
    }
    split
}

/// Visits every tile of every labelled period of the datasets, in a fixed order. With
/// `hash_contents`, the infos carry the hash of each dataset's files (which reads them all).
pub fn visit_labelled(
    cfg: &TrainConfig,
    hash_contents: bool,
    mut visit: impl FnMut(LabelledTile) -> Result<()>,
) -> Result<Vec<DatasetInfo>> {
    let profile = cfg.profile();
    let lookback = cfg.model.periods - 1;
    let mut infos = Vec::new();
    for (di, d) in cfg.datasets.iter().enumerate() {
        let prep = prepare(cfg, d)?;
        let blocks = assign_blocks(cfg, di, &prep.grid);
        let per_row = prep.grid.width.div_ceil(cfg.split.block);
        let grid_srs = prep.grid.spatial_ref()?;
        let located = prep
            .catalog
            .acquisitions
            .iter()
            .map(|a| Ok((a, a.check_and_locate(&grid_srs)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut info = DatasetInfo {
            name: d.name.clone(),
            kind: d.kind.clone(),
            real: d.real,
            content_sha256: if hash_contents {
                Some(hash_files(&prep.files)?)
            } else {
                None
            },
            pixels: BTreeMap::new(),
        };
        let first = prep.labelled[0].0;
        let last = prep.labelled[prep.labelled.len() - 1].0;
        for tile in prep.grid.tiles() {
            let w: Window = tile.read;
            let tile_bounds = prep.grid.window_bounds(w);
            let mut history: Vec<NdviStats> = Vec::new();
            let mut p = first.offset(-(lookback as i32));
            while p <= last {
                let covering: Vec<_> = located
                    .iter()
                    .filter(|(a, e)| p.contains(a.date) && overlaps(*e, tile_bounds))
                    .map(|(a, _)| *a)
                    .collect();
                if covering.is_empty() {
                    // The pipeline cannot run a period without imagery, and its history
                    // stops at such a gap: so does the training data.
                    history.clear();
                    p = p.next();
                    continue;
                }
                let comp = composite::build(&covering, profile, prep.add_offset, &prep.grid, w)?;
                if let Some((_, ds)) = prep.labelled.iter().find(|l| l.0 == p) {
                    let raw = read_grid_window::<f64>(ds, 1, w, f64::NAN)?;
                    let mut labels = vec![0u8; raw.len()];
                    let mut split = vec![None; raw.len()];
                    let (b, buf) = (cfg.split.block as isize, cfg.split.buffer as isize);
                    for (i, v) in raw.iter().enumerate() {
                        let gx = w.x + (i % w.width) as isize;
                        let gy = w.y + (i / w.width) as isize;
                        let (ix, iy) = (gx.rem_euclid(b), gy.rem_euclid(b));
                        if !v.is_finite() || ix < buf || iy < buf || ix >= b - buf || iy >= b - buf
                        {
                            continue;
                        }
                        if let Some(&code) = prep.class_map.get(&(*v as i64)) {
                            labels[i] = code;
                            let block = (gy / b) as usize * per_row + (gx / b) as usize;
                            split[i] = Some(blocks[block]);
                            *info.pixels.entry(code).or_default() += 1;
                        }
                    }
                    visit(LabelledTile {
                        dataset: di,
                        composite: &comp,
                        history: &history,
                        labels,
                        split,
                    })?;
                }
                history.insert(0, comp.ndvi.as_archived());
                history.truncate(lookback);
                p = p.next();
            }
        }
        infos.push(info);
    }
    Ok(infos)
}

/// What a model learned from one dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub name: String,
    pub kind: String,
    pub real: bool,
    /// Hash of the label rasters and the imagery's files, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
    /// Labelled pixel-periods per gengbao class (all splits).
    pub pixels: BTreeMap<u8, u64>,
}

/// Model inputs of labelled pixels, unnormalised, with their class and split.
#[derive(Debug, Default, Clone)]
pub struct SampleSet {
    pub inputs: usize,
    pub x: Vec<f32>,
    /// Output index (position of the class in [`LandCover::ALL`]).
    pub y: Vec<i64>,
    pub weight: Vec<f32>,
    pub split: Vec<Split>,
}

impl SampleSet {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    pub fn indices(&self, split: Split) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.split[i] == split)
            .collect()
    }
}

/// Extracts the model inputs of every labelled pixel of the config's datasets.
pub fn extract(cfg: &TrainConfig, layout: &FeatureLayout) -> Result<(SampleSet, Vec<DatasetInfo>)> {
    let identity = Normalisation {
        mean: vec![0.0; layout.len()],
        std: vec![1.0; layout.len()],
    };
    let mut set = SampleSet {
        inputs: layout.len(),
        ..Default::default()
    };
    let infos = visit_labelled(cfg, true, |t| {
        let weight = cfg.datasets[t.dataset].weight;
        for (i, (&label, split)) in t.labels.iter().zip(&t.split).enumerate() {
            let Some(split) = split else { continue };
            if label == 0 || !layout.observed(t.composite, i) {
                continue;
            }
            layout.push(t.composite, t.history, i, &identity, &mut set.x);
            set.y.push(i64::from(label) - 1);
            set.weight.push(weight);
            set.split.push(*split);
        }
        Ok(())
    })?;
    Ok((set, infos))
}

/// Per-input mean and standard deviation over the training pixels.
pub fn normalisation_of(set: &SampleSet) -> Normalisation {
    let f = set.inputs;
    let train = set.indices(Split::Train);
    let n = train.len().max(1) as f64;
    let mut mean = vec![0f64; f];
    for &i in &train {
        for (m, &x) in mean.iter_mut().zip(&set.x[i * f..(i + 1) * f]) {
            *m += f64::from(x);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; f];
    for &i in &train {
        for ((v, m), &x) in var.iter_mut().zip(&mean).zip(&set.x[i * f..(i + 1) * f]) {
            *v += (f64::from(x) - m).powi(2);
        }
    }
    Normalisation {
        mean: mean.iter().map(|&m| m as f32).collect(),
        std: var
            .iter()
            .map(|&v| ((v / n).sqrt() as f32).max(1e-3))
            .collect(),
    }
}

/// Training hyper-parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FitOptions {
    pub hidden: Vec<i64>,
    pub seed: u64,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub patience: usize,
}

impl From<&ModelSection> for FitOptions {
    fn from(m: &ModelSection) -> Self {
        FitOptions {
            hidden: m.hidden.clone(),
            seed: m.seed,
            epochs: m.epochs,
            batch: m.batch,
            learning_rate: m.learning_rate,
            patience: m.patience,
        }
    }
}

/// Where a training run stands; saved beside the checkpoints after every epoch.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct FitState {
    /// Hash of the options, samples and normalisation: a checkpoint resumes only the same run.
    pub run: String,
    pub epochs_done: usize,
    pub best_epoch: usize,
    pub best_validation_loss: f64,
    pub train_loss: Vec<f64>,
    pub validation_loss: Vec<f64>,
    pub stopped_early: bool,
}

/// A trained per-pixel MLP.
pub struct Fitted {
    pub vs: tch::nn::VarStore,
    pub net: tch::nn::Sequential,
    pub normalisation: Normalisation,
    pub state: FitState,
}

impl Fitted {
    /// Weighted cross-entropy of the model on some pixels.
    pub fn loss(&self, set: &SampleSet, which: &[usize]) -> f64 {
        let _g = tch::no_grad_guard();
        let (x, y, w) = tensors(set, &set.weight, which, &self.normalisation);
        f64::from(&weighted_loss(&self.net, &x, &y, &w))
    }

    /// Output index per pixel.
    pub fn predict(&self, set: &SampleSet, which: &[usize]) -> Vec<i64> {
        use tch::nn::Module;
        let _g = tch::no_grad_guard();
        let (x, _, _) = tensors(set, &set.weight, which, &self.normalisation);
        Vec::<i64>::from(&self.net.forward(&x).argmax(-1, false))
    }
}

fn tensors(
    set: &SampleSet,
    weights: &[f32],
    which: &[usize],
    norm: &Normalisation,
) -> (tch::Tensor, tch::Tensor, tch::Tensor) {
    let f = set.inputs;
    let mut x = Vec::with_capacity(which.len() * f);
    for &i in which {
        for k in 0..f {
            x.push((set.x[i * f + k] - norm.mean[k]) / norm.std[k]);
        }
    }
    let y: Vec<i64> = which.iter().map(|&i| set.y[i]).collect();
    let w: Vec<f32> = which.iter().map(|&i| weights[i]).collect();
    (
        tch::Tensor::of_slice(&x).view([which.len() as i64, f as i64]),
        tch::Tensor::of_slice(&y),
        tch::Tensor::of_slice(&w),
    )
}

fn weighted_loss(
    net: &tch::nn::Sequential,
    x: &tch::Tensor,
    y: &tch::Tensor,
    w: &tch::Tensor,
) -> tch::Tensor {
    use tch::nn::Module;
    let logp = net.forward(x).log_softmax(-1, tch::Kind::Float);
    let picked = logp.gather(1, &y.unsqueeze(1), false).squeeze_dim(1);
    -(picked * w).sum(tch::Kind::Float) / w.sum(tch::Kind::Float)
}

/// Balances the classes: each pixel's weight is divided by the square root of its class's
/// share of the training pixels, so that rare classes count without dominating.
fn balanced_weights(set: &SampleSet) -> Vec<f32> {
    let mut count = [0f64; 6];
    for (i, &y) in set.y.iter().enumerate() {
        if set.split[i] == Split::Train {
            count[y as usize] += 1.0;
        }
    }
    let total: f64 = count.iter().sum();
    let present = count.iter().filter(|&&c| c > 0.0).count() as f64;
    set.y
        .iter()
        .zip(&set.weight)
        .map(|(&y, &w)| {
            let share = count[y as usize].max(1.0) / total.max(1.0);
            w * (1.0 / (share * present)).sqrt() as f32
        })
        .collect()
}

/// Trains an MLP on the train split with early stopping on the validation split. With a
/// checkpoint folder, the state and weights are saved after every epoch and a run of the same
/// options and samples resumes where it stopped (Adam's moments restart from zero then).
pub fn fit(
    set: &SampleSet,
    opts: &FitOptions,
    checkpoints: Option<&Path>,
    quiet: bool,
) -> Result<Fitted> {
    let normalisation = normalisation_of(set);
    let weights = balanced_weights(set);
    let train = set.indices(Split::Train);
    let validation = set.indices(Split::Validation);
    if train.is_empty() || validation.is_empty() {
        return Err(Error::usage(
            format!(
                "{} training and {} validation pixels",
                train.len(),
                validation.len()
            ),
            "add labelled data or smaller split blocks so that every split has pixels",
        ));
    }
    let run = {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(opts).expect("serialisable"));
        for v in set.x.iter().chain(&normalisation.mean) {
            h.update(v.to_le_bytes());
        }
        for (y, s) in set.y.iter().zip(&set.split) {
            h.update(y.to_le_bytes());
            h.update([*s as u8]);
        }
        h.finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    tch::manual_seed(opts.seed as i64);
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = build_mlp(&vs.root(), set.inputs as i64, &opts.hidden, 6);
    let mut state = FitState {
        run: run.clone(),
        best_validation_loss: f64::INFINITY,
        ..Default::default()
    };
    let paths = checkpoints.map(|dir| {
        (
            dir.join("state.json"),
            dir.join("last.ot"),
            dir.join("best.ot"),
        )
    });
    if let Some((state_path, last, _)) = &paths {
        if state_path.exists() {
            let saved: FitState = serde_json::from_slice(
                &std::fs::read(state_path).map_err(|e| Error::io(state_path, e))?,
            )
            .map_err(|e| Error::input(state_path, e.to_string(), "delete the checkpoint folder"))?;
            if saved.run == run {
                vs.load(last)?;
                state = saved;
                if !quiet {
                    eprintln!(
                        "resuming from the checkpoint after epoch {}",
                        state.epochs_done
                    );
                }
            } else if !quiet {
                eprintln!("the checkpoint belongs to other options or data: starting afresh");
            }
        }
    }
    use tch::nn::OptimizerConfig;
    let mut opt = tch::nn::Adam::default().build(&vs, opts.learning_rate)?;
    let (vx, vy, vw) = tensors(set, &weights, &validation, &normalisation);
    let pb = crate::progress::progress(opts.epochs as u64, "epochs", quiet);
    pb.set_position(state.epochs_done as u64);
    let finished = |s: &FitState| s.stopped_early || s.epochs_done >= opts.epochs;
    while !finished(&state) {
        let epoch = state.epochs_done;
        let mut order = train.clone();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            opts.seed.wrapping_add(epoch as u64),
        ));
        let mut sum = 0.0;
        for batch in order.chunks(opts.batch) {
            let (x, y, w) = tensors(set, &weights, batch, &normalisation);
            let loss = weighted_loss(&net, &x, &y, &w);
            opt.backward_step(&loss);
            sum += f64::from(&loss) * batch.len() as f64;
        }
        let train_loss = sum / train.len() as f64;
        let val_loss = {
            let _g = tch::no_grad_guard();
            f64::from(&weighted_loss(&net, &vx, &vy, &vw))
        };
        state.epochs_done += 1;
        state.train_loss.push(train_loss);
        state.validation_loss.push(val_loss);
        let improved = val_loss < state.best_validation_loss;
        if improved {
            state.best_validation_loss = val_loss;
            state.best_epoch = state.epochs_done;
        } else if state.epochs_done - state.best_epoch >= opts.patience {
            state.stopped_early = true;
        }
        if let Some((state_path, last, best)) = &paths {
            let dir = state_path.parent().expect("a file in a folder");
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            save_atomic(&vs, last)?;
            if improved {
                save_atomic(&vs, best)?;
            }
            let tmp = state_path.with_extension("json.partial");
            std::fs::write(
                &tmp,
                serde_json::to_vec_pretty(&state).expect("serialisable"),
            )
            .map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, state_path).map_err(|e| Error::io(state_path, e))?;
        }
        pb.set_position(state.epochs_done as u64);
        pb.set_message(format!("loss {train_loss:.3} / validation {val_loss:.3}"));
    }
    pb.finish_and_clear();
    if let Some((_, _, best)) = &paths {
        if best.exists() {
            vs.load(best)?;
        }
    }
    Ok(Fitted {
        vs,
        net,
        normalisation,
        state,
    })
}

fn save_atomic(vs: &tch::nn::VarStore, path: &Path) -> Result<()> {
    let tmp = path.with_extension("partial.ot");
    save_weights(vs, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes the weights in name order. `VarStore::save` writes them in its hash map's order,
/// which changes from process to process, so the same weights gave different files and a
/// different model version (MXBB) on every run.
fn save_weights(vs: &tch::nn::VarStore, path: &Path) -> Result<()> {
    let mut named: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tch::Tensor::save_multi(&named, path)?)
}

/// Held-out figures of a model, pooled separately over real and generated datasets.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Evaluation {
    pub split: String,
    pub real_holdout: Option<ClassScore>,
    pub generated_holdout: Option<ClassScore>,
}

impl Evaluation {
    /// The scores of the real and the generated pixels, named.
    pub fn pools(&self) -> [(&'static str, Option<&ClassScore>); 2] {
        [
            ("real", self.real_holdout.as_ref()),
            ("generated", self.generated_holdout.as_ref()),
        ]
    }
}

/// Runs a classifier exactly as the pipeline does (whole tiles with their history) and scores
/// the pixels of each split asked for, in one pass over the data.
pub fn evaluate_classifier(
    cfg: &TrainConfig,
    classifier: &dyn Classifier,
    splits: &[Split],
) -> Result<Vec<Evaluation>> {
    let profile = cfg.profile();
    // [split asked][real, generated][reference][predicted]
    let mut confusion = vec![[[[0u64; 6]; 6]; 2]; splits.len()];
    visit_labelled(cfg, false, |t| {
        let out = classifier.classify(&ClassifierInput {
            profile,
            composite: t.composite,
            history: t.history,
        })?;
        let pool = usize::from(!cfg.datasets[t.dataset].real);
        for (i, &label) in t.labels.iter().enumerate() {
            let predicted = out.classes[i];
            let Some(k) = splits.iter().position(|s| Some(*s) == t.split[i]) else {
                continue;
            };
            if label != 0 && (1..=6).contains(&predicted) {
                confusion[k][pool][label as usize - 1][predicted as usize - 1] += 1;
            }
        }
        Ok(())
    })?;
    let score = |c: [[u64; 6]; 6]| {
        let s = class_score_counts(c);
        (s.pixels > 0).then_some(s)
    };
    Ok(splits
        .iter()
        .zip(confusion)
        .map(|(split, [real, generated])| Evaluation {
            split: format!("{split:?}").to_lowercase(),
            real_holdout: score(real),
            generated_holdout: score(generated),
        })
        .collect())
}

/// What `gengbao train` did.
pub struct TrainReport {
    pub model: PathBuf,
    pub card: ModelCard,
    pub state: FitState,
    pub test: Evaluation,
}

/// `gengbao train`: extract, fit, save the model and its card, and score it on the test split
/// through the pipeline's own classifier.
pub fn train(cfg: &TrainConfig, quiet: bool) -> Result<TrainReport> {
    let profile = cfg.profile();
    let names = FeatureLayout::default_names(profile, cfg.model.periods);
    let layout = FeatureLayout::parse(&names, profile).expect("default names parse");
    if !quiet {
        eprintln!(
            "extracting labelled pixels from {} datasets",
            cfg.datasets.len()
        );
    }
    let (set, infos) = extract(cfg, &layout)?;
    let work = cfg.work_dir();
    let opts = FitOptions::from(&cfg.model);
    let fitted = fit(&set, &opts, Some(&work.join("checkpoints")), quiet)?;

    let output = cfg.output();
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let card_path = ModelCard::card_path(&output);
    // The model and its card replace the old pair only when both are complete.
    // tch picks the weight format by extension (`.pt` means a zipped state dict, which
    // `save_weights` does not write): gengbao's VarStore files are `.ot`.
    let partial_model = output.with_extension("partial.ot");
    save_weights(&fitted.vs, &partial_model)?;
    let mut card = ModelCard {
        name: cfg.model.name.clone(),
        format: ModelFormat::VarstoreMlp,
        input_bands: names,
        normalisation: fitted.normalisation.clone(),
        classes: LandCover::ALL.iter().map(|c| c.code()).collect(),
        periods: cfg.model.periods,
        hidden: cfg.model.hidden.clone(),
        extra: serde_json::Map::new(),
    };
    let partial_card = ModelCard::card_path(&partial_model);
    card.save(&partial_model)?;
    let classifier = TorchClassifier::load(&partial_model, profile)?;
    let [test, validation]: [Evaluation; 2] =
        evaluate_classifier(cfg, &classifier, &[Split::Test, Split::Validation])?
            .try_into()
            .expect("one evaluation per split");
    let learned_from: BTreeMap<String, Vec<String>> = LandCover::ALL
        .iter()
        .map(|c| {
            let from = infos
                .iter()
                .filter(|d| d.pixels.get(&c.code()).copied().unwrap_or(0) > 0)
                .map(|d| format!("{} ({})", d.name, if d.real { "real" } else { "generated" }))
                .collect();
            (format!("{} {}", c.code(), c.label_zh()), from)
        })
        .collect();
    let extra = serde_json::json!({
        "architecture": format!(
            "per-pixel MLP {} -> {} -> 6 (ReLU), softmax probability = confidence",
            layout.len(),
            cfg.model.hidden.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(" -> ")
        ),
        "version": classifier.version(),
        "created": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "command": format!("gengbao train --config {}", cfg.source.display()),
        "training": {
            "datasets": infos,
            "learned_from": learned_from,
            "split": cfg.split,
            "seed": cfg.model.seed,
            "epochs_run": fitted.state.epochs_done,
            "best_epoch": fitted.state.best_epoch,
            "stopped_early": fitted.state.stopped_early,
            "learning_rate": cfg.model.learning_rate,
            "batch": cfg.model.batch,
        },
        "metrics": {
            "real_holdout": test.real_holdout,
            "generated_holdout": test.generated_holdout,
            "real_validation": validation.real_holdout,
            "generated_validation": validation.generated_holdout,
        },
    });
    if let serde_json::Value::Object(map) = extra {
        card.extra = map;
    }
    card.save(&partial_model)?;
    std::fs::rename(&partial_model, &output).map_err(|e| Error::io(&output, e))?;
    std::fs::rename(&partial_card, &card_path).map_err(|e| Error::io(&card_path, e))?;
    Ok(TrainReport {
        model: output,
        card,
        state: fitted.state,
        test,
    })
}

/// A model learned from labelled pixels of one image: what `detect --samples-*` trains, the
/// way the peer tools train a random forest per date on the user's points.
pub struct PointModel<'a> {
    pub profile: &'a SensorProfile,
    pub grid: &'a JobGrid,
    /// Name written into the card, e.g. `detect-before`.
    pub name: String,
    /// Where the points came from, for the card.
    pub points: PathBuf,
}

impl PointModel<'_> {
    /// Extracts the inputs of `pixels` from `read` (the composite of a grid window exactly as
    /// the classifier will see it), fits a single-date MLP with a fifth of the points held
    /// back for early stopping, and writes it with its card to `output` (a VarStore `.ot`:
    /// `detect --model` reuses it). Gives the loaded classifier.
    pub fn fit(
        &self,
        pixels: &[LabelledPixel],
        read: impl Fn(Window) -> Result<Composite> + Sync,
        output: &Path,
        quiet: bool,
    ) -> Result<TorchClassifier> {
        use rayon::prelude::*;
        let names = FeatureLayout::default_names(self.profile, 1);
        let layout =
            FeatureLayout::parse(&names, self.profile).expect("the profile provides its own bands");
        let identity = Normalisation {
            mean: vec![0.0; layout.len()],
            std: vec![1.0; layout.len()],
        };
        // One read per tile that has points: the tile's blocks are decoded once.
        let ts = self.grid.tile_size;
        let mut by_tile: BTreeMap<(usize, usize), Vec<LabelledPixel>> = BTreeMap::new();
        for &(c, r, class) in pixels {
            by_tile
                .entry((r / ts, c / ts))
                .or_default()
                .push((c, r, class));
        }
        let groups: Vec<_> = by_tile.into_values().collect();
        let parts: Vec<(Vec<f32>, Vec<i64>)> = groups
            .par_iter()
            .map(|points| {
                let (x0, y0) = points.iter().fold((usize::MAX, usize::MAX), |a, p| {
                    (a.0.min(p.0), a.1.min(p.1))
                });
                let (x1, y1) = points
                    .iter()
                    .fold((0, 0), |a, p| (a.0.max(p.0), a.1.max(p.1)));
                let window = Window {
                    x: x0 as isize,
                    y: y0 as isize,
                    width: x1 - x0 + 1,
                    height: y1 - y0 + 1,
                };
                let composite = read(window)?;
                let (mut x, mut y) = (Vec::new(), Vec::new());
                for &(c, r, class) in points {
                    let i = (r - y0) * window.width + (c - x0);
                    if layout.observed(&composite, i) {
                        layout.push(&composite, &[], i, &identity, &mut x);
                        y.push(i64::from(class) - 1);
                    }
                }
                Ok((x, y))
            })
            .collect::<Result<_>>()?;
        let mut set = SampleSet {
            inputs: layout.len(),
            ..Default::default()
        };
        for (x, y) in parts {
            set.x.extend(x);
            set.y.extend(y);
        }
        let n = set.y.len();
        set.weight = vec![1.0; n];
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(1));
        set.split = vec![Split::Train; n];
        for &i in &order[..n / 5] {
            set.split[i] = Split::Validation;
        }
        // Small data: more epochs and smaller batches than the archive-trained model.
        let opts = FitOptions {
            hidden: vec![32, 32],
            seed: 1,
            epochs: 300,
            batch: 64,
            learning_rate: 0.003,
            patience: 30,
        };
        let fitted = fit(&set, &opts, None, quiet).map_err(|e| match e {
            Error::Usage { problem, .. } => Error::input(
                &self.points,
                problem,
                "give at least a few labelled points of each class on the image",
            ),
            other => other,
        })?;
        let validation = set.indices(Split::Validation);
        let predicted = fitted.predict(&set, &validation);
        let correct = validation
            .iter()
            .zip(&predicted)
            .filter(|(&i, &p)| set.y[i] == p)
            .count();
        save_weights(&fitted.vs, output)?;
        let extra = serde_json::json!({
            "trained_on": self.points.display().to_string(),
            "pixels": n,
            "validation_accuracy": correct as f64 / validation.len().max(1) as f64,
            "fit": opts,
            "epochs_run": fitted.state.epochs_done,
        });
        let card = ModelCard {
            name: self.name.clone(),
            format: ModelFormat::VarstoreMlp,
            input_bands: names,
            normalisation: fitted.normalisation.clone(),
            classes: LandCover::ALL.iter().map(|c| c.code()).collect(),
            periods: 1,
            hidden: opts.hidden.clone(),
            extra: match extra {
                serde_json::Value::Object(map) => map,
                _ => unreachable!("a JSON object"),
            },
        };
        card.save(output)?;
        TorchClassifier::load(output, self.profile)
    }
}
