//! The job's output folder: every path under it is spelled here and nowhere else.
//!
//! ```text
//! <output>/
//!   gengbao.lock  gengbao.log  ledger.sqlite
//!   .checkpoints/<period>/            per-tile checkpoints of an unfinished run
//!   <period>/                         a committed period (see PeriodFiles)
//!   dispatch/<period>/<XZQDM>[.zip]   dispatch packages
//! ```

use crate::domain::period::Period;
use std::path::{Path, PathBuf};

/// The output folder of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLayout {
    root: PathBuf,
}

impl OutputLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        OutputLayout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The advisory lock one run of the job holds.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("gengbao.lock")
    }

    /// What every run did, skipped or failed, one line each.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("gengbao.log")
    }

    /// The patch ledger (台账).
    pub fn ledger_file(&self) -> PathBuf {
        self.root.join("ledger.sqlite")
    }

    /// The checkpoints of an unfinished run of `period`.
    pub fn checkpoints(&self, period: Period) -> PathBuf {
        self.root.join(".checkpoints").join(period.to_string())
    }

    /// A committed period's folder.
    pub fn period(&self, period: Period) -> PeriodFiles {
        PeriodFiles::in_dir(self.root.join(period.to_string()))
    }

    /// The evidence files inspectors uploaded through the portal, stored by content.
    pub fn evidence(&self) -> PathBuf {
        self.root.join("evidence")
    }

    /// A period split into shards: its plan (`plan.json`) and each shard's tile checkpoints
    /// (`<i>-of-<n>/`), until the merge commits the period.
    pub fn shards(&self, period: Period) -> PathBuf {
        self.root.join(".shards").join(period.to_string())
    }

    /// Returned lists uploaded through the portal, kept by content (`<sha256>.xlsx|csv`).
    pub fn returns(&self) -> PathBuf {
        self.root.join("returns")
    }

    /// The periods whose results are committed (their summary written), oldest first.
    pub fn finished_periods(&self) -> Vec<Period> {
        let mut periods: Vec<Period> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<Period>().ok())
            .filter(|p| self.period(*p).summary().exists())
            .collect();
        periods.sort();
        periods
    }

    /// A county's dispatch package of `period` (a folder; its zip has the `.zip` extension).
    pub fn package(&self, period: Period, county: &str) -> PathBuf {
        self.root
            .join("dispatch")
            .join(period.to_string())
            .join(county)
    }
}

/// The files of one period's results, in its folder or in the staging folder that becomes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodFiles {
    dir: PathBuf,
}

impl PeriodFiles {
    pub(crate) fn in_dir(dir: impl Into<PathBuf>) -> Self {
        PeriodFiles { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Land cover (band 1) and confidence (band 2): archived for later periods.
    pub fn class(&self) -> PathBuf {
        self.dir.join("class.tif")
    }

    /// NDVI composite, minimum and maximum: archived for later periods.
    pub fn ndvi(&self) -> PathBuf {
        self.dir.join("ndvi.tif")
    }

    /// The period's composite, each band's reflectance × 10,000 (16-bit): archived for the
    /// change decision of later periods (the look they are compared with).
    pub fn look(&self) -> PathBuf {
        self.dir.join("composite.tif")
    }

    /// Runs of the FNH, FLH and PH signals: archived for later periods.
    pub fn signals(&self) -> PathBuf {
        self.dir.join("signals.tif")
    }

    pub fn flags(&self) -> PathBuf {
        self.dir.join("flags.tif")
    }

    pub fn quicklook(&self) -> PathBuf {
        self.dir.join("quicklook.png")
    }

    /// Written last: a period with a summary is done.
    pub fn summary(&self) -> PathBuf {
        self.dir.join("summary.json")
    }

    /// Scratch rasters (the Gaofen products warped onto the grid, those of the patch stage),
    /// removed before the period is committed.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Scratch raster of where each pixel lies (parcel, county, basic farmland), from the
    /// first pass over the tiles to the change step.
    pub(crate) fn ground(&self) -> PathBuf {
        self.work().join("ground.tif")
    }

    pub fn counties(&self) -> PathBuf {
        self.dir.join("counties")
    }

    /// A county's patch files, relative to the period folder.
    pub(crate) fn county_entry(county: &str) -> PathBuf {
        Path::new("counties").join(county)
    }

    /// The stem of a county's patch files: `TB_<XZQDM>_<period>`.
    pub(crate) fn county_stem(county: &str, period: Period) -> String {
        format!("TB_{county}_{period}")
    }

    /// Whether the archive a later period reads is all there.
    pub(crate) fn archived(&self) -> bool {
        self.class().exists() && self.ndvi().exists() && self.signals().exists()
    }
}
