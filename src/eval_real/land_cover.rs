//! The real land-cover patches: each through `detect` with the same image as both dates
//! (so that `class_before.tif` is gengbao's single-date land cover, as the data README's
//! protocol has it). The random forest yardstick on the raw bands is not run yet.
//!
//! `eurosat-s2/<Class>/<Class>_N.tif`: 64 × 64 px Sentinel-2 L1C patches (13 bands, B8A stored
//! last, products of 2017-2018 without the −1000 offset, pixels of about 10.00 × 10.01 m).
//! Classes onto gengbao's codes: AnnualCrop 1, PermanentCrop 2, Residential and Industrial 3,
//! River and SeaLake 4, Pasture and HerbaceousVegetation 5, Forest 6; Highway is left out.
//!
//! gengbao learned nothing from these patches, so every patch is held out for it.

use super::LandCoverSet;
use crate::detect::{detect, DetectOptions};
use crate::error::{Error, Result};
use crate::evaluate::class_score;
use crate::geo::raster::read_band_f64;
use crate::geo::sensor::SensorProfile;
use std::path::{Path, PathBuf};

/// EuroSAT's folders and gengbao's class codes.
const EUROSAT_CLASSES: [(&str, u8); 9] = [
    ("AnnualCrop", 1),
    ("PermanentCrop", 2),
    ("Residential", 3),
    ("Industrial", 3),
    ("River", 4),
    ("SeaLake", 4),
    ("Pasture", 5),
    ("HerbaceousVegetation", 5),
    ("Forest", 6),
];

/// EuroSAT's band order in its files.
const EUROSAT_BANDS: [&str; 13] = [
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
];

/// One labelled patch, read.
struct Patch {
    class: u8,
    /// gengbao's class of each pixel (0 = unclassified).
    gengbao: Vec<u8>,
}

/// Runs the EuroSAT patches under `data`, when present; `None` when the folder is absent.
pub(super) fn eurosat(data: &Path, work: &Path) -> Result<Option<LandCoverSet>> {
    let root = data.join("eurosat-s2");
    if !root.is_dir() {
        return Ok(None);
    }
    let profile = SensorProfile::by_name("sentinel2-l1c")?;
    let order: Vec<String> = EUROSAT_BANDS.iter().map(|b| b.to_string()).collect();
    let mut patches = Vec::new();
    for (folder, class) in EUROSAT_CLASSES {
        for (path, number) in patch_files(&root.join(folder))? {
            let out = work.join(format!("{folder}_{number}"));
            detect(&DetectOptions {
                sensor: Some(profile.name.into()),
                add_offset: Some(0.0),
                band_order: Some(order.clone()),
                classes_only: true,
                quiet: true,
                ..DetectOptions::new(path.clone(), path.clone(), out.clone())
            })?;
            let gengbao = read_band_f64(&out.join("class_before.tif"), 1)?
                .2
                .iter()
                .map(|&v| v as u8)
                .collect();
            patches.push(Patch { class, gengbao });
        }
    }
    if patches.is_empty() {
        return Err(Error::input(
            &root,
            "holds no patch (`<Class>/<Class>_N.tif`)",
            "restore the EuroSAT folder as the data README describes it",
        ));
    }
    Ok(Some(score(&patches)))
}

/// The patch files of a class folder with their numbers, by number.
fn patch_files(folder: &Path) -> Result<Vec<(PathBuf, usize)>> {
    if !folder.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<(PathBuf, usize)> = std::fs::read_dir(folder)
        .map_err(|e| Error::io(folder, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let number = p
                .file_stem()?
                .to_str()?
                .rsplit('_')
                .next()?
                .parse::<usize>()
                .ok()?;
            (p.extension()? == "tif").then_some((p, number))
        })
        .collect();
    files.sort_by_key(|(_, n)| *n);
    Ok(files)
}

/// gengbao's scores over all patches.
fn score(patches: &[Patch]) -> LandCoverSet {
    let truth: Vec<f64> = patches
        .iter()
        .flat_map(|p| std::iter::repeat_n(f64::from(p.class), p.gengbao.len()))
        .collect();
    let gengbao: Vec<f64> = patches
        .iter()
        .flat_map(|p| p.gengbao.iter().map(|&c| f64::from(c)))
        .collect();
    LandCoverSet {
        set: "eurosat-s2".into(),
        patches: patches.len(),
        gengbao: class_score(&truth, &gengbao),
    }
}
