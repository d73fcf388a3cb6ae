//! The patch (图斑) record as files: the field list of the design brief with the value each
//! field takes from a [`Patch`], and a county's patches written in the three formats.

use crate::engine::patches::Patch;
use crate::error::{Error, Result};
use crate::geo::vector::{field, write_layer, Areas, FieldSpec, Format};
use gdal::spatial_ref::SpatialRef;
use gdal::vector::FieldValue;
use gdal_sys::OGRFieldType::{OFTInteger, OFTReal, OFTString};
use std::path::{Path, PathBuf};
use FieldValue::{IntegerValue as I, RealValue as R, StringValue as S};

/// How a field takes its value from a patch.
pub(crate) type PatchValue = fn(&Patch) -> FieldValue;

/// The patch record of the design brief: each field with the value it takes from a patch.
pub(crate) const PATCH_FIELDS: &[(FieldSpec, PatchValue)] = &[
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
pub(crate) fn patch_specs() -> Vec<FieldSpec> {
    PATCH_FIELDS.iter().map(|(spec, _)| *spec).collect()
}

/// A patch's attribute values in [`PATCH_FIELDS`] order.
pub(crate) fn patch_values(p: &Patch) -> Vec<FieldValue> {
    PATCH_FIELDS.iter().map(|(_, value)| value(p)).collect()
}

/// `blank` fields follow the patch fields, empty, for the county to fill in.
pub(crate) fn write_county(
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
        write_layer(
            &path,
            format,
            stem,
            srs,
            Areas::MultiPolygons,
            &specs,
            rows,
            shapefile_encoding,
        )?;
        written.push(path);
    }
    Ok(written)
}
