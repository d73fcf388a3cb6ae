//! One tile of a period: composite the acquisitions that cover it, classify, read the archive
//! of earlier periods, and judge every pixel through the engine's change step. A finished tile
//! is checkpointed, so an interrupted run redoes only the tiles it had not finished.

use crate::classify::{Classifier, ClassifierInput};
use crate::domain::change::Rules;
use crate::domain::coverage::Coverage;
use crate::domain::land_cover::LandCover;
use crate::engine::judge::{confidence_to_byte, judge_tile, ChangeTile, History, Observation};
use crate::engine::patches::attr_band;
use crate::error::{Error, Result};
use crate::geo::composite::{self, byte_to_ndvi, ndvi_to_byte, NdviStats, NDVI_NODATA};
use crate::geo::grid::{overlaps, Bounds, JobGrid, Tile};
use crate::geo::imagery::Acquisition;
use crate::geo::layers::{Admin, Farmland};
use crate::geo::raster::read_grid_window;
use crate::geo::sensor::SensorProfile;
use crate::job::checkpoint::{key_of, Checkpoints, Saved};
use crate::job::layout::PeriodFiles;
use gdal::Dataset;
use std::path::Path;

/// Everything a tile needs, shared read-only by the workers.
pub(crate) struct PeriodContext<'a> {
    pub grid: &'a JobGrid,
    pub profile: &'static SensorProfile,
    /// The period's acquisitions with their extents in the grid CRS.
    pub acquisitions: &'a [Located],
    /// DN offset of the imagery.
    pub add_offset: f32,
    pub classifier: &'a dyn Classifier,
    pub admin: &'a Admin,
    pub farmland: &'a Farmland,
    /// Archives of the earlier periods the classifier and the rules read, most recent first.
    pub history: &'a [PeriodFiles],
    /// Consecutive earlier periods archived (may reach further back than `history`).
    pub archived: usize,
    pub rules: Rules,
}

/// An acquisition of the period, its extent in the grid CRS and its files' identity.
pub(crate) struct Located {
    pub acquisition: Acquisition,
    pub extent: Bounds,
    pub identity: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TileSource {
    Processed,
    Resumed,
    /// Redone: its imagery changed since an interrupted attempt checkpointed it.
    ImageryChanged,
}

impl PeriodContext<'_> {
    /// A finished tile from an earlier attempt of this run with the same imagery, or the tile
    /// processed now (and checkpointed). The source says whether its imagery had changed.
    pub fn tile(&self, tile: &Tile, checkpoints: &Checkpoints) -> Result<(TileOutput, TileSource)> {
        // Only the acquisitions that cover this tile are read: memory and I/O grow with the
        // number of scenes over a place, not with the size of the job.
        let tile_bounds = self.grid.window_bounds(tile.read);
        let covering: Vec<&Located> = self
            .acquisitions
            .iter()
            .filter(|a| overlaps(a.extent, tile_bounds))
            .collect();
        let fingerprint = key_of(
            &covering
                .iter()
                .map(|a| a.identity.clone())
                .collect::<Vec<_>>(),
        );
        let source = match checkpoints.load(&tile.id(), &fingerprint)? {
            Saved::Found(bytes) => match TileOutput::from_bytes(tile, &bytes) {
                Some(out) => return Ok((out, TileSource::Resumed)),
                None => TileSource::Processed,
            },
            Saved::Stale => TileSource::ImageryChanged,
            Saved::Missing => TileSource::Processed,
        };
        let acquisitions: Vec<&Acquisition> = covering.iter().map(|a| &a.acquisition).collect();
        let out = self.process(tile, &acquisitions)?;
        checkpoints.save(&tile.id(), &fingerprint, &out.to_bytes())?;
        Ok((out, source))
    }

    /// Composites, classifies and judges one tile from the acquisitions that cover it.
    fn process(&self, tile: &Tile, covering: &[&Acquisition]) -> Result<TileOutput> {
        let grid = self.grid;
        let comp = composite::build(covering, self.profile, self.add_offset, grid, tile.read)?;
        let archive = self.read_archive(tile)?;
        let classified = self.classifier.classify(&ClassifierInput {
            profile: self.profile,
            composite: &comp,
            history: &archive.ndvi,
            runner_up: false,
        })?;
        let class = tile.crop_core(&classified.classes);
        let confidence = tile.crop_core(&classified.confidence);
        let to_bytes =
            |v: &[f32]| -> Vec<u8> { tile.crop_core(v).into_iter().map(ndvi_to_byte).collect() };
        let ndvi = [
            to_bytes(&comp.ndvi.median),
            to_bytes(&comp.ndvi.min),
            to_bytes(&comp.ndvi.max),
        ];
        let clear = tile.crop_core(&comp.clear_count);
        let county = self.admin.rasterize(grid, tile.core)?;
        let farm = self
            .farmland
            .rasterize(grid, &grid.spatial_ref()?, tile.core)?;

        // The farmland layer is the baseline: 耕地 parcels are grain land.
        let baseline = LandCover::Grain.code();
        let history = History {
            classes: &archive.classes,
            confidences: &archive.confidences,
            periods: self.archived,
        };
        let change = judge_tile(tile.core.len(), &self.rules, history, |i| {
            if county[i] == 0 {
                return None;
            }
            // From the archived bytes, so that a period is judged the same now and when it is
            // read back as history.
            let cultivation = self
                .rules
                .cultivation
                .seen(byte_to_ndvi(ndvi[1][i]), byte_to_ndvi(ndvi[2][i]));
            Some(Observation {
                county: county[i],
                watched: farm.parcel[i] != 0,
                basic: farm.basic[i],
                baseline,
                now: class[i],
                confidence: confidence[i],
                cultivation,
                runs_before: archive
                    .runs
                    .as_ref()
                    .map_or([0; 3], |b| std::array::from_fn(|k| b[k][i])),
                sure: true,
            })
        });
        let mut coverage = Coverage::default();
        for (i, &c) in county.iter().enumerate() {
            if c != 0 && farm.parcel[i] != 0 {
                coverage.add(c, clear[i] > 0);
            }
        }
        Ok(TileOutput {
            confidence: confidence.iter().map(|&c| confidence_to_byte(c)).collect(),
            class,
            ndvi,
            change,
            parcel: farm.parcel,
            coverage,
        })
    }

    /// The archive of the earlier periods over a tile: NDVI statistics over its read window
    /// (for the classifier), classes and confidences over its core, and the signal runs of the
    /// period before.
    fn read_archive(&self, tile: &Tile) -> Result<TileArchive> {
        let open = |p: &Path| {
            Dataset::open(p).map_err(|e| {
                Error::input(
                    p,
                    e.to_string(),
                    "the archive of an earlier period is damaged: re-run that period",
                )
            })
        };
        let mut archive = TileArchive::default();
        for entry in self.history {
            let ds = open(&entry.ndvi())?;
            let band = |b| -> Result<Vec<f32>> {
                let raw = read_grid_window::<u8>(&ds, b, tile.read, NDVI_NODATA)?;
                Ok(raw.into_iter().map(byte_to_ndvi).collect())
            };
            archive.ndvi.push(NdviStats {
                median: band(1)?,
                min: band(2)?,
                max: band(3)?,
            });
            let ds = open(&entry.class())?;
            archive
                .classes
                .push(read_grid_window::<u8>(&ds, 1, tile.core, 0)?);
            archive
                .confidences
                .push(read_grid_window::<u8>(&ds, 2, tile.core, 0)?);
        }
        if let Some(entry) = self.history.first() {
            let ds = open(&entry.signals())?;
            let band = |b| read_grid_window::<u8>(&ds, b, tile.core, 0);
            archive.runs = Some([band(1)?, band(2)?, band(3)?]);
        }
        Ok(archive)
    }
}

#[derive(Default)]
struct TileArchive {
    ndvi: Vec<NdviStats>,
    classes: Vec<Vec<u8>>,
    confidences: Vec<Vec<u8>>,
    runs: Option<[Vec<u8>; 3]>,
}

/// The core outputs of one tile.
pub(crate) struct TileOutput {
    pub class: Vec<u8>,
    /// Classifier confidence as bytes.
    pub confidence: Vec<u8>,
    /// median, min, max
    pub ndvi: [Vec<u8>; 3],
    pub change: ChangeTile,
    /// Farmland parcel under each pixel (feature id + 1, 0 = none).
    pub parcel: Vec<i32>,
    /// Watched pixels per county and those seen clear.
    pub coverage: Coverage,
}

/// The first bytes of a tile checkpoint: checkpoints of another layout are redone.
const CHECKPOINT_FORMAT: u64 = 2;

impl TileOutput {
    /// Lossless bytes for a checkpoint.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = CHECKPOINT_FORMAT.to_le_bytes().to_vec();
        out.extend(self.coverage.to_bytes());
        for v in self.byte_layers() {
            out.extend_from_slice(v);
        }
        out.extend(self.change.key.iter().flat_map(|k| k.to_le_bytes()));
        out.extend(self.parcel.iter().flat_map(|k| k.to_le_bytes()));
        out
    }

    fn byte_layers(&self) -> impl Iterator<Item = &Vec<u8>> {
        [&self.class, &self.confidence, &self.change.flag]
            .into_iter()
            .chain(&self.ndvi)
            .chain(&self.change.runs)
            .chain(&self.change.attrs)
    }

    /// The inverse of `to_bytes` for `tile`; `None` when the bytes do not fit the tile.
    fn from_bytes(tile: &Tile, b: &[u8]) -> Option<TileOutput> {
        let n = tile.core.len();
        let layers = 3 + 3 + 3 + attr_band::COUNT;
        if b.get(..8)? != CHECKPOINT_FORMAT.to_le_bytes() {
            return None;
        }
        let (coverage, used) = Coverage::from_bytes(&b[8..])?;
        let mut at = 8 + used;
        if b.len() != at + layers * n + 2 * n + 4 * n {
            return None;
        }
        let mut take = |len: usize| {
            let s = &b[at..at + len];
            at += len;
            s
        };
        let mut layer = || take(n).to_vec();
        let (class, confidence, flag) = (layer(), layer(), layer());
        let ndvi = [layer(), layer(), layer()];
        let runs = [layer(), layer(), layer()];
        let attrs = std::array::from_fn(|_| layer());
        let key = take(2 * n)
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let parcel = take(4 * n)
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(TileOutput {
            class,
            confidence,
            ndvi,
            change: ChangeTile {
                runs,
                flag,
                key,
                attrs,
            },
            parcel,
            coverage,
        })
    }
}
