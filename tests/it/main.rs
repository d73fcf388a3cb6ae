//! The behaviour tests, in one binary: each test binary links GDAL and libtorch, so one
//! binary instead of twelve saves most of the link time of `cargo test`.

mod common;

mod bad_inputs;
mod browser;
mod catalog;
mod classifier_torch;
mod detect;
mod dispatch;
mod ledger;
mod maps;
mod pipeline;
mod portal;
mod real_abandonment;
mod real_change;
mod real_cloud;
mod real_land_cover;
mod real_worldcereal;
mod resume;
mod shards;
mod timeseries;
mod train;
