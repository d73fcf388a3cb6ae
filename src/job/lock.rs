//! One run per job at a time.
//!
//! Takes: a job's output folder. Gives: a [`JobLock`] held until dropped, or an
//! [`Error::Locked`] naming the holder (pid, host, start time, command).
//!
//! The lock is an advisory `flock` on `<output>/gengbao.lock`, which the kernel releases when
//! its holder dies in any way (SIGKILL included), so a lock left behind by a dead run can
//! never block the next one. The file also records who holds it: a run that finds a record
//! but no lock took over from a dead run and says so. Advisory locks are not reliable on
//! some network file systems (NFS without lockd): keep job outputs on a local disk.

use crate::error::{Error, Result};
use crate::job::layout::OutputLayout;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Held for as long as a run works on a job.
#[derive(Debug)]
pub(crate) struct JobLock {
    file: File,
    /// Set when a dead run's record was found: what it said.
    pub took_over: Option<String>,
}

fn holder_record() -> String {
    let host = host();
    let command: Vec<String> = std::env::args().collect();
    format!(
        "pid {} on host {} since {} ({})",
        std::process::id(),
        if host.is_empty() { "?" } else { &host },
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S"),
        command.join(" ")
    )
}

impl JobLock {
    /// Takes the lock of the job writing into `output`, creating the folder if needed.
    pub(crate) fn acquire(output: &OutputLayout) -> Result<JobLock> {
        let root = output.root();
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let path = output.lock_file();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut previous = String::new();
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                // Best effort: the holder may be writing its record right now.
                let _ = file.read_to_string(&mut previous);
                return Err(Error::Locked {
                    path,
                    holder: if previous.trim().is_empty() {
                        "a run that is starting".into()
                    } else {
                        previous.trim().to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        file.read_to_string(&mut previous)
            .map_err(|e| Error::io(&path, e))?;
        let took_over = (!previous.trim().is_empty()).then(|| previous.trim().to_string());
        let record = holder_record();
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(&path, e))?;
        file.write_all(record.as_bytes())
            .and_then(|_| file.sync_data())
            .map_err(|e| Error::io(&path, e))?;
        Ok(JobLock { file, took_over })
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        // An empty record marks a clean release; the kernel drops the flock with the file.
        let _ = self.file.set_len(0);
    }
}

pub(crate) fn pid_alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

/// This machine's name, so that runs on other hosts sharing the folder are left alone.
pub(crate) fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['-', '/', '.', '@'], "_"))
        .unwrap_or_else(|_| "host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_a_dead_record_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = JobLock::acquire(&OutputLayout::new(dir.path())).unwrap();
        assert!(first.took_over.is_none());
        match JobLock::acquire(&OutputLayout::new(dir.path())) {
            Err(Error::Locked { holder, .. }) => {
                assert!(holder.contains(&format!("pid {}", std::process::id())))
            }
            other => panic!("second lock: {other:?}"),
        }
        drop(first);
        let again = JobLock::acquire(&OutputLayout::new(dir.path())).unwrap();
        assert!(
            again.took_over.is_none(),
            "a clean release leaves no record"
        );
        drop(again);
        // A run killed while holding the lock leaves its record, and the kernel its flock.
        let dead = "pid 999999 on host h since 2026-01-01 00:00:00 (gengbao run)";
        std::fs::write(OutputLayout::new(dir.path()).lock_file(), dead).unwrap();
        let taken = JobLock::acquire(&OutputLayout::new(dir.path())).unwrap();
        assert_eq!(taken.took_over.as_deref(), Some(dead));
    }
}
