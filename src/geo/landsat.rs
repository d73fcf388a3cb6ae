//! Landsat Collection 2 Level-2 scenes as USGS delivers them: one `.tar` per scene
//! (`LC09_L2SP_119038_20250115_20250125_02_T1.tar`), read in place through GDAL's `/vsitar/`,
//! nothing unpacked into the job. (An unpacked scene is a folder of band files, which the
//! catalog reads as any acquisition folder.)
//!
//! Takes a scene's tar. Gives its acquisition: the date from the scene's name (the acquisition
//! date, not the processing date after it), the `SR_B*` band files and `QA_PIXEL`. The sensor
//! comes from the name too (`LC08`/`LC09`: OLI, `LT04`/`LT05`/`LE07`: TM and ETM+), and a
//! scene of another sensor than the job's profile is refused with the profile to set.
//! Collection 2's scale and offset (0.0000275, −0.2) are the profiles' own; the MTL file is
//! not read.

use crate::error::{Error, Result};
use crate::geo::imagery::{date_in, has_band_token, Acquisition, Damage};
use crate::geo::raster::tar_entries;
use crate::geo::sensor::SensorProfile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Whether `p` names a Landsat Collection 2 Level-2 scene's tar.
pub(crate) fn is_landsat_tar(p: &Path) -> bool {
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_uppercase();
    name.ends_with(".TAR") && sensor_profile(&name).is_some() && name.contains("_L2")
}

/// The profile a scene's sensor needs, from its name.
fn sensor_profile(name: &str) -> Option<&'static str> {
    match name.get(..4)? {
        "LC08" | "LC09" => Some("landsat-oli-sr"),
        "LT04" | "LT05" | "LE07" => Some("landsat-tm-sr"),
        _ => None,
    }
}

/// The acquisition of one scene's tar for `profile`; what is wrong with it when it is
/// damaged. An error is a scene the job must not run with (another sensor than its profile).
pub(crate) fn acquisitions(
    tar: &Path,
    profile: &SensorProfile,
) -> Result<std::result::Result<Vec<Acquisition>, Damage>> {
    let name = tar.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let wanted = sensor_profile(&name.to_ascii_uppercase()).unwrap_or("");
    if wanted != profile.name {
        return Err(Error::input(
            tar,
            format!(
                "is a {} scene, but the job's sensor is {}",
                &name[..4.min(name.len())],
                profile.name
            ),
            format!(
                "set `[imagery] sensor = \"{wanted}\"` for these scenes, or keep one sensor's scenes in the imagery folder"
            ),
        ));
    }
    let Some(date) = date_in(name) else {
        return Ok(Err(
            "the scene's name carries no acquisition date: keep the name as delivered".into(),
        ));
    };
    let (root, entries) = match tar_entries(tar) {
        Ok(listed) => listed,
        Err(damage) => return Ok(Err(damage)),
    };
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in &entries {
        let Some(file) = entry.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let lower = file.to_ascii_lowercase();
        if !(lower.ends_with(".tif") || lower.ends_with(".tiff")) {
            continue;
        }
        let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
        for band in profile.bands.iter().copied().chain(profile.mask_band) {
            if has_band_token(stem, band) {
                files.insert(band.to_string(), root.join(entry));
            }
        }
    }
    let mut needed = profile.bands.iter().copied().chain(profile.mask_band);
    if let Some(missing) = needed.find(|b| !files.contains_key(*b)) {
        return Ok(Err(format!("has no {missing} file: it is incomplete")));
    }
    Ok(Ok(vec![Acquisition {
        date,
        folder: tar.to_path_buf(),
        files,
        offset: None,
        container: Some(tar.to_path_buf()),
        calibration: None,
        _virtual_rasters: None,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_told_by_their_names() {
        assert!(is_landsat_tar(Path::new(
            "LC09_L2SP_119038_20250115_20250125_02_T1.tar"
        )));
        assert!(is_landsat_tar(Path::new(
            "LT05_L2SP_119038_20050713_20200902_02_T1.TAR"
        )));
        assert!(!is_landsat_tar(Path::new(
            "LC09_L1TP_119038_20250115_20250125_02_T1.tar"
        )));
        assert!(!is_landsat_tar(Path::new("GF2_PMS1_20250105.tar")));
        assert_eq!(
            date_in("LC09_L2SP_119038_20250115_20250125_02_T1.tar"),
            chrono::NaiveDate::from_ymd_opt(2025, 1, 15)
        );
    }
}
