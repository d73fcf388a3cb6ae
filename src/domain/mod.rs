//! The domain: what a period, a land-cover class, a change rule and a patch status are.
//!
//! Owns: [`period`] (bimonthly periods), [`land_cover`] (class codes), [`change`] (signals,
//! persistence rules, flag codes), [`spectral_change`] (whether the ground changed between two
//! looks: change magnitude and the scene's own threshold), [`neighbourhood`] (mean and spread
//! of each pixel's square neighbourhood), [`coverage`] (how much of the watched land a period
//! saw clear), [`status`] (the patch lifecycle).
//! Must not touch: GDAL, files, the database, threads. Everything here is plain values and
//! pure functions, tested without any input data.

pub mod change;
pub mod coverage;
pub mod land_cover;
pub mod neighbourhood;
pub mod period;
pub mod spectral_change;
pub mod status;
