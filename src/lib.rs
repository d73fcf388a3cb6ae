//! gengbao (耕保): cultivated-land supervision from satellite imagery.
//!
//! The pipeline of one bimonthly period, one module per stage:
//! [`imagery`] (catalog and reading onto the grid) -> [`grid`] (tiles with a halo) ->
//! [`composite`] (cloud-masked median) -> [`layers`] (counties and farmland parcels) ->
//! [`classify`] (land cover) -> [`change`] (flag rules) -> [`vectorise`] (polygons, whole
//! across seams) -> [`patches`] (图斑 attributes) -> [`export`] (dispatch files).
//! [`pipeline`] runs a period of a job, [`detect`] runs the same stages on an image pair,
//! [`samples`] generates a synthetic city to try it all on.

/// The first `len` bytes of the SHA-256 of `bytes`, in hex: short content ids (model
/// versions, checkpoint keys).
pub fn short_sha256(bytes: &[u8], len: usize) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .take(len)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub mod change;
pub mod checkpoint;
pub mod classify;
pub mod composite;
pub mod config;
pub mod detect;
pub mod dispatch;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod grid;
pub mod imagery;
pub mod layers;
pub mod ledger;
pub mod lock;
pub mod patches;
pub mod period;
pub mod pipeline;
pub mod raster;
pub mod samples;
pub mod schedule;
pub mod sensor;
pub mod train;
pub mod vectorise;

pub use error::{Error, Result};
