//! Vectorisation: turns the job-wide patch-key raster into polygons.
//!
//! Takes: a raster on the job grid whose value encodes county and change type for every
//! flagged pixel (0 elsewhere). Gives: one polygon per 4-connected run of equal values.
//! Because it runs on the whole mosaic, not per tile, a patch that crosses a tile seam comes
//! out whole; because county is part of the value, a patch crossing a county border is cut
//! there, and each county receives its own part.

use crate::error::{Error, GdalContext, Result};
use gdal::vector::{Geometry, LayerAccess, LayerOptions};
use gdal::{Dataset, DriverManager};
use std::path::Path;

/// Value of a flagged pixel in the key raster.
pub fn patch_key(county_index: u16, flag: u8) -> u16 {
    county_index * 4 + u16::from(flag)
}

/// (county index, flag) of a key.
pub fn split_key(key: i64) -> (usize, u8) {
    ((key / 4) as usize, (key % 4) as u8)
}

/// Polygonises band 1 of `path`, ignoring zeros. Returns (key, polygon) in scan order.
pub fn polygonize(path: &Path) -> Result<Vec<(i64, Geometry)>> {
    let src = Dataset::open(path).in_file(path, "internal scratch file; re-run the period")?;
    let band = src.rasterband(1)?;
    let mut mem = DriverManager::get_driver_by_name("Memory")?.create_vector_only("")?;
    let srs = src.spatial_ref()?;
    let layer = mem.create_layer(LayerOptions {
        name: "patches",
        srs: Some(&srs),
        ty: gdal_sys::OGRwkbGeometryType::wkbPolygon,
        options: None,
    })?;
    layer.create_defn_fields(&[("key", gdal_sys::OGRFieldType::OFTInteger)])?;
    // SAFETY: band and layer handles are valid while `src` and `mem` live; the band doubles as
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
            format!("polygonize failed: {}", crate::raster::last_gdal_error()),
            "re-run the period; report this if it persists",
        ));
    }
    let mut layer = mem.layer(0)?;
    let mut out = Vec::new();
    for f in layer.features() {
        let key = f.field_as_integer(0)?.unwrap_or(0);
        if let Some(g) = f.geometry() {
            out.push((i64::from(key), g.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
