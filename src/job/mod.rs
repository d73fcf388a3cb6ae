//! The bimonthly job: its configuration, the output folder, running a period, the schedule,
//! the run lock, per-tile checkpoints and staging folders.

pub mod checkpoint;
pub mod config;
pub mod cycle;
pub mod layout;
pub mod lock;
pub mod period_tiles;
pub mod run;
pub mod schedule;
pub mod shards;
pub mod staging;
pub mod summary;
