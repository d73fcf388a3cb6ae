//! Landsat Collection 2 Level-2 scenes as USGS delivers them: one `.tar` per scene
//! (`LC09_L2SP_119038_20250115_20250125_02_T1.tar`), read in place through GDAL's `/vsitar/`,
//! nothing unpacked into the job, or the same files unpacked into a folder.
//!
//! Takes a scene's tar (or an unpacked scene's files). Gives its acquisition: the `SR_B*`
//! band files and `QA_PIXEL`, dated and scaled by the scene's MTL file (`*_MTL.json`, else
//! `*_MTL.txt`): `DATE_ACQUIRED`, and the surface reflectance scale and offset of each band
//! (`REFLECTANCE_MULT_BAND_n`, `REFLECTANCE_ADD_BAND_n` of the Level-2 group; the Level-1
//! group's top-of-atmosphere ones are other numbers under the same names). A scene whose
//! scale is not its profile's is not Collection 2 Level-2 surface reflectance and is left
//! out with that reason. Without an MTL file the date comes from the scene's name (the
//! acquisition date, not the processing date after it) and the scale and offset are the
//! profile's (Collection 2's 0.0000275 and −0.2). The sensor comes from the name
//! (`LC08`/`LC09`: OLI, `LT04`/`LT05`/`LE07`: TM and ETM+), and a scene of another sensor
//! than the job's profile is refused with the profile to set.

use crate::error::{Error, Result};
use crate::geo::imagery::{date_in, has_band_token, Acquisition, Damage};
use crate::geo::raster::{read_small_file, tar_entries};
use crate::geo::sensor::SensorProfile;
use chrono::NaiveDate;
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

/// Whether `profile` reads Collection 2 Level-2 surface reflectance (whose MTL files state
/// its scale), not Level-1 DNs.
pub(crate) fn is_surface_reflectance(profile: &SensorProfile) -> bool {
    matches!(profile.name, "landsat-oli-sr" | "landsat-tm-sr")
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
    let (root, entries) = match tar_entries(tar) {
        Ok(listed) => listed,
        Err(damage) => return Ok(Err(damage)),
    };
    let entries: Vec<PathBuf> = entries.iter().map(|e| root.join(e)).collect();
    let stated = match scene_metadata(&entries, profile) {
        Ok(stated) => stated,
        Err(damage) => return Ok(Err(damage)),
    };
    let Some(date) = stated.as_ref().map(|m| m.date).or_else(|| date_in(name)) else {
        return Ok(Err(
            "the scene's name carries no acquisition date, and it has no MTL file: keep the scene as delivered".into(),
        ));
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
                files.insert(band.to_string(), entry.clone());
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
        offset: stated.map(|m| m.dn_offset),
        container: Some(tar.to_path_buf()),
        calibration: None,
        _virtual_rasters: None,
    }]))
}

/// What a scene's MTL file states.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SceneMetadata {
    pub date: NaiveDate,
    /// The DN offset of its surface reflectance: `REFLECTANCE_ADD / REFLECTANCE_MULT`.
    pub dn_offset: f32,
}

/// What the MTL file among a scene's `files` states (the JSON one when both are there);
/// `None` without one. An MTL file that does not state the date or the profile bands'
/// scale and offset, states another scale than the profile's, or another spacecraft than
/// the profile reads, is what is wrong with the scene.
pub(crate) fn scene_metadata(
    files: &[PathBuf],
    profile: &SensorProfile,
) -> std::result::Result<Option<SceneMetadata>, Damage> {
    let named = |suffix: &str| {
        files.iter().find(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.to_ascii_uppercase().ends_with(suffix))
        })
    };
    let Some(mtl) = named("_MTL.JSON").or_else(|| named("_MTL.TXT")) else {
        return Ok(None);
    };
    let file = mtl.file_name().and_then(|n| n.to_str()).unwrap_or("MTL");
    let text = read_small_file(mtl)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(format!("its {file} cannot be read"))?;
    let fields = if file.to_ascii_uppercase().ends_with(".JSON") {
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("its {file} is not JSON ({e})"))?;
        json_fields(&value)
    } else {
        odl_fields(&text)
    };
    let field = |group: &str, key: &str| {
        fields
            .get(&(group.to_string(), key.to_string()))
            .ok_or(format!("its {file} does not state {key} (group {group})"))
    };
    // An unpacked scene has no name the catalog checks: its spacecraft is.
    if let Ok(spacecraft) = field("IMAGE_ATTRIBUTES", "SPACECRAFT_ID") {
        let wanted = match spacecraft.as_str() {
            "LANDSAT_8" | "LANDSAT_9" => "landsat-oli-sr",
            _ => "landsat-tm-sr",
        };
        if wanted != profile.name {
            return Err(format!(
                "its {file} says {spacecraft}, which the profile {} does not read: set `[imagery] sensor = \"{wanted}\"` or keep one sensor's scenes in the folder",
                profile.name
            ));
        }
    }
    let date = field("IMAGE_ATTRIBUTES", "DATE_ACQUIRED")?;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| format!("its {file} states DATE_ACQUIRED {date}, not a date"))?;
    let mut dn_offset = None;
    for band in profile.bands {
        let number = band.trim_start_matches("SR_B");
        let number_of = |key: &str| -> std::result::Result<f32, Damage> {
            let key = format!("{key}{number}");
            let value = field(LEVEL2_REFLECTANCE, &key)?;
            value
                .parse()
                .map_err(|_| format!("its {file} states {key} {value}, not a number"))
        };
        let (scale, add) = (
            number_of("REFLECTANCE_MULT_BAND_")?,
            number_of("REFLECTANCE_ADD_BAND_")?,
        );
        if !(scale.is_finite() && add.is_finite()) || (scale / profile.scale - 1.0).abs() > 1e-4 {
            return Err(format!(
                "its {file} scales {band} by {scale} per DN, not {}: it is not Collection 2 Level-2 surface reflectance",
                profile.scale
            ));
        }
        let offset = add / scale;
        if dn_offset.is_some_and(|o: f32| o != offset) {
            return Err(format!(
                "its {file} states another offset for {band} than for the bands before it"
            ));
        }
        dn_offset = Some(offset);
    }
    Ok(dn_offset.map(|dn_offset| SceneMetadata { date, dn_offset }))
}

/// The MTL group of Level-2 surface reflectance scaling.
const LEVEL2_REFLECTANCE: &str = "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS";

/// (group, key) -> value of an MTL file in USGS's ODL text form (`GROUP = …`, `KEY = value`,
/// `END_GROUP = …`), quotes removed; the group is the innermost one.
fn odl_fields(text: &str) -> BTreeMap<(String, String), String> {
    let mut groups: Vec<String> = Vec::new();
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim().trim_matches('"').to_string());
        match key {
            "GROUP" => groups.push(value),
            "END_GROUP" => {
                groups.pop();
            }
            _ => {
                let group = groups.last().cloned().unwrap_or_default();
                fields.insert((group, key.to_string()), value);
            }
        }
    }
    fields
}

/// (group, key) -> value of an MTL file in its JSON form (objects as groups, values as
/// strings).
fn json_fields(value: &serde_json::Value) -> BTreeMap<(String, String), String> {
    fn walk(
        group: &str,
        value: &serde_json::Value,
        fields: &mut BTreeMap<(String, String), String>,
    ) {
        let Some(object) = value.as_object() else {
            return;
        };
        for (key, v) in object {
            match v {
                serde_json::Value::Object(_) => walk(key, v, fields),
                serde_json::Value::String(s) => {
                    fields.insert((group.to_string(), key.clone()), s.clone());
                }
                other => {
                    fields.insert((group.to_string(), key.clone()), other.to_string());
                }
            }
        }
    }
    let mut fields = BTreeMap::new();
    walk("", value, &mut fields);
    fields
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
