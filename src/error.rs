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
    /// libtorch's message without the C++ stack trace it appends (the command line keeps the
    /// whole text for the run log).
    #[error("libtorch: {}", torch_head(.0))]
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
        let path = path.as_ref();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            if let Some(full) = disk_full(path) {
                return full;
            }
        }
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The first line of libtorch's message: the C++ frames after it name libtorch's own
/// source files, not the user's problem.
pub(crate) fn torch_head(e: &tch::TchError) -> String {
    let text = e.to_string();
    let head = text.split("Exception raised from").next().unwrap_or(&text);
    head.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown libtorch error")
        .to_string()
}

/// Below this much free space a failed write is taken for a full disk.
const NEARLY_FULL: u64 = 16 << 20;

/// Bytes free for this user on the file system holding `path` (or its nearest existing
/// parent folder).
fn free_bytes(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is a NUL-terminated path and stat points to writable memory of the
    // struct statvfs fills in; it is read only when the call succeeded.
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The error to give when a write under `path` failed on a (nearly) full disk: the call's own
/// words (GDAL's "NULL pointer", libtiff's "write error") do not say so.
fn disk_full(path: &Path) -> Option<Error> {
    let free = free_bytes(path)?;
    (free < NEARLY_FULL).then(|| {
        Error::input(
            path,
            format!(
                "no space left on the disk holding it ({} KiB free, os error {})",
                free >> 10,
                libc::ENOSPC
            ),
            "free space on that disk, or set [job] output to a folder on a disk with room; results already committed are unchanged",
        )
    })
}

impl Error {
    /// A write under `path` that failed with `problem`: on a (nearly) full disk, said so.
    pub(crate) fn failed_write(
        path: &Path,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Error {
        disk_full(path).unwrap_or_else(|| Error::input(path, problem, fix))
    }
}

/// Attaches the file name to GDAL errors, which otherwise only say what failed.
pub(crate) trait GdalContext<T> {
    fn in_file(self, path: &Path, fix: &str) -> Result<T>;
}

impl<T> GdalContext<T> for std::result::Result<T, gdal::errors::GdalError> {
    fn in_file(self, path: &Path, fix: &str) -> Result<T> {
        self.map_err(|e| {
            if could_be_a_failed_write(&e) {
                Error::failed_write(path, e.to_string(), fix)
            } else {
                Error::input(path, e.to_string(), fix)
            }
        })
    }
}

/// CPLE_FileIO of GDAL's cpl_error.h (a macro, not in the bindings).
const CPLE_FILE_IO: i32 = 3;

/// GDAL errors a full disk gives (a file that cannot be created, an I/O error, SQLite's
/// "disk is full"), as opposed to a file GDAL could read but not understand: only these are
/// put down to a nearly full disk.
fn could_be_a_failed_write(e: &gdal::errors::GdalError) -> bool {
    use gdal::errors::GdalError;
    match e {
        GdalError::NullPointer { .. } => true,
        GdalError::CplError { number, msg, .. } => {
            *number == CPLE_FILE_IO
                || ["disk is full", "No space left", "write"]
                    .iter()
                    .any(|m| msg.contains(m))
        }
        _ => false,
    }
}
