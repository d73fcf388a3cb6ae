//! One tile of a period, in two passes. First from its imagery: composite the acquisitions
//! that cover it, classify (with the archived NDVI of earlier periods), place it among the
//! counties and parcels; a finished tile is checkpointed, so an interrupted run redoes only
//! the tiles it had not finished. Then, once the scene's change statistics are known
//! ([`ComparedLook`]): judge every pixel through the engine's change step, from the first
//! pass's rasters and the archive.

use crate::classify::{Classifier, ClassifierInput};
use crate::domain::change::Rules;
use crate::domain::coverage::Coverage;
use crate::domain::land_cover::LandCover;
use crate::domain::period::Period;
use crate::engine::judge::{
    byte_to_confidence, confidence_to_byte, judge_tile, ChangeTile, History, Observation,
};
use crate::engine::scene_change::{self, SceneChange, TileLooks};
use crate::error::{Error, Result};
use crate::geo::composite::{
    self, byte_to_ndvi, hide_unwatched, look_to_reflectance, ndvi_to_byte, reflectance_to_look,
    ArchivedPeriod, NdviStats, LOOK_NODATA, NDVI_NODATA,
};
use crate::geo::grid::{overlaps, Bounds, JobGrid, Tile, Window};
use crate::geo::imagery::Acquisition;
use crate::geo::layers::{Admin, Farmland};
use crate::geo::raster::{read_grid_window, GridTiff};
use crate::geo::sensor::SensorProfile;
use crate::job::checkpoint::{key_of, Checkpoints, Saved};
use crate::job::layout::{OutputLayout, PeriodFiles};
use gdal::Dataset;
use ndarray::Array2;
use std::path::Path;

/// Everything a tile needs, shared read-only by the workers.
pub(crate) struct PeriodContext<'a> {
    pub grid: &'a JobGrid,
    pub profile: &'static SensorProfile,
    /// The period's acquisitions with their extents in the grid CRS.
    pub acquisitions: &'a [Located],
    /// The job's DN offset of the imagery, overriding the products' own.
    pub add_offset: Option<f32>,
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

    /// Composites and classifies one tile from the acquisitions that cover it, and places
    /// it among the counties and parcels.
    fn process(&self, tile: &Tile, covering: &[&Acquisition]) -> Result<TileOutput> {
        let grid = self.grid;
        let comp = composite::build(covering, self.profile, self.add_offset, grid, tile.read)?;
        let history = self.read_history(tile)?;
        let classified = self.classifier.classify(&ClassifierInput {
            profile: self.profile,
            composite: &comp,
            history: &history,
            runner_up: false,
            wanted: None,
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
        let look = comp
            .bands
            .outer_iter()
            .flat_map(|band| {
                tile.crop_core(band.as_slice().expect("a composite band is contiguous"))
            })
            .map(reflectance_to_look)
            .collect();
        let clear = tile.crop_core(&comp.clear_count);
        let county = self.admin.rasterize(grid, tile.core)?;
        let farm = self
            .farmland
            .rasterize(grid, &grid.spatial_ref()?, tile.core)?;
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
            look,
            ground: Ground {
                county,
                parcel: farm.parcel,
                basic: farm.basic,
            },
            coverage,
        })
    }

    /// The earlier periods over a tile's read window, for the classifier: their NDVI
    /// statistics, and their looks as far back as the classifier reads earlier bands (a
    /// period archived before looks were kept has none: the classifier stands in the later
    /// one).
    fn read_history(&self, tile: &Tile) -> Result<Vec<ArchivedPeriod>> {
        let bands_reach = self.classifier.earlier_bands_reach();
        self.history
            .iter()
            .enumerate()
            .map(|(k, entry)| {
                let ds = open_archived(&entry.ndvi())?;
                let band = |b| -> Result<Vec<f32>> {
                    let raw = read_grid_window::<u8>(&ds, b, tile.read, NDVI_NODATA)?;
                    Ok(raw.into_iter().map(byte_to_ndvi).collect())
                };
                let bands = if k < bands_reach && entry.look().exists() {
                    Some(read_look(entry, self.profile, tile.read)?)
                } else {
                    None
                };
                Ok(ArchivedPeriod {
                    ndvi: NdviStats {
                        median: band(1)?,
                        min: band(2)?,
                        max: band(3)?,
                    },
                    bands,
                })
            })
            .collect()
    }

    /// Judges every pixel of a tile's core through the engine's change step, from what the
    /// tile stage wrote into `staged` (classes, NDVI, the ground), the archive of the earlier
    /// periods, and the scene's change decision against the compared look.
    pub fn judge(
        &self,
        tile: &Tile,
        staged: &PeriodFiles,
        compared: Option<&ComparedLook>,
    ) -> Result<(ChangeTile, Vec<i32>)> {
        let w = tile.core;
        let ds = open_archived(&staged.class())?;
        let class = read_grid_window::<u8>(&ds, 1, w, 0)?;
        let confidence = read_grid_window::<u8>(&ds, 2, w, 0)?;
        let ds = open_archived(&staged.ndvi())?;
        let ndvi_min = read_grid_window::<u8>(&ds, 2, w, NDVI_NODATA)?;
        let ndvi_max = read_grid_window::<u8>(&ds, 3, w, NDVI_NODATA)?;
        let ground = Ground::read(staged, w)?;
        let archive = self.read_archive(tile)?;
        let departed = match compared {
            Some(c) => {
                let l = c.looks(staged, &ground.parcel, w)?;
                Some(c.scene.changed(l.before.view(), l.after.view(), l.width))
            }
            None => None,
        };

        // The farmland layer is the baseline: 耕地 parcels are grain land.
        let baseline = LandCover::Grain.code();
        let history = History {
            classes: &archive.classes,
            confidences: &archive.confidences,
            periods: self.archived,
        };
        let change = judge_tile(w.len(), &self.rules, history, |i| {
            if ground.county[i] == 0 {
                return None;
            }
            // From the archived bytes, so that a period is judged the same now and when it is
            // read back as history.
            let cultivation = self
                .rules
                .cultivation
                .seen(byte_to_ndvi(ndvi_min[i]), byte_to_ndvi(ndvi_max[i]));
            Some(Observation {
                county: ground.county[i],
                watched: ground.parcel[i] != 0,
                basic: ground.basic[i],
                baseline,
                now: class[i],
                confidence: byte_to_confidence(confidence[i]),
                cultivation,
                runs_before: archive
                    .runs
                    .as_ref()
                    .map_or([0; 3], |b| std::array::from_fn(|k| b[k][i])),
                sure: true,
                departed: departed.as_ref().and_then(|d| scene_change::departed(d[i])),
            })
        });
        Ok((change, ground.parcel))
    }

    /// The classes, confidences and signal runs of the earlier periods over a tile's core.
    fn read_archive(&self, tile: &Tile) -> Result<TileArchive> {
        let mut archive = TileArchive::default();
        for entry in self.history {
            let ds = open_archived(&entry.class())?;
            archive
                .classes
                .push(read_grid_window::<u8>(&ds, 1, tile.core, 0)?);
            archive
                .confidences
                .push(read_grid_window::<u8>(&ds, 2, tile.core, 0)?);
        }
        if let Some(entry) = self.history.first() {
            let ds = open_archived(&entry.signals())?;
            let band = |b| read_grid_window::<u8>(&ds, b, tile.core, 0);
            archive.runs = Some([band(1)?, band(2)?, band(3)?]);
        }
        Ok(archive)
    }
}

fn open_archived(p: &Path) -> Result<Dataset> {
    Dataset::open(p).map_err(|e| {
        Error::input(
            p,
            e.to_string(),
            "the archive of an earlier period is damaged: re-run that period",
        )
    })
}

/// The look a period is compared with (the same season a year before) and the scene's
/// change decision between the two.
pub(crate) struct ComparedLook {
    pub period: Period,
    pub files: PeriodFiles,
    pub profile: &'static SensorProfile,
    pub scene: SceneChange,
}

impl ComparedLook {
    /// The archived look a period is compared with: the same period a year before, when it
    /// was archived with its look. The seasons match, so a ploughed field compares with last
    /// year's ploughed field, and a change whose classes lag its first sign (a young orchard
    /// called grain for a period) still compares with the ground before it. The period before
    /// would not do: sowing and harvest make every field depart from it. `None` in a job's
    /// first year.
    pub fn archived_for(layout: &OutputLayout, period: Period) -> Option<(Period, PeriodFiles)> {
        let p = period.offset(-Period::PER_YEAR);
        let files = layout.period(p);
        (files.summary().exists() && files.look().exists()).then_some((p, files))
    }

    /// Learns the scene's change decision between `files` and this period's look (written
    /// into `staged`) over the watched parcels of `tiles`. `None` when fewer than two watched
    /// pixels were seen in both.
    pub fn learn(
        period: Period,
        files: PeriodFiles,
        profile: &'static SensorProfile,
        staged: &PeriodFiles,
        tiles: &[Tile],
    ) -> Result<Option<ComparedLook>> {
        let (scene, _) = SceneChange::learn(tiles, |t| {
            let parcel = Ground::read(staged, t.core)?.parcel;
            watched_looks(&files, staged, profile, &parcel, t.core)
        })?;
        Ok(scene.map(|scene| ComparedLook {
            period,
            files,
            profile,
            scene,
        }))
    }

    fn looks(&self, staged: &PeriodFiles, parcel: &[i32], w: Window) -> Result<TileLooks> {
        watched_looks(&self.files, staged, self.profile, parcel, w)
    }
}

/// The compared look and this period's over a window, NaN off the watched parcels: the
/// decision is the farmland's.
fn watched_looks(
    before: &PeriodFiles,
    staged: &PeriodFiles,
    profile: &SensorProfile,
    parcel: &[i32],
    w: Window,
) -> Result<TileLooks> {
    let watched = |mut look: Array2<f32>| {
        for mut band in look.outer_iter_mut() {
            hide_unwatched(
                band.as_slice_mut().expect("a look is in standard layout"),
                parcel,
            );
        }
        look
    };
    Ok(TileLooks {
        before: watched(read_look(before, profile, w)?),
        after: watched(read_look(staged, profile, w)?),
        width: w.width,
    })
}

/// A period's look over a window, band × pixel, NaN where it saw nothing clear.
fn read_look(files: &PeriodFiles, profile: &SensorProfile, w: Window) -> Result<Array2<f32>> {
    let ds = open_archived(&files.look())?;
    let bands = ds.raster_count();
    if bands != profile.bands.len() {
        return Err(Error::input(
            files.look(),
            format!(
                "holds {bands} bands, the job's sensor profile `{}` has {}",
                profile.name,
                profile.bands.len()
            ),
            "run the job with the sensor profile its archive was made with, or start a new archive (another `[output] folder`) for the new sensor",
        ));
    }
    let mut out = Array2::from_elem((bands, w.len()), f32::NAN);
    for (b, mut row) in out.outer_iter_mut().enumerate() {
        let raw = read_grid_window::<i16>(&ds, b + 1, w, LOOK_NODATA)?;
        for (v, r) in raw.into_iter().zip(row.iter_mut()) {
            *r = look_to_reflectance(v);
        }
    }
    Ok(out)
}

#[derive(Default)]
struct TileArchive {
    classes: Vec<Vec<u8>>,
    confidences: Vec<Vec<u8>>,
    runs: Option<[Vec<u8>; 3]>,
}

/// Where each pixel of a tile's core lies: its county (1-based, 0 = outside), its farmland
/// parcel (feature id + 1, 0 = none) and whether that is permanent basic farmland. Written
/// by the tile stage to a scratch raster the change step reads.
pub(crate) struct Ground {
    pub county: Vec<u16>,
    pub parcel: Vec<i32>,
    pub basic: Vec<bool>,
}

impl Ground {
    /// Bands of the scratch raster: parcel, county, basic.
    pub const BANDS: usize = 3;

    pub fn write(self, tiff: &mut GridTiff, w: Window) -> Result<()> {
        tiff.write(2, w, self.county.iter().map(|&c| i32::from(c)).collect())?;
        tiff.write(3, w, self.basic.iter().map(|&b| i32::from(b)).collect())?;
        tiff.write(1, w, self.parcel)
    }

    fn read(staged: &PeriodFiles, w: Window) -> Result<Ground> {
        let ds = open_archived(&staged.ground())?;
        let band = |b| read_grid_window::<i32>(&ds, b, w, 0);
        Ok(Ground {
            parcel: band(1)?,
            county: band(2)?.into_iter().map(|c| c as u16).collect(),
            basic: band(3)?.into_iter().map(|b| b != 0).collect(),
        })
    }
}

/// The core outputs of one tile from its imagery (the change step comes after the scene's
/// statistics: [`PeriodContext::judge`]).
pub(crate) struct TileOutput {
    pub class: Vec<u8>,
    /// Classifier confidence as bytes.
    pub confidence: Vec<u8>,
    /// median, min, max
    pub ndvi: [Vec<u8>; 3],
    /// The composite's bands, band after band, as archived ([`reflectance_to_look`]).
    pub look: Vec<i16>,
    pub ground: Ground,
    /// Watched pixels per county and those seen clear.
    pub coverage: Coverage,
}

/// The first bytes of a tile checkpoint: checkpoints of another layout are redone.
const CHECKPOINT_FORMAT: u64 = 3;

impl TileOutput {
    /// Lossless bytes for a checkpoint.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = CHECKPOINT_FORMAT.to_le_bytes().to_vec();
        out.extend(self.coverage.to_bytes());
        for v in [&self.class, &self.confidence]
            .into_iter()
            .chain(&self.ndvi)
        {
            out.extend_from_slice(v);
        }
        out.extend(self.ground.basic.iter().map(|&b| u8::from(b)));
        out.extend(self.ground.county.iter().flat_map(|k| k.to_le_bytes()));
        out.extend(self.ground.parcel.iter().flat_map(|k| k.to_le_bytes()));
        out.extend(self.look.iter().flat_map(|k| k.to_le_bytes()));
        out
    }

    /// The inverse of `to_bytes` for `tile`; `None` when the bytes do not fit the tile.
    fn from_bytes(tile: &Tile, b: &[u8]) -> Option<TileOutput> {
        let n = tile.core.len();
        if b.get(..8)? != CHECKPOINT_FORMAT.to_le_bytes() {
            return None;
        }
        let (coverage, used) = Coverage::from_bytes(&b[8..])?;
        let mut at = 8 + used;
        // class, confidence, three NDVI layers and basic (bytes), county (2), parcel (4), and
        // a whole number of look bands (2 bytes a pixel each).
        let fixed = 6 * n + 2 * n + 4 * n;
        let rest = b.len().checked_sub(at + fixed)?;
        if n == 0 || rest % (2 * n) != 0 {
            return None;
        }
        let mut take = |len: usize| {
            let s = &b[at..at + len];
            at += len;
            s
        };
        let mut layer = || take(n).to_vec();
        let (class, confidence) = (layer(), layer());
        let ndvi = [layer(), layer(), layer()];
        let basic = layer().into_iter().map(|v| v != 0).collect();
        let county = take(2 * n)
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let parcel = take(4 * n)
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let look = take(rest)
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        Some(TileOutput {
            class,
            confidence,
            ndvi,
            look,
            ground: Ground {
                county,
                parcel,
                basic,
            },
            coverage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archived_look_of_another_sensor_is_named_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let files = PeriodFiles::in_dir(dir.path());
        let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
        // A four-band look (a Gaofen job's) where a Sentinel-2 job expects eleven bands.
        driver
            .create_with_band_type::<i16, _>(files.look(), 4, 4, 4)
            .unwrap();
        let s2 = SensorProfile::by_name("sentinel2-l2a").unwrap();
        let w = Window {
            x: 0,
            y: 0,
            width: 4,
            height: 4,
        };
        match read_look(&files, s2, w) {
            Err(Error::Input { path, problem, .. }) => {
                assert_eq!(path, files.look());
                assert!(problem.contains("4 bands"), "{problem}");
            }
            other => panic!("expected an input error, got {other:?}"),
        }
        let gf2 = SensorProfile::by_name("gf2-pms").unwrap();
        assert_eq!(read_look(&files, gf2, w).unwrap().dim(), (4, 16));
    }
}
