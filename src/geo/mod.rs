//! GDAL adapters: everything that reads or writes geodata, and nothing that decides.
//!
//! Owns: the job [`grid`] and its tiles, [`raster`] reads onto the grid and tiled GeoTIFF
//! writes, [`vector`] layer writes, [`imagery`] catalogs of acquisitions (with Sentinel-2
//! [`safe`] products, [`landsat`] tars and [`gaofen`] products read as delivered, or
//! [`stac`] items), [`sensor`] profiles and the visible-band cloud test of sensors without a
//! quality band, per-period [`composite`]s, the administrative and farmland [`layers`], and
//! [`vectorise`] (polygons from a key raster), and one date's [`user_image`] as users have it (a
//! multi-band file or a folder of band files, or an image placed by [`rpc`]s, orthorectified,
//! a [`gaofen`] L1A product's DNs calibrated) read onto a grid as a composite.
//! Takes paths and plain parameters (never the job's config); gives arrays, grids and
//! geometries. Must not touch: change rules, the ledger, the job's output layout.

pub mod composite;
pub mod gaofen;
pub mod grid;
pub mod imagery;
pub mod landsat;
pub mod layers;
pub mod raster;
pub mod rpc;
pub mod safe;
pub mod sensor;
pub mod stac;
pub mod user_image;
pub mod vector;
pub mod vectorise;
