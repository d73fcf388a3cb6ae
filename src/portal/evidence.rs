//! Evidence (举证) files attached to a patch: site photos (JPEG, PNG) and approval documents
//! (PDF).
//!
//! Takes: an upload's bytes, the name its sender gave it, the patch's outline (grid CRS) and
//! period. Gives: the file stored by content (`<output>/evidence/<sha256>.<ext>`: a name from
//! a user never becomes a path, and the same file twice is stored once), a row in the ledger
//! file's append-only evidence table, and for a photo the position and time its EXIF states,
//! checked against the patch: the distance to its outline, and warnings beyond
//! `max_distance_m` or for a photo taken before the patch's period began.

use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::ledger::{append_only, db_error, lines_to_text, now, text_to_lines};
use gdal::spatial_ref::SpatialRef;
use gdal::vector::Geometry;
use rusqlite::{params, Connection};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The largest file accepted.
pub const MAX_BYTES: usize = 20 << 20;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tbbh TEXT NOT NULL,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    sent_name TEXT NOT NULL,
    note TEXT NOT NULL,
    lon REAL, lat REAL, taken TEXT, distance_m REAL,
    warnings TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_patch ON evidence (tbbh);
";

/// What a file is, told by its first bytes (never by its name or the sender's word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jpeg,
    Png,
    Pdf,
}

impl Kind {
    pub fn of(bytes: &[u8]) -> Option<Kind> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Kind::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Kind::Png)
        } else if bytes.starts_with(b"%PDF-") {
            Some(Kind::Pdf)
        } else {
            None
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Kind::Jpeg => "jpg",
            Kind::Png => "png",
            Kind::Pdf => "pdf",
        }
    }

    /// The kind a stored file's recorded extension names.
    fn from_extension(extension: &str) -> Option<Kind> {
        [Kind::Jpeg, Kind::Png, Kind::Pdf]
            .into_iter()
            .find(|k| k.extension() == extension)
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Kind::Jpeg => "image/jpeg",
            Kind::Png => "image/png",
            Kind::Pdf => "application/pdf",
        }
    }
}

/// One evidence file as the patch card shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvidenceFile {
    pub at: String,
    pub who: String,
    pub sha256: String,
    pub kind: String,
    pub bytes: u64,
    /// The name the sender gave the file (shown, never used as a path).
    pub sent_name: String,
    pub note: String,
    /// Where and when a photo says it was taken (EXIF).
    pub lon: Option<f64>,
    pub lat: Option<f64>,
    pub taken: Option<String>,
    /// Distance from the photo's position to the patch's outline (0 inside it).
    pub distance_m: Option<f64>,
    pub warnings: Vec<String>,
}

/// The patch a file is evidence for.
pub struct Patch<'a> {
    pub tbbh: &'a str,
    /// In the grid CRS.
    pub outline: &'a Geometry,
    pub grid_crs: &'a SpatialRef,
    /// The period the patch was last seen in.
    pub period: Period,
}

/// The evidence table of a job's ledger file and the folder its files are stored in.
pub struct EvidenceStore {
    conn: Connection,
    path: PathBuf,
    folder: PathBuf,
}

impl EvidenceStore {
    pub fn open(ledger_file: &Path, folder: &Path) -> Result<EvidenceStore> {
        let conn = Connection::open(ledger_file).map_err(db_error(ledger_file))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .and_then(|_| conn.execute_batch(SCHEMA))
            .and_then(|_| conn.execute_batch(&append_only("evidence")))
            .map_err(db_error(ledger_file))?;
        Ok(EvidenceStore {
            conn,
            path: ledger_file.to_path_buf(),
            folder: folder.to_path_buf(),
        })
    }

    /// Checks and stores a file for `patch`; `max_distance_m` is how far from the outline a
    /// photo may be taken without a warning. A file of another type, or larger than
    /// [`MAX_BYTES`], is refused and nothing is stored.
    pub fn add(
        &self,
        patch: &Patch,
        bytes: &[u8],
        sent_name: &str,
        note: &str,
        who: &str,
        max_distance_m: f64,
    ) -> Result<EvidenceFile> {
        if bytes.len() > MAX_BYTES {
            return Err(Error::usage(
                format!("the file has {} bytes, more than {MAX_BYTES}", bytes.len()),
                "send a smaller photo or document",
            ));
        }
        let kind = Kind::of(bytes).ok_or_else(|| {
            Error::usage(
                "the file is not a JPEG or PNG photo or a PDF document (by its content)",
                "send the photo or the approval document itself",
            )
        })?;
        let sha256 = crate::short_sha256(bytes, 32);
        let (place, taken) = match kind {
            Kind::Jpeg | Kind::Png => photo_exif(bytes),
            Kind::Pdf => (None, None),
        };
        let mut warnings = Vec::new();
        let distance_m = match place {
            Some((lon, lat)) => match distance_to(patch, lon, lat) {
                Ok(d) => Some(d),
                Err(_) => {
                    warnings.push(format!(
                        "the photo's position ({lon}, {lat}) cannot be placed"
                    ));
                    None
                }
            },
            None if kind != Kind::Pdf => {
                warnings.push("the photo states no position".to_string());
                None
            }
            None => None,
        };
        if let Some(d) = distance_m.filter(|d| *d > max_distance_m) {
            warnings.push(format!(
                "taken {d:.0} m from the patch (more than {max_distance_m:.0} m)"
            ));
        }
        if let Some(t) = &taken {
            if t.as_str()
                < patch
                    .period
                    .first_day()
                    .format("%Y-%m-%d")
                    .to_string()
                    .as_str()
            {
                warnings.push(format!("taken {t}, before period {} began", patch.period));
            }
        } else if kind != Kind::Pdf {
            warnings.push("the photo states no time".to_string());
        }
        std::fs::create_dir_all(&self.folder).map_err(|e| Error::io(&self.folder, e))?;
        let stored = self.folder.join(format!("{sha256}.{}", kind.extension()));
        if !stored.exists() {
            crate::job::checkpoint::write_atomically(&stored, bytes)?;
        }
        let file = EvidenceFile {
            at: now(),
            who: who.to_string(),
            sha256,
            kind: kind.extension().to_string(),
            bytes: bytes.len() as u64,
            sent_name: sent_name.chars().take(200).collect(),
            note: note.to_string(),
            lon: place.map(|p| p.0),
            lat: place.map(|p| p.1),
            taken,
            distance_m,
            warnings,
        };
        self.conn
            .execute(
                "INSERT INTO evidence (tbbh, at, who, sha256, kind, bytes, sent_name, note, lon, lat, taken, distance_m, warnings)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    patch.tbbh,
                    file.at,
                    file.who,
                    file.sha256,
                    file.kind,
                    file.bytes as i64,
                    file.sent_name,
                    file.note,
                    file.lon,
                    file.lat,
                    file.taken,
                    file.distance_m,
                    lines_to_text(&file.warnings),
                ],
            )
            .map_err(db_error(&self.path))?;
        Ok(file)
    }

    /// The stored file `sha256` of patch `tbbh` with its kind; None when the patch has no
    /// such file (a file of another patch is not found through this one).
    pub fn file(&self, tbbh: &str, sha256: &str) -> Result<Option<(Kind, Vec<u8>)>> {
        let found = self.of(tbbh)?.into_iter().find(|f| f.sha256 == sha256);
        let Some((found, kind)) = found.and_then(|f| Kind::from_extension(&f.kind).map(|k| (f, k)))
        else {
            return Ok(None);
        };
        let stored = self
            .folder
            .join(format!("{}.{}", found.sha256, kind.extension()));
        let bytes = std::fs::read(&stored).map_err(|e| Error::io(&stored, e))?;
        Ok(Some((kind, bytes)))
    }

    /// The evidence of a patch, oldest first.
    pub fn of(&self, tbbh: &str) -> Result<Vec<EvidenceFile>> {
        let read = || -> rusqlite::Result<Vec<EvidenceFile>> {
            let mut stmt = self.conn.prepare(
                "SELECT at, who, sha256, kind, bytes, sent_name, note, lon, lat, taken, distance_m, warnings
                 FROM evidence WHERE tbbh = ? ORDER BY id",
            )?;
            let rows = stmt.query_map([tbbh], |r| {
                let warnings: String = r.get(11)?;
                Ok(EvidenceFile {
                    at: r.get(0)?,
                    who: r.get(1)?,
                    sha256: r.get(2)?,
                    kind: r.get(3)?,
                    bytes: r.get::<_, i64>(4)? as u64,
                    sent_name: r.get(5)?,
                    note: r.get(6)?,
                    lon: r.get(7)?,
                    lat: r.get(8)?,
                    taken: r.get(9)?,
                    distance_m: r.get(10)?,
                    warnings: text_to_lines(&warnings),
                })
            })?;
            rows.collect()
        };
        read().map_err(db_error(&self.path))
    }
}

/// Metres from (lon, lat) to the patch's outline, in the grid CRS.
fn distance_to(patch: &Patch, lon: f64, lat: f64) -> Result<f64> {
    let mut grid = patch.grid_crs.clone();
    grid.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let to_grid = crate::geo::raster::transform_between(&crate::geo::raster::lon_lat()?, &grid)?;
    let mut point = Geometry::from_wkt(&format!("POINT ({lon} {lat})"))?;
    point.transform_inplace(&to_grid)?;
    // SAFETY: both handles are live geometries owned by the caller for the call's length;
    // OGR_G_Distance reads them and returns a value (-1 on failure).
    let d = unsafe { gdal_sys::OGR_G_Distance(point.c_geometry(), patch.outline.c_geometry()) };
    match d >= 0.0 {
        true => Ok(d),
        false => Err(Error::usage(
            "the photo's distance to the patch cannot be measured",
            "check the patch's outline in the ledger",
        )),
    }
}

/// The position (longitude, latitude in degrees) and the time (`YYYY-MM-DD HH:MM:SS`) a
/// photo's EXIF states, each when it does.
fn photo_exif(bytes: &[u8]) -> (Option<(f64, f64)>, Option<String>) {
    use exif::{In, Tag, Value};
    // Phones and cameras write EXIF with small faults (GDAL's has a stray next-IFD offset):
    // what parses is kept.
    let read = exif::Reader::new()
        .continue_on_error(true)
        .read_from_container(&mut std::io::Cursor::new(bytes))
        .or_else(|e| e.distill_partial_result(drop));
    let Ok(exif) = read else {
        return (None, None);
    };
    let degrees = |tag: Tag, negative: &[u8]| -> Option<f64> {
        let Value::Rational(parts) = &exif.get_field(tag, In::PRIMARY)?.value else {
            return None;
        };
        let value = parts
            .iter()
            .zip([1.0, 60.0, 3600.0])
            .map(|(r, d)| r.to_f64() / d)
            .sum::<f64>();
        let reference = match tag {
            Tag::GPSLatitude => Tag::GPSLatitudeRef,
            _ => Tag::GPSLongitudeRef,
        };
        let sign = match &exif.get_field(reference, In::PRIMARY).map(|f| &f.value) {
            Some(Value::Ascii(refs))
                if refs
                    .first()
                    .is_some_and(|r| r.first().is_some_and(|c| negative.contains(c))) =>
            {
                -1.0
            }
            _ => 1.0,
        };
        value.is_finite().then_some(sign * value)
    };
    let place = degrees(Tag::GPSLongitude, b"W")
        .zip(degrees(Tag::GPSLatitude, b"S"))
        .filter(|(lon, lat)| lon.abs() <= 180.0 && lat.abs() <= 90.0);
    let taken = exif
        .get_field(Tag::DateTimeOriginal, In::PRIMARY)
        .or_else(|| exif.get_field(Tag::DateTime, In::PRIMARY))
        .and_then(|f| match &f.value {
            Value::Ascii(v) => v.first().map(|s| String::from_utf8_lossy(s).to_string()),
            _ => None,
        })
        // EXIF writes dates with colons: 2025:03:14 10:20:00.
        .map(|s| s.replacen(':', "-", 2));
    (place, taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_told_by_their_content() {
        assert_eq!(Kind::of(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Kind::Jpeg));
        assert_eq!(Kind::of(b"\x89PNG\r\n\x1a\n...."), Some(Kind::Png));
        assert_eq!(Kind::of(b"%PDF-1.7"), Some(Kind::Pdf));
        assert_eq!(Kind::of(b"MZ\x90\x00 a program named photo.jpg"), None);
        assert_eq!(Kind::of(b""), None);
    }
}
