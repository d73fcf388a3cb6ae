//! Radiometric calibration of Gaofen L1A products (GF-1 WFV, GF-2 PMS, GF-6 WFV), whose
//! TIFFs hold raw digital numbers.
//!
//! Takes: the product's `.xml` beside the image (`SatelliteID`, `SensorID`, the acquisition
//! time and `SolarZenith`) and a calibration table: per camera, the bands' solar irradiance
//! (ESUN) and CRESDA's yearly gains and offsets (`gaofen_calibration.toml`, which a user file
//! of the same format extends). Gives: per band, the linear map from DN to top-of-atmosphere
//! reflectance, ρ = π (gain·DN + offset) d² / (ESUN cos θz), with the coefficients used,
//! for the detect summary.
//!
//! A Gaofen image without the `.xml` is taken as calibrated reflectance × 10,000 (an
//! orthorectified, calibrated product); one placed by RPCs is an L1A product by definition
//! and is refused without it: its DNs are not reflectance.

use crate::error::{Error, Result};
use crate::geo::imagery::is_packed_product;
use crate::geo::layers::listed;
use crate::geo::raster::{read_small_file, tar_entries};
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const BUILTIN: &str = include_str!("gaofen_calibration.toml");

/// One camera's coefficients as a table file gives them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Camera {
    /// Required in the built-in table; a user file may give only new years.
    esun: Option<Vec<f64>>,
    #[serde(default)]
    years: BTreeMap<String, Coefficients>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Coefficients {
    gains: Vec<f64>,
    offsets: Option<Vec<f64>>,
}

/// Per camera (`GF2-PMS1`, …) its ESUN and its coefficients by year.
#[derive(Debug, Clone)]
pub struct CalibrationTable {
    cameras: BTreeMap<String, Camera>,
}

impl CalibrationTable {
    /// The coefficients gengbao ships (their sources are in the table file).
    pub fn builtin() -> Self {
        Self::parse(BUILTIN, Path::new("gaofen_calibration.toml"))
            .expect("the shipped calibration table parses")
    }

    /// This table with the cameras and years of the file at `path` added (a year already
    /// present is replaced).
    pub fn extended_by(mut self, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        for (name, camera) in Self::parse(&text, path)?.cameras {
            match self.cameras.get_mut(&name) {
                Some(known) => {
                    known.esun = camera.esun.or(known.esun.take());
                    known.years.extend(camera.years);
                }
                None if camera.esun.is_none() => {
                    return Err(Error::input(
                        path,
                        format!(
                            "[{name}] is a camera the built-in table lacks, and it has no esun"
                        ),
                        "give the camera's esun (one value per band, W m⁻² µm⁻¹) beside its years",
                    ))
                }
                None => {
                    self.cameras.insert(name, camera);
                }
            }
        }
        self.check(path)?;
        Ok(self)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let fix = "write one table per camera: [GF2-PMS1] esun = [...] and years.2024 = { gains = [...] } (the format of gengbao's src/geo/gaofen_calibration.toml)";
        let cameras: BTreeMap<String, Camera> =
            toml::from_str(text).map_err(|e| Error::input(path, e.to_string(), fix))?;
        let table = CalibrationTable { cameras };
        table.check(path)?;
        Ok(table)
    }

    /// Every year of four digits, and as many gains and offsets as the camera has ESUN
    /// values; `path` is the file that made the table as it is.
    fn check(&self, path: &Path) -> Result<()> {
        let fix = "give each camera its esun and, for each year, one gain (and offset) per band, in band order";
        for (name, camera) in &self.cameras {
            for (year, c) in &camera.years {
                let four_digits = year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit());
                let bands = camera.esun.as_ref().map_or(c.gains.len(), Vec::len);
                let fits =
                    c.gains.len() == bands && c.offsets.as_ref().is_none_or(|o| o.len() == bands);
                if !four_digits || !fits {
                    return Err(Error::input(
                        path,
                        format!(
                            "[{name}] years.{year}: a year of four digits with {bands} gains (and offsets), one per ESUN value, is needed"
                        ),
                        fix,
                    ));
                }
            }
        }
        Ok(())
    }

    /// The calibration of a product of `camera` seen as `meta` says, for an image of
    /// `bands` bands; `xml` names the metadata file in errors.
    pub fn calibration(
        &self,
        meta: &ProductMetadata,
        bands: usize,
        xml: &Path,
    ) -> Result<Calibration> {
        let fix_table = "add the camera's coefficients (CRESDA publishes them yearly) in a table file and give it with `--calibration FILE` (detect) or `[imagery] calibration` (a job)";
        let camera = self.cameras.get(&meta.camera).ok_or_else(|| {
            Error::input(
                xml,
                format!(
                    "is a {} product, which the calibration table does not hold (it holds {})",
                    meta.camera,
                    self.cameras.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                fix_table,
            )
        })?;
        let year = meta.date.year();
        let by_year: BTreeMap<i32, &Coefficients> = camera
            .years
            .iter()
            .filter_map(|(y, c)| Some((y.parse().ok()?, c)))
            .collect();
        // The latest year not after the acquisition's, else the earliest there is.
        let (used, coefficients) = by_year
            .range(..=year)
            .next_back()
            .or_else(|| by_year.iter().next())
            .map(|(y, c)| (*y, *c))
            .ok_or_else(|| {
                Error::input(
                    xml,
                    format!("{}: the table has no year", meta.camera),
                    fix_table,
                )
            })?;
        let esun = camera.esun.clone().ok_or_else(|| {
            Error::input(
                xml,
                format!("{}: the table has no esun", meta.camera),
                fix_table,
            )
        })?;
        let gains = coefficients.gains.clone();
        let offsets = coefficients
            .offsets
            .clone()
            .unwrap_or_else(|| vec![0.0; gains.len()]);
        if gains.len() != bands || esun.len() != bands {
            return Err(Error::input(
                xml,
                format!(
                    "{}: the table gives {} gains and {} ESUN values, the image has {bands} bands",
                    meta.camera,
                    gains.len(),
                    esun.len()
                ),
                "give the camera's coefficients for every band of its multispectral file",
            ));
        }
        let earth_sun_au = earth_sun_distance(meta.date);
        let cos_zenith = meta.solar_zenith_deg.to_radians().cos();
        let reflectance_per_radiance: Vec<f64> = esun
            .iter()
            .map(|e| std::f64::consts::PI * earth_sun_au.powi(2) / (e * cos_zenith))
            .collect();
        let note = (used != year).then(|| {
            format!(
                "{}: no coefficients for {year} in the table, {used}'s were used; add CRESDA's {year} coefficients with --calibration FILE",
                meta.camera
            )
        });
        Ok(Calibration {
            camera: meta.camera.clone(),
            date: meta.date.to_string(),
            coefficients_year: used,
            solar_zenith_deg: meta.solar_zenith_deg,
            earth_sun_au,
            reflectance_per_dn: gains
                .iter()
                .zip(&reflectance_per_radiance)
                .map(|(g, k)| g * k)
                .collect(),
            dn_offset: offsets.iter().zip(&gains).map(|(o, g)| o / g).collect(),
            gains,
            offsets,
            esun,
            note,
        })
    }
}

/// What calibration needs of a product's `.xml`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductMetadata {
    /// `<SatelliteID>-<SensorID>`, e.g. `GF2-PMS1`.
    pub camera: String,
    pub date: NaiveDate,
    pub solar_zenith_deg: f64,
}

impl ProductMetadata {
    /// Reads `xml` (a plain path, or one inside the product's archive).
    pub fn read(xml: &Path) -> Result<Self> {
        let text = read_small_file(xml)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok_or_else(|| {
                Error::input(
                    xml,
                    "cannot be read",
                    "restore the .xml delivered with the product",
                )
            })?;
        let fields = top_level_fields(&text).map_err(|e| {
            Error::input(
                xml,
                format!("is not readable XML ({e})"),
                "restore the .xml delivered with the product",
            )
        })?;
        let field = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| fields.get(*n))
                .map(String::as_str)
                .ok_or_else(|| {
                    Error::input(
                        xml,
                        format!("has no <{}>", names.join("> or <")),
                        "give the .xml delivered with the Gaofen product (ProductMetaData with SatelliteID, SensorID, CenterTime and SolarZenith)",
                    )
                })
        };
        let camera = format!(
            "{}-{}",
            field(&["SatelliteID"])?.trim(),
            field(&["SensorID"])?.trim()
        );
        let time = field(&["CenterTime", "StartTime", "ReceiveTime"])?;
        let date = time
            .trim()
            .get(..10)
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .ok_or_else(|| {
                Error::input(
                    xml,
                    format!("has an acquisition time `{time}` that is not YYYY-MM-DD hh:mm:ss"),
                    "restore the .xml delivered with the product",
                )
            })?;
        let zenith = field(&["SolarZenith"])?;
        let solar_zenith_deg = zenith
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|z| (0.0..85.0).contains(z))
            .ok_or_else(|| {
                Error::input(
                    xml,
                    format!("has a solar zenith `{zenith}` that is not an angle from 0 to 85 degrees"),
                    "restore the .xml delivered with the product (a sun this low gives no usable reflectance)",
                )
            })?;
        Ok(ProductMetadata {
            camera,
            date,
            solar_zenith_deg,
        })
    }
}

/// The linear map from an image's DNs to top-of-atmosphere reflectance, and what it came
/// from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub camera: String,
    pub date: String,
    /// The year whose coefficients were used (the acquisition's, or the latest before it).
    pub coefficients_year: i32,
    pub solar_zenith_deg: f64,
    pub earth_sun_au: f64,
    pub gains: Vec<f64>,
    pub offsets: Vec<f64>,
    pub esun: Vec<f64>,
    /// Per band: reflectance = (DN + `dn_offset`) × `reflectance_per_dn`.
    pub reflectance_per_dn: Vec<f64>,
    pub dn_offset: Vec<f64>,
    /// Set when the coefficients are not the acquisition year's.
    pub note: Option<String>,
}

/// The product `.xml` of a Gaofen image, as delivered beside the TIFF (or beside it inside
/// the archive): the same name with `.xml`, or, for a piece of a split product
/// (`…_L1A1119838015-2.tiff`), the product's name without the piece number.
pub fn product_xml(image: &Path) -> Option<PathBuf> {
    let product =
        piece_number(image).and_then(|(stem, _)| Some(image.parent()?.join(format!("{stem}.xml"))));
    [Some(image.with_extension("xml")), product]
        .into_iter()
        .flatten()
        .find(|xml| read_small_file(xml).is_some())
}

/// The name of the `.xml` a Gaofen image's product is delivered with: the product's for a
/// piece, else the image's own.
pub fn expected_xml_name(image: &Path) -> String {
    let xml = match piece_number(image) {
        Some((stem, _)) => PathBuf::from(format!("{stem}.xml")),
        None => image.with_extension("xml"),
    };
    xml.file_name().map_or_else(
        || xml.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    )
}

/// The product name and piece number of a piece's file (`…-2.tiff` → (`…`, 2)).
/// Only an L1A product's name (`…_L1A1119838015`) with a plain number after its dash is a
/// piece: `…-MSS1` is a camera's file, and `…_2020-05-01.tif` a date.
fn piece_number(image: &Path) -> Option<(&str, u32)> {
    let stem = image.file_stem()?.to_str()?;
    let (product, n) = stem.rsplit_once('-')?;
    let digits = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    let l1a = product
        .rsplit('_')
        .next()
        .is_some_and(|id| id.to_ascii_uppercase().starts_with("L1A"));
    (digits && l1a)
        .then(|| Some((product, n.parse().ok()?)))
        .flatten()
}

/// Whether `path` is a Gaofen product as an imagery folder holds it: a delivered tar, or an
/// extracted multispectral TIFF with its product `.xml` beside it or an L1A product's name
/// (one piece of a split product stands for all of them).
pub fn is_product(path: &Path) -> bool {
    is_archive(path)
        || (is_multispectral_tiff(path)
            && (product_xml(path).is_some() || product_id(path).is_some()))
}

/// Whether `path` is a TIFF other than a PMS product's panchromatic one (`-PAN1`), which
/// gengbao does not read (it does not pan-sharpen).
fn is_multispectral_tiff(path: &Path) -> bool {
    let name = lower_name(path);
    (name.ends_with(".tif") || name.ends_with(".tiff")) && !is_panchromatic(path)
}

/// Whether `path` is a PMS product's panchromatic TIFF (`…-PAN1.tiff`).
pub fn is_panchromatic(path: &Path) -> bool {
    let name = lower_name(path);
    (name.ends_with(".tif") || name.ends_with(".tiff")) && name.contains("-pan")
}

fn lower_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The product a Gaofen file belongs to: its name up to the `L1A` number
/// (`GF2_PMS1_E113.6_N23.1_20180505_L1A0003147281`), the same for the delivered tar, its
/// extracted TIFFs and a split product's pieces; `None` for a name without one.
pub fn product_id(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?.to_ascii_uppercase();
    let at = name.rfind("_L1A")? + 4;
    let digits = name[at..].bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0).then(|| name[..at + digits].to_string())
}

/// Whether a product of `camera` (`GF2-PMS1`, `GF1-WFV3`, `GF6-WFV`…) is what the profile
/// named `profile` reads.
pub fn camera_fits(profile: &str, camera: &str) -> bool {
    let camera = camera.to_ascii_uppercase();
    match profile {
        "gf2-pms" => camera.starts_with("GF2-PMS"),
        "gf1-wfv" => camera.starts_with("GF1") && camera.contains("-WFV"),
        "gf6-wfv" => camera.starts_with("GF6-WFV"),
        _ => true,
    }
}

/// Whether `path` names a packed product as Gaofen's are delivered (a tar, gzipped or not).
pub fn is_archive(path: &Path) -> bool {
    is_packed_product(path)
        && !path
            .to_string_lossy()
            .to_ascii_lowercase()
            .ends_with(".zip")
}

/// The images to read of what the user gave: the multispectral TIFF inside a delivered
/// `.tar.gz` (read in place through GDAL's `/vsitar/`, nothing unpacked), or the pieces of a
/// product split into several (GF-6 WFV: `…-1.tiff`, `…-2.tiff`, mosaicked by the caller),
/// else `path` as it is. GF-2 PMS products hold a panchromatic TIFF (`-PAN1`) beside the
/// multispectral one (`-MSS1`), which is the one read.
pub fn product_pieces(path: &Path) -> Result<Vec<PathBuf>> {
    if !is_archive(path) {
        return Ok(sibling_pieces(path));
    }
    let fix = "give the product's .tar.gz as delivered (GF1_WFV1_…_L1A….tar.gz, GF2_PMS1_…_L1A….tar.gz), or the extracted multispectral TIFF with its .xml and .rpb beside it";
    let (root, entries) = tar_entries(path).map_err(|damage| Error::input(path, damage, fix))?;
    let multispectral: Vec<&PathBuf> = entries
        .iter()
        .filter(|e| is_multispectral_tiff(e))
        .collect();
    match multispectral.as_slice() {
        [one] => Ok(vec![root.join(one)]),
        [] => Err(Error::input(
            path,
            format!(
                "holds no multispectral TIFF (it holds {})",
                listed_paths(&entries)
            ),
            fix,
        )),
        _ => match numbered_pieces(&multispectral) {
            Some(pieces) => Ok(pieces.into_iter().map(|p| root.join(p)).collect()),
            None => Err(Error::input(
                path,
                format!(
                    "holds {} multispectral TIFFs that are not the numbered pieces of one product ({})",
                    multispectral.len(),
                    listed_paths(&multispectral)
                ),
                fix,
            )),
        },
    }
}

/// `files` in piece order when they are the numbered pieces of one product (one name, each
/// number once); `None` otherwise.
fn numbered_pieces<'a>(files: &[&'a PathBuf]) -> Option<Vec<&'a PathBuf>> {
    let mut numbered: Vec<(u32, &PathBuf)> = files
        .iter()
        .map(|f| piece_number(f).map(|(_, n)| (n, *f)))
        .collect::<Option<_>>()?;
    let stems: std::collections::BTreeSet<&str> = files
        .iter()
        .filter_map(|f| Some(piece_number(f)?.0))
        .collect();
    numbered.sort();
    let distinct = numbered.windows(2).all(|w| w[0].0 != w[1].0);
    (stems.len() == 1 && distinct).then(|| numbered.into_iter().map(|(_, f)| f).collect())
}

/// The pieces beside an extracted piece of a split product (`…-1.tiff` with `…-2.tiff` in
/// its folder), in piece order; the file alone when it is not a piece.
fn sibling_pieces(path: &Path) -> Vec<PathBuf> {
    let alone = vec![path.to_path_buf()];
    let (Some((stem, _)), Some(dir)) = (piece_number(path), path.parent()) else {
        return alone;
    };
    let Ok(read) = std::fs::read_dir(dir) else {
        return alone;
    };
    let siblings: Vec<PathBuf> = read
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
            matches!(ext.as_deref(), Some("tif" | "tiff"))
                && piece_number(p).is_some_and(|(s, _)| s == stem)
        })
        .collect();
    let refs: Vec<&PathBuf> = siblings.iter().collect();
    match numbered_pieces(&refs) {
        Some(pieces) if pieces.len() > 1 => pieces.into_iter().cloned().collect(),
        _ => alone,
    }
}

/// Every file an extracted product is read from: its image (each piece of a split one), the
/// RPC file GDAL reads beside each (`.rpb`, `_rpc.txt`) and the product `.xml`; what a
/// resumed run checks has not changed. A `.tar.gz` is one file, itself.
pub fn delivered_files(path: &Path) -> Vec<PathBuf> {
    if is_archive(path) {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for piece in sibling_pieces(path) {
        let stem = piece.with_extension("");
        let stem = stem.to_string_lossy();
        let sidecars = ["rpb", "RPB"]
            .map(|ext| piece.with_extension(ext))
            .into_iter()
            .chain(["_rpc.txt", "_RPC.TXT"].map(|end| PathBuf::from(format!("{stem}{end}"))));
        files.extend(sidecars.filter(|f| f.is_file()));
        files.extend(product_xml(&piece));
        files.push(piece);
    }
    files.sort();
    files.dedup();
    files
}

fn listed_paths(paths: &[impl AsRef<Path>]) -> String {
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.as_ref().display().to_string())
        .collect();
    listed(&names)
}

/// Earth-Sun distance in astronomical units on `date` (the usual first-harmonic
/// approximation, within 0.0005 AU: under 0.1 % of reflectance).
fn earth_sun_distance(date: NaiveDate) -> f64 {
    let day = f64::from(date.ordinal());
    1.0 - 0.01672 * (0.9856 * (day - 4.0)).to_radians().cos()
}

/// The text of the root element's children (`<SatelliteID>GF2</SatelliteID>`, …) by name.
fn top_level_fields(xml: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut fields = BTreeMap::new();
    let (mut depth, mut open) = (0usize, None::<String>);
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                depth += 1;
                open = (depth == 2)
                    .then(|| String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
            }
            Event::Text(t) => {
                if let Some(name) = &open {
                    let text = t.unescape().map_err(|e| e.to_string())?;
                    fields.entry(name.clone()).or_insert(text.into_owned());
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                open = None;
            }
            Event::Eof => return Ok(fields),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ProductMetaData>\n  <SatelliteID>GF2</SatelliteID>\n  <SensorID>PMS1</SensorID>\n  <ProductLevel>LEVEL1A</ProductLevel>\n  <CenterTime>2018-05-05 11:26:43</CenterTime>\n  <SolarZenith>30.0</SolarZenith>\n</ProductMetaData>\n";

    #[test]
    fn a_split_products_files_are_its_pieces_their_rpcs_and_its_xml() {
        let dir = tempfile::tempdir().unwrap();
        let product = "GF6_WFV_E118.8_N32.0_20200505_L1A1119838015";
        let file = |name: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, XML).unwrap();
            path
        };
        let first = file(format!("{product}-1.tiff"));
        let mut expected = vec![
            first.clone(),
            file(format!("{product}-2.tiff")),
            file(format!("{product}-1.rpb")),
            file(format!("{product}-2_rpc.txt")),
            file(format!("{product}.xml")),
        ];
        // Another product's RPCs are not this one's.
        file("GF6_WFV_E118.8_N32.0_20200505_L1A1119838016-1.rpb".into());
        expected.sort();
        assert_eq!(delivered_files(&first), expected);
        let tar = dir.path().join(format!("{product}.tar.gz"));
        assert_eq!(delivered_files(&tar), vec![tar.clone()]);
    }

    fn metadata(text: &str) -> Result<ProductMetadata> {
        let dir = tempfile::tempdir().unwrap();
        let xml = dir
            .path()
            .join("GF2_PMS1_E113.5_N23.1_20180505_L1A0003167897-MSS1.xml");
        std::fs::write(&xml, text).unwrap();
        ProductMetadata::read(&xml)
    }

    #[test]
    fn a_gf2_product_of_2018_is_calibrated_with_that_years_gains_and_its_sun() {
        let meta = metadata(XML).unwrap();
        assert_eq!(meta.camera, "GF2-PMS1");
        let c = CalibrationTable::builtin()
            .calibration(&meta, 4, Path::new("x.xml"))
            .unwrap();
        assert_eq!(c.coefficients_year, 2018);
        assert!(c.note.is_none());
        // 5 May is day 125: the Earth is 1.0085 AU from the Sun (the approximation is within
        // 0.0005).
        assert!(
            (c.earth_sun_au - 1.0085).abs() < 0.0005,
            "{}",
            c.earth_sun_au
        );
        // Red: 0.1644 W/m²/sr/µm per DN; ESUN 1541.79; sun 30° from the zenith.
        let want = std::f64::consts::PI * 0.1644 * c.earth_sun_au.powi(2)
            / (1541.79 * 30f64.to_radians().cos());
        assert!((c.reflectance_per_dn[2] - want).abs() < 1e-9);
        // A DN of 1000 in red is then about 0.39 reflectance (a bright field in May).
        assert!((1000.0 * c.reflectance_per_dn[2] - 0.393).abs() < 0.005);
        assert_eq!(c.dn_offset, vec![0.0; 4]);
    }

    #[test]
    fn a_year_the_table_lacks_uses_the_latest_before_it_and_says_so_and_a_user_table_adds_it() {
        let meta = metadata(&XML.replace("2018-05-05", "2023-07-01")).unwrap();
        let builtin = CalibrationTable::builtin();
        let c = builtin.calibration(&meta, 4, Path::new("x.xml")).unwrap();
        assert_eq!(c.coefficients_year, 2020);
        assert!(c.note.as_deref().unwrap().contains("2023"), "{:?}", c.note);

        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("cresda-2023.toml");
        std::fs::write(
            &user,
            "[GF2-PMS1]\nyears.2023 = { gains = [0.2, 0.2, 0.2, 0.2], offsets = [-1.0, 0, 0, 0] }\n",
        )
        .unwrap();
        let c = builtin
            .extended_by(&user)
            .unwrap()
            .calibration(&meta, 4, Path::new("x.xml"))
            .unwrap();
        assert_eq!((c.coefficients_year, c.note.clone()), (2023, None));
        assert_eq!(c.esun[0], 1941.76, "the built-in ESUN stays");
        assert_eq!(c.dn_offset[0], -5.0);
    }

    #[test]
    fn a_user_table_that_cannot_serve_is_named_with_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("mine.toml");
        for (text, says) in [
            (
                "[GF1-PMS1]\nyears.2019 = { gains = [0.2, 0.2, 0.2, 0.2] }\n",
                "no esun",
            ),
            (
                "[GF2-PMS1]\nyears.24 = { gains = [0.2, 0.2, 0.2, 0.2] }\n",
                "four digits",
            ),
            (
                "[GF2-PMS1]\nyears.2024 = { gains = [0.2, 0.2, 0.2] }\n",
                "4 gains",
            ),
            ("[GF2-PMS1]\ngain = 1\n", "unknown field"),
        ] {
            std::fs::write(&user, text).unwrap();
            let err = CalibrationTable::builtin()
                .extended_by(&user)
                .unwrap_err()
                .to_string();
            assert!(err.contains("mine.toml") && err.contains(says), "{err}");
        }
    }

    #[test]
    fn only_an_l1a_products_numbered_files_are_pieces() {
        let piece = |name: &str| piece_number(Path::new(name)).map(|(_, n)| n);
        assert_eq!(
            piece("GF6_WFV_E127.9_N46.8_20180823_L1A1119838015-2.tiff"),
            Some(2)
        );
        assert_eq!(
            piece("GF2_PMS1_E113.5_N23.1_20180505_L1A0003167897-MSS1.tiff"),
            None
        );
        assert_eq!(piece("gf2_2020-05-01.tif"), None);
        assert_eq!(piece("GF6_WFV_X_L1A1119838015-+2.tiff"), None);
        assert_eq!(
            expected_xml_name(Path::new("/d/GF6_WFV_X_L1A1119838015-2.tiff")),
            "GF6_WFV_X_L1A1119838015.xml"
        );
    }

    #[test]
    fn a_camera_or_band_count_the_table_lacks_is_named() {
        let meta = metadata(&XML.replace("PMS1", "PMS9")).unwrap();
        let err = CalibrationTable::builtin()
            .calibration(&meta, 4, Path::new("p.xml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("GF2-PMS9") && err.contains("--calibration"),
            "{err}"
        );
        let meta = metadata(XML).unwrap();
        let err = CalibrationTable::builtin()
            .calibration(&meta, 8, Path::new("p.xml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("8 bands"), "{err}");
        let err = metadata(&XML.replace("<SolarZenith>30.0</SolarZenith>", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SolarZenith"), "{err}");
    }

    #[test]
    fn a_tar_its_tiffs_and_its_pieces_are_one_product() {
        let id = |n: &str| product_id(Path::new(n));
        let product = Some("GF2_PMS1_E113.6_N23.1_20180505_L1A0003147281".to_string());
        for name in [
            "GF2_PMS1_E113.6_N23.1_20180505_L1A0003147281.tar.gz",
            "GF2_PMS1_E113.6_N23.1_20180505_L1A0003147281-MSS1.tiff",
            "gf2_pms1_e113.6_n23.1_20180505_l1a0003147281-2.tif",
        ] {
            assert_eq!(id(name), product, "{name}");
        }
        assert_eq!(id("T50SKE_20250107_B02_10m.tif"), None);
        assert!(is_panchromatic(Path::new("x_L1A1-PAN1.tiff")));
        assert!(camera_fits("gf2-pms", "GF2-PMS2"));
        assert!(camera_fits("gf1-wfv", "GF1-WFV3"));
        assert!(!camera_fits("gf2-pms", "GF1-WFV3"));
        assert!(!camera_fits("gf6-wfv", "GF1-WFV1"));
    }
}
