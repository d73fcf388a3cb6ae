//! The tile engine: the one place where tiles are processed in parallel and written in order
//! ([`tiles`]), where a scene decides whether its ground changed between two looks
//! ([`scene_change`]), where each pixel's change is judged ([`judge`]), and where flagged
//! pixels become patches ([`change_rasters`], [`patches`], [`patch_record`]).
//!
//! Takes a grid, a per-tile function and a per-tile writer; gives the change rasters and the
//! period's [`patches::Patch`]es. Used by the bimonthly job (`job::run`) and by two-date
//! detection (`detect`) alike. Knows nothing of the job's config, output folder or ledger.

pub mod change_rasters;
pub mod judge;
pub mod patch_record;
pub mod patches;
pub mod scene_change;
pub mod tiles;
