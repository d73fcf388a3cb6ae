//! Images placed by rational polynomial coefficients (RPCs) instead of a map grid: Gaofen's
//! and other high-resolution cameras' L1A products, whose `.rpb` / `_rpc.txt` sidecar (or TIFF
//! tag) GDAL reads into the image's `RPC` metadata.
//!
//! Takes: such an image and the ground's elevation (a DEM raster, or one mean height in
//! metres). Gives: the image orthorectified by GDAL's warper with its RPC transformer onto
//! the local UTM zone at the resolution GDAL derives from the RPCs, as a virtual raster in
//! GDAL's memory file system (warped as it is read; `detect` and `run` then warp it once onto
//! their grid, [`crate::geo::user_image`], since a read through it transforms every pixel's
//! position again). Relief moves
//! a pixel by its height times the view's obliquity, so an elevation is required: GDAL's
//! default of height 0 would shift a mountain county's fields silently.

use crate::error::{Error, GdalContext, Result};
use crate::geo::grid::{utm_epsg, Bounds};
use gdal::{Dataset, Metadata};
use std::path::{Path, PathBuf};

/// Heights in metres that a place on land can have (the Dead Sea's shore to Everest, with
/// margin): a value outside is a typing slip, not a ground height.
pub const GROUND_HEIGHTS: std::ops::RangeInclusive<f64> = -500.0..=9000.0;

/// The ground's elevation for orthorectification.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Elevation {
    /// Not given: an image placed by RPCs is refused.
    #[default]
    Unknown,
    /// A DEM raster (any CRS GDAL can read; heights in metres). GDAL takes them as heights
    /// above the WGS 84 ellipsoid, which the RPC model expects, unless the DEM declares a
    /// geoid vertical datum: SRTM's heights are above the EGM96 geoid without saying so, a
    /// few tens of metres off in China, which moves a pixel by that times the view's
    /// obliquity (a few metres at Gaofen's angles).
    Dem(PathBuf),
    /// One height in metres for the whole image.
    Height(f64),
}

/// Whether `ds` is placed by RPCs alone (no geotransform, no CRS).
pub(crate) fn placed_by_rpcs(ds: &Dataset) -> bool {
    let unplaced = ds.geo_transform().is_err() && ds.projection().trim().is_empty();
    unplaced && ds.metadata_item("LINE_OFF", "RPC").is_some()
}

/// The UTM zone (EPSG code) of the centre of an image placed by RPCs.
pub(crate) fn utm_zone_of(path: &Path, ds: &Dataset) -> Result<u32> {
    let model = RpcModel::of(path, ds)?;
    Ok(utm_epsg(model.lon.0, model.lat.0))
}

/// GDAL's RPC transformer option that gives the ground's heights for the image at `path`:
/// `RPC_DEM=…` or `RPC_HEIGHT=…`; without an elevation the image is refused.
pub(crate) fn transformer_option(path: &Path, elevation: &Elevation) -> Result<String> {
    Ok(match elevation {
        Elevation::Unknown => {
            return Err(Error::input(
                path,
                "is placed by RPCs, which need the ground's elevation to land on the map",
                "give `gengbao detect` the ground's elevation: a DEM (`--dem DEM.tif`) or the scene's mean height in metres (`--height 50`) (in a job: `[grid] dem` or `[imagery] height`); for training patches, orthorectify the image first (`gdalwarp -rpc -to RPC_DEM=DEM.tif IMAGE.tif OUT.tif`) and copy IMAGE.xml to OUT.xml, which calibrates it",
            ))
        }
        Elevation::Dem(dem) => {
            if !dem.is_file() {
                return Err(Error::input(
                    dem,
                    "is not a file",
                    "give the path of a DEM raster GDAL reads (e.g. SRTM or ASTER GDEM GeoTIFF)",
                ));
            }
            format!("RPC_DEM={}", dem.display())
        }
        Elevation::Height(h) => format!("RPC_HEIGHT={h}"),
    })
}

/// The image at `path` (placed by RPCs) orthorectified onto the UTM zone `epsg` (its own,
/// [`utm_zone_of`], or its product's other pieces'), as a virtual raster at `out` (a
/// `/vsimem/` path). With `pixel_m`, pixels of that size aligned on multiples of it, so that
/// the pieces of one product share a grid; else the size GDAL derives from the RPCs.
pub(crate) fn orthorectify(
    path: &Path,
    ds: &Dataset,
    elevation: &Elevation,
    epsg: u32,
    pixel_m: Option<f64>,
    out: &Path,
) -> Result<()> {
    let height = transformer_option(path, elevation)?;
    let epsg = format!("EPSG:{epsg}");
    let mut args: Vec<String> = [
        "-of",
        "VRT",
        "-rpc",
        "-to",
        height.as_str(),
        "-t_srs",
        epsg.as_str(),
        "-r",
        "bilinear",
        "-et",
        "0",
    ]
    .map(String::from)
    .to_vec();
    if let Some(size) = pixel_m {
        args.extend([
            "-tr".into(),
            size.to_string(),
            size.to_string(),
            "-tap".into(),
        ]);
    }
    crate::geo::raster::gdal_warp(std::slice::from_ref(ds), &args, out).map_err(|message| {
        Error::input(
            path,
            format!("could not be orthorectified ({message})"),
            "check the image and its RPCs with `gdalinfo`, and the DEM's coverage",
        )
    })
}

/// The RPC model of an image: normalised longitude, latitude and height to line and sample
/// (RPC00B, as GDAL reads it from an `.rpb` or `_rpc.txt`).
struct RpcModel {
    /// line, sample, latitude, longitude, height: (offset, scale).
    line: (f64, f64),
    samp: (f64, f64),
    lat: (f64, f64),
    lon: (f64, f64),
    line_num: [f64; 20],
    line_den: [f64; 20],
    samp_num: [f64; 20],
    samp_den: [f64; 20],
}

impl RpcModel {
    fn of(path: &Path, ds: &Dataset) -> Result<Self> {
        let unreadable = |key: &str| {
            Error::input(
                path,
                format!("has RPCs without a readable {key}"),
                "keep the product's .rpb or _rpc.txt file beside the image, as delivered",
            )
        };
        let values = |key: &str| -> Result<Vec<f64>> {
            ds.metadata_item(key, "RPC")
                .and_then(|v| {
                    v.split_whitespace()
                        .map(|x| x.parse().ok())
                        .collect::<Option<Vec<f64>>>()
                })
                .ok_or_else(|| unreadable(key))
        };
        let one = |key: &str| -> Result<f64> {
            values(key)?.first().copied().ok_or_else(|| unreadable(key))
        };
        let pair = |name: &str| -> Result<(f64, f64)> {
            Ok((one(&format!("{name}_OFF"))?, one(&format!("{name}_SCALE"))?))
        };
        let terms = |key: &str| -> Result<[f64; 20]> {
            values(key)?.try_into().map_err(|_| unreadable(key))
        };
        Ok(RpcModel {
            line: pair("LINE")?,
            samp: pair("SAMP")?,
            lat: pair("LAT")?,
            lon: pair("LONG")?,
            line_num: terms("LINE_NUM_COEFF")?,
            line_den: terms("LINE_DEN_COEFF")?,
            samp_num: terms("SAMP_NUM_COEFF")?,
            samp_den: terms("SAMP_DEN_COEFF")?,
        })
    }

    /// (line, sample) of a point at the model's reference height (its height offset).
    fn image_position(&self, lon: f64, lat: f64) -> (f64, f64) {
        let l = (lon - self.lon.0) / self.lon.1;
        let p = (lat - self.lat.0) / self.lat.1;
        // The RPC00B terms in GDAL's order, with the normalised height 0.
        let t = [
            1.0,
            l,
            p,
            0.0,
            l * p,
            0.0,
            0.0,
            l * l,
            p * p,
            0.0,
            0.0,
            l * l * l,
            l * p * p,
            0.0,
            l * l * p,
            p * p * p,
            0.0,
            0.0,
            0.0,
            0.0,
        ];
        let dot = |c: &[f64; 20]| c.iter().zip(&t).map(|(a, b)| a * b).sum::<f64>();
        (
            self.line.0 + self.line.1 * dot(&self.line_num) / dot(&self.line_den),
            self.samp.0 + self.samp.1 * dot(&self.samp_num) / dot(&self.samp_den),
        )
    }
}

/// The ground an image placed by RPCs shows, in degrees (min longitude, min latitude, max
/// longitude, max latitude): the points of a lattice over the RPCs' box (grown by a half)
/// that land inside the image, grown by one lattice step.
pub(crate) fn footprint(path: &Path, ds: &Dataset) -> Result<Bounds> {
    let model = RpcModel::of(path, ds)?;
    let (width, height) = ds.raster_size();
    let steps = 150;
    let span = |(off, scale): (f64, f64), k: usize| {
        off + scale.abs() * 1.5 * (2.0 * k as f64 / steps as f64 - 1.0)
    };
    let mut b = (
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    );
    for i in 0..=steps {
        for j in 0..=steps {
            let (lon, lat) = (span(model.lon, i), span(model.lat, j));
            let (line, samp) = model.image_position(lon, lat);
            if (0.0..=height as f64).contains(&line) && (0.0..=width as f64).contains(&samp) {
                b = (b.0.min(lon), b.1.min(lat), b.2.max(lon), b.3.max(lat));
            }
        }
    }
    if !b.0.is_finite() {
        return Err(Error::input(
            path,
            "has RPCs that put none of its pixels on the ground around their own centre",
            "keep the product's .rpb or _rpc.txt file beside the image, as delivered",
        ));
    }
    let (dx, dy) = (
        3.0 * model.lon.1.abs() / steps as f64,
        3.0 * model.lat.1.abs() / steps as f64,
    );
    Ok((b.0 - dx, b.1 - dy, b.2 + dx, b.3 + dy))
}

/// Refuses a DEM that does not cover `needed` (degrees: the ground of `product` that the job
/// reads): where it has no height, GDAL's RPC transformer fails and the warp leaves that
/// ground out of the image (a DEM ending halfway across a generated 16 km scene dropped the
/// scene's eastern part), so that it would read as unobserved, as under a cloud.
pub(crate) fn check_dem_covers(dem: &Path, product: &Path, needed: Bounds) -> Result<()> {
    let fix = "give a DEM that covers the product's ground (SRTM or ASTER GDEM tiles around it, joined with `gdalbuildvrt`), or one mean height instead (`--height`; a job's `[imagery] height`)";
    let ds = crate::geo::raster::open_georeferenced(dem)?;
    let gt = ds.geo_transform()?;
    let (w, h) = ds.raster_size();
    let xs = [gt[0], gt[0] + w as f64 * gt[1] + h as f64 * gt[2]];
    let ys = [gt[3], gt[3] + w as f64 * gt[4] + h as f64 * gt[5]];
    let own = (
        xs[0].min(xs[1]),
        ys[0].min(ys[1]),
        xs[0].max(xs[1]),
        ys[0].max(ys[1]),
    );
    let mut srs = ds.spatial_ref().in_file(dem, fix)?;
    srs.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let mut wgs84 = gdal::spatial_ref::SpatialRef::from_epsg(4326)?;
    wgs84.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let to_degrees = gdal::spatial_ref::CoordTransform::new(&srs, &wgs84)?;
    let covered = crate::geo::raster::transform_bounds(&to_degrees, own).in_file(dem, fix)?;
    // A pixel's worth of slack: a DEM clipped to the same box as the job's area may stop a
    // few metres short of it.
    let (dx, dy) = (
        (covered.2 - covered.0) / w as f64,
        (covered.3 - covered.1) / h as f64,
    );
    let inside = covered.0 <= needed.0 + dx
        && covered.1 <= needed.1 + dy
        && covered.2 >= needed.2 - dx
        && covered.3 >= needed.3 - dy;
    if inside {
        return Ok(());
    }
    let degrees = |b: Bounds| {
        format!(
            "longitude {:.4} to {:.4}, latitude {:.4} to {:.4}",
            b.0, b.2, b.1, b.3
        )
    };
    Err(Error::input(
        dem,
        format!(
            "covers {}, but {} needs heights over {}",
            degrees(covered),
            product.display(),
            degrees(needed)
        ),
        fix,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image of 200 × 100 px whose RPCs put it, affinely, on 0.02° of longitude east of
    /// 118.79° and 0.01° of latitude south of 32.005°.
    fn affine_rpc_image() -> Dataset {
        let mut ds = gdal::DriverManager::get_driver_by_name("MEM")
            .unwrap()
            .create("", 200, 100, 1)
            .unwrap();
        let terms = |k: usize, v: f64| {
            let mut c = [0.0; 20];
            c[k] = v;
            c.map(|v| v.to_string()).join(" ")
        };
        for (key, value) in [
            ("LINE_OFF", "50".to_string()),
            ("SAMP_OFF", "100".into()),
            ("LINE_SCALE", "50".into()),
            ("SAMP_SCALE", "100".into()),
            ("LAT_OFF", "32".into()),
            ("LONG_OFF", "118.8".into()),
            ("LAT_SCALE", "0.005".into()),
            ("LONG_SCALE", "0.01".into()),
            ("HEIGHT_OFF", "0".into()),
            ("HEIGHT_SCALE", "500".into()),
            ("LINE_NUM_COEFF", terms(2, -1.0)),
            ("LINE_DEN_COEFF", terms(0, 1.0)),
            ("SAMP_NUM_COEFF", terms(1, 1.0)),
            ("SAMP_DEN_COEFF", terms(0, 1.0)),
        ] {
            ds.set_metadata_item(key, &value, "RPC").unwrap();
        }
        ds
    }

    #[test]
    fn the_footprint_is_the_ground_the_rpcs_put_the_image_on() {
        let ds = affine_rpc_image();
        let (x0, y0, x1, y1) = footprint(Path::new("image.tiff"), &ds).unwrap();
        // Within two lattice steps (3 % of the half-sizes) outside, never inside.
        let near = |got: f64, want: f64, half: f64| {
            let out = (got - want).abs() / half;
            assert!(out <= 0.03, "{got} for {want}");
        };
        assert!(x0 <= 118.79 && y0 <= 31.995 && x1 >= 118.81 && y1 >= 32.005);
        near(x0, 118.79, 0.01);
        near(x1, 118.81, 0.01);
        near(y0, 31.995, 0.005);
        near(y1, 32.005, 0.005);
        assert_eq!(utm_zone_of(Path::new("image.tiff"), &ds).unwrap(), 32650);
    }
}
