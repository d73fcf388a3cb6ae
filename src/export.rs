//! Exports: per county a GeoPackage, a Shapefile and a GeoJSON of the period's patches, and the
//! run summary. Field names are ASCII (at most 10 characters, the land-survey convention);
//! the GeoPackage also carries the Chinese alias of every field. Shapefiles get a .prj and a
//! .cpg (GBK by default, UTF-8 on request). GeoJSON is written in WGS84 (RFC 7946) for web maps.

use crate::error::{Error, GdalContext, Result};
use crate::patches::Patch;
use gdal::spatial_ref::SpatialRef;
use gdal::vector::{Feature, FieldValue, Geometry, LayerAccess, LayerOptions};
use gdal::DriverManager;
use gdal_sys::OGRFieldType::{OFTInteger, OFTReal, OFTString};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use FieldValue::{IntegerValue as I, RealValue as R, StringValue as S};

pub(crate) const fn field(
    name: &'static str,
    ty: u32,
    width: i32,
    alias: &'static str,
) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        width,
        alias,
    }
}

/// How a field takes its value from a patch.
pub type PatchValue = fn(&Patch) -> FieldValue;

/// The patch record of the design brief: each field with the value it takes from a patch.
pub const PATCH_FIELDS: &[(FieldSpec, PatchValue)] = &[
    (field("TBBH", OFTString, 24, "图斑编号"), |p| {
        S(p.tbbh.clone())
    }),
    (field("XZQDM", OFTString, 12, "行政区代码"), |p| {
        S(p.county_code.clone())
    }),
    (field("XZQMC", OFTString, 60, "行政区名称"), |p| {
        S(p.county_name.clone())
    }),
    (field("XZDM", OFTString, 12, "乡镇代码"), |p| {
        S(p.township_code.clone())
    }),
    (field("XZMC", OFTString, 60, "乡镇名称"), |p| {
        S(p.township_name.clone())
    }),
    (field("BHLX", OFTString, 4, "变化类型"), |p| {
        S(p.change.code().into())
    }),
    (field("BHLXMC", OFTString, 12, "变化类型名称"), |p| {
        S(p.change.label_zh().into())
    }),
    (field("QDL", OFTString, 2, "前地类"), |p| {
        S(p.before.code().to_string())
    }),
    (field("QDLMC", OFTString, 30, "前地类名称"), |p| {
        S(p.before.label_zh().into())
    }),
    (field("HDL", OFTString, 2, "后地类"), |p| {
        S(p.after.code().to_string())
    }),
    (field("HDLMC", OFTString, 30, "后地类名称"), |p| {
        S(p.after.label_zh().into())
    }),
    (field("QSX", OFTString, 10, "前时相"), |p| {
        S(p.before_period.clone())
    }),
    (field("HSX", OFTString, 10, "后时相"), |p| {
        S(p.after_period.clone())
    }),
    (
        field("HSXRQ", OFTString, 20, "后时相影像日期"),
        |p| S(p.image_dates.clone()),
    ),
    (field("TBMJ", OFTReal, 0, "图斑面积(平方米)"), |p| {
        R(p.area_m2)
    }),
    (field("TBMJM", OFTReal, 0, "图斑面积(亩)"), |p| {
        R(p.area_mu)
    }),
    (field("GDMJ", OFTReal, 0, "耕地面积(平方米)"), |p| {
        R(p.farmland_m2)
    }),
    (
        field("JBNTMJ", OFTReal, 0, "永久基本农田面积(平方米)"),
        |p| R(p.basic_farmland_m2),
    ),
    (field("ZXDX", OFTReal, 0, "中心点X"), |p| R(p.centroid.0)),
    (field("ZXDY", OFTReal, 0, "中心点Y"), |p| R(p.centroid.1)),
    (field("JD", OFTReal, 0, "中心点经度"), |p| {
        R(p.lon_lat.0)
    }),
    (field("WD", OFTReal, 0, "中心点纬度"), |p| {
        R(p.lon_lat.1)
    }),
    (field("ZXD", OFTReal, 0, "置信度"), |p| R(p.confidence)),
    (field("SCQS", OFTString, 10, "首次发现期次"), |p| {
        S(p.first_seen.clone())
    }),
    (field("CXQS", OFTInteger, 0, "持续期次数"), |p| {
        I(p.persisted as i32)
    }),
    (
        field("GDBSM", OFTString, 30, "耕地图斑标识码"),
        |p| S(p.parcel_id.clone()),
    ),
    (field("ZT", OFTString, 16, "状态"), |p| {
        S(p.status.label_zh().into())
    }),
    (field("MXBB", OFTString, 32, "模型版本"), |p| {
        S(p.model_version.clone())
    }),
];

/// The specs of [`PATCH_FIELDS`], for [`write_layer`].
pub fn patch_specs() -> Vec<FieldSpec> {
    PATCH_FIELDS.iter().map(|(spec, _)| *spec).collect()
}

/// A patch's attribute values in [`PATCH_FIELDS`] order.
pub fn patch_values(p: &Patch) -> Vec<FieldValue> {
    PATCH_FIELDS.iter().map(|(_, value)| value(p)).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    GeoPackage,
    Shapefile,
    GeoJson,
}

impl Format {
    fn driver(self) -> &'static str {
        match self {
            Format::GeoPackage => "GPKG",
            Format::Shapefile => "ESRI Shapefile",
            Format::GeoJson => "GeoJSON",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::GeoPackage => "gpkg",
            Format::Shapefile => "shp",
            Format::GeoJson => "geojson",
        }
    }
}

/// A field of an output layer.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub ty: u32,
    /// 0 = driver default
    pub width: i32,
    /// Human-readable (Chinese) name, stored where the format supports it (GeoPackage).
    pub alias: &'static str,
}

/// Writes one layer of polygons with attributes into a new file `path`. All vector output of
/// gengbao goes through here.
pub fn write_layer(
    path: &Path,
    format: Format,
    layer_name: &str,
    srs: &SpatialRef,
    fields: &[FieldSpec],
    rows: impl IntoIterator<Item = (Geometry, Vec<FieldValue>)>,
    shapefile_encoding: &str,
) -> Result<()> {
    let driver = DriverManager::get_driver_by_name(format.driver())?;
    let mut ds = driver
        .create_vector_only(path)
        .in_file(path, "check that the output folder is writable")?;
    let encoding = match shapefile_encoding.to_ascii_uppercase().as_str() {
        "GBK" => "ENCODING=CP936".to_string(),
        _ => "ENCODING=UTF-8".to_string(),
    };
    let opts: Vec<&str> = match format {
        Format::Shapefile => vec![encoding.as_str()],
        Format::GeoJson => vec!["RFC7946=YES", "WRITE_NAME=NO"],
        Format::GeoPackage => vec![],
    };
    {
        let layer = ds.create_layer(LayerOptions {
            name: layer_name,
            srs: Some(srs),
            ty: gdal_sys::OGRwkbGeometryType::wkbPolygon,
            options: Some(&opts),
        })?;
        for f in fields {
            let cname = CString::new(f.name).expect("ascii");
            let calias = CString::new(f.alias).expect("no NUL");
            // SAFETY: the field definition is created, configured, copied into the layer by
            // OGR_L_CreateField, and destroyed; the layer handle is valid while `ds` lives.
            unsafe {
                let fd = gdal_sys::OGR_Fld_Create(cname.as_ptr(), f.ty);
                if f.width > 0 {
                    gdal_sys::OGR_Fld_SetWidth(fd, f.width);
                }
                if !f.alias.is_empty() {
                    gdal_sys::OGR_Fld_SetAlternativeName(fd, calias.as_ptr());
                }
                let rv = gdal_sys::OGR_L_CreateField(layer.c_layer(), fd, 1);
                gdal_sys::OGR_Fld_Destroy(fd);
                if rv != gdal_sys::OGRErr::OGRERR_NONE {
                    return Err(Error::input(
                        path,
                        format!("cannot create field {}", f.name),
                        "check the output format",
                    ));
                }
            }
        }
    }
    // One transaction for all features: GeoPackage inserts are slow one by one.
    // SAFETY: `ds` is a valid open dataset; drivers without transactions return an error we
    // treat as "write directly".
    let in_transaction = unsafe { gdal_sys::GDALDatasetStartTransaction(ds.c_dataset(), 0) }
        == gdal_sys::OGRErr::OGRERR_NONE;
    {
        let layer = ds.layer(0)?;
        for (geometry, values) in rows {
            let mut f = Feature::new(layer.defn())?;
            for (i, v) in values.iter().enumerate() {
                f.set_field(i, v)?;
            }
            f.set_geometry(geometry)?;
            f.create(&layer)?;
        }
    }
    if in_transaction {
        // SAFETY: commits the transaction started above on this dataset handle.
        let rv = unsafe { gdal_sys::GDALDatasetCommitTransaction(ds.c_dataset()) };
        if rv != gdal_sys::OGRErr::OGRERR_NONE {
            return Err(Error::input(
                path,
                "could not commit the written features",
                "check free disk space",
            ));
        }
    }
    if format == Format::GeoPackage {
        write_gpkg_aliases(&ds, layer_name, fields).in_file(path, "check free disk space")?;
    }
    ds.close()?;
    Ok(())
}

/// Stores the Chinese field aliases in the GeoPackage schema extension (`gpkg_data_columns`),
/// where desktop GIS reads them; GDAL 3.6 does not write them itself.
fn write_gpkg_aliases(
    ds: &gdal::Dataset,
    table: &str,
    fields: &[FieldSpec],
) -> gdal::errors::Result<()> {
    let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let mut sql = vec![
        "CREATE TABLE IF NOT EXISTS gpkg_data_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL, name TEXT, title TEXT, description TEXT, mime_type TEXT, constraint_name TEXT, CONSTRAINT pk_gdc PRIMARY KEY (table_name, column_name), CONSTRAINT gdc_tn UNIQUE (table_name, name))".to_string(),
        "CREATE TABLE IF NOT EXISTS gpkg_extensions (table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL, definition TEXT NOT NULL, scope TEXT NOT NULL, CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name))".to_string(),
        "INSERT OR IGNORE INTO gpkg_extensions VALUES ('gpkg_data_columns', NULL, 'gpkg_schema', 'http://www.geopackage.org/spec/#extension_schema', 'read-write')".to_string(),
    ];
    for f in fields.iter().filter(|f| !f.alias.is_empty()) {
        sql.push(format!(
            "INSERT OR REPLACE INTO gpkg_data_columns (table_name, column_name, name, title) VALUES ({}, {}, {}, {})",
            quote(table),
            quote(f.name),
            quote(f.alias),
            quote(f.alias)
        ));
    }
    for statement in sql {
        ds.execute_sql(statement, None, gdal::vector::sql::Dialect::SQLITE)?;
    }
    Ok(())
}

/// Writes the three formats of one county into `dir`; returns the files written. The
/// `blank` fields follow the patch fields, empty, for the county to fill in.
pub fn write_county(
    dir: &Path,
    stem: &str,
    srs: &SpatialRef,
    patches: &[Patch],
    shapefile_encoding: &str,
    blank: &[FieldSpec],
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    for format in [Format::GeoPackage, Format::Shapefile, Format::GeoJson] {
        let path = dir.join(format!("{stem}.{}", format.extension()));
        let rows = patches.iter().map(|p| {
            let mut values = patch_values(p);
            values.extend(blank.iter().map(|_| S(String::new())));
            (p.geometry.clone(), values)
        });
        let mut specs = patch_specs();
        specs.extend_from_slice(blank);
        write_layer(&path, format, stem, srs, &specs, rows, shapefile_encoding)?;
        written.push(path);
    }
    Ok(written)
}

/// A folder that results are written into before they replace their target in one rename, so
/// that a failed or killed run never leaves half a result and never loses the previous one.
/// It sits beside the target (same file system) and is removed when dropped.
pub struct StagingDir {
    path: PathBuf,
}

fn pid_alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

/// This machine's name, so that runs on other hosts sharing the folder are left alone.
pub(crate) fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['-', '/', '.', '@'], "_"))
        .unwrap_or_else(|_| "host".into())
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
pub fn clean_stale(parent: &Path) -> Result<()> {
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
    pub fn move_entry(&self, entry: impl AsRef<Path>, target: &Path) -> Result<()> {
        replace_path(&self.path.join(entry), target)
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Registers the TrueType font that plotters draws text with: DejaVu Sans from Debian's
/// fonts-dejavu-core (installed by scripts/setup.sh), or the file in `GENGBAO_FONT`.
pub fn text_font() -> Result<()> {
    use plotters::style::{register_font, FontStyle};
    static FONT: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    let font_path = std::env::var("GENGBAO_FONT")
        .unwrap_or_else(|_| "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into());
    FONT.get_or_init(|| {
        let bytes = std::fs::read(&font_path).map_err(|e| e.to_string())?;
        register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .map_err(|_| "not a TrueType font".to_string())
    })
    .clone()
    .map_err(|e| {
        Error::input(
            &font_path,
            format!("cannot load the font for text in images: {e}"),
            "install fonts-dejavu-core (scripts/setup.sh does) or set GENGBAO_FONT to a .ttf file",
        )
    })
}

/// Colour of a land-cover class in the quicklook (muted, so flags stand out).
fn class_colour(class: u8) -> [u8; 3] {
    match class {
        1 => [222, 214, 160],
        2 => [176, 196, 130],
        3 => [170, 160, 160],
        4 => [150, 180, 215],
        5 => [200, 215, 175],
        6 => [120, 160, 120],
        _ => [255, 255, 255],
    }
}

/// Colour of a change flag in the quicklook.
pub(crate) fn flag_colour(flag: u8) -> Option<[u8; 3]> {
    match flag {
        1 => Some([220, 20, 30]),
        2 => Some([255, 140, 0]),
        3 => Some([140, 40, 200]),
        _ => None,
    }
}

/// A PNG overview of a period, or of `window` of it (at most `max_side` pixels a side): land
/// cover in muted colours, FNH red, FLH orange, PH purple. For a glance at a run, not for
/// measuring. Written into a staging folder, so it needs no atomic write of its own.
pub fn write_quicklook(
    class_tif: &Path,
    flags_tif: &Path,
    png: &Path,
    max_side: usize,
    window: Option<crate::grid::Window>,
) -> Result<()> {
    let read = |path: &Path| -> Result<(usize, usize, Vec<u8>)> {
        let ds = gdal::Dataset::open(path).in_file(path, "re-run the period")?;
        let (width, height) = ds.raster_size();
        let (x, y, w, h) = match window {
            // Clipped to the raster: GDAL refuses reads outside it.
            Some(win) => {
                let x = win.x.clamp(0, width as isize) as usize;
                let y = win.y.clamp(0, height as isize) as usize;
                let right = (win.x + win.width as isize).clamp(x as isize + 1, width as isize);
                let bottom = (win.y + win.height as isize).clamp(y as isize + 1, height as isize);
                (x, y, right as usize - x, bottom as usize - y)
            }
            None => (0, 0, width, height),
        };
        let f = (w.max(h) as f64 / max_side as f64).max(1.0);
        let shape = (
            ((w as f64 / f) as usize).max(1),
            ((h as f64 / f) as usize).max(1),
        );
        let band = ds.rasterband(1)?;
        // Mode resampling keeps small patches visible when shrinking.
        let data = band.read_as::<u8>(
            (x as isize, y as isize),
            (w, h),
            shape,
            Some(gdal::raster::ResampleAlg::Mode),
        )?;
        Ok((shape.0, shape.1, data.into_shape_and_vec().1))
    };
    let (w, h, class) = read(class_tif)?;
    let (_, _, flags) = read(flags_tif)?;
    let mut img = image::RgbImage::new(w as u32, h as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        *px = image::Rgb(flag_colour(flags[i]).unwrap_or_else(|| class_colour(class[i])));
    }
    img.save(png)
        .map_err(|e| Error::input(png, e.to_string(), "check the output folder"))
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
