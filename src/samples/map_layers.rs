//! The city's vector layers.
//!
//! Takes: the city's side, its parcels and its planted and passing changes. Gives: the
//! GeoPackages `admin.gpkg` (counties), `townships.gpkg`, `farmland.gpkg` and the truth layers
//! `truth/changes.gpkg` and `truth/passing.gpkg`.

use super::land::{Land, PlantedChange};
use super::{ORIGIN, RES};
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::geo::vector::{field, write_layer, Areas, Format};
use gdal::spatial_ref::SpatialRef;
use gdal::vector::{FieldValue, Geometry};
use gdal_sys::OGRFieldType::{OFTInteger, OFTString};
use std::path::Path;

/// Takes a polygon with its administrative code and name; gives its row.
fn admin_row(g: Geometry, code: String, name: String) -> (Geometry, Vec<FieldValue>) {
    (
        g,
        vec![FieldValue::StringValue(code), FieldValue::StringValue(name)],
    )
}

/// Takes the city's side; writes the two counties to `admin.gpkg` and their four townships
/// (each county's part north and south of the middle row) to `townships.gpkg`.
pub(super) fn write_admin_layers(dir: &Path, srs: &SpatialRef, size: usize) -> Result<()> {
    let [west, east] = county_polygons(size)?;
    let counties = [(west, "320901", "西河县"), (east, "320902", "东湖县")];
    // Counties and townships: an administrative code and name per polygon.
    let admin_fields = [
        field("XZQDM", OFTString, 0, "行政区代码"),
        field("XZQMC", OFTString, 0, "行政区名称"),
    ];
    write_layer(
        &dir.join("admin.gpkg"),
        Format::GeoPackage,
        "counties",
        srs,
        Areas::Polygons,
        &admin_fields,
        counties
            .iter()
            .map(|(g, code, name)| admin_row(g.clone(), code.to_string(), name.to_string())),
        "UTF-8",
    )?;
    let middle = ORIGIN.1 - size as f64 * RES / 2.0;
    let (x0, x1) = (ORIGIN.0, ORIGIN.0 + size as f64 * RES);
    let halves = [
        ("北", Geometry::bbox(x0, middle, x1, ORIGIN.1)?),
        (
            "南",
            Geometry::bbox(x0, ORIGIN.1 - size as f64 * RES, x1, middle)?,
        ),
    ];
    let mut townships = Vec::new();
    for (county, code, name) in &counties {
        for (k, (side, half)) in halves.iter().enumerate() {
            let part = county.intersection(half).ok_or_else(|| {
                Error::usage("a county cannot be cut into townships", "report this bug")
            })?;
            townships.push(admin_row(
                part,
                format!("{code}{:03}", k + 1),
                format!("{}{side}镇", name.trim_end_matches('县')),
            ));
        }
    }
    write_layer(
        &dir.join("townships.gpkg"),
        Format::GeoPackage,
        "townships",
        srs,
        Areas::Polygons,
        &admin_fields,
        townships,
        "UTF-8",
    )
}

/// Takes the land; writes its parcels to `farmland.gpkg` with their code, kind and whether
/// they are permanent basic farmland.
pub(super) fn write_farmland(dir: &Path, srs: &SpatialRef, land: &Land) -> Result<()> {
    let parcels = land
        .parcels
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = match p.dlbm {
                "0101" => "水田",
                "0102" => "水浇地",
                _ => "旱地",
            };
            Ok((
                rect_polygon(p.rect)?,
                vec![
                    FieldValue::StringValue(format!("3209{:09}", i + 1)),
                    FieldValue::StringValue(p.dlbm.into()),
                    FieldValue::StringValue(name.into()),
                    FieldValue::IntegerValue(i32::from(p.basic)),
                ],
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let farm_fields = [
        field("BSM", OFTString, 0, "标识码"),
        field("DLBM", OFTString, 0, "地类编码"),
        field("DLMC", OFTString, 0, "地类名称"),
        field("JBNT", OFTInteger, 0, "永久基本农田"),
    ];
    write_layer(
        &dir.join("farmland.gpkg"),
        Format::GeoPackage,
        "farmland",
        srs,
        Areas::Polygons,
        &farm_fields,
        parcels,
        "UTF-8",
    )
}

/// Takes the planted and the passing changes and the city's periods; writes them to
/// `truth/changes.gpkg` and `truth/passing.gpkg`.
pub(super) fn write_truth_layers(
    dir: &Path,
    srs: &SpatialRef,
    changes: &[PlantedChange],
    passing: &[PlantedChange],
    periods: &[Period],
) -> Result<()> {
    let truth_fields = [
        field("BH", OFTInteger, 0, "编号"),
        field("BHLX", OFTString, 0, "变化类型"),
        field("HDL", OFTInteger, 0, "后地类"),
        field("QSQS", OFTString, 0, "起始时相"),
        field("BSM", OFTString, 0, "耕地标识码"),
        field("ZTB", OFTInteger, 0, "整图斑"),
        field("JSQS", OFTString, 0, "恢复时相"),
    ];
    for (file, layer, list) in [
        ("changes.gpkg", "changes", changes),
        ("passing.gpkg", "passing", passing),
    ] {
        write_layer(
            &dir.join("truth").join(file),
            Format::GeoPackage,
            layer,
            srs,
            Areas::Polygons,
            &truth_fields,
            truth_rows(list, periods)?,
            "UTF-8",
        )?;
    }
    Ok(())
}

/// Takes changes and the city's periods; gives their rows of the truth layers.
fn truth_rows(
    list: &[PlantedChange],
    periods: &[Period],
) -> Result<Vec<(Geometry, Vec<FieldValue>)>> {
    list.iter()
        .map(|c| {
            Ok((
                rect_polygon(c.rect)?,
                vec![
                    FieldValue::IntegerValue(c.id as i32),
                    FieldValue::StringValue(c.kind.code().into()),
                    FieldValue::IntegerValue(c.to.code().into()),
                    FieldValue::StringValue(periods[c.onset].to_string()),
                    FieldValue::StringValue(format!("3209{:09}", c.parcel + 1)),
                    FieldValue::IntegerValue(i32::from(c.whole_parcel)),
                    FieldValue::StringValue(
                        c.until.map_or(String::new(), |u| periods[u].to_string()),
                    ),
                ],
            ))
        })
        .collect()
}

/// The two counties: split at a wavy north-south border.
fn county_polygons(size: usize) -> Result<[Geometry; 2]> {
    let border = |y: usize| (0.45 + 0.06 * (y as f64 / size as f64 * 7.0).sin()) * size as f64;
    let to_map = |x: f64, y: f64| (ORIGIN.0 + x * RES, ORIGIN.1 - y * RES);
    let mut ys: Vec<usize> = (0..=size).step_by(8).chain(std::iter::once(size)).collect();
    ys.dedup();
    let ring = |pts: Vec<(f64, f64)>| -> Result<Geometry> {
        let wkt = format!(
            "POLYGON(({}))",
            pts.iter()
                .chain(pts.first())
                .map(|(x, y)| format!("{x} {y}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        Ok(Geometry::from_wkt(&wkt)?)
    };
    let mut west = vec![to_map(0.0, 0.0)];
    for &y in &ys {
        west.push(to_map(border(y), y as f64));
    }
    west.push(to_map(0.0, size as f64));
    let east_ring = {
        let mut pts = vec![to_map(size as f64, 0.0)];
        for &y in &ys {
            pts.push(to_map(border(y), y as f64));
        }
        pts.push(to_map(size as f64, size as f64));
        pts.reverse();
        pts
    };
    Ok([ring(west)?, ring(east_ring)?])
}

/// Takes a pixel rectangle (end exclusive); gives it in the city's map coordinates.
pub(super) fn rect_polygon(r: (usize, usize, usize, usize)) -> Result<Geometry> {
    let (x0, y0) = (ORIGIN.0 + r.0 as f64 * RES, ORIGIN.1 - r.1 as f64 * RES);
    let (x1, y1) = (ORIGIN.0 + r.2 as f64 * RES, ORIGIN.1 - r.3 as f64 * RES);
    Ok(Geometry::from_wkt(&format!(
        "POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"
    ))?)
}
