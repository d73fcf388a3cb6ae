//! The flag raster and the scratch rasters the patch stage reads, written tile by tile; closed,
//! they turn into the period's patches.

use crate::domain::change::{ChangeType, FLAG_OUTSIDE};
use crate::engine::judge::ChangeTile;
use crate::engine::patches::{self, attr_band, Patch, PeriodInfo};
use crate::error::Result;
use crate::geo::grid::{JobGrid, Window};
use crate::geo::layers::Admin;
use crate::geo::raster::GridTiff;
use crate::geo::vectorise::polygonize;
use gdal::Dataset;
use std::path::{Path, PathBuf};

/// Hands the memory the tile stage freed back to the system before the patch stage.
///
/// glibc keeps what a worker thread frees in that thread's arena, where the main thread's
/// patch stage cannot reuse it, so the patch stage's allocations (GDAL's block cache refilled,
/// the polygoniser) came on top of the tile stage's high-water mark.
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the system.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The flag raster (a result) and the key, attribute and parcel rasters (scratch, in `work`).
pub(crate) struct ChangeRasters {
    flags: GridTiff,
    key: GridTiff,
    attrs: GridTiff,
    parcel: GridTiff,
    key_path: PathBuf,
    attrs_path: PathBuf,
    parcel_path: PathBuf,
}

impl ChangeRasters {
    pub fn create(flags_path: &Path, work: &Path, grid: &JobGrid) -> Result<Self> {
        let key_path = work.join("patch_key.tif");
        let attrs_path = work.join("attrs.tif");
        let parcel_path = work.join("parcel.tif");
        Ok(ChangeRasters {
            flags: GridTiff::create::<u8>(flags_path, grid, 1, Some(f64::from(FLAG_OUTSIDE)))?,
            key: GridTiff::create_scratch::<u16>(&key_path, grid, 1, None)?,
            attrs: GridTiff::create_scratch::<u8>(&attrs_path, grid, attr_band::COUNT, None)?,
            parcel: GridTiff::create_scratch::<i32>(&parcel_path, grid, 1, None)?,
            key_path,
            attrs_path,
            parcel_path,
        })
    }

    /// Writes a tile's change step and its parcels (feature id + 1, 0 = none) into window `w`.
    pub fn write(&mut self, w: Window, change: ChangeTile, parcel: Vec<i32>) -> Result<()> {
        self.flags.write(1, w, change.flag)?;
        self.key.write(1, w, change.key)?;
        self.parcel.write(1, w, parcel)?;
        for (b, data) in change.attrs.into_iter().enumerate() {
            self.attrs.write(b + 1, w, data)?;
        }
        Ok(())
    }

    /// Closes the rasters and turns the flagged pixels into patches (see [`patches::build`]).
    pub(crate) fn into_patches(
        self,
        grid: &JobGrid,
        admin: &Admin,
        info: &PeriodInfo,
        min_area: impl Fn(ChangeType) -> f64,
        keep: impl Fn(&Patch) -> bool,
    ) -> Result<Vec<Patch>> {
        self.flags.close()?;
        self.key.close()?;
        self.attrs.close()?;
        self.parcel.close()?;
        release_freed_memory();
        let polygons = polygonize(&self.key_path, &self.key_path.with_extension("fgb"))?;
        let attrs = Dataset::open(&self.attrs_path)?;
        let parcel = Dataset::open(&self.parcel_path)?;
        patches::build(polygons, &attrs, &parcel, grid, admin, info, min_area, keep)
    }
}
