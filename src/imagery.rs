//! The imagery catalog: scans a folder for acquisitions of a sensor profile, dates them, groups
//! them by period, and reads their bands onto a tile of the job grid.
//!
//! Folder convention: one sub-folder (at any depth) per acquisition, whose name or file names
//! carry the date as `YYYYMMDD`; one single-band GeoTIFF (or any GDAL raster) per band, whose
//! file name contains the band name as a token, e.g. `T50RKV_20250115_B02_10m.tif`. Bands may have
//! different resolutions and CRSs: they are warped onto the job grid when read.

use crate::error::{Error, Result};
use crate::grid::{JobGrid, Window};
use crate::period::Period;
use crate::raster::{open_georeferenced, warp_onto, Resample};
use crate::sensor::SensorProfile;
use chrono::NaiveDate;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Acquisition {
    pub date: NaiveDate,
    pub folder: PathBuf,
    /// Band name -> file, for every band of the profile (and its mask band).
    pub files: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub profile: &'static SensorProfile,
    /// Sorted by date, then folder, so processing order never depends on the file system.
    pub acquisitions: Vec<Acquisition>,
}

fn tokens(name: &str) -> impl Iterator<Item = &str> {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
}

fn date_in(name: &str) -> Option<NaiveDate> {
    tokens(name).find_map(|t| {
        let digits = t
            .get(..8)
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))?;
        // Accept `20250115` and `20250115T030000`.
        if t.len() > 8 && !t[8..].starts_with('T') {
            return None;
        }
        NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
    })
}

fn is_raster_file(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("tif" | "tiff" | "jp2" | "img" | "vrt")
    )
}

impl Catalog {
    pub fn scan(folder: &Path, profile: &'static SensorProfile) -> Result<Self> {
        if !folder.is_dir() {
            return Err(Error::input(
                folder,
                "the imagery folder does not exist",
                "set [imagery] folder in the job config to the folder holding the acquisitions",
            ));
        }
        let mut acquisitions = Vec::new();
        let mut stack = vec![folder.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| Error::io(&dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let mut files = BTreeMap::new();
            for p in &entries {
                if p.is_dir() {
                    stack.push(p.clone());
                    continue;
                }
                if !is_raster_file(p) {
                    continue;
                }
                let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                let wanted = profile.bands.iter().copied().chain(profile.mask_band);
                for band in wanted {
                    if tokens(stem).any(|t| t.eq_ignore_ascii_case(band)) {
                        if let Some(prev) = files.insert(band.to_string(), p.clone()) {
                            return Err(Error::input(
                                p,
                                format!(
                                    "band {band} appears twice in {} (also {})",
                                    dir.display(),
                                    prev.display()
                                ),
                                "keep one file per band in each acquisition folder",
                            ));
                        }
                    }
                }
            }
            if files.is_empty() {
                continue;
            }
            let dir_name = dir.file_name().and_then(|s| s.to_str()).unwrap_or("");
            let date = date_in(dir_name)
                .or_else(|| files.values().find_map(|f| date_in(&f.to_string_lossy())))
                .ok_or_else(|| {
                    Error::input(
                        &dir,
                        "acquisition folder without a date",
                        "put the acquisition date as YYYYMMDD in the folder name, e.g. S2_20250115",
                    )
                })?;
            let needed = profile.bands.iter().copied().chain(profile.mask_band);
            for band in needed {
                if !files.contains_key(band) {
                    return Err(Error::input(
                        dir.join(format!("*_{band}.tif")),
                        format!("missing band file {band} in acquisition {date}"),
                        format!(
                            "add the {band} file to {} or move the incomplete acquisition out of the imagery folder",
                            dir.display()
                        ),
                    ));
                }
            }
            acquisitions.push(Acquisition {
                date,
                folder: dir,
                files,
            });
        }
        acquisitions.sort_by(|a, b| (a.date, &a.folder).cmp(&(b.date, &b.folder)));
        Ok(Catalog {
            profile,
            acquisitions,
        })
    }

    pub fn in_period(&self, period: Period) -> Vec<&Acquisition> {
        self.acquisitions
            .iter()
            .filter(|a| period.contains(a.date))
            .collect()
    }

    pub fn periods(&self) -> Vec<Period> {
        let mut p: Vec<Period> = self
            .acquisitions
            .iter()
            .map(|a| Period::containing(a.date))
            .collect();
        p.dedup();
        p
    }
}

impl Acquisition {
    /// Opens every file once so that unreadable or ungeoreferenced files stop the run before
    /// any tile is processed.
    pub fn check_readable(&self) -> Result<()> {
        for path in self.files.values() {
            let ds = open_georeferenced(path)?;
            if ds.raster_count() != 1 {
                return Err(Error::input(
                    path,
                    format!(
                        "has {} bands; a band file must have exactly one",
                        ds.raster_count()
                    ),
                    "split multi-band files per band, or use `gengbao detect` for stacked images",
                ));
            }
        }
        Ok(())
    }

    /// Band `name` on `window`, as reflectance (NaN = nodata or outside the file).
    pub fn read_reflectance(
        &self,
        profile: &SensorProfile,
        name: &str,
        grid: &JobGrid,
        window: Window,
    ) -> Result<Vec<f32>> {
        let path = &self.files[name];
        let mut dn = warp_onto(path, grid, window, Resample::Bilinear)?.remove(0);
        let index = profile
            .bands
            .iter()
            .position(|b| *b == name)
            .expect("profile band");
        to_reflectance(profile, index, 0.0, &mut dn);
        Ok(dn)
    }

    /// The clear-sky mask on `window` (true = usable); all true when the profile has no mask.
    pub fn read_clear(
        &self,
        profile: &SensorProfile,
        grid: &JobGrid,
        window: Window,
    ) -> Result<Vec<bool>> {
        let Some(mask_band) = profile.mask_band else {
            return Ok(vec![true; window.len()]);
        };
        let q = warp_onto(&self.files[mask_band], grid, window, Resample::Nearest)?.remove(0);
        Ok(q.iter()
            .map(|&v| !v.is_nan() && profile.is_clear(v as u16))
            .collect())
    }
}

/// DN of band `index` -> reflectance in place; the profile's nodata value becomes NaN. `dark`
/// is the band's dark-object value (0 for calibrated products).
pub fn to_reflectance(profile: &SensorProfile, index: usize, dark: f32, dn: &mut [f32]) {
    let scale = profile.scale_of(index);
    for v in dn.iter_mut() {
        *v = if profile.is_nodata(f64::from(*v)) {
            f32::NAN
        } else {
            (*v - dark) * scale + profile.offset
        };
    }
}

/// Dark-object values of every band of a scene: the 0.5th percentile of a decimated read of
/// the whole image (at most 1024 px a side), so that all tiles get the same offsets.
pub fn dark_objects(path: &Path, profile: &SensorProfile) -> Result<Vec<f32>> {
    let ds = open_georeferenced(path)?;
    let (w, h) = ds.raster_size();
    let f = (w.max(h) as f64 / 1024.0).max(1.0);
    let shape = (
        ((w as f64) / f).round().max(1.0) as usize,
        ((h as f64) / f).round().max(1.0) as usize,
    );
    (1..=ds.raster_count())
        .map(|b| {
            let mut v: Vec<f32> = ds
                .rasterband(b)?
                .read_as::<f32>((0, 0), (w, h), shape, None)?
                .into_shape_and_vec()
                .1
                .into_iter()
                .filter(|x| !profile.is_nodata(f64::from(*x)))
                .collect();
            if v.is_empty() {
                return Ok(0.0);
            }
            let k = v.len() / 200;
            Ok(*v.select_nth_unstable_by(k, |a, b| a.total_cmp(b)).1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_come_from_tokens() {
        assert_eq!(date_in("S2_20250115"), NaiveDate::from_ymd_opt(2025, 1, 15));
        assert_eq!(
            date_in("T50RKV_20250115T030000_B02"),
            NaiveDate::from_ymd_opt(2025, 1, 15)
        );
        assert_eq!(date_in("B02_10m"), None);
        assert_eq!(date_in("x_20251340"), None);
    }

    #[test]
    fn band_tokens_do_not_match_prefixes() {
        let t: Vec<&str> = tokens("T50_20250101_B8A_20m").collect();
        assert!(t.contains(&"B8A") && !t.contains(&"B08"));
    }
}
