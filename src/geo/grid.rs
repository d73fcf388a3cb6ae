//! The job grid: one CRS, one resolution and one pixel lattice for the whole job, cut into
//! square tiles. Each tile reads a halo of extra pixels around it, for classifiers and
//! filters that look at a neighbourhood (the index baseline is per pixel); only the core is
//! written. Results do not depend on the tiling when the imagery is in the job CRS; when it
//! is reprojected, GDAL's approximate transformer may move a few pixels between tile sizes.

use crate::error::{Error, Result};
use gdal::spatial_ref::SpatialRef;
use gdal::GeoTransform;

#[derive(Debug, Clone)]
pub struct JobGrid {
    /// WKT of the grid CRS.
    pub crs_wkt: String,
    /// x of the left edge and y of the top edge, in grid CRS units.
    pub origin_x: f64,
    pub origin_y: f64,
    pub resolution: f64,
    pub width: usize,
    pub height: usize,
    pub tile_size: usize,
    pub halo: usize,
}

/// Areas in m² and the minimum mapping unit need a projected CRS in metres.
pub(crate) fn check_metric(srs: &SpatialRef) -> std::result::Result<(), String> {
    if !srs.is_projected() {
        return Err("is not projected (coordinates in degrees)".into());
    }
    if (srs.linear_units() - 1.0).abs() > 1e-9 {
        return Err(format!("has units of {} m, not metres", srs.linear_units()));
    }
    Ok(())
}

/// The EPSG code of the WGS 84 UTM zone holding a longitude and latitude.
pub(crate) fn utm_epsg(lon: f64, lat: f64) -> u32 {
    let zone = (((lon + 180.0) / 6.0).floor() as i64).clamp(0, 59) as u32 + 1;
    if lat >= 0.0 {
        32600 + zone
    } else {
        32700 + zone
    }
}

/// (min x, min y, max x, max y) in CRS units.
pub(crate) type Bounds = (f64, f64, f64, f64);

/// Whether two extents share some area.
pub(crate) fn overlaps(a: Bounds, b: Bounds) -> bool {
    a.0 < b.2 && a.2 > b.0 && a.1 < b.3 && a.3 > b.1
}

/// A pixel window of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub x: isize,
    pub y: isize,
    pub width: usize,
    pub height: usize,
}

impl Window {
    /// This window with `margin` more pixels on every side.
    pub fn grown(&self, margin: usize) -> Window {
        Window {
            x: self.x - margin as isize,
            y: self.y - margin as isize,
            width: self.width + 2 * margin,
            height: self.height + 2 * margin,
        }
    }

    /// The pixels both windows hold; `None` when they do not meet.
    pub fn intersection(&self, other: &Window) -> Option<Window> {
        let x = self.x.max(other.x);
        let y = self.y.max(other.y);
        let right = (self.x + self.width as isize).min(other.x + other.width as isize);
        let bottom = (self.y + self.height as isize).min(other.y + other.height as isize);
        (right > x && bottom > y).then(|| Window {
            x,
            y,
            width: (right - x) as usize,
            height: (bottom - y) as usize,
        })
    }

    pub fn len(&self) -> usize {
        self.width * self.height
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub col: usize,
    pub row: usize,
    /// The pixels this tile owns.
    pub core: Window,
    /// The core plus the halo; may reach outside the grid, where inputs read as nodata.
    pub read: Window,
}

impl Tile {
    pub fn id(&self) -> String {
        format!("r{:03}c{:03}", self.row, self.col)
    }

    /// Offset of the core inside the read window.
    pub(crate) fn core_offset(&self) -> (usize, usize) {
        (
            (self.core.x - self.read.x) as usize,
            (self.core.y - self.read.y) as usize,
        )
    }

    /// Copies the core part of a read-window raster.
    pub(crate) fn crop_core<T: Copy>(&self, data: &[T]) -> Vec<T> {
        let (ox, oy) = self.core_offset();
        let mut out = Vec::with_capacity(self.core.len());
        for r in 0..self.core.height {
            let start = (oy + r) * self.read.width + ox;
            out.extend_from_slice(&data[start..start + self.core.width]);
        }
        out
    }
}

impl JobGrid {
    /// A grid covering the envelope `(min_x, min_y, max_x, max_y)`, snapped outwards to whole
    /// multiples of the resolution so that every job over the same area shares one lattice.
    pub fn covering(
        crs_wkt: String,
        envelope: Bounds,
        resolution: f64,
        tile_size: usize,
        halo: usize,
    ) -> Result<Self> {
        let (min_x, min_y, max_x, max_y) = envelope;
        let left = (min_x / resolution).floor() * resolution;
        let top = (max_y / resolution).ceil() * resolution;
        let right = (max_x / resolution).ceil() * resolution;
        let bottom = (min_y / resolution).floor() * resolution;
        let width = ((right - left) / resolution).round() as usize;
        let height = ((top - bottom) / resolution).round() as usize;
        if width == 0 || height == 0 {
            return Err(Error::usage(
                "the area of interest is empty",
                "check that the admin layer has polygons in the job's CRS",
            ));
        }
        Ok(JobGrid {
            crs_wkt,
            origin_x: left,
            origin_y: top,
            resolution,
            width,
            height,
            tile_size,
            halo,
        })
    }

    pub fn geo_transform(&self) -> GeoTransform {
        [
            self.origin_x,
            self.resolution,
            0.0,
            self.origin_y,
            0.0,
            -self.resolution,
        ]
    }

    pub(crate) fn window_transform(&self, w: Window) -> GeoTransform {
        [
            self.origin_x + w.x as f64 * self.resolution,
            self.resolution,
            0.0,
            self.origin_y - w.y as f64 * self.resolution,
            0.0,
            -self.resolution,
        ]
    }

    /// (min_x, min_y, max_x, max_y) of a window in grid CRS units.
    pub(crate) fn window_bounds(&self, w: Window) -> Bounds {
        let gt = self.window_transform(w);
        (
            gt[0],
            gt[3] - w.height as f64 * self.resolution,
            gt[0] + w.width as f64 * self.resolution,
            gt[3],
        )
    }

    /// The grid of a raster file (north-up, square pixels).
    pub fn of_dataset(ds: &gdal::Dataset, path: &std::path::Path) -> Result<Self> {
        let gt = ds.geo_transform()?;
        if gt[2] != 0.0 || gt[4] != 0.0 || (gt[1] + gt[5]).abs() > 1e-9 * gt[1].abs() {
            return Err(Error::input(
                path,
                "is rotated or has non-square pixels",
                "warp it to a north-up grid first (gdalwarp -tr RES RES)",
            ));
        }
        let (width, height) = ds.raster_size();
        Ok(JobGrid {
            crs_wkt: ds.spatial_ref()?.to_wkt()?,
            origin_x: gt[0],
            origin_y: gt[3],
            resolution: gt[1],
            width,
            height,
            tile_size: 512,
            halo: 0,
        })
    }

    /// The grid an image is processed on: its own when it is north-up with square pixels in
    /// metres; else a north-up square grid over its footprint, its pixels as large as the
    /// image's in metres (rounded to whole metres from 1 m up, to decimetres below), in its own CRS when that
    /// is projected in metres and in the local UTM zone when it is in degrees. Pixels that
    /// are nearly square (EuroSAT's 10.0016 × 10.0068 m) or in degrees (OSCD) are warped
    /// onto it instead of refused.
    pub fn for_image(ds: &gdal::Dataset, path: &std::path::Path) -> Result<Self> {
        let gt = ds.geo_transform()?;
        if gt[2] != 0.0 || gt[4] != 0.0 {
            return Err(Error::input(
                path,
                "is rotated",
                "warp it to a north-up grid first (gdalwarp -tr RES RES)",
            ));
        }
        let mut srs = ds.spatial_ref()?;
        srs.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
        let metric = check_metric(&srs).is_ok();
        if metric && (gt[1] + gt[5]).abs() <= 1e-9 * gt[1].abs() {
            return Self::of_dataset(ds, path);
        }
        let (width, height) = ds.raster_size();
        let (x_end, y_end) = (gt[0] + gt[1] * width as f64, gt[3] + gt[5] * height as f64);
        let footprint = (
            gt[0].min(x_end),
            gt[3].min(y_end),
            gt[0].max(x_end),
            gt[3].max(y_end),
        );
        let target = if metric {
            srs.clone()
        } else if srs.is_geographic() {
            let (lon, lat) = (
                (footprint.0 + footprint.2) / 2.0,
                (footprint.1 + footprint.3) / 2.0,
            );
            SpatialRef::from_epsg(utm_epsg(lon, lat))?
        } else {
            return Err(Error::input(
                path,
                format!("its CRS {}", check_metric(&srs).unwrap_err()),
                "warp it to a projected CRS in metres first, e.g. `gdalwarp -t_srs EPSG:4527`",
            ));
        };
        let mut target = target;
        target
            .set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
        let to_target = crate::geo::raster::transform_between(&srs, &target)?;
        let envelope = crate::geo::raster::transform_bounds(&to_target, footprint)?;
        let side_m = |deg_or_m: f64, along_x: bool| {
            if metric {
                deg_or_m.abs()
            } else {
                let lat = ((footprint.1 + footprint.3) / 2.0).to_radians();
                let metres_per_degree = 6_371_008.8 * std::f64::consts::PI / 180.0;
                deg_or_m.abs() * metres_per_degree * if along_x { lat.cos() } else { 1.0 }
            }
        };
        // The side of a square pixel of the same area.
        let side = (side_m(gt[1], true) * side_m(gt[5], false)).sqrt();
        let resolution = if side >= 1.0 {
            side.round()
        } else {
            (side * 10.0).round().max(1.0) / 10.0
        };
        Self::covering(target.to_wkt()?, envelope, resolution, 512, 0)
    }

    /// The grid CRS with x = easting, y = northing whatever the CRS's declared axis order
    /// (Gauss-Krüger CRSs declare northing first). Every transform of gengbao uses this.
    pub fn spatial_ref(&self) -> Result<SpatialRef> {
        let mut srs = SpatialRef::from_wkt(&self.crs_wkt)?;
        srs.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
        Ok(srs)
    }

    pub(crate) fn pixel_area_m2(&self) -> f64 {
        self.resolution * self.resolution
    }

    /// Centre of pixel (col, row) in grid CRS units.
    pub(crate) fn pixel_centre(&self, col: f64, row: f64) -> (f64, f64) {
        (
            self.origin_x + (col + 0.5) * self.resolution,
            self.origin_y - (row + 0.5) * self.resolution,
        )
    }

    /// The smallest window of whole pixels holding a shape with envelope `env` (grid CRS),
    /// grown by `pad` pixels on each side. It may reach outside the grid.
    pub(crate) fn window_around(&self, env: &gdal::vector::Envelope, pad: usize) -> Window {
        let pad = pad as isize;
        let x = ((env.MinX - self.origin_x) / self.resolution).floor() as isize - pad;
        let y = ((self.origin_y - env.MaxY) / self.resolution).floor() as isize - pad;
        let right = ((env.MaxX - self.origin_x) / self.resolution).ceil() as isize + pad;
        let bottom = ((self.origin_y - env.MinY) / self.resolution).ceil() as isize + pad;
        Window {
            x,
            y,
            width: (right - x).max(1) as usize,
            height: (bottom - y).max(1) as usize,
        }
    }

    pub fn full_window(&self) -> Window {
        Window {
            x: 0,
            y: 0,
            width: self.width,
            height: self.height,
        }
    }

    pub fn tiles(&self) -> Vec<Tile> {
        let ts = self.tile_size;
        let h = self.halo as isize;
        let mut tiles = Vec::new();
        for row in 0..self.height.div_ceil(ts) {
            for col in 0..self.width.div_ceil(ts) {
                let x = (col * ts) as isize;
                let y = (row * ts) as isize;
                let core = Window {
                    x,
                    y,
                    width: ts.min(self.width - col * ts),
                    height: ts.min(self.height - row * ts),
                };
                let read = Window {
                    x: x - h,
                    y: y - h,
                    width: core.width + 2 * self.halo,
                    height: core.height + 2 * self.halo,
                };
                tiles.push(Tile {
                    col,
                    row,
                    core,
                    read,
                });
            }
        }
        tiles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(w: usize, h: usize, ts: usize) -> JobGrid {
        JobGrid::covering(
            String::new(),
            (0.0, 0.0, w as f64 * 10.0, h as f64 * 10.0),
            10.0,
            ts,
            4,
        )
        .unwrap()
    }

    #[test]
    fn tiles_cover_the_grid_exactly_once() {
        let g = grid(300, 130, 128);
        let tiles = g.tiles();
        assert_eq!(tiles.len(), 3 * 2);
        let mut hits = vec![0u8; 300 * 130];
        for t in &tiles {
            for r in 0..t.core.height {
                for c in 0..t.core.width {
                    hits[(t.core.y as usize + r) * 300 + t.core.x as usize + c] += 1;
                }
            }
        }
        assert!(hits.iter().all(|&h| h == 1));
    }

    #[test]
    fn crop_core_removes_the_halo() {
        let g = grid(8, 8, 8);
        let t = g.tiles()[0];
        let data: Vec<usize> = (0..t.read.len()).collect();
        let core = t.crop_core(&data);
        assert_eq!(core.len(), 64);
        assert_eq!(core[0], 4 * t.read.width + 4);
        assert!((0..64).all(|i| core[i] == (4 + i / 8) * t.read.width + 4 + i % 8));
    }

    #[test]
    fn envelope_snaps_outwards() {
        let g = JobGrid::covering(String::new(), (3.0, 7.0, 95.0, 99.0), 10.0, 64, 0).unwrap();
        assert_eq!(
            (g.origin_x, g.origin_y, g.width, g.height),
            (0.0, 100.0, 10, 10)
        );
    }
}
