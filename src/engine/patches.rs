//! Patches (图斑): the attributes of every polygon that survives the minimum mapping unit.
//!
//! Takes: polygons with their key (county, change type) and the per-pixel attribute raster of
//! the period (class before, class now, confidence, farmland). Gives: [`Patch`] records with
//! the fields of the design brief, numbered deterministically per county.

use crate::domain::change::ChangeType;
use crate::domain::land_cover::LandCover;
use crate::domain::period::Period;
use crate::domain::status::Status;
use crate::error::Result;
use crate::geo::grid::JobGrid;
use crate::geo::layers::{Admin, Farmland};
use crate::geo::raster::{rasterize, read_grid_window};
use crate::geo::vectorise::split_key;
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use gdal::vector::Geometry;
use gdal::Dataset;
use serde::Serialize;
use std::collections::BTreeMap;

pub const SQM_PER_MU: f64 = 10_000.0 / 15.0;

/// Bands of the per-pixel attribute raster.
pub mod attr_band {
    pub(crate) const BEFORE: usize = 1;
    pub(crate) const NOW: usize = 2;
    /// confidence * 250
    pub(crate) const CONFIDENCE: usize = 3;
    /// 0 not farmland, 1 farmland, 2 permanent basic farmland
    pub(crate) const FARMLAND: usize = 4;
    /// Consecutive periods, now included, the flagged change has been seen (saturating).
    pub(crate) const PERSISTED: usize = 5;
    pub(crate) const COUNT: usize = 5;
}

/// Serialised (without the outline) as the ledger's record of a sighting.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Patch {
    /// 图斑编号: county code + period + sequence.
    pub tbbh: String,
    pub county_code: String,
    pub county_name: String,
    /// 乡镇: the township holding most of the patch, when the job gives townships.
    #[serde(default)]
    pub township_code: String,
    #[serde(default)]
    pub township_name: String,
    pub change: ChangeType,
    pub before: LandCover,
    pub after: LandCover,
    /// 前时相: the period (or baseline) the before class comes from.
    pub before_period: String,
    /// 后时相: the period of detection.
    pub after_period: String,
    /// Dates of the images composited for the period, `first-last`.
    pub image_dates: String,
    /// 首次发现期次: the period the change was first seen (the start of its run).
    pub first_seen: String,
    /// 持续期次数: consecutive periods, this one included, the change has been seen.
    pub persisted: u32,
    pub area_m2: f64,
    pub area_mu: f64,
    pub farmland_m2: f64,
    pub basic_farmland_m2: f64,
    pub centroid: (f64, f64),
    pub lon_lat: (f64, f64),
    pub confidence: f64,
    pub model_version: String,
    /// Internal id of the farmland parcel under most of the patch (0 = none).
    pub parcel: i32,
    /// That parcel's identifier (BSM) in the farmland layer, when the layer has one.
    pub parcel_id: String,
    /// 状态: set by the ledger; 新发现 until then.
    pub status: Status,
    #[serde(skip, default = "no_outline")]
    pub geometry: Geometry,
}

fn no_outline() -> Geometry {
    Geometry::empty(gdal_sys::OGRwkbGeometryType::wkbPolygon).expect("GDAL makes empty polygons")
}

/// What every patch of a period shares.
pub struct PeriodInfo<'a> {
    pub period: String,
    pub image_dates: String,
    pub model_version: &'a str,
    pub timeline: Timeline,
}

/// Where the periods of a change come from.
pub enum Timeline {
    /// A pair of images (`before`, then the info's period): changes start at the later one.
    Pair { before: String },
    /// A job's period and how many consecutive earlier periods are archived, which date the
    /// start of a change and the class before it.
    Job { period: Period, archived: usize },
}

impl PeriodInfo<'_> {
    /// First period seen, and the period the before class comes from, of a change that has
    /// been seen `persisted` (>= 1) periods.
    fn dates_of(&self, persisted: u32) -> (String, String) {
        match &self.timeline {
            Timeline::Job { period, archived } => {
                let back = persisted as i32;
                let first = period.offset(1 - back);
                let before = if persisted as usize <= *archived {
                    first.prev().to_string()
                } else {
                    "基线".to_string()
                };
                (first.to_string(), before)
            }
            Timeline::Pair { before } => (self.period.clone(), before.clone()),
        }
    }
}

fn majority(hist: &[u32; 256]) -> u8 {
    // Ties go to the smaller code so that the result never depends on pixel order.
    let mut best = 0usize;
    for (i, &c) in hist.iter().enumerate() {
        if c > hist[best] {
            best = i;
        }
    }
    best as u8
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Builds the patches of a period. `min_area` gives the minimum mapping unit per type;
/// `keep` may drop a patch on its attributes before the patches are numbered.
#[allow(clippy::too_many_arguments)]
pub fn build(
    polygons: impl Iterator<Item = Result<(i64, Geometry)>>,
    attrs: &Dataset,
    parcels: &Dataset,
    grid: &JobGrid,
    admin: &Admin,
    info: &PeriodInfo,
    min_area: impl Fn(ChangeType) -> f64,
    keep: impl Fn(&Patch) -> bool,
) -> Result<Vec<Patch>> {
    let grid_srs = grid.spatial_ref()?;
    let mut geographic = SpatialRef::from_epsg(4490)?;
    geographic.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let to_lonlat = CoordTransform::new(&grid_srs, &geographic)?;
    let px_area = grid.pixel_area_m2();
    let mut patches = Vec::new();
    for polygon in polygons {
        let (key, geometry) = polygon?;
        let (county_idx, flag) = split_key(key);
        let Some(change) = ChangeType::from_flag(flag) else {
            continue;
        };
        let area = geometry.area();
        if area < min_area(change) || county_idx == 0 {
            continue;
        }
        let window = grid.window_around(&geometry.envelope(), 0);
        let (x, y) = (window.x, window.y);
        let inside = rasterize(grid, window, std::slice::from_ref(&geometry), &[1.0])?;
        let bands: Vec<Vec<u8>> = (1..=attr_band::COUNT)
            .map(|b| read_grid_window::<u8>(attrs, b, window, 0))
            .collect::<Result<_>>()?;
        let parcel_ids = read_grid_window::<i32>(parcels, 1, window, 0)?;
        let mut parcel_counts: std::collections::BTreeMap<i32, u32> = Default::default();
        let mut before = [0u32; 256];
        let mut now = [0u32; 256];
        let (mut n, mut conf, mut farm, mut basic, mut sx, mut sy) =
            (0u64, 0u64, 0u64, 0u64, 0f64, 0f64);
        // The patch has lasted as long as its oldest part.
        let mut persisted = 0u8;
        for (i, _) in inside.iter().enumerate().filter(|(_, v)| **v != 0) {
            n += 1;
            if parcel_ids[i] != 0 {
                *parcel_counts.entry(parcel_ids[i]).or_default() += 1;
            }
            before[bands[attr_band::BEFORE - 1][i] as usize] += 1;
            now[bands[attr_band::NOW - 1][i] as usize] += 1;
            conf += u64::from(bands[attr_band::CONFIDENCE - 1][i]);
            let f = bands[attr_band::FARMLAND - 1][i];
            farm += u64::from(f >= 1);
            basic += u64::from(f == 2);
            persisted = persisted.max(bands[attr_band::PERSISTED - 1][i]);
            let (cx, cy) = grid.pixel_centre(
                (x + (i % window.width) as isize) as f64,
                (y + (i / window.width) as isize) as f64,
            );
            sx += cx;
            sy += cy;
        }
        if n == 0 {
            continue;
        }
        let centroid = (sx / n as f64, sy / n as f64);
        let (mut lx, mut ly, mut lz) = ([centroid.0], [centroid.1], [0.0]);
        to_lonlat.transform_coords(&mut lx, &mut ly, &mut lz)?;
        let county = &admin.counties[county_idx - 1];
        // A flagged pixel has been seen at least once (detect's pairs record no runs).
        let persisted = u32::from(persisted.max(1));
        let (first_seen, before_period) = info.dates_of(persisted);
        let patch = Patch {
            tbbh: String::new(),
            county_code: county.code.clone(),
            county_name: county.name.clone(),
            township_code: String::new(),
            township_name: String::new(),
            change,
            before: LandCover::from_code(majority(&before)),
            after: LandCover::from_code(majority(&now)),
            before_period,
            after_period: info.period.clone(),
            image_dates: info.image_dates.clone(),
            first_seen,
            persisted,
            area_m2: round2(area),
            area_mu: round2(area / SQM_PER_MU),
            farmland_m2: round2(farm as f64 * px_area),
            basic_farmland_m2: round2(basic as f64 * px_area),
            centroid: (round2(centroid.0), round2(centroid.1)),
            lon_lat: ((lx[0] * 1e7).round() / 1e7, (ly[0] * 1e7).round() / 1e7),
            confidence: ((conf as f64 / n as f64 / 250.0) * 1000.0).round() / 1000.0,
            model_version: info.model_version.to_string(),
            // The parcel under most of the patch; ties go to the lower id (BTreeMap order).
            parcel: parcel_counts
                .iter()
                .fold(
                    (0, 0),
                    |best, (&id, &c)| if c > best.1 { (id, c) } else { best },
                )
                .0,
            parcel_id: String::new(),
            status: Status::Detected,
            geometry,
        };
        if keep(&patch) {
            patches.push(patch);
        }
    }
    let mut patches = one_patch_per_field(patches, &to_lonlat)?;
    number(&mut patches, &info.period);
    Ok(patches)
}

/// Joins the parts of a whole-field change ([`ChangeType::is_whole_field`]) that lie on one
/// parcel into one patch of several parts, in the order the first part came. Areas and
/// farmland areas add up; the centroid and the confidence are the parts' area-weighted means;
/// the classes are the largest part's, the persistence and first sighting the oldest part's.
/// Parts are disjoint (they are different connected areas of one key), so the multipolygon
/// is their collection, without a geometric union.
fn one_patch_per_field(patches: Vec<Patch>, to_lonlat: &CoordTransform) -> Result<Vec<Patch>> {
    let mut out: Vec<Patch> = Vec::with_capacity(patches.len());
    let mut parts: Vec<Vec<Patch>> = Vec::new();
    let mut field_of: BTreeMap<(String, ChangeType, i32), usize> = BTreeMap::new();
    for p in patches {
        if !(p.change.is_whole_field() && p.parcel != 0) {
            out.push(p);
            parts.push(Vec::new());
            continue;
        }
        let key = (p.county_code.clone(), p.change, p.parcel);
        match field_of.get(&key) {
            Some(&k) => parts[k].push(p),
            None => {
                field_of.insert(key, out.len());
                out.push(p);
                parts.push(Vec::new());
            }
        }
    }
    for (first, more) in out.iter_mut().zip(parts) {
        if !more.is_empty() {
            join_parts(first, more, to_lonlat)?;
        }
    }
    Ok(out)
}

fn join_parts(patch: &mut Patch, more: Vec<Patch>, to_lonlat: &CoordTransform) -> Result<()> {
    let mut all = vec![std::mem::replace(&mut patch.geometry, no_outline())];
    let weighted = |p: &Patch| (p.area_m2 * p.centroid.0, p.area_m2 * p.centroid.1);
    let (mut sx, mut sy) = weighted(patch);
    let (mut area, mut conf) = (patch.area_m2, patch.area_m2 * patch.confidence);
    let mut largest = patch.area_m2;
    for p in more {
        let (x, y) = weighted(&p);
        (sx, sy) = (sx + x, sy + y);
        area += p.area_m2;
        conf += p.area_m2 * p.confidence;
        patch.farmland_m2 += p.farmland_m2;
        patch.basic_farmland_m2 += p.basic_farmland_m2;
        if p.area_m2 > largest {
            largest = p.area_m2;
            (patch.before, patch.after) = (p.before, p.after);
        }
        if p.persisted > patch.persisted {
            patch.persisted = p.persisted;
            patch.first_seen = p.first_seen.clone();
            patch.before_period = p.before_period.clone();
        }
        all.push(p.geometry);
    }
    let mut multi = Geometry::empty(gdal_sys::OGRwkbGeometryType::wkbMultiPolygon)?;
    for part in all {
        multi.add_geometry(part)?;
    }
    let whole = multi.area();
    patch.geometry = multi;
    patch.area_m2 = round2(whole);
    patch.area_mu = round2(whole / SQM_PER_MU);
    patch.farmland_m2 = round2(patch.farmland_m2);
    patch.basic_farmland_m2 = round2(patch.basic_farmland_m2);
    patch.confidence = (conf / area * 1000.0).round() / 1000.0;
    patch.centroid = (round2(sx / area), round2(sy / area));
    let (mut lx, mut ly, mut lz) = ([patch.centroid.0], [patch.centroid.1], [0.0]);
    to_lonlat.transform_coords(&mut lx, &mut ly, &mut lz)?;
    patch.lon_lat = ((lx[0] * 1e7).round() / 1e7, (ly[0] * 1e7).round() / 1e7);
    Ok(())
}

/// Orders patches north to south, west to east within each county and type, and numbers them.
fn number(patches: &mut [Patch], period: &str) {
    patches.sort_by(|a, b| {
        (&a.county_code, a.change)
            .cmp(&(&b.county_code, b.change))
            .then(b.centroid.1.total_cmp(&a.centroid.1))
            .then(a.centroid.0.total_cmp(&b.centroid.0))
    });
    let compact = period.replace('-', "");
    let mut seq = 0;
    let mut county = String::new();
    for p in patches.iter_mut() {
        if p.county_code != county {
            county = p.county_code.clone();
            seq = 0;
        }
        seq += 1;
        p.tbbh = format!("{}{}{:05}", p.county_code, compact, seq);
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct TypeTotals {
    pub count: usize,
    pub area_m2: f64,
}

/// Count and area of `patches` for every change type (zero for the absent ones).
pub(crate) fn totals_by_type(patches: &[Patch]) -> BTreeMap<&'static str, TypeTotals> {
    let mut totals: BTreeMap<&'static str, TypeTotals> = ChangeType::ALL
        .iter()
        .map(|t| (t.code(), TypeTotals::default()))
        .collect();
    for p in patches {
        let e = totals.entry(p.change.code()).or_default();
        e.count += 1;
        e.area_m2 += p.area_m2;
    }
    for v in totals.values_mut() {
        v.area_m2 = (v.area_m2 * 100.0).round() / 100.0;
    }
    totals
}

/// Gives each patch the township that holds most of its area; patches outside every
/// township keep empty township fields.
pub(crate) fn name_townships(townships: &Admin, patches: &mut [Patch]) -> Result<()> {
    let units = townships.majority_units(patches.iter().map(|p| &p.geometry))?;
    for (p, unit) in patches.iter_mut().zip(units) {
        if let Some(unit) = unit {
            p.township_code = unit.code.clone();
            p.township_name = unit.name.clone();
        }
    }
    Ok(())
}

/// Fills each patch's `parcel_id` with the identifier of its farmland parcel.
pub(crate) fn name_parcels(farmland: &Farmland, patches: &mut [Patch]) -> Result<()> {
    let burnt: Vec<i32> = patches.iter().map(|p| p.parcel).collect();
    if let Some(ids) = farmland.parcel_ids(&burnt)? {
        for (p, id) in patches.iter_mut().zip(ids) {
            if p.parcel > 0 {
                p.parcel_id = id;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_breaks_ties_towards_smaller_codes() {
        let mut h = [0u32; 256];
        h[3] = 5;
        h[1] = 5;
        assert_eq!(majority(&h), 1);
        h[6] = 6;
        assert_eq!(majority(&h), 6);
    }
}
