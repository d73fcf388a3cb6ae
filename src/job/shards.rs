//! A period split into shards that run apart (a Slurm job array, Kubernetes indexed jobs,
//! or processes on one machine) and merge to the bytes one `run` gives.
//!
//! Takes: the job and a period. Gives:
//! - [`plan_shards`]: `<output>/.shards/<period>/plan.json`, which tiles each of N shards
//!   composites and classifies, balanced by watched (farmland) pixels, largest first onto the
//!   least loaded shard;
//! - [`run_shard`]: the tile stage of one shard into `.shards/<period>/<i>-of-<n>/` as the
//!   per-tile checkpoints a run keeps (a shard killed and run again resumes); nothing else
//!   is written: no raster, no ledger, no archive;
//! - [`merge_shards`]: checks that every shard finished with the run key of the plan (the
//!   same inputs, config, model and archive), moves their tiles into the period's
//!   checkpoints and runs the period, which resumes every tile and does the rest once over
//!   the whole mosaic (change decision, patches across shard borders, ledger, atomic
//!   commit). Only the merge writes the ledger and the archive.
//!
//! Invariant: a merged period is byte for byte the period one `run` gives, because a
//! resumed tile is the processed tile's bytes and everything after the tile stage runs in
//! the merge alone.

use crate::domain::period::Period;
use crate::engine::tiles::for_each_tile;
use crate::error::{Error, Result};
use crate::job::checkpoint::{write_atomically, Checkpoints};
use crate::job::config::JobConfig;
use crate::job::run::{job_pool, run_period, CheckedPeriod, RunOptions};
use crate::job::summary::RunSummary;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Shard `index` (from 0) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `i/N`, i from 0 to N - 1.
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Shard { index, count }),
            _ => Err(format!(
                "`{s}` is not a shard: give i/N with i from 0 to N-1 (e.g. 0/4)"
            )),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Which tiles each shard of a period does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub period: String,
    /// The run key the shards must run with: the plan is void when the inputs change.
    pub run_key: String,
    /// Tile ids of each shard, in grid order.
    pub tiles: Vec<Vec<String>>,
    /// Watched pixels of each shard's tiles.
    pub watched: Vec<u64>,
}

/// What one shard did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardSummary {
    pub shard: String,
    pub tiles: usize,
    /// Tiles found done by an earlier attempt of the shard.
    pub tiles_resumed: usize,
}

fn plan_file(cfg: &JobConfig, period: Period) -> PathBuf {
    cfg.layout().shards(period).join("plan.json")
}

fn shard_dir(cfg: &JobConfig, period: Period, shard: Shard) -> PathBuf {
    cfg.layout()
        .shards(period)
        .join(format!("{}-of-{}", shard.index, shard.count))
}

/// Plans `count` shards of `period` and writes the plan.
pub fn plan_shards(cfg: &JobConfig, period: Period, count: usize) -> Result<ShardPlan> {
    if count == 0 {
        return Err(Error::usage(
            "0 shards",
            "give --shards 1 or more (one per node or task)",
        ));
    }
    let checked = CheckedPeriod::new(cfg, period, &RunOptions::quiet())?;
    let tiles = checked.tiles()?;
    let mut weighed = Vec::with_capacity(tiles.len());
    for t in &tiles {
        weighed.push((checked.farmland_watched(t)?, t.id()));
    }
    // Largest first onto the least loaded shard; a tile without farmland still costs its
    // read, so it weighs one.
    let mut order: Vec<usize> = (0..weighed.len()).collect();
    order.sort_by(|&a, &b| weighed[b].0.cmp(&weighed[a].0).then(a.cmp(&b)));
    let mut shards: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut load = vec![0u64; count];
    for k in order {
        let lightest = (0..count).min_by_key(|&s| (load[s], s)).expect("count > 0");
        load[lightest] += weighed[k].0.max(1);
        shards[lightest].push(k);
    }
    let plan = ShardPlan {
        period: period.to_string(),
        run_key: checked.run_key.clone(),
        tiles: shards
            .iter()
            .map(|ks| {
                let mut ks = ks.clone();
                ks.sort_unstable();
                ks.into_iter().map(|k| weighed[k].1.clone()).collect()
            })
            .collect(),
        watched: shards
            .iter()
            .map(|ks| ks.iter().map(|&k| weighed[k].0).sum())
            .collect(),
    };
    let file = plan_file(cfg, period);
    let dir = cfg.layout().shards(period);
    // A new plan voids the shards of an earlier one.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let text = serde_json::to_string_pretty(&plan).expect("a plan serialises");
    write_atomically(&file, text.as_bytes())?;
    Ok(plan)
}

/// The plan of `period`, refused when there is none or when the inputs changed since.
fn read_plan(cfg: &JobConfig, period: Period, run_key: &str) -> Result<ShardPlan> {
    let file = plan_file(cfg, period);
    let plan_again = format!(
        "plan it: gengbao plan --config {} --period {period} --shards N, then run every shard",
        cfg.source.display()
    );
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::input(
                &file,
                "no shard plan for this period",
                plan_again,
            ));
        }
        Err(e) => return Err(Error::io(&file, e)),
    };
    let plan: ShardPlan = serde_json::from_str(&text).map_err(|e| {
        Error::input(
            &file,
            format!("is not a shard plan ({e})"),
            "plan the period again",
        )
    })?;
    if plan.run_key != run_key || plan.period != period.to_string() {
        return Err(Error::input(
            &file,
            "the job's config, model, farmland, counties, archive or gengbao's version changed since the plan (or the job's folder is at another path on this machine)",
            plan_again,
        ));
    }
    Ok(plan)
}

/// Runs the tile stage of one shard of `period`.
pub fn run_shard(
    cfg: &JobConfig,
    period: Period,
    shard: Shard,
    opts: &RunOptions,
) -> Result<ShardSummary> {
    let mut checked = CheckedPeriod::new(cfg, period, opts)?;
    let plan = read_plan(cfg, period, &checked.run_key)?;
    if plan.tiles.len() != shard.count {
        return Err(Error::usage(
            format!(
                "shard {shard}: the plan of {period} ({}) has {} shards",
                plan_file(cfg, period).display(),
                plan.tiles.len()
            ),
            format!(
                "run shards 0/{n} to {}/{n}, or plan again with --shards {}",
                plan.tiles.len() - 1,
                shard.count,
                n = plan.tiles.len()
            ),
        ));
    }
    let dir = shard_dir(cfg, period, shard);
    let (checkpoints, _) = Checkpoints::open_in(dir.clone(), &checked.run_key)?;
    let work = dir.join("work");
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    checked.place_products(&work)?;
    let mine: std::collections::HashSet<&String> = plan.tiles[shard.index].iter().collect();
    let tiles: Vec<_> = checked
        .tiles()?
        .into_iter()
        .filter(|t| mine.contains(&t.id()))
        .collect();
    let resumed = tiles.iter().filter(|t| checkpoints.has(&t.id())).count();
    let ctx = checked.context();
    let pool = job_pool(cfg)?;
    // Each tile is saved as its checkpoint as it is done; the outputs are not kept here.
    for_each_tile(
        Some(&pool),
        &tiles,
        |t| ctx.tile(t, &checkpoints),
        |_, _| Ok(()),
    )?;
    std::fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    Ok(ShardSummary {
        shard: shard.to_string(),
        tiles: tiles.len(),
        tiles_resumed: resumed,
    })
}

/// Checks that every shard of `period` finished with the plan's run key, and runs the
/// period from their tiles.
pub fn merge_shards(cfg: &JobConfig, period: Period, quiet: bool) -> Result<RunSummary> {
    let opts = RunOptions {
        counties: Vec::new(),
        quiet,
    };
    let checked = CheckedPeriod::new(cfg, period, &opts)?;
    let plan = read_plan(cfg, period, &checked.run_key)?;
    drop(checked);
    let count = plan.tiles.len();
    // Tiles an earlier merge moved before it failed are found in the period's checkpoints.
    // Nothing is created or discarded before every shard passed.
    let earlier_merge = Checkpoints::peek(cfg.layout().checkpoints(period), &plan.run_key);
    let in_earlier_merge = |t: &String| earlier_merge.as_ref().is_some_and(|c| c.has(t));
    let mut done = Vec::with_capacity(count);
    for (index, tiles) in plan.tiles.iter().enumerate() {
        let shard = Shard { index, count };
        let dir = shard_dir(cfg, period, shard);
        let again = format!(
            "run it: gengbao run --config {} --period {period} --shard {shard}",
            cfg.source.display()
        );
        match Checkpoints::key_in(&dir) {
            None => {
                return Err(Error::input(
                    &dir,
                    format!("shard {shard} has not run"),
                    again,
                ));
            }
            Some(key) if key != plan.run_key => {
                return Err(Error::input(
                    &dir,
                    format!("shard {shard} ran with another config, model, farmland or archive than the plan"),
                    again,
                ));
            }
            Some(_) => {}
        }
        let shard_checkpoints =
            Checkpoints::peek(dir.clone(), &plan.run_key).expect("its key was just checked");
        let missing: Vec<String> = tiles
            .iter()
            .filter(|t| !shard_checkpoints.has(t) && !in_earlier_merge(t))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(Error::input(
                &dir,
                format!(
                    "shard {shard} has not finished: {} of its {} tiles are not done ({})",
                    missing.len(),
                    tiles.len(),
                    crate::geo::layers::listed(&missing)
                ),
                again,
            ));
        }
        let here: Vec<String> = tiles
            .iter()
            .filter(|t| shard_checkpoints.has(t))
            .cloned()
            .collect();
        done.push((shard_checkpoints, here));
    }
    let (period_checkpoints, _) = Checkpoints::open(&cfg.layout(), period, &plan.run_key)?;
    for (shard_checkpoints, tiles) in &done {
        shard_checkpoints.move_into(&period_checkpoints, tiles)?;
    }
    let summary = run_period(cfg, period, &opts)?;
    // The period is committed: a shards folder left behind is only disk space.
    let dir = cfg.layout().shards(period);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!(
            "warning: {} was not removed ({e}); remove it by hand",
            dir.display()
        );
    }
    Ok(summary)
}
