//! One error type for the whole pipeline. Every variant a user can cause names the file (or the
//! config key) and says how to fix it, because the person reading it is a technician at a
//! terminal, not the developer.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file is missing, unreadable or inconsistent with the job.
    #[error("{}: {problem}\n  fix: {fix}", path.display())]
    Input {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    /// A job configuration value is wrong.
    #[error("{}: key `{key}`: {problem}\n  fix: {fix}", path.display())]
    Config {
        path: PathBuf,
        key: String,
        problem: String,
        fix: String,
    },
    /// A command-line or API argument is wrong.
    #[error("{problem}\n  fix: {fix}")]
    Usage { problem: String, fix: String },
    /// A tile could not be processed; the run stops rather than leave a hole in the map.
    #[error("tile {tile}: {source}")]
    Tile {
        tile: String,
        #[source]
        source: Box<Error>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another run holds the job's lock.
    #[error("{}: another gengbao run is working on this job: {holder}\n  fix: wait for it to finish (`gengbao schedule` shows what is left); a run that died releases the lock by itself", path.display())]
    Locked { path: PathBuf, holder: String },
    /// Counties whose watched land was not seen clear enough in the period: nothing is
    /// committed.
    #[error("{}: period {period}: too little of the watched land was seen clear (clouds or cloud shadow, nodata, or imagery that does not cover it) in {}\n  fix: nothing was written: the period's earlier results, if any, are kept and it is not marked done. Add imagery that covers these counties or wait for clearer acquisitions (`run --period due` tries the period again); or run the other counties with --county; or lower [imagery] min_clear_share (now {floor})", imagery.display(), counties.join("; "))]
    NoUsableImagery {
        imagery: PathBuf,
        period: String,
        /// `<name> <code>: <share> of <pixels> watched pixels seen clear`, per county.
        counties: Vec<String>,
        floor: f64,
    },
    #[error("GDAL: {0}")]
    Gdal(#[from] gdal::errors::GdalError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn input(
        path: impl AsRef<Path>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Error::Input {
            path: path.as_ref().to_path_buf(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub fn config(
        path: impl AsRef<Path>,
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Error::Config {
            path: path.as_ref().to_path_buf(),
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub fn usage(problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Error::Usage {
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// Attaches the file name to GDAL errors, which otherwise only say what failed.
pub(crate) trait GdalContext<T> {
    fn in_file(self, path: &Path, fix: &str) -> Result<T>;
}

impl<T> GdalContext<T> for std::result::Result<T, gdal::errors::GdalError> {
    fn in_file(self, path: &Path, fix: &str) -> Result<T> {
        self.map_err(|e| Error::input(path, e.to_string(), fix))
    }
}
