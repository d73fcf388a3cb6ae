//! Vector files: one layer of polygons with typed attributes written in GeoPackage, Shapefile
//! or GeoJSON. Field names are ASCII (at most 10 characters, the land-survey convention); the
//! GeoPackage also carries the Chinese alias of every field. Shapefiles get a .prj and a .cpg
//! (GBK or UTF-8). GeoJSON is written in WGS84 (RFC 7946) for web maps.
//!
//! Every vector file gengbao writes goes through [`write_layer`].
//!
//! Invariant: the same rows give the same bytes. The formats' "last changed" stamps
//! (GeoPackage's `gpkg_contents.last_change`, the Shapefile's DBF header date) are written as
//! [`CONTENT_STAMP`], not the clock, so a re-run or a re-issued package can be compared by
//! checksum; the file's own modification time still says when it was written.

use crate::error::{Error, GdalContext, Result};
use gdal::spatial_ref::SpatialRef;
use gdal::vector::{Feature, FieldValue, Geometry, LayerAccess, LayerOptions};
use gdal::DriverManager;
use std::ffi::CString;
use std::path::Path;

/// A field spec, in a `const` context.
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

/// The geometry type of a layer of areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Areas {
    /// One polygon per feature.
    Polygons,
    /// Multipolygons: a feature may be in several parts (a patch of one field whose changed
    /// pixels are not all connected); single polygons are written as one-part multipolygons,
    /// so that every feature of the layer has its declared type.
    MultiPolygons,
}

/// The "last changed" date written into GeoPackage and Shapefile metadata (see the module's
/// invariant): the Unix epoch.
const CONTENT_STAMP: (&str, &str) = ("1970-01-01T00:00:00.000Z", "1970-01-01");

/// Sets GDAL's clock for GeoPackage stamps on this thread while it lives.
struct StampedClock;

impl StampedClock {
    fn set() -> Result<Self> {
        gdal::config::set_thread_local_config_option("OGR_CURRENT_DATE", CONTENT_STAMP.0)?;
        Ok(StampedClock)
    }
}

impl Drop for StampedClock {
    fn drop(&mut self) {
        let _ = gdal::config::clear_thread_local_config_option("OGR_CURRENT_DATE");
    }
}

/// Writes one layer of areas with attributes into a new file `path`. All vector output of
/// gengbao goes through here.
#[allow(clippy::too_many_arguments)]
pub fn write_layer(
    path: &Path,
    format: Format,
    layer_name: &str,
    srs: &SpatialRef,
    areas: Areas,
    fields: &[FieldSpec],
    rows: impl IntoIterator<Item = (Geometry, Vec<FieldValue>)>,
    shapefile_encoding: &str,
) -> Result<()> {
    // Declared before the dataset so that it is dropped after the dataset is closed (GDAL
    // stamps a GeoPackage again when it closes).
    let _clock = StampedClock::set()?;
    let driver = DriverManager::get_driver_by_name(format.driver())?;
    let mut ds = driver
        .create_vector_only(path)
        .in_file(path, "check that the output folder is writable")?;
    let encoding = match shapefile_encoding.to_ascii_uppercase().as_str() {
        "GBK" => "ENCODING=CP936".to_string(),
        _ => "ENCODING=UTF-8".to_string(),
    };
    let dbf_date = format!("DBF_DATE_LAST_UPDATE={}", CONTENT_STAMP.1);
    let opts: Vec<&str> = match format {
        Format::Shapefile => vec![encoding.as_str(), dbf_date.as_str()],
        Format::GeoJson => vec!["RFC7946=YES", "WRITE_NAME=NO"],
        Format::GeoPackage => vec![],
    };
    {
        let layer = ds.create_layer(LayerOptions {
            name: layer_name,
            srs: Some(srs),
            ty: match areas {
                Areas::Polygons => gdal_sys::OGRwkbGeometryType::wkbPolygon,
                Areas::MultiPolygons => gdal_sys::OGRwkbGeometryType::wkbMultiPolygon,
            },
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
            let polygon = geometry.geometry_type() == gdal_sys::OGRwkbGeometryType::wkbPolygon;
            let geometry = if areas == Areas::MultiPolygons && polygon {
                let mut multi = Geometry::empty(gdal_sys::OGRwkbGeometryType::wkbMultiPolygon)?;
                multi.add_geometry(geometry)?;
                multi
            } else {
                geometry
            };
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
