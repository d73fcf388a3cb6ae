//! Sentinel-2 products as the Copernicus hubs deliver them: SAFE folders (`*.SAFE`) and their
//! zips, read in place (zips through GDAL's `/vsizip/`, nothing unpacked into the job).
//!
//! Takes a product's path. Gives one acquisition per granule: the date and tile from the
//! product's name, the band files (JPEG 2000, each band at its finest resolution: `R10m`, then
//! `R20m`, then `R60m` in Level-2A products), the scene classification (`SCL`) of Level-2A,
//! and the DN offset from the product's metadata (`MTD_MSIL2A.xml` / `MTD_MSIL1C.xml`:
//! `BOA_ADD_OFFSET` / `RADIO_ADD_OFFSET`). Products of processing baseline 04.00 and later
//! (from 25 January 2022) carry an offset of −1000; older ones carry none and state none.

use crate::error::{Error, Result};
use crate::geo::imagery::{date_in, has_band_token, Acquisition, Damage};
use crate::geo::sensor::SensorProfile;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Whether `p` is a SAFE folder: named `*.SAFE`, or holding a product's metadata file (a
/// product unzipped under another name).
pub(crate) fn is_safe_folder(p: &Path) -> bool {
    p.is_dir()
        && (name_of(p).to_ascii_uppercase().ends_with(".SAFE")
            || ["MTD_MSIL2A.xml", "MTD_MSIL1C.xml"]
                .iter()
                .any(|m| p.join(m).is_file()))
}

/// Whether `p` names a zipped Sentinel-2 product (`S2A_MSIL2A_….zip`, `….SAFE.zip`).
pub(crate) fn is_safe_zip(p: &Path) -> bool {
    let name = name_of(p).to_ascii_uppercase();
    name.ends_with(".ZIP") && name.starts_with("S2") && product_level(&name).is_some()
}

fn name_of(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// `L1C` or `L2A`, from a product or metadata file name.
fn product_level(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    ["L1C", "L2A"]
        .into_iter()
        .find(|l| upper.contains(&format!("MSI{l}")))
}

/// The files of a product: their paths inside it ('/'-separated), and how to read them.
struct Listing {
    product: PathBuf,
    entries: Vec<String>,
    zipped: bool,
}

impl Listing {
    fn of(product: &Path) -> std::result::Result<Listing, Damage> {
        let unlisted =
            |dir: &Path, e: std::io::Error| format!("{} cannot be listed ({e})", dir.display());
        if product.is_dir() {
            let mut entries = Vec::new();
            let mut stack = vec![product.to_path_buf()];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).map_err(|e| unlisted(&dir, e))? {
                    let p = e.map_err(|e| unlisted(&dir, e))?.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if let Ok(rel) = p.strip_prefix(product) {
                        let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
                        entries.push(parts.join("/"));
                    }
                }
            }
            entries.sort();
            return Ok(Listing {
                product: product.to_path_buf(),
                entries,
                zipped: false,
            });
        }
        let archive = open_zip(product)?;
        let mut entries: Vec<String> = archive
            .file_names()
            .filter(|n| !n.ends_with('/'))
            .map(str::to_string)
            .collect();
        entries.sort();
        Ok(Listing {
            product: product.to_path_buf(),
            entries,
            zipped: true,
        })
    }

    /// The path GDAL opens for an entry.
    fn gdal_path(&self, entry: &str) -> PathBuf {
        if self.zipped {
            let zip = std::path::absolute(&self.product).unwrap_or(self.product.clone());
            PathBuf::from(format!("/vsizip/{}/{entry}", zip.display()))
        } else {
            self.product.join(entry)
        }
    }

    fn read_text(&self, entry: &str) -> std::result::Result<String, Damage> {
        let unreadable = |e: &dyn std::fmt::Display| format!("{entry} cannot be read ({e})");
        if !self.zipped {
            return std::fs::read_to_string(self.product.join(entry)).map_err(|e| unreadable(&e));
        }
        let mut archive = open_zip(&self.product)?;
        let mut file = archive.by_name(entry).map_err(|e| unreadable(&e))?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|e| unreadable(&e))?;
        Ok(text)
    }
}

fn open_zip(path: &Path) -> std::result::Result<zip::ZipArchive<std::fs::File>, Damage> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot be opened ({e})"))?;
    zip::ZipArchive::new(file).map_err(|e| format!("is not a readable zip ({e})"))
}

/// The acquisitions of one SAFE product (a folder or a zip), one per granule, for a
/// Sentinel-2 `profile`; what is wrong with it when it is damaged. An error is a product the
/// job must not run with (another level than its sensor).
pub(crate) fn acquisitions(
    product: &Path,
    profile: &SensorProfile,
) -> Result<std::result::Result<Vec<Acquisition>, Damage>> {
    let name = name_of(product);
    let listing = match Listing::of(product) {
        Ok(listing) => listing,
        Err(damage) => return Ok(Err(damage)),
    };
    let level = product_level(name)
        .or_else(|| listing.entries.iter().find_map(|e| product_level(e)))
        .ok_or_else(|| {
            Error::input(
                product,
                "is not a Sentinel-2 Level-1C or Level-2A product (no MSIL1C or MSIL2A in its name or metadata)",
                "keep the product's name as delivered, e.g. S2A_MSIL2A_20250115T030951_N0511_R075_T50SKE_20250115T062334.SAFE",
            )
        })?;
    let wanted_level = if profile.name.starts_with("sentinel2-l1c") {
        "L1C"
    } else {
        "L2A"
    };
    if level != wanted_level {
        return Err(Error::input(
            product,
            format!(
                "is a Level-{} product, but the job's sensor is {}",
                &level[1..],
                profile.name
            ),
            format!(
                "set `[imagery] sensor = \"{}\"` for these products, or keep only Level-{} products in the imagery folder",
                if level == "L1C" { "sentinel2-l1c" } else { "sentinel2-l2a" },
                &wanted_level[1..]
            ),
        ));
    }
    // The product's name, else its band files' (a product unzipped under another name).
    let date = date_in(name)
        .or_else(|| {
            listing
                .entries
                .iter()
                .filter(|e| e.ends_with(".jp2"))
                .find_map(|e| date_in(e.rsplit('/').next().unwrap_or(e)))
        })
        .ok_or_else(|| {
            Error::input(
                product,
                "neither the product's name nor its band files carry a sensing date",
                "keep the product's name as delivered (S2X_MSIL2A_YYYYMMDDTHHMMSS_…)",
            )
        })?;
    let offset = match product_offset(&listing, name) {
        Ok(offset) => offset,
        Err(damage) => return Ok(Err(damage)),
    };

    // Band files by granule: GRANULE/<granule>/IMG_DATA/[R10m|R20m|R60m/]<file>.jp2.
    let mut granules: BTreeMap<&str, BTreeMap<String, (u32, &str)>> = BTreeMap::new();
    for entry in &listing.entries {
        let parts: Vec<&str> = entry.split('/').collect();
        let Some(at) = parts.iter().position(|p| *p == "GRANULE") else {
            continue;
        };
        let (Some(granule), Some(file)) = (parts.get(at + 1), parts.last()) else {
            continue;
        };
        if parts.get(at + 2) != Some(&"IMG_DATA") || !file.to_ascii_lowercase().ends_with(".jp2") {
            continue;
        }
        // The finest resolution first; a band at several is read at its finest.
        let rank = match parts.get(at + 3) {
            Some(&"R10m") => 10,
            Some(&"R20m") => 20,
            Some(&"R60m") => 60,
            _ => 0,
        };
        let stem = file.rsplit_once('.').map_or(*file, |(s, _)| s);
        let bands = granules.entry(granule).or_default();
        for band in profile.bands.iter().copied().chain(profile.mask_band) {
            if has_band_token(stem, band) && bands.get(band).is_none_or(|(r, _)| rank < *r) {
                bands.insert(band.to_string(), (rank, entry.as_str()));
            }
        }
    }
    if granules.is_empty() {
        return Ok(Err(
            "holds no band files (GRANULE/*/IMG_DATA/…/*.jp2): it is incomplete".into(),
        ));
    }
    // A product of one granule (every product since December 2016) is its acquisition.
    let several = granules.len() > 1;
    let mut found = Vec::new();
    for (granule, bands) in granules {
        let mut needed = profile.bands.iter().copied().chain(profile.mask_band);
        if let Some(missing) = needed.find(|b| !bands.contains_key(*b)) {
            return Ok(Err(format!(
                "granule {granule} has no {missing} band file: it is incomplete"
            )));
        }
        found.push(Acquisition {
            date,
            folder: if several {
                product.join(granule)
            } else {
                product.to_path_buf()
            },
            files: bands
                .into_iter()
                .map(|(band, (_, entry))| (band, listing.gdal_path(entry)))
                .collect(),
            offset: Some(offset),
            container: listing.zipped.then(|| product.to_path_buf()),
            calibration: None,
            _virtual_rasters: None,
        });
    }
    Ok(Ok(found))
}

/// The product's DN offset: its metadata's `BOA_ADD_OFFSET` (Level-2A) or `RADIO_ADD_OFFSET`
/// (Level-1C); 0 when the metadata states none (baselines before 04.00). Without a metadata
/// file, the processing baseline in the name decides (`N0400` and later: −1000).
fn product_offset(listing: &Listing, name: &str) -> std::result::Result<f32, Damage> {
    let metadata = listing.entries.iter().find(|e| {
        let depth = e.matches('/').count();
        let file = e.rsplit('/').next().unwrap_or(e);
        depth <= 1 && file.starts_with("MTD_MSIL") && file.ends_with(".xml")
    });
    if let Some(entry) = metadata {
        let text = listing.read_text(entry)?;
        return offset_in_metadata(&text)
            .map_err(|e| format!("{entry} is not a readable product metadata file ({e})"));
    }
    // N0206 is baseline 02.06.
    let baseline = name
        .split('_')
        .find_map(|t| t.strip_prefix('N').filter(|d| d.len() == 4))
        .and_then(|d| d.parse::<f32>().ok())
        .map(|b| b / 100.0);
    Ok(baseline.map_or(0.0, baseline_offset))
}

/// The DN offset of a Sentinel-2 product of processing baseline `baseline` (e.g. 4.0 for
/// 04.00): −1000 from 04.00 on (25 January 2022), none before.
pub(crate) fn baseline_offset(baseline: f32) -> f32 {
    if baseline >= 4.0 {
        -1000.0
    } else {
        0.0
    }
}

/// The first `BOA_ADD_OFFSET` or `RADIO_ADD_OFFSET` value of a product metadata file
/// (every band carries the same), 0 when there is none.
fn offset_in_metadata(xml: &str) -> std::result::Result<f32, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut inside = false;
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                let name = e.local_name();
                inside = matches!(name.as_ref(), b"BOA_ADD_OFFSET" | b"RADIO_ADD_OFFSET");
            }
            Event::Text(t) if inside => {
                let text = t.unescape().map_err(|e| e.to_string())?;
                return text
                    .trim()
                    .parse::<f32>()
                    .map_err(|e| format!("offset {:?}: {e}", text.trim()));
            }
            Event::End(_) => inside = false,
            Event::Eof => return Ok(0.0),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_comes_from_the_metadata_and_is_zero_where_it_states_none() {
        let new = r#"<n1:Level-2A_User_Product xmlns:n1="x"><General_Info><Product_Image_Characteristics>
            <QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>
            <BOA_ADD_OFFSET_VALUES_LIST><BOA_ADD_OFFSET band_id="0">-1000</BOA_ADD_OFFSET><BOA_ADD_OFFSET band_id="1">-1000</BOA_ADD_OFFSET></BOA_ADD_OFFSET_VALUES_LIST>
            </Product_Image_Characteristics></General_Info></n1:Level-2A_User_Product>"#;
        assert_eq!(offset_in_metadata(new), Ok(-1000.0));
        let old = r#"<n1:Level-2A_User_Product xmlns:n1="x"><General_Info><PROCESSING_BASELINE>02.06</PROCESSING_BASELINE></General_Info></n1:Level-2A_User_Product>"#;
        assert_eq!(offset_in_metadata(old), Ok(0.0));
        assert!(offset_in_metadata("<a><BOA_ADD_OFFSET>x</BOA_ADD_OFFSET></a>").is_err());
    }

    #[test]
    fn products_are_told_by_their_names() {
        let l2a = Path::new("S2B_MSIL2A_20250107T030549_N0511_R075_T50SKE_20250107T062334.zip");
        assert!(is_safe_zip(l2a));
        assert!(!is_safe_zip(Path::new("LC08_L2SP_123032_20250107.tar")));
        assert!(!is_safe_zip(Path::new("archive.zip")));
        assert_eq!(product_level("MTD_MSIL1C.xml"), Some("L1C"));
    }
}
