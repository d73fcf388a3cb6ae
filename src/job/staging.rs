//! Staging folders: results are written beside their target and replace it in one rename, so
//! that a failed or killed run never leaves half a result and never loses the previous one.
//! Leftovers of killed runs (named `.gengbao-KIND@HOST-NAME-PID`) are cleared or restored by
//! [`clean_stale`].

use crate::error::{Error, Result};
use crate::job::lock::{host, pid_alive};
use std::path::{Path, PathBuf};

/// A folder that results are written into before they replace their target in one rename, so
/// that a failed or killed run never leaves half a result and never loses the previous one.
/// It sits beside the target (same file system) and is removed when dropped.
pub(crate) struct StagingDir {
    path: PathBuf,
}

/// `.gengbao-KIND@HOST-NAME-PID`: a name only gengbao makes.
fn leftover_name(kind: &str, name: &str) -> String {
    format!(".gengbao-{kind}@{}-{name}-{}", host(), std::process::id())
}

/// (kind, host, name, pid) of an entry named by [`leftover_name`].
fn leftover(entry: &str) -> Option<(&str, &str, &str, &str)> {
    let (kind, rest) = entry.strip_prefix(".gengbao-")?.split_once('@')?;
    let (host, rest) = rest.split_once('-')?;
    let (name, pid) = rest.rsplit_once('-')?;
    let ours = matches!(kind, "staging" | "old")
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit());
    ours.then_some((kind, host, name, pid))
}

/// Clears what killed gengbao runs of this machine left in `parent` (entries named by
/// [`leftover_name`] only): staging folders of dead processes are removed; a set-aside
/// previous result is put back when its folder is missing (the process died between the two
/// renames of a replacement), else removed.
pub(crate) fn clean_stale(parent: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(());
    };
    let this_host = host();
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some((kind, entry_host, name, pid)) = file_name.to_str().and_then(leftover) else {
            continue;
        };
        // Another machine's run, or a live process here: not ours to touch.
        if entry_host != this_host || (pid_alive(pid) && pid != std::process::id().to_string()) {
            continue;
        }
        let path = e.path();
        let target = parent.join(name);
        if kind == "old" && !target.exists() {
            std::fs::rename(&path, &target).map_err(|e| Error::io(&target, e))?;
        } else {
            remove_path(&path)?;
        }
    }
    Ok(())
}

fn remove_path(path: &Path) -> Result<()> {
    let r = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    r.map_err(|e| Error::io(path, e))
}

/// Puts `new` in the place of `target` (file or folder), keeping the old one until the new one
/// is in place and restoring it if that fails.
fn replace_path(new: &Path, target: &Path) -> Result<()> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let old = parent.join(leftover_name("old", name));
    let had = target.symlink_metadata().is_ok();
    if had {
        std::fs::rename(target, &old).map_err(|e| Error::io(target, e))?;
    }
    if let Err(e) = std::fs::rename(new, target) {
        if had {
            let _ = std::fs::rename(&old, target);
        }
        return Err(Error::io(target, e));
    }
    if had {
        remove_path(&old)?;
    }
    Ok(())
}

impl StagingDir {
    /// A fresh staging folder beside `target`, after clearing leftovers of killed runs there.
    pub fn beside(target: &Path) -> Result<Self> {
        let name = target.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            Error::usage(
                format!("`{}` does not name a folder", target.display()),
                "give an output folder by name, e.g. out/city",
            )
        })?;
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        clean_stale(parent)?;
        // Any folder of this name was this process's and is gone with `clean_stale`.
        let path = parent.join(leftover_name("staging", name));
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        Ok(StagingDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces `target` with the whole staged folder.
    pub fn replace(self, target: &Path) -> Result<()> {
        replace_path(&self.path, target)
    }

    /// Replaces `target` with one entry of the staged folder.
    pub(crate) fn move_entry(&self, entry: impl AsRef<Path>, target: &Path) -> Result<()> {
        replace_path(&self.path.join(entry), target)
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_keeps_the_old_result_until_the_new_one_is_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("2026-P1");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("a.txt"), "old").unwrap();
        let staging = StagingDir::beside(&target).unwrap();
        std::fs::write(staging.path().join("a.txt"), "new").unwrap();
        staging.replace(&target).unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("a.txt")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "nothing left beside it"
        );
    }

    #[test]
    fn leftovers_of_killed_runs_are_cleared_or_restored() {
        let tmp = tempfile::tempdir().unwrap();
        // pid 0 is never a user process: these come from a dead run of this machine.
        let h = host();
        let dead =
            |kind: &str, name: &str| tmp.path().join(format!(".gengbao-{kind}@{h}-{name}-0"));
        std::fs::create_dir_all(dead("staging", "2026-P1").join("work")).unwrap();
        std::fs::create_dir_all(dead("old", "2026-P2")).unwrap();
        std::fs::write(dead("old", "2026-P2").join("summary.json"), "{}").unwrap();
        std::fs::create_dir_all(tmp.path().join("2026-P3")).unwrap();
        std::fs::create_dir_all(dead("old", "2026-P3")).unwrap();
        // Not gengbao's, or another machine's: left alone.
        std::fs::create_dir_all(tmp.path().join(".old-notes-99999")).unwrap();
        std::fs::create_dir_all(tmp.path().join(".gengbao-old@otherhost-2026-P4-0")).unwrap();
        clean_stale(tmp.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".gengbao-old@otherhost-2026-P4-0",
                ".old-notes-99999",
                "2026-P2",
                "2026-P3"
            ]
        );
        assert!(
            tmp.path().join("2026-P2/summary.json").exists(),
            "the set-aside period is restored"
        );
    }
}
