//! Map tiles of a period's archived composite in true colour, for the portal's map.
//!
//! Takes: a period's `composite.tif` (reflectance × 10,000 in the sensor profile's band
//! order, in the job's grid CRS) and the profile. Gives: 256-pixel PNG tiles in the Web
//! Mercator tiling every web map uses (`z/x/y`, EPSG:3857), transparent where the period saw
//! nothing; the extent of the composite in degrees, for the map to ask only tiles that hold
//! something.
//!
//! One stretch per period (robust percentiles of the whole composite, read from its
//! overviews), so that neighbouring tiles match at their seams.

use super::Stretch;
use crate::error::{Error, Result};
use crate::geo::composite::{look_to_reflectance, LOOK_NODATA};
use crate::geo::raster::{
    gdal_warp, last_gdal_error, lon_lat, transform_between, transform_bounds,
};
use crate::geo::sensor::SensorProfile;
use gdal::Dataset;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Pixels a side of a tile.
pub const TILE: usize = 256;
/// Half the side of the Web Mercator square, in metres.
const HALF_WORLD_M: f64 = 20_037_508.342_789_244;
/// Tiles deeper than this are refused: 0.3 m pixels at the equator, finer than any imagery a
/// job reads (Gaofen-2's pan band is 0.8 m).
pub const MAX_ZOOM: u8 = 19;

/// True-colour tiles of one period's composite.
#[derive(Debug, Clone)]
pub struct TrueColourTiles {
    composite: PathBuf,
    /// Band numbers (from 1) of red, green and blue in the composite.
    rgb: [usize; 3],
    stretch: [Stretch; 3],
    /// West, south, east, north in degrees.
    bounds: [f64; 4],
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::input(
        path,
        format!("cannot be read for map tiles ({e})"),
        "run the period again (`gengbao run --period P`) to rewrite its composite",
    )
}

impl TrueColourTiles {
    /// Reads the extent and the stretch of `composite`, made by a job of sensor `profile`.
    pub fn open(composite: &Path, profile: &SensorProfile) -> Result<TrueColourTiles> {
        let ds = Dataset::open(composite).map_err(|e| unreadable(composite, e))?;
        let band_of = |name: &str| {
            profile
                .bands
                .iter()
                .position(|b| *b == name)
                .map(|i| i + 1)
                .expect("a profile's canonical bands are its own")
        };
        let [blue, green, red, _] = profile.canonical;
        let rgb = [band_of(red), band_of(green), band_of(blue)];
        if ds.raster_count() != profile.bands.len() {
            return Err(unreadable(
                composite,
                format!(
                    "it holds {} bands, sensor profile `{}` has {}",
                    ds.raster_count(),
                    profile.name,
                    profile.bands.len()
                ),
            ));
        }
        let (width, height) = ds.raster_size();
        // At most 512 pixels a side: GDAL reads the overview nearest that size.
        let scale = (width.max(height) as f64 / 512.0).max(1.0);
        let size = (
            ((width as f64 / scale).round() as usize).max(1),
            ((height as f64 / scale).round() as usize).max(1),
        );
        let mut stretch = [Stretch::robust(Vec::new()); 3];
        for (k, b) in rgb.into_iter().enumerate() {
            let band = ds.rasterband(b).map_err(|e| unreadable(composite, e))?;
            let values = band
                .read_as::<i16>((0, 0), (width, height), size, None)
                .map_err(|e| unreadable(composite, e))?;
            let seen = values
                .into_shape_and_vec()
                .1
                .into_iter()
                .map(look_to_reflectance);
            stretch[k] = Stretch::robust(seen.collect());
        }
        let gt = ds.geo_transform().map_err(|e| unreadable(composite, e))?;
        let mut srs = ds.spatial_ref().map_err(|e| unreadable(composite, e))?;
        srs.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
        let (x0, y0) = (gt[0], gt[3]);
        let (x1, y1) = (x0 + gt[1] * width as f64, y0 + gt[5] * height as f64);
        let to_degrees = transform_between(&srs, &lon_lat()?)?;
        let (w, s, e, n) = transform_bounds(
            &to_degrees,
            (x0.min(x1), y0.min(y1), x0.max(x1), y0.max(y1)),
        )?;
        Ok(TrueColourTiles {
            composite: composite.to_path_buf(),
            rgb,
            stretch,
            bounds: [w, s, e, n],
        })
    }

    /// West, south, east, north of the composite in degrees.
    pub fn bounds(&self) -> [f64; 4] {
        self.bounds
    }

    /// Tile `x`, `y` of zoom level `z` as a PNG: transparent where the period has no look.
    pub fn tile(&self, z: u8, x: u32, y: u32) -> Result<Vec<u8>> {
        let count = 1u64 << z.min(MAX_ZOOM);
        if z > MAX_ZOOM || x as u64 >= count || y as u64 >= count {
            return Err(Error::usage(
                format!("no tile {z}/{x}/{y}"),
                format!("zoom levels go from 0 to {MAX_ZOOM}, x and y from 0 to 2^z - 1"),
            ));
        }
        let side = 2.0 * HALF_WORLD_M / count as f64;
        let west = -HALF_WORLD_M + x as f64 * side;
        let north = HALF_WORLD_M - y as f64 * side;
        let mut img = image::RgbaImage::new(TILE as u32, TILE as u32);
        // A tile beyond the composite is empty: no warp for it.
        if self.overlaps(west, north - side, west + side, north) {
            let rgb = self.warped(west, north - side, west + side, north)?;
            for (i, px) in img.pixels_mut().enumerate() {
                let [r, g, b] = [0, 1, 2].map(|k| look_to_reflectance(rgb[k][i]));
                if r.is_finite() && g.is_finite() && b.is_finite() {
                    let [r, g, b] = [(0, r), (1, g), (2, b)].map(|(k, v)| self.stretch[k].apply(v));
                    *px = image::Rgba([r, g, b, 255]);
                }
            }
        }
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| unreadable(&self.composite, e))?;
        Ok(png)
    }

    /// Whether a box in Web Mercator metres meets the composite's extent.
    fn overlaps(&self, west: f64, south: f64, east: f64, north: f64) -> bool {
        let lon = |x: f64| x / HALF_WORLD_M * 180.0;
        let lat = |y: f64| {
            (y / HALF_WORLD_M * std::f64::consts::PI)
                .sinh()
                .atan()
                .to_degrees()
        };
        let [w, s, e, n] = self.bounds;
        lon(west) <= e && lon(east) >= w && lat(south) <= n && lat(north) >= s
    }

    /// Red, green and blue of the composite warped onto a tile's extent in EPSG:3857.
    fn warped(&self, west: f64, south: f64, east: f64, north: f64) -> Result<[Vec<i16>; 3]> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let source = Dataset::open(&self.composite).map_err(|e| unreadable(&self.composite, e))?;
        let bands = self.rgb.map(|b| b.to_string());
        let vrt_options = gdal::programs::raster::BuildVRTOptions::new([
            "-b", &bands[0], "-b", &bands[1], "-b", &bands[2],
        ])?;
        let vrt = gdal::programs::raster::build_vrt(None, &[source], Some(vrt_options))
            .map_err(|e| unreadable(&self.composite, e))?;
        let out = PathBuf::from(format!(
            "/vsimem/gengbao-tile-{}-{}.tif",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let args: Vec<String> = [
            "-t_srs",
            "EPSG:3857",
            "-te",
            &west.to_string(),
            &south.to_string(),
            &east.to_string(),
            &north.to_string(),
            "-ts",
            &TILE.to_string(),
            &TILE.to_string(),
            "-r",
            "bilinear",
            "-dstnodata",
            &LOOK_NODATA.to_string(),
            "-of",
            "GTiff",
        ]
        .map(String::from)
        .to_vec();
        let result = gdal_warp(&[vrt], &args, &out)
            .map_err(|e| unreadable(&self.composite, e))
            .and_then(|()| {
                let ds = Dataset::open(&out).map_err(|e| unreadable(&self.composite, e))?;
                let read = |b: usize| -> Result<Vec<i16>> {
                    Ok(ds
                        .rasterband(b)?
                        .read_as::<i16>((0, 0), (TILE, TILE), (TILE, TILE), None)?
                        .into_shape_and_vec()
                        .1)
                };
                Ok([read(1)?, read(2)?, read(3)?])
            });
        if gdal::vsi::unlink_mem_file(&out).is_err() && result.is_ok() {
            return Err(unreadable(&self.composite, last_gdal_error()));
        }
        result
    }
}

/// The tile `(x, y)` of zoom level `z` that holds (`lon`, `lat`) in degrees.
pub fn tile_at(lon: f64, lat: f64, z: u8) -> (u32, u32) {
    let n = f64::from(1u32 << z.min(MAX_ZOOM));
    let lat = lat.to_radians();
    let x = (lon + 180.0) / 360.0 * n;
    let y = (1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * n;
    (x as u32, y as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiles of a composite that does not exist: any read fails.
    fn tiles_of_nothing(bounds: [f64; 4]) -> TrueColourTiles {
        TrueColourTiles {
            composite: PathBuf::from("/nonexistent/composite.tif"),
            rgb: [3, 2, 1],
            stretch: [Stretch::robust(Vec::new()); 3],
            bounds,
        }
    }

    #[test]
    fn tiles_beyond_the_composite_are_empty_without_reading_it() {
        let tiles = tiles_of_nothing([117.0, 31.6, 117.03, 31.64]);
        let png = tiles.tile(10, 0, 0).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgba8();
        assert!(img.pixels().all(|p| p.0[3] == 0));
        // The zoom-10 tile holding the box is read (and fails here).
        let (x, y) = tile_at(117.0, 31.62, 10);
        assert_eq!(x, ((117.0 + 180.0) / 360.0 * 1024.0) as u32);
        assert!(tiles.tile(10, x, y).is_err());
    }

    #[test]
    fn tiles_beyond_the_zoom_levels_or_the_world_are_refused() {
        let tiles = tiles_of_nothing([0.0; 4]);
        for (z, x, y) in [(1, 2, 0), (1, 0, 2), (MAX_ZOOM + 1, 0, 0)] {
            let refused = tiles.tile(z, x, y).unwrap_err().to_string();
            assert!(
                refused.contains(&format!("no tile {z}/{x}/{y}")),
                "{refused}"
            );
        }
    }
}
