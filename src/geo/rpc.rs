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

use crate::error::{Error, Result};
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
    let rpc = |key: &str| -> Result<f64> {
        ds.metadata_item(key, "RPC")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| {
                Error::input(
                    path,
                    format!("has RPCs without a readable {key}"),
                    "keep the product's .rpb or _rpc.txt file beside the image, as delivered",
                )
            })
    };
    Ok(utm_epsg(rpc("LONG_OFF")?, rpc("LAT_OFF")?))
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
    let height = match elevation {
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
    };
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
    crate::geo::raster::gdal_warp(ds, &args, out).map_err(|message| {
        Error::input(
            path,
            format!("could not be orthorectified ({message})"),
            "check the image and its RPCs with `gdalinfo`, and the DEM's coverage",
        )
    })
}
