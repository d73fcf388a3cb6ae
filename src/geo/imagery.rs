//! The imagery catalog: scans a folder for acquisitions of a sensor profile, dates them, groups
//! them by period, and reads their bands onto a tile of the job grid.
//!
//! Folder convention: one sub-folder (at any depth) per acquisition, whose name or file names
//! carry the date as `YYYYMMDD`; one single-band GeoTIFF (or any GDAL raster) per band, whose
//! file name contains the band name as a token, e.g. `T50RKV_20250115_B02_10m.tif`. Bands may have
//! different resolutions and CRSs: they are warped onto the job grid when read. Sentinel-2
//! products are also read as delivered, SAFE folders and zips ([`crate::geo::safe`]), with
//! the DN offset their metadata states, and so are Landsat Collection 2 Level-2 tars
//! ([`crate::geo::landsat`]). For the Gaofen profiles, each product as delivered (a
//! `.tar.gz`, or an extracted TIFF with its `.xml` and `.rpb` beside it, or a product's
//! numbered pieces) is an acquisition, orthorectified and calibrated as it is read
//! ([`ProductReading`]).

use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::geo::gaofen::{self, Calibration, CalibrationTable};
use crate::geo::grid::{Bounds, JobGrid, Window};
use crate::geo::raster::{
    open_georeferenced, transform_between, transform_bounds, warp_onto, Resample,
};
use crate::geo::rpc::Elevation;
use crate::geo::sensor::SensorProfile;
use crate::geo::user_image::{self, BandStack};
use crate::geo::{landsat, safe, stac};
use chrono::NaiveDate;
use gdal::spatial_ref::{AxisMappingStrategy, SpatialRef};
use ndarray::{Array2, Axis};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Acquisition {
    pub date: NaiveDate,
    pub folder: PathBuf,
    /// Band name -> file, for every band of the profile (and its mask band): a path GDAL
    /// opens (inside a zipped product, a `/vsizip/` path; for a Gaofen product, a virtual
    /// raster in GDAL's memory, which lives as long as this acquisition or its clones).
    pub files: BTreeMap<String, PathBuf>,
    /// The DN offset the product's metadata states (SAFE products, STAC items, Landsat
    /// scenes' MTL files); `None` for band folders, which take the profile's.
    pub offset: Option<f32>,
    /// The zip or tar the band files are read from, when they are (for a Gaofen product,
    /// the file the user delivered).
    pub container: Option<PathBuf>,
    /// The product's own calibration (a Gaofen L1A product's `.xml`), which turns its DNs
    /// into reflectance instead of the profile's scale and offset.
    pub calibration: Option<Calibration>,
    /// The virtual rasters the band files are (an orthorectified Gaofen product's bands),
    /// kept for as long as the acquisition is.
    pub(crate) _virtual_rasters: Option<std::sync::Arc<Vec<BandStack>>>,
}

/// How the products that need more than their own files are read: Gaofen L1A images are
/// placed by their RPCs on `elevation` (the job's `[grid] dem` or `[imagery] height`) and
/// calibrated from `calibration` (the built-in table, extended by `[imagery] calibration`).
#[derive(Debug, Clone)]
pub struct ProductReading {
    pub elevation: Elevation,
    pub calibration: CalibrationTable,
}

impl Default for ProductReading {
    fn default() -> Self {
        ProductReading {
            elevation: Elevation::Unknown,
            calibration: CalibrationTable::builtin(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub profile: &'static SensorProfile,
    /// Sorted by date, then folder, so processing order never depends on the file system.
    pub acquisitions: Vec<Acquisition>,
    /// Imagery-like files that are in no acquisition: rasters in folders where no band of the
    /// profile was found, and packed products (zip, tar). Relative to the folder, sorted.
    pub unplaced: Vec<PathBuf>,
    /// Products that cannot be read as delivered (a cut zip, an incomplete product), relative
    /// to the folder, with what is wrong: left out of the catalog, listed and warned.
    pub damaged: Vec<Damaged>,
}

/// A product that cannot be read as delivered (a zip or tar cut by an interrupted download,
/// an incomplete product): what is wrong with it.
pub type Damage = String;

/// A damaged product, relative to the imagery folder (an item id for STAC), with what is
/// wrong.
pub type Damaged = (PathBuf, Damage);

/// First and last date of acquisitions in date order, `YYYYMMDD-YYYYMMDD` (as patches and
/// maps state them); None without any.
pub(crate) fn date_span<'a>(
    acquisitions: impl IntoIterator<Item = &'a Acquisition>,
) -> Option<String> {
    let mut dates = acquisitions.into_iter().map(|a| a.date);
    let first = dates.next()?;
    let last = dates.last().unwrap_or(first);
    Some(format!(
        "{}-{}",
        first.format("%Y%m%d"),
        last.format("%Y%m%d")
    ))
}

/// A packed product (a zipped SAFE, a Landsat or Gaofen tar), which the catalog does not
/// open.
pub(crate) fn is_packed_product(p: &Path) -> bool {
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    [".zip", ".tar", ".tar.gz", ".tgz"]
        .iter()
        .any(|e| name.ends_with(e))
}

fn tokens(name: &str) -> impl Iterator<Item = &str> {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
}

/// Whether `name` holds `band` as a run of whole tokens (`SR_B1` in `LT05_..._SR_B1.TIF`, but
/// not `B1` in `B12`).
pub(crate) fn has_band_token(name: &str, band: &str) -> bool {
    let t: Vec<&str> = tokens(name).collect();
    let b: Vec<&str> = tokens(band).collect();
    !b.is_empty()
        && t.windows(b.len())
            .any(|w| w.iter().zip(&b).all(|(x, y)| x.eq_ignore_ascii_case(y)))
}

pub(crate) fn date_in(name: &str) -> Option<NaiveDate> {
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

pub(crate) fn is_raster_file(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("tif" | "tiff" | "jp2" | "img" | "vrt")
    )
}

impl Catalog {
    pub fn scan(
        folder: &Path,
        profile: &'static SensorProfile,
        reading: &ProductReading,
    ) -> Result<Self> {
        if !folder.is_dir() {
            let problem = if folder.exists() {
                "is a file, not the imagery folder"
            } else {
                "the imagery folder does not exist"
            };
            return Err(Error::input(
                folder,
                problem,
                "set imagery.folder ([imagery] folder in the job config) to the folder holding the acquisitions",
            ));
        }
        let mut acquisitions = Vec::new();
        let mut unplaced = Vec::new();
        let mut damaged = Vec::new();
        // Gaofen products by product id: a tar and the TIFF extracted from it beside it are
        // one product, read once.
        let mut gaofen_products: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut stack = vec![folder.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| Error::io(&dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let mut files = BTreeMap::new();
            let mut rasters = Vec::new();
            // The pieces of a split Gaofen product already read with its first piece.
            let mut pieces_read = std::collections::BTreeSet::new();
            for p in &entries {
                let gaofen = !profile.guessable();
                // A PMS product's panchromatic TIFF is delivered beside the multispectral
                // one, which is what gengbao reads (it does not pan-sharpen).
                if pieces_read.contains(p) || (gaofen && gaofen::is_panchromatic(p)) {
                    continue;
                }
                let product = if gaofen && gaofen::is_product(p) {
                    if !gaofen::is_archive(p) {
                        pieces_read.extend(gaofen::product_pieces(p).unwrap_or_default());
                    }
                    if let Some(id) = gaofen::product_id(p) {
                        if let Some(first) = gaofen_products.get(&id) {
                            let first = first.strip_prefix(folder).unwrap_or(first);
                            damaged.push((
                                p.strip_prefix(folder).unwrap_or(p).to_path_buf(),
                                format!("the product of {}, read from there", first.display()),
                            ));
                            continue;
                        }
                        gaofen_products.insert(id, p.clone());
                    }
                    Some(user_image::gaofen_acquisition(p, profile, reading)?.map(|a| vec![a]))
                } else if profile.name.starts_with("sentinel2")
                    && (safe::is_safe_folder(p) || safe::is_safe_zip(p))
                {
                    Some(safe::acquisitions(p, profile)?)
                } else if profile.name.starts_with("landsat") && landsat::is_landsat_tar(p) {
                    Some(landsat::acquisitions(p, profile)?)
                } else {
                    None
                };
                if let Some(product) = product {
                    match product {
                        Ok(found) => acquisitions.extend(found),
                        Err(why) => {
                            damaged.push((p.strip_prefix(folder).unwrap_or(p).to_path_buf(), why))
                        }
                    }
                    continue;
                }
                if p.is_dir() {
                    stack.push(p.clone());
                    continue;
                }
                if is_packed_product(p) {
                    unplaced.push(p.clone());
                }
                if !is_raster_file(p) {
                    continue;
                }
                rasters.push(p.clone());
                let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                let wanted = profile.bands.iter().copied().chain(profile.mask_band);
                for band in wanted {
                    if has_band_token(stem, band) {
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
                unplaced.extend(rasters);
                continue;
            }
            // An unpacked Landsat Level-2 scene is dated and scaled by its MTL file, as its
            // tar is.
            let stated = match landsat::is_surface_reflectance(profile) {
                true => match landsat::scene_metadata(&entries, profile) {
                    Ok(stated) => stated,
                    Err(why) => {
                        damaged.push((dir.strip_prefix(folder).unwrap_or(&dir).to_path_buf(), why));
                        continue;
                    }
                },
                false => None,
            };
            let dir_name = dir.file_name().and_then(|s| s.to_str()).unwrap_or("");
            // The folder's own name, else the band files' names (never their parent folders).
            let file_dates: std::collections::BTreeSet<NaiveDate> = files
                .values()
                .filter_map(|f| f.file_name().and_then(|n| n.to_str()).and_then(date_in))
                .collect();
            let date =
                match (
                    stated.as_ref().map(|m| m.date).or(date_in(dir_name)),
                    file_dates.len(),
                ) {
                    (Some(d), _) => d,
                    (None, 1) => *file_dates.first().expect("one date"),
                    (None, 0) => return Err(Error::input(
                        &dir,
                        "acquisition folder without a date",
                        "put the acquisition date as YYYYMMDD in the folder name, e.g. S2_20250115",
                    )),
                    (None, _) => {
                        return Err(Error::input(
                            &dir,
                            format!("the band files carry different dates {file_dates:?}"),
                            "keep one acquisition per folder, or name the folder with its date",
                        ))
                    }
                };
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
                offset: stated.map(|m| m.dn_offset),
                container: None,
                calibration: None,
                _virtual_rasters: None,
            });
        }
        acquisitions.sort_by(|a, b| (a.date, &a.folder).cmp(&(b.date, &b.folder)));
        let mut unplaced: Vec<PathBuf> = unplaced
            .iter()
            .map(|p| p.strip_prefix(folder).unwrap_or(p).to_path_buf())
            .collect();
        unplaced.sort();
        if acquisitions.is_empty() && !damaged.is_empty() {
            let (product, why) = &damaged[0];
            return Err(Error::input(
                folder.join(product),
                format!(
                    "{why}; no other product in the imagery folder is readable ({} damaged)",
                    damaged.len()
                ),
                "download the damaged products again (an interrupted download leaves a cut zip)",
            ));
        }
        if acquisitions.is_empty() && !unplaced.is_empty() {
            let shown: Vec<String> = unplaced
                .iter()
                .take(3)
                .map(|p| p.display().to_string())
                .collect();
            return Err(Error::input(
                folder,
                format!(
                    "holds {} imagery files but no acquisition gengbao can read for sensor {} (e.g. {})",
                    unplaced.len(),
                    profile.name,
                    shown.join(", ")
                ),
                format!(
                    "lay each acquisition out as a folder with its date (YYYYMMDD) in the name and one GeoTIFF per band, the band name a token of the file name (e.g. T50SKE_20250115_B02_10m.tif); bands: {}. Sentinel-2 SAFE folders and zips and Landsat Collection 2 Level-2 tars are read as delivered; Gaofen products (a .tar.gz, or a TIFF with its .xml) are read as delivered with a Gaofen sensor: check `[imagery] sensor` (`gengbao sensors`)",
                    profile
                        .bands
                        .iter()
                        .chain(&profile.mask_band)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            ));
        }
        Ok(Catalog {
            profile,
            acquisitions,
            unplaced,
            damaged,
        })
    }

    /// The acquisitions of a STAC file ([`crate::geo::stac`]); items that cannot be read
    /// are listed as damaged.
    pub fn from_stac(source: &Path, profile: &'static SensorProfile) -> Result<Self> {
        let (mut acquisitions, damaged) = stac::acquisitions(source, profile)?;
        acquisitions.sort_by(|a, b| (a.date, &a.folder).cmp(&(b.date, &b.folder)));
        Ok(Catalog {
            profile,
            acquisitions,
            unplaced: Vec::new(),
            damaged,
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
    /// `e` naming the product the user delivered instead of a virtual raster gengbao made of
    /// it in GDAL's memory (a Gaofen product's bands).
    fn in_product(&self, e: Error) -> Error {
        match e {
            Error::Input { path, problem, fix } if path.starts_with("/vsimem") => {
                Error::input(&self.folder, problem, fix)
            }
            other => other,
        }
    }

    /// The files on disk the acquisition is read from: its band files, the zip or tar that
    /// holds them, or a Gaofen product's files ([`crate::geo::gaofen::delivered_files`]:
    /// pieces, RPCs and `.xml`).
    pub fn source_files(&self) -> Vec<PathBuf> {
        match &self.container {
            Some(product) if self._virtual_rasters.is_some() => {
                crate::geo::gaofen::delivered_files(product)
            }
            Some(zip) => vec![zip.clone()],
            None => self.files.values().cloned().collect(),
        }
    }

    /// The DN offset of this acquisition's bands: the job's `[imagery] add_offset` when set,
    /// else the product's own, else the profile's.
    pub fn dn_offset(&self, profile: &SensorProfile, job: Option<f32>) -> f32 {
        job.or(self.offset).unwrap_or(profile.add_offset)
    }

    /// Opens every file once, so that unreadable or ungeoreferenced files stop the run before
    /// any tile is processed, and returns the acquisition's extent in the grid CRS
    /// (min x, min y, max x, max y): tiles only read the acquisitions that cover them.
    pub(crate) fn check_and_locate(&self, grid_srs: &SpatialRef) -> Result<Bounds> {
        let mut extent = (
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        );
        for path in self.files.values() {
            let ds = open_georeferenced(path).map_err(|e| self.in_product(e))?;
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
            let gt = ds.geo_transform()?;
            let (w, h) = ds.raster_size();
            let xs = [gt[0], gt[0] + gt[1] * w as f64 + gt[2] * h as f64];
            let ys = [gt[3], gt[3] + gt[4] * w as f64 + gt[5] * h as f64];
            let mut srs = ds.spatial_ref()?;
            srs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
            let b = transform_between(&srs, grid_srs)
                .and_then(|t| {
                    transform_bounds(
                        &t,
                        (
                            xs[0].min(xs[1]),
                            ys[0].min(ys[1]),
                            xs[0].max(xs[1]),
                            ys[0].max(ys[1]),
                        ),
                    )
                })
                .map_err(|e| {
                    Error::input(
                        path,
                        format!("cannot be transformed to the job CRS: {e}"),
                        "check the file's CRS with `gdalinfo`",
                    )
                })?;
            extent = (
                extent.0.min(b.0),
                extent.1.min(b.1),
                extent.2.max(b.2),
                extent.3.max(b.3),
            );
        }
        Ok(extent)
    }

    /// Band `name` on `window`, as reflectance (NaN = nodata or outside the file).
    /// `add_offset` is the product's DN offset (the profile's unless the job overrides it).
    pub fn read_reflectance(
        &self,
        profile: &SensorProfile,
        add_offset: f32,
        name: &str,
        grid: &JobGrid,
        window: Window,
    ) -> Result<Array2<f32>> {
        let path = &self.files[name];
        let mut dn = warp_onto(path, grid, window, Resample::Bilinear, Some(profile.nodata))
            .map_err(|e| self.in_product(e))?
            .index_axis_move(Axis(0), 0);
        let index = profile.band_index(name).expect("profile band");
        let (shift, scale) = match &self.calibration {
            Some(c) => (
                c.dn_offset[index] as f32,
                c.reflectance_per_dn[index] as f32,
            ),
            None => (add_offset, profile.scale_of(index)),
        };
        to_reflectance(
            profile,
            shift,
            scale,
            dn.as_slice_mut().expect("a read band"),
        );
        Ok(dn)
    }

    /// The clear-sky mask on `window` by the product's quality band (true = usable); all true
    /// when the profile has none (clouds are then the visible-band test's, in the composite).
    pub(crate) fn read_clear(
        &self,
        profile: &SensorProfile,
        grid: &JobGrid,
        window: Window,
    ) -> Result<Vec<bool>> {
        let Some(mask_band) = profile.mask_band else {
            return Ok(vec![true; window.len()]);
        };
        let q = warp_onto(
            &self.files[mask_band],
            grid,
            window,
            Resample::Nearest,
            None,
        )?
        .index_axis_move(Axis(0), 0);
        Ok(q.iter()
            .map(|&v| !v.is_nan() && profile.is_clear(v as u16))
            .collect())
    }
}

/// DNs of one band -> reflectance in place: (DN + shift) x scale, where `shift` is the
/// product's add-offset minus any dark-object value, and `scale` the band's (the profile's,
/// or a calibration's). The profile's nodata becomes NaN.
pub fn to_reflectance(profile: &SensorProfile, shift: f32, scale: f32, dn: &mut [f32]) {
    for v in dn.iter_mut() {
        *v = if profile.is_nodata(f64::from(*v)) {
            f32::NAN
        } else {
            (*v + shift) * scale
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

    proptest::proptest! {
        /// Any file name gives a date or none, and a band token answer, never a panic; a
        /// date found is the date its eight digits spell.
        #[test]
        fn any_file_name_is_read_without_panic(name in "\\PC{0,40}", band in "[A-Za-z0-9_]{0,6}") {
            if let Some(d) = date_in(&name) {
                let spelled = d.format("%Y%m%d").to_string();
                proptest::prop_assert!(name.contains(&spelled));
            }
            let _ = has_band_token(&name, &band);
        }
    }

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
    fn band_tokens_match_whole_runs() {
        assert!(has_band_token("T50_20250101_B8A_20m", "B8A"));
        assert!(!has_band_token("T50_20250101_B8A_20m", "B08"));
        assert!(!has_band_token("T50_20250101_B12_20m", "B1"));
        assert!(has_band_token(
            "LT05_L2SP_119038_20050713_20200902_02_T1_SR_B1",
            "SR_B1"
        ));
        assert!(has_band_token(
            "LT05_L2SP_119038_20050713_20200902_02_T1_QA_PIXEL",
            "QA_PIXEL"
        ));
        assert!(!has_band_token(
            "LT05_L2SP_119038_20050713_20200902_02_T1_SR_B1",
            "QA_PIXEL"
        ));
    }
}
