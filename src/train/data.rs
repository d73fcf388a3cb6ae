//! Labelled pixels made ready for a model.
//!
//! Takes: a [`TrainConfig`]'s datasets (acquisition folders, band stacks or generated
//! cities, with label rasters). Gives: every labelled tile as the pipeline would see it
//! ([`visit_labelled`]), with each pixel's split by square blocks, and from those the model
//! inputs of every labelled pixel ([`SampleSet`]) and their normalisation.

use super::config::{DatasetSpec, TrainConfig};
use crate::classify::{FeatureLayout, Normalisation};
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::geo::composite::{self, ArchivedPeriod, Composite};
use crate::geo::gaofen::CalibrationTable;
use crate::geo::grid::{overlaps, JobGrid, Window};
use crate::geo::imagery::Catalog;
use crate::geo::imagery::ProductReading;
use crate::geo::raster::{open_georeferenced, read_grid_window};
use crate::geo::rpc::Elevation;
use crate::geo::sensor::SensorProfile;
use crate::geo::user_image::UserImage;
use crate::samples::{generate, SampleOptions};
use gdal::Dataset;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which part of the labelled pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    /// The held-out pixels.
    Test,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        })
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
    add_offset: Option<f32>,
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

/// Takes a dataset of the config; gives its imagery folder and its label raster path with
/// `{period}` left in, generating the city or unpacking the band stacks under `work` first.
fn locate_inputs(cfg: &TrainConfig, d: &DatasetSpec, work: &Path) -> Result<(PathBuf, String)> {
    let profile = cfg.profile();
    Ok(match d.kind.as_str() {
        "samples" => {
            let opts = SampleOptions {
                seed: d.seed.unwrap_or(1),
                size: d.size.unwrap_or(256),
                ..Default::default()
            };
            if !work.join("job.toml").exists() {
                generate(work, &opts)?;
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
                unpack_band_stacks(&src, profile, work)?
            } else {
                src
            };
            let labels = cfg.resolve(d.labels.as_deref().expect("validated"));
            (imagery, labels.to_string_lossy().into_owned())
        }
    })
}

/// Takes a dataset of the config; gives it made ready: catalog, label grid, labelled periods.
fn prepare(cfg: &TrainConfig, d: &DatasetSpec) -> Result<Prepared> {
    let profile = cfg.profile();
    let work = cfg.work_dir().join("datasets").join(&d.name);
    let (imagery, labels) = locate_inputs(cfg, d, &work)?;
    // Training reads products as the built-in defaults do: a Gaofen L1A product placed by RPCs
    // is refused (no elevation); orthorectified with its .xml beside it, it is calibrated.
    let catalog = Catalog::scan(&imagery, profile, &ProductReading::default())?;
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
    files.extend(catalog.acquisitions.iter().flat_map(|a| a.source_files()));
    Ok(Prepared {
        add_offset: d.add_offset,
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
    pub history: &'a [ArchivedPeriod],
    /// gengbao class per pixel of the composite (0 = unlabelled or left out by the buffer).
    pub labels: Vec<u8>,
    pub split: Vec<Option<Split>>,
}

/// The split of every block of a grid: seeded, per dataset, at least one block in validation
/// and in test when there are three blocks or more.
fn assign_blocks(cfg: &TrainConfig, dataset: usize, grid: &JobGrid) -> Vec<Split> {
    let b = cfg.split.block;
    assign_splits(
        cfg,
        dataset as u64,
        grid.width.div_ceil(b) * grid.height.div_ceil(b),
    )
}

/// The split of each of `n` units (blocks, patches) that go to one split as a whole: seeded
/// by the model's seed and `salt`, at least one unit in validation and in test when there
/// are three or more.
fn assign_splits(cfg: &TrainConfig, salt: u64, n: usize) -> Vec<Split> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.model.seed ^ ((salt + 1) * 0x9E37_79B9));
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
    // Earlier periods' bands are kept only as far back as the model reads them.
    let bands_reach = FeatureLayout::parse(&cfg.input_names(), profile)
        .map_or(0, |layout| layout.earlier_bands_reach());
    let mut infos = Vec::new();
    for (di, d) in cfg.datasets.iter().enumerate() {
        if d.kind == "patches" {
            infos.push(visit_patches(cfg, di, hash_contents, &mut visit)?);
            continue;
        }
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
            let mut history: Vec<ArchivedPeriod> = Vec::new();
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
                history.insert(0, comp.as_archived(bands_reach > 0));
                history.truncate(lookback);
                for older in history.iter_mut().skip(bands_reach) {
                    older.bands = None;
                }
                p = p.next();
            }
        }
        infos.push(info);
    }
    Ok(infos)
}

/// Visits every tile of every patch of a `patches` dataset, each patch read as `detect`
/// reads an image ([`UserImage`], on the grid it makes of the image) and labelled with its
/// folder's class as a whole. Patches go to one split as a whole, drawn per folder so that
/// every class is in every split.
fn visit_patches(
    cfg: &TrainConfig,
    dataset: usize,
    hash_contents: bool,
    visit: &mut impl FnMut(LabelledTile) -> Result<()>,
) -> Result<DatasetInfo> {
    let d = &cfg.datasets[dataset];
    let profile = cfg.profile();
    let root = cfg.resolve(d.path.as_deref().expect("validated"));
    let mut info = DatasetInfo {
        name: d.name.clone(),
        kind: d.kind.clone(),
        real: d.real,
        content_sha256: None,
        pixels: BTreeMap::new(),
    };
    let mut files = Vec::new();
    for (k, (folder, &code)) in d.class_map.iter().enumerate() {
        let patches = patch_files(&root.join(folder))?;
        let salt = ((dataset as u64) << 16) | k as u64;
        for (path, split) in patches.iter().zip(assign_splits(cfg, salt, patches.len())) {
            let image = UserImage::open(
                path,
                profile,
                d.bands.as_deref(),
                d.add_offset,
                &Elevation::Unknown,
                &CalibrationTable::builtin(),
                "train",
            )?;
            let grid = JobGrid::for_image(&open_georeferenced(&image.stack.path)?, path)?;
            for tile in grid.tiles() {
                let composite = image.composite(&grid, tile.core, None)?;
                let n = composite.len();
                *info.pixels.entry(code).or_default() += n as u64;
                visit(LabelledTile {
                    dataset,
                    composite: &composite,
                    history: &[],
                    labels: vec![code; n],
                    split: vec![Some(split); n],
                })?;
            }
        }
        files.extend(patches);
    }
    if files.is_empty() {
        return Err(Error::input(
            &root,
            "holds no patch in the folders of the class map",
            "give the folder that holds one folder of .tif patches per class",
        ));
    }
    if hash_contents {
        info.content_sha256 = Some(hash_files(&files)?);
    }
    Ok(info)
}

/// The `.tif` files of a folder, by name; none when the folder is absent.
pub(crate) fn patch_files(folder: &Path) -> Result<Vec<PathBuf>> {
    files_with_extension(folder, "tif")
}

/// The files of a folder whose extension is `extension`, by name; none when the folder is
/// absent.
pub(crate) fn files_with_extension(folder: &Path, extension: &str) -> Result<Vec<PathBuf>> {
    if !folder.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| Error::io(folder, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    Ok(files)
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
    let identity = Normalisation::identity(layout.len());
    let mut set = SampleSet {
        inputs: layout.len(),
        ..Default::default()
    };
    let infos = visit_labelled(cfg, true, |t| {
        let weight = cfg.datasets[t.dataset].weight;
        let labelled: Vec<usize> = layout
            .observed_pixels(t.composite)
            .into_iter()
            .filter(|&i| t.labels[i] != 0 && t.split[i].is_some())
            .collect();
        let tile = layout.tile_inputs(t.composite, t.history);
        layout.push_pixels(&tile, &labelled, &identity, &mut set.x);
        for &i in &labelled {
            set.y.push(i64::from(t.labels[i]) - 1);
            set.weight.push(weight);
            set.split
                .push(t.split[i].expect("labelled pixels are in a split"));
        }
        Ok(())
    })?;
    Ok((set, infos))
}

/// Per-input mean and standard deviation over the training pixels.
pub(crate) fn normalisation_of(set: &SampleSet) -> Normalisation {
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
