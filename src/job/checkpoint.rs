//! Per-tile checkpoints of a period's run: a run killed at any moment (SIGKILL included)
//! resumes where it stopped when the same command is run again.
//!
//! Takes: the job's output folder, the period, a key of everything the whole run depends on
//! (configuration, model, archive of earlier periods, counties), and per tile a fingerprint of
//! the imagery it reads. Gives: the saved bytes of every tile finished with the same inputs.
//!
//! Layout: `<output>/.checkpoints/<period>/run.key` and one `<tile>.ckpt` per finished tile
//! (compressed, written beside and renamed into place, so a file is either whole or absent;
//! a damaged one is redone); a shard of a period keeps the same layout in its own folder
//! (`<output>/.shards/<period>/<i>-of-<n>/`). A different run key discards every checkpoint
//! of the folder; each tile's header also carries the run key with its imagery fingerprint,
//! so that a tile saved by a process of another run into the folder is redone, never
//! resumed. The folder is removed once the period is committed.

use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::geo::imagery::Acquisition;
use crate::job::layout::OutputLayout;
use std::path::{Path, PathBuf};

/// Checkpoints are Zstandard frames at its fastest level: most of their bytes are a tile's
/// composite, reflectance that hardly compresses, on which DEFLATE spent more time than the
/// write saved.
const MAGIC: &[u8; 8] = b"GBCKPT3\n";

pub(crate) struct Checkpoints {
    dir: PathBuf,
    run_key: String,
}

/// What a run found of an earlier attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Earlier {
    None,
    /// Checkpoints of a run with other settings, model or archive: all were discarded.
    Discarded,
    Kept,
}

pub(crate) enum Saved {
    Missing,
    /// The tile's imagery changed since it was saved.
    Stale,
    Found(Vec<u8>),
}

/// A key for a list of identities (one per line).
pub(crate) fn key_of(identities: &[String]) -> String {
    crate::short_sha256(identities.join("\n").as_bytes(), 16)
}

/// Identity of a file for change detection: path, size and modification time (what `make`
/// and `rsync` use; hashing the imagery would cost as much as reading it). A remote asset
/// (`/vsicurl/`, `/vsis3/`) has the size and time its server states.
pub(crate) fn file_identity(path: &Path) -> Result<String> {
    if path.starts_with("/vsicurl") || path.starts_with("/vsis3") {
        let (size, mtime) = crate::geo::raster::vsi_stat(path).ok_or_else(|| {
            Error::input(
                path,
                format!("cannot be reached ({})", crate::geo::raster::last_gdal_error()),
                "check the address and the network (GDAL_HTTP_PROXY passes a proxy), or save the assets locally",
            )
        })?;
        return Ok(format!("{}|{size}|{mtime}", path.display()));
    }
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}|{}|{mtime}", path.display(), m.len()))
}

/// Identity of an acquisition: that of every file it has (of the zip they are read from,
/// for a zipped product), and the DN offset its product states.
pub(crate) fn acquisition_identity(a: &Acquisition) -> Result<String> {
    let mut ids = a
        .source_files()
        .iter()
        .map(|f| file_identity(f))
        .collect::<Result<Vec<_>>>()?;
    if let Some(offset) = a.offset {
        ids.push(format!("offset {offset}"));
    }
    // A product's DNs become other reflectance when its `.xml` or the coefficient table
    // changes.
    if let Some(c) = &a.calibration {
        ids.push(format!(
            "calibration {:?} {:?}",
            c.dn_offset, c.reflectance_per_dn
        ));
    }
    Ok(ids.join("\n"))
}

impl Checkpoints {
    /// Opens the period's checkpoints for a run with `run_key`, discarding those of a run
    /// with another key.
    pub fn open(output: &OutputLayout, period: Period, run_key: &str) -> Result<(Self, Earlier)> {
        Self::open_in(output.checkpoints(period), run_key)
    }

    /// Opens the checkpoints in `dir` (a shard's) for a run with `run_key`, discarding those
    /// of a run with another key.
    pub fn open_in(dir: PathBuf, run_key: &str) -> Result<(Self, Earlier)> {
        let run_key = run_key.to_string();
        let key_file = dir.join("run.key");
        let earlier = match std::fs::read_to_string(&key_file) {
            Ok(k) if k == run_key => Earlier::Kept,
            Ok(_) => Earlier::Discarded,
            Err(_) if dir.exists() => Earlier::Discarded,
            Err(_) => Earlier::None,
        };
        if earlier == Earlier::Discarded {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        if earlier != Earlier::Kept {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            write_atomically(&key_file, run_key.as_bytes())?;
        }
        Ok((Checkpoints { dir, run_key }, earlier))
    }

    /// The key of the run that saved the checkpoints in `dir`, if any.
    pub fn key_in(dir: &Path) -> Option<String> {
        std::fs::read_to_string(dir.join("run.key")).ok()
    }

    /// The checkpoints in `dir` when a run with `run_key` saved them; nothing is created or
    /// discarded.
    pub fn peek(dir: PathBuf, run_key: &str) -> Option<Checkpoints> {
        (Self::key_in(&dir).as_deref() == Some(run_key)).then(|| Checkpoints {
            dir,
            run_key: run_key.to_string(),
        })
    }

    /// What a tile's header carries: its imagery and the run's key.
    fn stamp(&self, fingerprint: &str) -> String {
        key_of(&[self.run_key.clone(), fingerprint.to_string()])
    }

    /// Whether tile `tile` is saved (whatever its imagery).
    pub fn has(&self, tile: &str) -> bool {
        self.path(tile).exists()
    }

    /// Moves the saved tiles of `self` into `into` (the period's own checkpoints).
    pub fn move_into(&self, into: &Checkpoints, tiles: &[String]) -> Result<()> {
        for t in tiles {
            let (from, to) = (self.path(t), into.path(t));
            std::fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
        }
        Ok(())
    }

    fn path(&self, tile: &str) -> PathBuf {
        self.dir.join(format!("{tile}.ckpt"))
    }

    pub fn load(&self, tile: &str, fingerprint: &str) -> Result<Saved> {
        let fingerprint = &self.stamp(fingerprint);
        let path = self.path(tile);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(Saved::Missing);
        };
        // A damaged file (a power cut after the rename, a disk error) is just redone.
        let header = MAGIC.len() + fingerprint.len();
        if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
            return Ok(Saved::Missing);
        }
        if &bytes[MAGIC.len()..header] != fingerprint.as_bytes() {
            return Ok(Saved::Stale);
        }
        Ok(match zstd::stream::decode_all(&bytes[header..]) {
            Ok(out) => Saved::Found(out),
            Err(_) => Saved::Missing,
        })
    }

    pub fn save(&self, tile: &str, fingerprint: &str, data: &[u8]) -> Result<()> {
        let fingerprint = &self.stamp(fingerprint);
        let compressed = zstd::bulk::compress(data, 1).expect("compressing in memory");
        let mut bytes = Vec::with_capacity(MAGIC.len() + fingerprint.len() + compressed.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(fingerprint.as_bytes());
        bytes.extend_from_slice(&compressed);
        write_atomically(&self.path(tile), &bytes)
    }

    /// The period is committed: its checkpoints are no longer needed.
    pub fn finish(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))
    }
}

/// Writes `bytes` to `path` through a `.partial` file renamed over it: a reader sees the old
/// file or the whole new one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).map_err(|e| Error::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_tiles_come_back_unless_their_imagery_or_the_run_changed() {
        let dir = tempfile::tempdir().unwrap();
        let period: Period = "2025-P3".parse().unwrap();
        let (c, earlier) =
            Checkpoints::open(&OutputLayout::new(dir.path()), period, "key1").unwrap();
        assert_eq!(earlier, Earlier::None);
        c.save("r000c000", "fp", b"tile bytes").unwrap();
        assert!(matches!(c.load("r000c000", "fp").unwrap(), Saved::Found(b) if b == b"tile bytes"));
        assert!(matches!(c.load("r000c000", "other").unwrap(), Saved::Stale));
        assert!(matches!(c.load("r000c001", "fp").unwrap(), Saved::Missing));
        // Truncated on disk: redone, not an error.
        let file = OutputLayout::new(dir.path())
            .checkpoints(period)
            .join("r000c000.ckpt");
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
        assert!(matches!(c.load("r000c000", "fp").unwrap(), Saved::Missing));
        c.save("r000c000", "fp", b"tile bytes").unwrap();
        let (c, earlier) =
            Checkpoints::open(&OutputLayout::new(dir.path()), period, "key1").unwrap();
        assert_eq!(earlier, Earlier::Kept);
        assert!(matches!(c.load("r000c000", "fp").unwrap(), Saved::Found(_)));
        let (c, earlier) =
            Checkpoints::open(&OutputLayout::new(dir.path()), period, "key2").unwrap();
        assert_eq!(earlier, Earlier::Discarded);
        assert!(matches!(c.load("r000c000", "fp").unwrap(), Saved::Missing));
    }
}
