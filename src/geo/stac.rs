//! STAC as an imagery source: a saved ItemCollection (the answer of a STAC API search), a
//! static catalog or collection (its `item` and `child` links followed), or a single item,
//! as a local JSON file or at an `http(s)://` (or `s3://`) address. Assets are read where
//! they are: local files, or Cloud-Optimized GeoTIFFs over `http(s)://` (GDAL's
//! `/vsicurl/`) and `s3://` (`/vsis3/`). Remote JSON is fetched through GDAL too, so one
//! HTTP client (with GDAL's proxy, header and credential options) serves the catalog and
//! its pixels.
//!
//! Takes the STAC document's location and a sensor profile. Gives one acquisition per item:
//! its date (the item's `datetime`, else `start_datetime`, in UTC), and for every band of the
//! profile the asset whose key, band name or common name (`eo:common_name`, as Earth Search
//! names its assets: `blue`, `nir08`, `swir16`, `scl`…) is the band's. Relative hrefs start
//! from the document that holds them. The DN offset comes from the asset's `raster:bands`
//! offset and scale when it states them, else from the item's `s2:processing_baseline`
//! (Sentinel-2: 04.00 and later −1000), else the profile's.

use crate::error::{Error, Result};
use crate::geo::imagery::{Acquisition, Damaged};
use crate::geo::raster::{last_gdal_error, read_small_file};
use crate::geo::safe::baseline_offset;
use crate::geo::sensor::SensorProfile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a STAC document or asset is: a local file, or an address GDAL reads remotely.
#[derive(Debug, Clone, PartialEq)]
enum Location {
    Local(PathBuf),
    Remote(url::Url),
}

impl Location {
    /// The location `source` names: an `http(s)://`, `s3://` or `file://` address, or a
    /// local path.
    fn of(source: &Path) -> Location {
        let text = source.to_string_lossy();
        match url::Url::parse(&text) {
            Ok(u) if u.scheme() == "file" => {
                Location::Local(u.to_file_path().unwrap_or(source.to_path_buf()))
            }
            Ok(u) if matches!(u.scheme(), "http" | "https" | "s3") => Location::Remote(u),
            _ => Location::Local(source.to_path_buf()),
        }
    }

    /// Where `href`, found in the document at `self`, points: absolute addresses as they
    /// are, relative ones from the document's folder.
    fn join(&self, href: &str) -> Location {
        match url::Url::parse(href) {
            Ok(_) => Location::of(Path::new(href)),
            Err(_) => match self {
                Location::Local(doc) => {
                    Location::Local(doc.parent().unwrap_or(Path::new("")).join(href))
                }
                Location::Remote(doc) => match doc.join(href) {
                    Ok(u) => Location::Remote(u),
                    Err(_) => Location::Local(PathBuf::from(href)),
                },
            },
        }
    }

    /// The path GDAL opens.
    fn gdal_path(&self) -> PathBuf {
        match self {
            Location::Local(p) => p.clone(),
            Location::Remote(u) if u.scheme() == "s3" => {
                PathBuf::from(format!("/vsis3/{}{}", u.host_str().unwrap_or(""), u.path()))
            }
            Location::Remote(u) => PathBuf::from(format!("/vsicurl/{u}")),
        }
    }

    /// The STAC document at this location, or why it cannot be read.
    fn document(&self) -> std::result::Result<::stac::Value, String> {
        let bytes = match self {
            Location::Local(p) => std::fs::read(p).map_err(|e| e.to_string()),
            Location::Remote(_) => {
                read_small_file(&self.gdal_path()).ok_or_else(|| match last_gdal_error() {
                    // curl's code 0: no connection was made.
                    why if why.is_empty() || why.ends_with(": 0") => {
                        "no server answers at that address".to_string()
                    }
                    why => why,
                })
            }
        }
        .map_err(|why| format!("cannot be read ({why})"))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            format!("is not a STAC catalog, collection, item or item collection ({e})")
        })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Remote(u) => write!(f, "{u}"),
        }
    }
}

/// Whether `source` is an address (`http(s)://`, `s3://`) rather than a local path: the
/// job does not resolve it against its own folder.
pub(crate) fn is_remote(source: &Path) -> bool {
    matches!(Location::of(source), Location::Remote(_))
}

/// The acquisitions of a STAC document, and the items that cannot be read (`id: what is
/// wrong`; an item link that does not answer by its address).
pub(crate) fn acquisitions(
    source: &Path,
    profile: &SensorProfile,
) -> Result<(Vec<Acquisition>, Vec<Damaged>)> {
    let (mut items, mut unreadable) = (Vec::new(), Vec::new());
    collect_items(
        source,
        &Location::of(source),
        &mut items,
        &mut unreadable,
        0,
    )?;
    let mut found = Vec::new();
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

/// The items of the STAC document at `doc`, each with the location its relative hrefs
/// start from; item links that cannot be read go to `unreadable`. A catalog or collection
/// that cannot be read is an error naming `source`, the job's `[imagery] stac`.
fn collect_items(
    source: &Path,
    doc: &Location,
    items: &mut Vec<(::stac::Item, Location)>,
    unreadable: &mut Vec<Damaged>,
    depth: usize,
) -> Result<()> {
    let value = doc.document().map_err(|why| {
        Error::input(
            source,
            match depth {
                0 => why,
                _ => format!("links to {doc}, which {why}"),
            },
            "set `[imagery] stac` to a STAC JSON file or an http(s) address that answers with one (GDAL_HTTP_PROXY and GDAL_HTTP_HEADERS pass a proxy or a token; a STAC API search is saved with e.g. `curl -o items.json`)",
        )
    })?;
    let links = match value {
        ::stac::Value::Item(item) => {
            items.push((item, doc.clone()));
            return Ok(());
        }
        ::stac::Value::ItemCollection(c) => {
            items.extend(c.items.into_iter().map(|i| (i, doc.clone())));
            return Ok(());
        }
        ::stac::Value::Catalog(c) => c.links,
        ::stac::Value::Collection(c) => c.links,
    };
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    for link in &links {
        let target = doc.join(link.href.as_str());
        match link.rel.as_str() {
            "child" => collect_items(source, &target, items, unreadable, depth + 1)?,
            "item" => match target.document() {
                Ok(::stac::Value::Item(item)) => items.push((item, target)),
                Ok(_) => unreadable.push((
                    PathBuf::from(target.to_string()),
                    "is linked as an item but is not one".into(),
                )),
                Err(why) => unreadable.push((PathBuf::from(target.to_string()), why)),
            },
            _ => {}
        }
    }
    Ok(())
}

/// The acquisition of one item, or what is wrong with it.
fn acquisition(
    item: &::stac::Item,
    base: &Location,
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
        files.insert(band.to_string(), base.join(&asset.href).gdal_path());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrefs_become_paths_gdal_opens() {
        let local = Location::of(Path::new("/data/stac/items.json"));
        let opened = |doc: &Location, href: &str| doc.join(href).gdal_path();
        assert_eq!(
            opened(&local, "https://example.com/B02.tif"),
            Path::new("/vsicurl/https://example.com/B02.tif")
        );
        assert_eq!(
            opened(&local, "s3://bucket/B02.tif"),
            Path::new("/vsis3/bucket/B02.tif")
        );
        assert_eq!(
            opened(&local, "./items/B02.tif"),
            Path::new("/data/stac/./items/B02.tif")
        );
        assert_eq!(opened(&local, "file:///x/B02.tif"), Path::new("/x/B02.tif"));
        // Relative hrefs of a remote document start from its folder, as a browser's do.
        let remote = Location::of(Path::new("http://127.0.0.1:8000/stac/catalog.json"));
        assert_eq!(
            opened(&remote, "./items/a.json"),
            Path::new("/vsicurl/http://127.0.0.1:8000/stac/items/a.json")
        );
        assert_eq!(
            opened(&remote, "../cogs/B02.tif"),
            Path::new("/vsicurl/http://127.0.0.1:8000/cogs/B02.tif")
        );
        assert!(is_remote(Path::new(
            "https://earth-search.aws.element84.com/v1/x.json"
        )));
        assert!(!is_remote(Path::new("items.json")));
    }
}
