//! STAC as an imagery source: a saved ItemCollection (the answer of a STAC API search), a
//! static catalog or collection (its `item` and `child` links followed), or a single item,
//! as a local JSON file. Assets are read where they are: local files, or Cloud-Optimized
//! GeoTIFFs over `http(s)://` (GDAL's `/vsicurl/`) and `s3://` (`/vsis3/`).
//!
//! Takes the JSON file and a sensor profile. Gives one acquisition per item: its date (the
//! item's `datetime`, else `start_datetime`, in UTC), and for every band of the profile the
//! asset whose key, band name or common name (`eo:common_name`, as Earth Search names its
//! assets: `blue`, `nir08`, `swir16`, `scl`…) is the band's. The DN offset comes from the
//! asset's `raster:bands` offset and scale when it states them, else from the item's
//! `s2:processing_baseline` (Sentinel-2: 04.00 and later −1000), else the profile's.

use crate::error::{Error, Result};
use crate::geo::imagery::{Acquisition, Damaged};
use crate::geo::safe::baseline_offset;
use crate::geo::sensor::SensorProfile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The acquisitions of a STAC file, and the items that cannot be read (`id: what is wrong`).
pub(crate) fn acquisitions(
    source: &Path,
    profile: &SensorProfile,
) -> Result<(Vec<Acquisition>, Vec<Damaged>)> {
    let mut items = Vec::new();
    collect_items(source, &mut items, 0)?;
    let (mut found, mut unreadable) = (Vec::new(), Vec::new());
    for (item, base) in items {
        match acquisition(&item, &base, profile) {
            Ok(a) => found.push(a),
            Err(why) => unreadable.push((PathBuf::from(&item.id), why)),
        }
    }
    if found.is_empty() {
        let detail = unreadable
            .first()
            .map_or("no items".to_string(), |(id, why)| {
                format!("e.g. item {}: {why}", id.display())
            });
        return Err(Error::input(
            source,
            format!("holds no item gengbao can read for sensor {} ({detail})", profile.name),
            "give a STAC file whose items carry the profile's bands as assets (keys such as B02 or blue, or eo:bands names), or check `[imagery] sensor`",
        ));
    }
    Ok((found, unreadable))
}

/// Links of a catalog followed at most this deep (a loop of links stops here).
const MAX_DEPTH: usize = 8;

/// The items of the STAC file at `path`, each with the folder its relative hrefs start from.
fn collect_items(
    path: &Path,
    items: &mut Vec<(::stac::Item, PathBuf)>,
    depth: usize,
) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::input(
            path,
            format!("the STAC file cannot be read ({e})"),
            "set `[imagery] stac` to a local STAC JSON file (save an API search's answer with e.g. `curl -o items.json`)",
        )
    })?;
    let value: ::stac::Value = serde_json::from_str(&text).map_err(|e| {
        Error::input(
            path,
            format!("is not a STAC catalog, collection, item or item collection ({e})"),
            "check the file with a STAC validator, or save the API search's answer again",
        )
    })?;
    let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let links = match value {
        ::stac::Value::Item(item) => {
            items.push((item, base));
            return Ok(());
        }
        ::stac::Value::ItemCollection(c) => {
            items.extend(c.items.into_iter().map(|i| (i, base.clone())));
            return Ok(());
        }
        ::stac::Value::Catalog(c) => c.links,
        ::stac::Value::Collection(c) => c.links,
    };
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    for link in links.iter().filter(|l| l.rel == "item" || l.rel == "child") {
        let href = link.href.as_str();
        if let Some(local) = href.strip_prefix("file://") {
            collect_items(Path::new(local), items, depth + 1)?;
            continue;
        }
        if href.contains("://") {
            return Err(Error::input(
                path,
                format!("links to {}, which is not a local file", link.href),
                "download the catalog (e.g. with `stac-asset` or a STAC API search saved as JSON) and point `[imagery] stac` at the local copy; assets may stay remote",
            ));
        }
        collect_items(&base.join(href), items, depth + 1)?;
    }
    Ok(())
}

/// The acquisition of one item, or what is wrong with it.
fn acquisition(
    item: &::stac::Item,
    base: &Path,
    profile: &SensorProfile,
) -> std::result::Result<Acquisition, String> {
    let p = &item.properties;
    let date = p
        .datetime
        .or(p.start_datetime)
        .ok_or("no datetime")?
        .date_naive();
    let mut files = BTreeMap::new();
    let mut offset = None;
    for band in profile.bands.iter().copied().chain(profile.mask_band) {
        let (_, _, asset) = item
            .assets
            .iter()
            .filter_map(|(key, asset)| Some((asset_rank(key, asset, band, profile)?, key, asset)))
            .min_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
            .ok_or_else(|| format!("no asset for band {band}"))?;
        files.insert(band.to_string(), gdal_path(&asset.href, base));
        if offset.is_none() && Some(band) != profile.mask_band {
            offset = raster_offset(asset);
        }
    }
    let baseline = p
        .additional_fields
        .get("s2:processing_baseline")
        .and_then(|v| v.as_str())
        .and_then(|b| b.parse::<f32>().ok());
    let offset = offset.or(baseline
        .filter(|_| profile.name.starts_with("sentinel2"))
        .map(baseline_offset));
    Ok(Acquisition {
        date,
        folder: PathBuf::from(&item.id),
        files,
        offset,
        container: None,
        calibration: None,
        _virtual_rasters: None,
    })
}

/// How well the asset `key` answers band `band` of `profile`: 0 when its key is the band's
/// name or common name (`B02`, `blue`), 1 when it holds that one band by its band metadata
/// (`eo:bands`, STAC 1.1 `bands`); `None` otherwise, and for assets of several bands (a
/// true-colour `visual`).
fn asset_rank(key: &str, asset: &::stac::Asset, band: &str, profile: &SensorProfile) -> Option<u8> {
    let common = profile.common_name(band);
    let is_band = |name: &str| {
        name.eq_ignore_ascii_case(band) || common.is_some_and(|c| name.eq_ignore_ascii_case(c))
    };
    if is_band(key) {
        return Some(0);
    }
    let eo_bands: Vec<&serde_json::Value> = asset
        .additional_fields
        .get("eo:bands")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut names: Vec<String> = Vec::new();
    if asset.bands.len() == 1 {
        let b = &asset.bands[0];
        names.extend(b.name.clone());
        names.extend(
            b.additional_fields
                .get("eo:common_name")
                .and_then(|v| v.as_str().map(str::to_string)),
        );
    }
    if eo_bands.len() == 1 {
        for k in ["name", "common_name"] {
            names.extend(
                eo_bands[0]
                    .get(k)
                    .and_then(|v| v.as_str().map(str::to_string)),
            );
        }
    }
    names.iter().any(|n| is_band(n)).then_some(1)
}

/// The DN offset an asset's `raster:bands` state: offset / scale.
fn raster_offset(asset: &::stac::Asset) -> Option<f32> {
    let first = asset
        .additional_fields
        .get("raster:bands")?
        .as_array()?
        .first()?;
    let offset = first.get("offset")?.as_f64()?;
    let scale = first.get("scale")?.as_f64().filter(|s| *s != 0.0)?;
    Some((offset / scale).round() as f32)
}

/// The path GDAL opens for an asset's href.
fn gdal_path(href: &str, base: &Path) -> PathBuf {
    if let Some(rest) = href.strip_prefix("s3://") {
        PathBuf::from(format!("/vsis3/{rest}"))
    } else if href.starts_with("http://") || href.starts_with("https://") {
        PathBuf::from(format!("/vsicurl/{href}"))
    } else if let Some(path) = href.strip_prefix("file://") {
        PathBuf::from(path)
    } else {
        base.join(href)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrefs_become_paths_gdal_opens() {
        let base = Path::new("/data/stac");
        assert_eq!(
            gdal_path("https://example.com/B02.tif", base),
            Path::new("/vsicurl/https://example.com/B02.tif")
        );
        assert_eq!(
            gdal_path("s3://bucket/B02.tif", base),
            Path::new("/vsis3/bucket/B02.tif")
        );
        assert_eq!(
            gdal_path("./items/B02.tif", base),
            Path::new("/data/stac/./items/B02.tif")
        );
        assert_eq!(
            gdal_path("file:///x/B02.tif", base),
            Path::new("/x/B02.tif")
        );
    }
}
