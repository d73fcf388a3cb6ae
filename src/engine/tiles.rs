//! The tile loop: tiles are processed in parallel, a batch at a time, and their results are
//! handed to the writer in tile order, so that rasters are written in a fixed order (the same
//! bytes on every run) while memory holds at most one batch of results.

use crate::error::{Error, Result};
use crate::geo::grid::Tile;
use rayon::prelude::*;

/// The cores this process may use: those the OS lets it run on, and no more than a Slurm
/// task was given (`SLURM_CPUS_PER_TASK`: without CPU binding, a task sees the whole node).
fn num_threads() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let slurm = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0);
    slurm.map_or(cores, |n| n.min(cores))
}

/// A pool of `threads` workers (0: one per core).
pub fn pool(threads: usize) -> std::result::Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    let threads = if threads == 0 { num_threads() } else { threads };
    rayon::ThreadPoolBuilder::new().num_threads(threads).build()
}

/// Runs `process` on every tile on `pool` (None: rayon's global pool, which the classifiers
/// already use, so no second set of worker threads and their malloc arenas is made) and hands
/// each result to `write`, in the order of `tiles`. A tile that fails stops the loop with an
/// error naming the tile.
pub(crate) fn for_each_tile<T: Send>(
    pool: Option<&rayon::ThreadPool>,
    tiles: &[Tile],
    process: impl Fn(&Tile) -> Result<T> + Sync,
    mut write: impl FnMut(&Tile, T) -> Result<()>,
) -> Result<()> {
    // Two tiles per worker keep every core busy while the writer drains the batch.
    let workers = pool.map_or_else(rayon::current_num_threads, |p| p.current_num_threads());
    for batch in tiles.chunks(workers * 2) {
        let work = || -> Vec<Result<T>> {
            batch
                .par_iter()
                .map(|t| process(t).map_err(in_tile(t)))
                .collect()
        };
        let results = match pool {
            Some(pool) => pool.install(work),
            None => work(),
        };
        for (tile, result) in batch.iter().zip(results) {
            write(tile, result?)?;
        }
    }
    Ok(())
}

/// Names `tile` in an error from its processing.
pub(crate) fn in_tile(tile: &Tile) -> impl FnOnce(Error) -> Error {
    let id = tile.id();
    move |e| Error::Tile {
        tile: id,
        source: Box::new(e),
    }
}
