//! Vectorisation: turns the job-wide patch-key raster into polygons.
//!
//! Takes: a raster on the job grid whose value encodes county and change type for every
//! flagged pixel (0 elsewhere). Gives: one polygon per 4-connected run of equal values, as a
//! stream read from a scratch file, so memory does not grow with the number of polygons.
//! Because it runs on the whole mosaic, not per tile, a patch that crosses a tile seam comes
//! out whole; because county is part of the value, a patch crossing a county border is cut
//! there, and each county receives its own part.

use crate::error::{Error, GdalContext, Result};
use gdal::vector::{Geometry, LayerAccess, LayerOptions, OwnedFeatureIterator};
use gdal::{Dataset, DriverManager};
use std::path::{Path, PathBuf};

/// Value of a flagged pixel in the key raster.
pub fn patch_key(county_index: u16, flag: u8) -> u16 {
    county_index * 4 + u16::from(flag)
}

/// (county index, flag) of a key.
pub(crate) fn split_key(key: i64) -> (usize, u8) {
    ((key / 4) as usize, (key % 4) as u8)
}

/// The polygons of a key raster, read back one at a time in scan order.
///
/// GDAL's polygoniser writes every 4-connected run, and nearly all of them are scattered
/// pixels that the minimum mapping unit then drops (336,000 polygons for 1,247 patches on the
/// peer harness's 16384² scene). Holding them in a Memory layer made memory grow with area, so they are
/// written to a scratch FlatGeobuf (no spatial index: features stay in write order) and
/// streamed from there.
pub struct Polygons {
    /// None when nothing was flagged (GDAL writes no FlatGeobuf file without features).
    features: Option<OwnedFeatureIterator>,
    path: PathBuf,
}

impl Iterator for Polygons {
    /// (key, polygon)
    type Item = Result<(i64, Geometry)>;

    fn next(&mut self) -> Option<Self::Item> {
        let feature = self.features.as_mut()?.next()?;
        let key = match feature.field_as_integer(0) {
            Ok(key) => i64::from(key.unwrap_or(0)),
            Err(e) => return Some(Err(e.into())),
        };
        match feature.geometry() {
            Some(g) => Some(Ok((key, g.clone()))),
            None => Some(Err(Error::input(
                &self.path,
                "a polygon without a geometry",
                "internal scratch file; re-run the period",
            ))),
        }
    }
}

/// Polygonises band 1 of `path`, ignoring zeros, through the scratch file `scratch` (replaced
/// if present; the caller's work folder removes it).
pub fn polygonize(path: &Path, scratch: &Path) -> Result<Polygons> {
    let src = Dataset::open(path).in_file(path, "internal scratch file; re-run the period")?;
    let band = src.rasterband(1)?;
    if scratch.exists() {
        std::fs::remove_file(scratch).map_err(|e| Error::io(scratch, e))?;
    }
    let mut out = DriverManager::get_driver_by_name("FlatGeobuf")?
        .create_vector_only(scratch)
        .in_file(scratch, "check that the work folder is writable")?;
    let srs = src.spatial_ref()?;
    let layer = out.create_layer(LayerOptions {
        name: "polygons",
        srs: Some(&srs),
        ty: gdal_sys::OGRwkbGeometryType::wkbPolygon,
        options: Some(&["SPATIAL_INDEX=NO"]),
    })?;
    layer.create_defn_fields(&[("key", gdal_sys::OGRFieldType::OFTInteger)])?;
    // SAFETY: band and layer handles are valid while `src` and `out` live; the band doubles as
    // its own mask so zeros (no change) produce no polygons.
    let rv = unsafe {
        let hband = band.c_rasterband();
        gdal_sys::GDALPolygonize(
            hband,
            hband,
            layer.c_layer(),
            0,
            std::ptr::null_mut(),
            None,
            std::ptr::null_mut(),
        )
    };
    if rv != gdal_sys::CPLErr::CE_None {
        return Err(Error::input(
            path,
            format!(
                "polygonize failed: {}",
                crate::geo::raster::last_gdal_error()
            ),
            "re-run the period; report this if it persists",
        ));
    }
    let count = layer.feature_count();
    // Closing flushes the file; it is then read as written.
    out.close()?;
    let features = if count == 0 {
        None
    } else {
        let ds =
            Dataset::open(scratch).in_file(scratch, "internal scratch file; re-run the period")?;
        Some(ds.into_layer(0)?.owned_features())
    };
    Ok(Polygons {
        features,
        path: scratch.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_equal_keys_stream_out_as_polygons_in_scan_order() {
        use crate::geo::grid::JobGrid;
        use crate::geo::raster::GridTiff;
        let tmp = tempfile::tempdir().unwrap();
        let crs = gdal::spatial_ref::SpatialRef::from_epsg(32650)
            .unwrap()
            .to_wkt()
            .unwrap();
        // 6 x 4 pixels of 10 m: an FNH block, an FLH block touching it, a lone PH pixel.
        let grid = JobGrid::covering(crs, (0.0, 0.0, 60.0, 40.0), 10.0, 256, 0).unwrap();
        let (fnh, flh, ph) = (patch_key(1, 1), patch_key(1, 2), patch_key(1, 3));
        #[rustfmt::skip]
        let keys = vec![
            fnh, fnh, flh, flh, 0, 0,
            fnh, fnh, flh, flh, 0, 0,
            0,   0,   0,   0,   0, ph,
            0,   0,   0,   0,   0, 0,
        ];
        let path = tmp.path().join("key.tif");
        let mut tiff = GridTiff::create::<u16>(&path, &grid, 1, None).unwrap();
        tiff.write(1, grid.full_window(), keys).unwrap();
        tiff.close().unwrap();
        let scratch = tmp.path().join("key.fgb");
        std::fs::write(&scratch, b"left over from an earlier run").unwrap();
        let polygons: Vec<(i64, f64)> = polygonize(&path, &scratch)
            .unwrap()
            .map(|p| p.map(|(key, g)| (key, g.area())).unwrap())
            .collect();
        assert_eq!(
            polygons,
            vec![
                (i64::from(fnh), 400.0),
                (i64::from(flh), 400.0),
                (i64::from(ph), 100.0)
            ]
        );
        // Nothing flagged: no polygons, and no error for the file GDAL did not write.
        let mut tiff = GridTiff::create::<u16>(&path, &grid, 1, None).unwrap();
        tiff.write(1, grid.full_window(), vec![0; 24]).unwrap();
        tiff.close().unwrap();
        assert_eq!(polygonize(&path, &scratch).unwrap().count(), 0);
    }

    #[test]
    fn keys_round_trip() {
        for county in [1u16, 7, 300] {
            for flag in 1u8..=3 {
                assert_eq!(
                    split_key(i64::from(patch_key(county, flag))),
                    (county as usize, flag)
                );
            }
        }
    }
}
