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

pub mod classify;
pub mod detect;
pub mod dispatch;
pub mod domain;
pub mod engine;
pub mod error;
pub mod evaluate;
pub mod geo;
pub mod job;
pub mod ledger;
pub mod progress;
pub mod render;
pub mod samples;
pub mod train;

pub use error::{Error, Result};
