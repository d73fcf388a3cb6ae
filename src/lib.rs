//! gengbao (耕保): cultivated-land supervision from satellite imagery.
//!
//! # Code map
//!
//! Layers, lowest first. A layer may use the layers above it in this list, never those
//! below; a cycle between layers is a bug.
//!
//! - [`error`], [`progress`]: the error type every layer returns (each error names the file
//!   or key and the fix), terminal progress bars and the writer of standard output.
//! - [`domain`]: periods, land-cover codes, change signals and persistence rules, the patch
//!   lifecycle. Plain values and pure functions: no GDAL, no files, no threads.
//! - [`geo`]: the GDAL adapters. The job [`geo::grid`] and its tiles, rasters read onto the
//!   grid and written as tiled GeoTIFFs, vector layers, imagery catalogs (products as
//!   delivered: SAFE, Landsat tars, Gaofen tar.gz or TIFF + .xml, STAC) and sensor profiles
//!   (with the visible-band cloud test of sensors without a quality band), per-period
//!   composites, the county and farmland layers, polygons from a key raster,
//!   images placed by RPCs orthorectified ([`geo::rpc`]) and warped once onto the grid before
//!   tiles read them, Gaofen L1A DNs calibrated from the
//!   product's metadata ([`geo::gaofen`]). Takes paths and plain parameters, never the job's
//!   config.
//! - [`classify`]: land cover of a composite. One trait, the index rules and libtorch models
//!   described by a model card.
//! - [`engine`]: the tile engine, written once for `run` and `detect`: tiles in parallel with
//!   an ordered writer ([`engine::tiles`]), the scene's decision whether the ground changed
//!   between two looks ([`engine::scene_change`]: detect's two images, a period and its look
//!   a year before), the per-pixel change step ([`engine::judge`]), the change rasters and
//!   the patches they become, and the patch record as files.
//! - [`render`]: pictures for people: map sheets of a period (the job's quicklook, a county's
//!   overview) with the reported patches, web map tiles of a period's composite, the colours
//!   pages share, the font for text in images.
//! - [`ledger`]: every patch's life in one SQLite file: stable numbers (TBBH), statuses and
//!   their history, matching a period's patches to known ones, county returns.
//! - [`job`]: the bimonthly job. Its config, the output folder ([`job::layout`], the only
//!   place its paths are spelled), one period as a sequence of phases ([`job::run`]),
//!   several periods with the run log and exit codes ([`job::cycle`]), the schedule, the run
//!   lock, per-tile checkpoints and staging folders, a period split into shards that merge
//!   to one run's bytes ([`job::shards`]).
//! - [`dispatch`]: per-county packages for inspectors (vector files, Excel/CSV, chips, report).
//! - [`portal`]: `gengbao serve`, the inspectors' map page and web API over the ledger and
//!   the archive (HTTP or HTTPS): accounts held for one county or all, sessions, evidence,
//!   and status changes through the ledger's lifecycle. The page and its map library are
//!   embedded; nothing is fetched at run time.
//! - [`samples`]: the generated city the demo and tests run on.
//! - [`evaluate`]: scores against truth (patches and land cover).
//! - [`train`]: datasets, model fitting and evaluation; detect's per-image point models.
//! - [`detect`]: two-date detection on an image pair through the same engine: the pair's
//!   inputs as users have them, the scene's spectral change decision, the classes per date.
//! - [`eval_real`]: the product's code paths on the real labelled sets, beside the classical
//!   yardsticks on the same pixels (`gengbao eval-real`).
//!
//! The test `layers_only_use_the_layers_before_them` below checks this order.
//!
//! # Invariants
//!
//! - Same inputs, same bytes: tiles are written in a fixed order and each write completes its
//!   blocks, models are saved in name order, patches are numbered in a fixed order, vector
//!   files and packages carry fixed "last changed" dates (`geo::vector`, the period's last
//!   day in a package's zip and spreadsheet), never the clock's. A
//!   trained model depends on its seed alone: libtorch's process-wide generator and thread
//!   count are only touched under one lock (`classify::build_mlp`), one intra-op thread.
//! - Nothing half-written: results go to a staging folder beside their target and replace it
//!   in one rename; the ledger changes in one transaction per command.
//! - Bounded memory: a tile's inputs are read per tile, at most a batch of tile results is
//!   held, polygons stream from a scratch file.
//! - Fail loud: a bad input stops the run before anything is written, naming the file or key
//!   and the fix; a tile that fails stops the run with the tile named.
//!
//! # Public surface
//!
//! The items re-exported here are what running a job or a detection needs; the command line
//! takes them from here. The layer modules stay public for the tests and benches that
//! exercise one part.

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
pub mod eval_real;
pub mod evaluate;
pub mod geo;
pub mod job;
pub mod ledger;
pub mod portal;
pub mod progress;
pub mod render;
pub mod samples;
pub mod train;

pub use classify::{Classifier, ClassifierKind, TorchClassifier};
pub use detect::{detect, DetectOptions, DetectSummary};
pub use dispatch::export_packages;
pub use domain::change::ChangeType;
pub use domain::land_cover::LandCover;
pub use domain::period::Period;
pub use domain::status::{Evidence, Status};
pub use error::{Error, Result};
pub use eval_real::{eval_real, EvalRealOptions};
pub use job::config::JobConfig;
pub use job::cycle::{run_periods, PeriodSelector};
pub use job::layout::{OutputLayout, PeriodFiles};
pub use job::run::{run_period, RunOptions};
pub use ledger::Ledger;
pub use samples::{generate, SampleCity, SampleOptions};

#[cfg(test)]
mod tests {
    /// The layers of the code map, lowest first.
    const LAYERS: [&str; 16] = [
        "error",
        "progress",
        "domain",
        "geo",
        "classify",
        "engine",
        "render",
        "ledger",
        "job",
        "dispatch",
        "portal",
        "samples",
        "evaluate",
        "train",
        "detect",
        "eval_real",
    ];

    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn layers_only_use_the_layers_before_them() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut upward = Vec::new();
        for file in files {
            let rel = file.strip_prefix(&src).unwrap();
            let top = rel.iter().next().unwrap().to_string_lossy();
            let top = top.trim_end_matches(".rs");
            let Some(own) = LAYERS.iter().position(|l| *l == top) else {
                assert!(
                    ["lib", "main"].contains(&top),
                    "{top} is not in the code map"
                );
                continue;
            };
            let text = std::fs::read_to_string(&file).unwrap();
            for (i, _) in text.match_indices("crate::") {
                let used: String = text[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if let Some(other) = LAYERS.iter().position(|l| *l == used) {
                    if other > own {
                        upward.push(format!("{} uses {used}", rel.display()));
                    }
                }
            }
        }
        assert!(upward.is_empty(), "layers used from below: {upward:?}");
    }
}
