//! Images placed by rational polynomial coefficients (RPCs) instead of a map grid: Gaofen's
//! and other high-resolution cameras' L1A products, whose `.rpb` / `_rpc.txt` sidecar (or TIFF
//! tag) GDAL reads into the image's `RPC` metadata.
//!
//! Takes: such an image and the ground's elevation (a DEM raster, or one mean height in
//! metres). Gives: the image orthorectified by GDAL's warper with its RPC transformer onto
//! the local UTM zone at the resolution GDAL derives from the RPCs, as a virtual raster in
//! GDAL's memory file system (warped as it is read: `detect` derives its grid from it; then
//! `detect` and `run` warp the L1A image once straight onto their grid,
//! [`crate::geo::user_image`], since a read through the virtual raster transforms every
//! pixel's position again). Relief moves
//! a pixel by its height times the view's obliquity, so an elevation is required: GDAL's
//! default of height 0 would shift a mountain county's fields silently.

use crate::error::{Error, GdalContext, Result};
use crate::geo::grid::utm_epsg;
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
        // A `_rpc.txt` keeps units after the number (`LINE_OFF: +002814.00 pixels`).
        let one = |key: &str| -> Result<f64> {
            ds.metadata_item(key, "RPC")
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .ok_or_else(|| unreadable(key))
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

/// Which points of the ground an image placed by RPCs shows: those its RPCs (at their
/// reference height) put inside the image, within the box the RPCs were fitted on (beyond
/// it a polynomial may fold back into the image).
pub(crate) struct RpcGround {
    model: RpcModel,
    width: f64,
    height: f64,
}

impl RpcGround {
    pub(crate) fn of(path: &Path, ds: &Dataset) -> Result<Self> {
        let (width, height) = ds.raster_size();
        Ok(RpcGround {
            model: RpcModel::of(path, ds)?,
            width: width as f64,
            height: height as f64,
        })
    }

    /// The nodes of a lattice of 128 × 128 cells over the box the RPCs were fitted on
    /// (degrees): where to look for the image's ground.
    pub(crate) fn lattice(&self) -> Vec<(f64, f64)> {
        let cells = 128;
        let node = |(off, scale): (f64, f64), k: usize| {
            off + scale.abs() * (2.0 * k as f64 / cells as f64 - 1.0)
        };
        (0..=cells)
            .flat_map(|i| (0..=cells).map(move |j| (i, j)))
            .map(|(i, j)| (node(self.model.lon, i), node(self.model.lat, j)))
            .collect()
    }

    /// Whether the image shows the point at `lon`, `lat` (degrees).
    pub(crate) fn shows(&self, lon: f64, lat: f64) -> bool {
        let m = &self.model;
        let fitted = |v: f64, (off, scale): (f64, f64)| ((v - off) / scale).abs() <= 1.1;
        if !(fitted(lon, m.lon) && fitted(lat, m.lat)) {
            return false;
        }
        let (line, samp) = m.image_position(lon, lat);
        (0.0..=self.height).contains(&line) && (0.0..=self.width).contains(&samp)
    }
}

/// Refuses a DEM without heights at some of `points` (degrees: the ground `product` shows
/// that is read): there GDAL's RPC transformer fails and the warp leaves the ground out
/// of the image (a DEM ending halfway across a generated 16 km scene dropped the scene's
/// eastern part), so that it would read as unobserved, as under a cloud. Half a DEM pixel
/// of slack at its edges.
pub(crate) fn check_dem_covers(dem: &Path, product: &Path, points: &[(f64, f64)]) -> Result<()> {
    let fix = "give a DEM that covers the product's ground (SRTM or ASTER GDEM tiles around it, joined with `gdalbuildvrt`), or one mean height instead (`--height`; a job's `[imagery] height`)";
    let ds = crate::geo::raster::open_georeferenced(dem)?;
    let gt = ds.geo_transform()?;
    let (w, h) = ds.raster_size();
    let mut srs = ds.spatial_ref().in_file(dem, fix)?;
    srs.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let to_dem = crate::geo::raster::transform_between(&crate::geo::raster::lon_lat()?, &srs)?;
    let (mut xs, mut ys): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    to_dem
        .transform_coords(&mut xs, &mut ys, &mut [])
        .in_file(dem, fix)?;
    // The DEM's pixel coordinates of each point (a north-up DEM, as DEMs are).
    let inside = |x: f64, y: f64| {
        let (col, row) = ((x - gt[0]) / gt[1], (y - gt[3]) / gt[5]);
        (-0.5..=w as f64 + 0.5).contains(&col) && (-0.5..=h as f64 + 0.5).contains(&row)
    };
    let missing: Vec<(f64, f64)> = points
        .iter()
        .zip(xs.iter().zip(&ys))
        .filter(|(_, (&x, &y))| !inside(x, y))
        .map(|(&p, _)| p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let fold = |f: fn(f64, f64) -> f64, init: f64, pick: fn(&(f64, f64)) -> f64| {
        missing.iter().map(pick).fold(init, f)
    };
    Err(Error::input(
        dem,
        format!(
            "has no heights over longitude {:.4} to {:.4}, latitude {:.4} to {:.4}, which {} shows ({} of the {} points checked on the ground it shows lie off the DEM)",
            fold(f64::min, f64::INFINITY, |p| p.0),
            fold(f64::max, f64::NEG_INFINITY, |p| p.0),
            fold(f64::min, f64::INFINITY, |p| p.1),
            fold(f64::max, f64::NEG_INFINITY, |p| p.1),
            product.display(),
            missing.len(),
            points.len()
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
    fn an_image_shows_the_ground_its_rpcs_put_it_on_and_no_other() {
        let ds = affine_rpc_image();
        let ground = RpcGround::of(Path::new("image.tiff"), &ds).unwrap();
        for (lon, lat) in [(118.8, 32.0), (118.791, 32.004), (118.809, 31.996)] {
            assert!(ground.shows(lon, lat), "{lon} {lat}");
        }
        for (lon, lat) in [
            (118.789, 32.0),
            (118.811, 32.0),
            (118.8, 32.006),
            (118.9, 32.0),
        ] {
            assert!(!ground.shows(lon, lat), "{lon} {lat}");
        }
        assert_eq!(utm_zone_of(Path::new("image.tiff"), &ds).unwrap(), 32650);
    }

    #[test]
    fn a_rpc_file_with_units_is_read() {
        let mut ds = affine_rpc_image();
        ds.set_metadata_item("LINE_OFF", "+050.00 pixels", "RPC")
            .unwrap();
        ds.set_metadata_item("LAT_OFF", "+32.0000 degrees", "RPC")
            .unwrap();
        let ground = RpcGround::of(Path::new("image_rpc.txt"), &ds).unwrap();
        assert!(ground.shows(118.8, 32.0));
    }
}
