//! The job's vector inputs: county boundaries (the area of interest) and cultivated-land
//! parcels (the watched area and its baseline), opened with checks that name the file and the
//! fix, and burnt onto tile windows of the job grid; labelled points for training, as grid
//! pixels.

use crate::domain::land_cover::LandCover;
use crate::error::{Error, GdalContext, Result};
use crate::geo::grid::{overlaps, Bounds, JobGrid, Window};
use crate::geo::raster::{rasterize, transform_between, transform_bounds};
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use gdal::vector::{FieldValue, Geometry, Layer, LayerAccess};
use gdal::Dataset;
use std::path::{Path, PathBuf};

/// How a layer's text is to be read: the encoding the job config names for it (`key`), or
/// none (what the file declares, checked by [`undeclared_shapefile_text`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TextEncoding<'a> {
    pub encoding: Option<&'a str>,
    /// The config key that names it, for the fix (`[aoi] encoding`); None for files given
    /// on the command line.
    pub key: Option<&'a str>,
}

/// Opens a vector file, its text read as `text` says; also gives the encoding it was opened
/// with (None: as the file declares), to open it again the same way.
fn open_vector(path: &Path, text: TextEncoding) -> Result<(Dataset, Option<String>)> {
    if !path.exists() {
        return Err(Error::input(
            path,
            "file not found",
            "check the path in the job config",
        ));
    }
    let encoding = match text.encoding {
        Some(e) => Some(e.to_string()),
        None => undeclared_shapefile_text(path, text.key)?.map(str::to_string),
    };
    Ok((open_vector_as(path, encoding.as_deref())?, encoding))
}

/// Opens a vector file already checked by [`open_vector`], with the encoding it gave.
fn open_vector_as(path: &Path, encoding: Option<&str>) -> Result<Dataset> {
    let option = encoding.map(|e| format!("ENCODING={e}"));
    let options: Vec<&str> = option.iter().map(String::as_str).collect();
    Dataset::open_ex(
        path,
        gdal::DatasetOptions {
            open_flags: gdal::GdalOpenFlags::GDAL_OF_VECTOR,
            open_options: (!options.is_empty()).then_some(options.as_slice()),
            ..Default::default()
        },
    )
    .in_file(
        path,
        "check that it is a GeoPackage or Shapefile GDAL can read (`ogrinfo`)",
    )
}

/// The encoding to read a Shapefile's text with when the file does not declare one (no
/// `.cpg`, no language id in the `.dbf`): GDAL would read such text as Latin-1, and Chinese
/// names would come out as mojibake in every output. ASCII text needs nothing, UTF-8 text is
/// read as UTF-8, and anything else (GBK written by a Chinese desktop GIS, most often) is an
/// error naming the key or file that fixes it.
fn undeclared_shapefile_text(path: &Path, key: Option<&str>) -> Result<Option<&'static str>> {
    let is_shp = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("shp"));
    let sibling = |ext: &str| {
        [ext.to_string(), ext.to_ascii_uppercase()]
            .iter()
            .map(|e| path.with_extension(e))
            .find(|p| p.exists())
    };
    if !is_shp || sibling("cpg").is_some() {
        return Ok(None);
    }
    let Some(dbf) = sibling("dbf") else {
        return Ok(None);
    };
    // The first records tell: a layer's text is written in one encoding.
    let mut head = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open(&dbf).map_err(|e| Error::io(&dbf, e))?,
            16 << 20,
        ),
        &mut head,
    )
    .map_err(|e| Error::io(&dbf, e))?;
    if head.len() < 32 || head[29] != 0 {
        return Ok(None);
    }
    let mut utf8 = false;
    for value in dbf_text_values(&head) {
        if value.is_ascii() {
            continue;
        }
        if std::str::from_utf8(value).is_ok() {
            utf8 = true;
            continue;
        }
        let (_, _, malformed) = encoding_rs::GBK.decode(value);
        let guess = if malformed { "" } else { " (it reads as GBK)" };
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let fix = match key {
            Some(key) => format!(
                "set {key} = \"GBK\" (or the encoding the layer was saved in), or put a file {stem}.cpg containing GBK beside it"
            ),
            None => format!(
                "put a file {stem}.cpg beside it containing its encoding, e.g. GBK"
            ),
        };
        return Err(Error::input(
            path,
            format!(
                "its text is not UTF-8 and the layer does not say which encoding it is in (no .cpg, no language id in the .dbf){guess}"
            ),
            fix,
        ));
    }
    Ok(utf8.then_some("UTF-8"))
}

/// The values of the character fields of the records in `dbf` (a `.dbf` file's first
/// bytes), trailing blanks removed.
fn dbf_text_values(dbf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([dbf[o], dbf[o + 1]]));
    let (header, record) = (u16_at(8), u16_at(10));
    // Field descriptors: 32 bytes each from byte 32 up to the 0x0D terminator.
    let mut fields = Vec::new();
    let mut at = 1; // every record starts with its deletion flag
    for d in dbf
        .get(32..header.min(dbf.len()))
        .unwrap_or_default()
        .chunks_exact(32)
    {
        if d[0] == 0x0d {
            break;
        }
        let len = usize::from(d[16]);
        if d[11] == b'C' {
            fields.push((at, len));
        }
        at += len;
    }
    dbf.get(header..)
        .unwrap_or_default()
        .chunks_exact(record.max(1))
        .flat_map(move |r| {
            fields
                .clone()
                .into_iter()
                .filter_map(move |(o, len)| r.get(o..o + len))
        })
        .map(|v| {
            let end = v
                .iter()
                .rposition(|&b| b != b' ' && b != 0)
                .map_or(0, |e| e + 1);
            &v[..end]
        })
}

fn layer<'a>(ds: &'a Dataset, path: &Path, name: Option<&str>) -> Result<Layer<'a>> {
    match name {
        Some(n) => ds.layer_by_name(n).map_err(|_| {
            let names: Vec<String> = ds.layers().map(|l| l.name()).collect();
            Error::input(
                path,
                format!("has no layer `{n}` (layers: {names:?})"),
                "set the layer name in the job config",
            )
        }),
        None => ds
            .layer(0)
            .map_err(|_| Error::input(path, "has no vector layer", "give a file with polygons")),
    }
}

fn require_field(layer: &Layer, path: &Path, field: &str, config_key: &str) -> Result<()> {
    let fields: Vec<String> = layer.defn().fields().map(|f| f.name()).collect();
    if fields.iter().any(|f| f == field) {
        Ok(())
    } else {
        Err(Error::input(
            path,
            format!(
                "layer `{}` has no field `{field}` (fields: {fields:?})",
                layer.name()
            ),
            format!("add the field to the layer, or set {config_key} to the field that holds it"),
        ))
    }
}

fn layer_srs(layer: &Layer, path: &Path) -> Result<SpatialRef> {
    let mut srs = layer.spatial_ref().ok_or_else(|| {
        Error::input(
            path,
            "the layer has no coordinate reference system",
            "assign one, e.g. `ogr2ogr -a_srs EPSG:4490 out.gpkg in.gpkg`",
        )
    })?;
    srs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    Ok(srs)
}

/// A labelled pixel of the grid: column, row and gengbao class code.
pub(crate) type LabelledPixel = (usize, usize, u8);

/// The points of a vector file as grid pixels with their class (integer field `class_field`,
/// gengbao codes 1..6). Points outside the grid are left out; a point without a class or with
/// a code outside 1..6 is an error naming its feature.
pub(crate) fn labelled_points(
    path: &Path,
    class_field: &str,
    grid: &JobGrid,
) -> Result<Vec<LabelledPixel>> {
    let (ds, _) = open_vector(path, TextEncoding::default())?;
    let mut lyr = layer(&ds, path, None)?;
    require_field(&lyr, path, class_field, "--sample-class-field")?;
    let to_grid = CoordTransform::new(&layer_srs(&lyr, path)?, &grid.spatial_ref()?).in_file(
        path,
        "the layer's CRS cannot be transformed to the image's: check both",
    )?;
    let mut pixels = Vec::new();
    for f in lyr.features() {
        let fid = f.fid().unwrap_or_default();
        let class = field_string(&f, class_field)
            .and_then(|v| v.trim().parse::<u8>().ok())
            .filter(|&c| LandCover::from_code(c) != LandCover::NoData)
            .ok_or_else(|| {
                Error::input(
                    path,
                    format!("feature {fid} has no class 1..6 in field {class_field}"),
                    "label every point with a gengbao class code: 1 grain, 2 non-grain crop, 3 built-up, 4 water, 5 grass/shrub, 6 forest",
                )
            })?;
        let Some(g) = f.geometry() else { continue };
        let g = g
            .transform(&to_grid)
            .in_file(path, "check the layer's CRS")?;
        let (x, y, _) = g.get_point(0);
        let col = ((x - grid.origin_x) / grid.resolution).floor();
        let row = ((grid.origin_y - y) / grid.resolution).floor();
        if col >= 0.0 && row >= 0.0 && (col as usize) < grid.width && (row as usize) < grid.height {
            pixels.push((col as usize, row as usize, class));
        }
    }
    if pixels.is_empty() {
        return Err(Error::input(
            path,
            "has no labelled point on the image",
            "give points inside the image, in any CRS GDAL can transform",
        ));
    }
    Ok(pixels)
}

fn field_string(f: &gdal::vector::Feature, name: &str) -> Option<String> {
    let idx = f.field_index(name).ok()?;
    match f.field(idx).ok()?? {
        FieldValue::StringValue(s) => Some(s),
        FieldValue::IntegerValue(i) => Some(i.to_string()),
        FieldValue::Integer64Value(i) => Some(i.to_string()),
        FieldValue::RealValue(r) => Some(r.to_string()),
        _ => None,
    }
}

#[derive(Debug, Clone)]
pub struct County {
    pub code: String,
    pub name: String,
    /// WKB in the grid CRS.
    pub wkb: Vec<u8>,
    /// Its bounds, to skip tiles far from it without parsing the geometry.
    pub envelope: Bounds,
}

impl County {
    pub fn new(code: String, name: String, geometry: &Geometry) -> Result<Self> {
        let e = geometry.envelope();
        Ok(County {
            code,
            name,
            wkb: geometry.wkb()?,
            envelope: (e.MinX, e.MinY, e.MaxX, e.MaxY),
        })
    }

    /// The geometry, when it may touch `b` (its envelope overlaps).
    fn geometry_near(&self, b: Bounds) -> Result<Option<Geometry>> {
        let e = self.envelope;
        if e.0 > b.2 || e.2 < b.0 || e.1 > b.3 || e.3 < b.1 {
            return Ok(None);
        }
        Ok(Some(Geometry::from_wkb(&self.wkb)?))
    }
}

/// Which level of units an [`Admin`] holds; it only words the messages (config section, unit
/// name and an example code).
#[derive(Debug, Clone, Copy)]
pub enum AdminLevel {
    County,
    Township,
}

impl AdminLevel {
    /// Its config section, the name of one unit, and an example code, for messages.
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            AdminLevel::County => ("aoi", "county", "320901"),
            AdminLevel::Township => ("townships", "township", "320901001"),
        }
    }
}

/// Where an administrative layer is and which fields hold each unit's code and name.
#[derive(Debug, Clone, Copy)]
pub struct AdminSource<'a> {
    pub path: &'a Path,
    pub layer: Option<&'a str>,
    pub code_field: &'a str,
    pub name_field: &'a str,
    pub level: AdminLevel,
    /// The encoding of the layer's text when the file does not say (`[aoi] encoding`).
    pub encoding: Option<&'a str>,
}

/// The counties of the job, in the grid CRS.
#[derive(Debug, Clone)]
pub struct Admin {
    pub path: PathBuf,
    pub counties: Vec<County>,
    /// Codes of units whose boundary was invalid (a ring crossing itself) and was repaired.
    pub repaired: Vec<String>,
}

impl Admin {
    /// Every unit of an administrative layer, in `grid_srs`; units stored as several features
    /// (exclaves, islands) are merged.
    pub fn open(source: AdminSource, grid_srs: &SpatialRef) -> Result<Self> {
        let AdminSource {
            path,
            layer: layer_name,
            code_field,
            name_field,
            level,
            encoding,
        } = source;
        let (section, unit, example) = level.names();
        let key = format!("[{section}] encoding");
        let text = TextEncoding {
            encoding,
            key: Some(&key),
        };
        let (ds, _) = open_vector(path, text)?;
        let mut lyr = layer(&ds, path, layer_name)?;
        require_field(&lyr, path, code_field, &format!("[{section}] code_field"))?;
        require_field(&lyr, path, name_field, &format!("[{section}] name_field"))?;
        let to_grid = CoordTransform::new(&layer_srs(&lyr, path)?, grid_srs).in_file(
            path,
            "the layer's CRS cannot be transformed to the job CRS: check both",
        )?;
        // A county stored as several features (exclaves, islands) becomes one county.
        let mut by_code: std::collections::BTreeMap<String, (String, Geometry)> =
            Default::default();
        let mut repaired = std::collections::BTreeSet::new();
        for f in lyr.features() {
            let Some(g) = f.geometry() else { continue };
            let code = field_string(&f, code_field)
                .unwrap_or_default()
                .trim()
                .to_string();
            if code.is_empty()
                || !code
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(Error::input(
                    path,
                    format!("{unit} code `{code}` in field {code_field} is empty or has characters other than letters, digits, _ and -"),
                    format!("give every {unit} its administrative code (XZQDM), e.g. {example}"),
                ));
            }
            // A boundary crossing itself would burn and cut patches wrongly: repaired, and
            // named in the run summary.
            let invalid = !g.is_valid();
            if invalid {
                repaired.insert(code.clone());
            }
            let g = onto_grid(g, invalid, &to_grid)
                .in_file(path, "check the layer's CRS and repair its geometries")?;
            let name = field_string(&f, name_field).unwrap_or_default();
            match by_code.remove(&code) {
                Some((n, prev)) => {
                    let merged = prev.union(&g).ok_or_else(|| {
                        Error::input(
                            path,
                            format!("the parts of {unit} {code} cannot be merged"),
                            "repair the geometries (e.g. `ogr2ogr -makevalid`)",
                        )
                    })?;
                    by_code.insert(code, (n, merged));
                }
                None => {
                    by_code.insert(code, (name, g));
                }
            }
        }
        let counties = by_code
            .into_iter()
            .map(|(code, (name, g))| County::new(code, name, &g))
            .collect::<Result<Vec<_>>>()?;
        if counties.is_empty() {
            return Err(Error::input(
                path,
                format!(
                    "the area of interest is empty: the [{section}] layer has no {unit} polygons"
                ),
                format!("give a layer with one polygon per {unit}"),
            ));
        }
        Ok(Admin {
            path: path.to_path_buf(),
            counties,
            repaired: repaired.into_iter().collect(),
        })
    }

    /// The same layer restricted to the counties `codes` (all when empty).
    pub fn only(&self, codes: &[String]) -> Result<Admin> {
        if codes.is_empty() {
            return Ok(self.clone());
        }
        let unknown: Vec<&String> = codes
            .iter()
            .filter(|c| !self.counties.iter().any(|k| &k.code == *c))
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = self.counties.iter().map(|c| c.code.as_str()).collect();
            return Err(Error::input(
                &self.path,
                format!("no county with code {unknown:?} (codes: {known:?})"),
                "pass --county with a code from the admin layer",
            ));
        }
        let counties: Vec<County> = self
            .counties
            .iter()
            .filter(|c| codes.contains(&c.code))
            .cloned()
            .collect();
        Ok(Admin {
            path: self.path.clone(),
            counties,
            repaired: self.repaired.clone(),
        })
    }

    /// Whether any county touches `window`.
    pub fn touches(&self, grid: &JobGrid, window: Window) -> Result<bool> {
        let b = grid.window_bounds(window);
        let bbox = Geometry::bbox(b.0, b.1, b.2, b.3)?;
        for c in &self.counties {
            if c.geometry_near(b)?.is_some_and(|g| g.intersects(&bbox)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// For each geometry, the unit that holds most of its area (None outside every unit).
    /// Ties go to the lower code.
    pub(crate) fn majority_units<'a>(
        &self,
        geometries: impl IntoIterator<Item = &'a Geometry>,
    ) -> Result<Vec<Option<&County>>> {
        let units: Vec<(&County, Geometry)> = self
            .counties
            .iter()
            .map(|u| Ok((u, Geometry::from_wkb(&u.wkb)?)))
            .collect::<Result<_>>()?;
        let mut found = Vec::new();
        for geometry in geometries {
            let e = geometry.envelope();
            let mut best: Option<(&County, f64)> = None;
            for (unit, g) in &units {
                if !overlaps(unit.envelope, (e.MinX, e.MinY, e.MaxX, e.MaxY)) {
                    continue;
                }
                let shared = geometry.intersection(g).map_or(0.0, |i| i.area());
                if shared > 0.0 && best.is_none_or(|(_, a)| shared > a) {
                    best = Some((unit, shared));
                }
            }
            found.push(best.map(|(unit, _)| unit));
        }
        Ok(found)
    }

    pub(crate) fn envelope(&self) -> Result<Bounds> {
        Ok(self.counties.iter().fold(
            (
                f64::INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NEG_INFINITY,
            ),
            |a, c| {
                let e = c.envelope;
                (a.0.min(e.0), a.1.min(e.1), a.2.max(e.2), a.3.max(e.3))
            },
        ))
    }

    /// County index (1-based, in `counties` order) of each pixel of `window`; 0 outside.
    pub(crate) fn rasterize(&self, grid: &JobGrid, window: Window) -> Result<Vec<u16>> {
        rasterize_counties(&self.counties, grid, window)
    }
}

/// The index (1-based, in the slice's order) of the county under each pixel of `window`; 0
/// outside every county.
pub(crate) fn rasterize_counties(
    counties: &[County],
    grid: &JobGrid,
    window: Window,
) -> Result<Vec<u16>> {
    let b = grid.window_bounds(window);
    let bbox = Geometry::bbox(b.0, b.1, b.2, b.3)?;
    let mut geoms = Vec::new();
    let mut values = Vec::new();
    for (i, c) in counties.iter().enumerate() {
        if let Some(g) = c.geometry_near(b)?.filter(|g| g.intersects(&bbox)) {
            geoms.push(g);
            values.push((i + 1) as f64);
        }
    }
    Ok(rasterize(grid, window, &geoms, &values)?
        .into_iter()
        .map(|v| v as u16)
        .collect())
}

/// Farmland rasters of a tile window.
pub(crate) struct FarmlandTile {
    /// Feature id of the parcel under each pixel (0 = not farmland).
    pub parcel: Vec<i32>,
    /// Whether the parcel is permanent basic farmland (永久基本农田).
    pub basic: Vec<bool>,
}

/// What a job does with watched parcels whose geometry is invalid (a ring crossing itself,
/// as a bow-tie drawn by a wrong vertex order): GEOS MakeValid repairs them, listed in the
/// run summary, or the run is refused with their list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InvalidGeometries {
    #[default]
    Repair,
    Refuse,
}

/// The cultivated-land parcel layer.
#[derive(Debug, Clone)]
pub(crate) struct Farmland {
    pub path: PathBuf,
    layer: String,
    basic_field: Option<String>,
    id_field: Option<String>,
    /// (class field, watched class code prefixes); None = every feature is watched.
    class_filter: Option<(String, Vec<String>)>,
    pub parcel_count: u64,
    /// Watched parcels with an invalid geometry, by id (or `fid N`), repaired when burnt.
    pub repaired: Vec<String>,
    /// Feature ids of the invalid parcels, repaired as they are burnt (found once, on opening).
    invalid_fids: std::collections::HashSet<u64>,
    /// Ids (id field) that more than one watched parcel carries: patches on them name an
    /// ambiguous parcel.
    pub duplicate_ids: Vec<String>,
    /// The encoding the layer was opened with (None: as the file declares).
    encoding: Option<String>,
}

fn is_yes(v: Option<String>) -> bool {
    matches!(
        v.as_deref().map(str::trim),
        Some("1" | "Y" | "y" | "YES" | "yes" | "是" | "true")
    )
}

/// `g` in the grid CRS, repaired first (GEOS MakeValid) when it is `invalid`.
fn onto_grid(
    g: &Geometry,
    invalid: bool,
    to_grid: &CoordTransform,
) -> gdal::errors::Result<Geometry> {
    if invalid {
        g.make_valid(&Default::default())?.transform(to_grid)
    } else {
        g.transform(to_grid)
    }
}

/// Up to 20 ids, and how many more.
pub(crate) fn listed(ids: &[String]) -> String {
    let shown = ids.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
    match ids.len() {
        n if n > 20 => format!("{shown} and {} more", n - 20),
        _ => shown,
    }
}

/// Where a job's farmland layer is and how to read it: the `[farmland]` section.
pub struct FarmlandSource<'a> {
    pub path: &'a Path,
    pub layer: Option<&'a str>,
    pub id_field: &'a str,
    pub class_field: &'a str,
    pub basic_field: Option<&'a str>,
    /// Class code prefixes of cultivated land.
    pub classes: &'a [String],
    pub invalid_geometries: InvalidGeometries,
    /// The encoding of the layer's text when the file does not say.
    pub encoding: Option<&'a str>,
}

impl Farmland {
    pub fn open(source: FarmlandSource) -> Result<Self> {
        let FarmlandSource {
            path,
            layer: layer_name,
            id_field,
            class_field,
            basic_field,
            classes,
            invalid_geometries: invalid,
            encoding,
        } = source;
        let text = TextEncoding {
            encoding,
            key: Some("[farmland] encoding"),
        };
        let (ds, encoding) = open_vector(path, text)?;
        let lyr = layer(&ds, path, layer_name)?;
        require_field(&lyr, path, id_field, "[farmland] id_field")?;
        require_field(&lyr, path, class_field, "[farmland] class_field")?;
        if let Some(b) = basic_field {
            require_field(&lyr, path, b, "[farmland] basic_field")?;
        }
        layer_srs(&lyr, path)?;
        let mut farmland = Farmland {
            path: path.to_path_buf(),
            layer: lyr.name(),
            basic_field: basic_field.map(str::to_string),
            id_field: Some(id_field.to_string()),
            class_filter: Some((class_field.to_string(), classes.to_vec())),
            parcel_count: 0,
            repaired: Vec::new(),
            invalid_fids: Default::default(),
            duplicate_ids: Vec::new(),
            encoding,
        };
        // Count the watched parcels once, so that a filter matching nothing stops the run
        // instead of silently watching no land; find the invalid ones on the way.
        let mut lyr = lyr;
        let (mut count, mut invalid_ids) = (0, Vec::new());
        let mut invalid_fids = std::collections::HashSet::new();
        let mut seen = std::collections::HashSet::new();
        let mut duplicates = std::collections::BTreeSet::new();
        for f in lyr.features().filter(|f| farmland.is_watched(f)) {
            count += 1;
            let id = field_string(&f, id_field).filter(|s| !s.trim().is_empty());
            if let Some(id) = &id {
                if !seen.insert(id.clone()) {
                    duplicates.insert(id.clone());
                }
            }
            if f.geometry().is_some_and(|g| !g.is_valid()) {
                invalid_fids.extend(f.fid());
                invalid_ids.push(
                    id.unwrap_or_else(|| format!("fid {}", f.fid().map_or(-1, |v| v as i64))),
                );
            }
        }
        farmland.parcel_count = count;
        farmland.repaired = invalid_ids;
        farmland.invalid_fids = invalid_fids;
        farmland.duplicate_ids = duplicates.into_iter().collect();
        if invalid == InvalidGeometries::Refuse && !farmland.repaired.is_empty() {
            return Err(Error::input(
                path,
                format!(
                    "{} watched parcels have invalid geometries (a ring crossing itself, e.g. a bow-tie): {} {}",
                    farmland.repaired.len(),
                    id_field,
                    listed(&farmland.repaired)
                ),
                "fix them in the layer (QGIS: Fix geometries; or `ogr2ogr -makevalid`), or set [farmland] invalid_geometries = \"repair\"",
            ));
        }
        if farmland.parcel_count == 0 {
            return Err(Error::input(
                path,
                format!("no feature has a {class_field} starting with {classes:?} (of {} features)", lyr.feature_count()),
                "set [farmland] classes to the codes of cultivated land in this layer (e.g. [\"01\"] for 0101/0102/0103)",
            ));
        }
        Ok(farmland)
    }

    /// Whether a feature is cultivated land under the class filter. Integer class fields lose
    /// their leading zero (101 for 0101), so short numeric codes are padded to four digits.
    fn is_watched(&self, f: &gdal::vector::Feature) -> bool {
        let Some((field, prefixes)) = &self.class_filter else {
            return true;
        };
        let raw = field_string(f, field).unwrap_or_default();
        let raw = raw.trim();
        let class = if !raw.is_empty() && raw.len() < 4 && raw.bytes().all(|b| b.is_ascii_digit()) {
            format!("{raw:0>4}")
        } else {
            raw.to_string()
        };
        prefixes.iter().any(|p| class.starts_with(p.as_str()))
    }

    /// Any polygon layer as the watched area, without the attribute checks of a job
    /// (two-date detection on a user's own parcels).
    pub(crate) fn open_polygons(path: &Path) -> Result<Self> {
        let (ds, encoding) = open_vector(path, TextEncoding::default())?;
        let mut lyr = layer(&ds, path, None)?;
        layer_srs(&lyr, path)?;
        let invalid_fids = lyr
            .features()
            .filter(|f| f.geometry().is_some_and(|g| !g.is_valid()))
            .filter_map(|f| f.fid())
            .collect();
        Ok(Farmland {
            path: path.to_path_buf(),
            layer: lyr.name(),
            basic_field: None,
            id_field: None,
            class_filter: None,
            parcel_count: lyr.feature_count(),
            repaired: Vec::new(),
            invalid_fids,
            duplicate_ids: Vec::new(),
            encoding,
        })
    }

    /// The identifier (id field) of each burnt parcel number (feature id + 1, see
    /// [`Farmland::rasterize`]; 0 gives an empty string), or None when the layer has no id
    /// field.
    pub(crate) fn parcel_ids(&self, burnt: &[i32]) -> Result<Option<Vec<String>>> {
        let Some(field) = &self.id_field else {
            return Ok(None);
        };
        let ds = open_vector_as(&self.path, self.encoding.as_deref())?;
        let lyr = layer(&ds, &self.path, Some(&self.layer))?;
        let id = |parcel: i32| {
            if parcel <= 0 {
                return String::new();
            }
            lyr.feature((parcel - 1) as u64)
                .and_then(|f| field_string(&f, field))
                .unwrap_or_default()
        };
        Ok(Some(burnt.iter().map(|&p| id(p)).collect()))
    }

    /// Burns the parcels that touch `window` (opens the file per call: GDAL handles are per
    /// thread).
    pub(crate) fn rasterize(
        &self,
        grid: &JobGrid,
        grid_srs: &SpatialRef,
        window: Window,
    ) -> Result<FarmlandTile> {
        let ds = open_vector_as(&self.path, self.encoding.as_deref())?;
        let mut lyr = layer(&ds, &self.path, Some(&self.layer))?;
        let srs = layer_srs(&lyr, &self.path)?;
        let fix = "the layer's CRS cannot be transformed to the job CRS: check both";
        let to_layer = transform_between(grid_srs, &srs).in_file(&self.path, fix)?;
        let to_grid = transform_between(&srs, grid_srs).in_file(&self.path, fix)?;
        let (x0, y0, x1, y1) = grid.window_bounds(window);
        let b = transform_bounds(&to_layer, (x0, y0, x1, y1)).in_file(&self.path, fix)?;
        lyr.set_spatial_filter_rect(b.0, b.1, b.2, b.3);
        let mut geoms = Vec::new();
        let mut values = Vec::new();
        let mut basic_ids = Vec::new();
        for f in lyr.features() {
            let (Some(g), Some(fid)) = (f.geometry(), f.fid()) else {
                continue;
            };
            if !self.is_watched(&f) {
                continue;
            }
            let g = onto_grid(g, self.invalid_fids.contains(&fid), &to_grid)
                .in_file(&self.path, "check the layer's CRS and its geometries")?;
            geoms.push(g);
            // fid 0 would read as "no parcel"; shapefile fids start at 0.
            let id = i32::try_from(fid + 1).map_err(|_| {
                Error::input(
                    &self.path,
                    format!("feature id {fid} is too large"),
                    "renumber the layer, e.g. `ogr2ogr -unsetFid out.gpkg in.gpkg`",
                )
            })?;
            values.push(f64::from(id));
            if self
                .basic_field
                .as_deref()
                .is_some_and(|bf| is_yes(field_string(&f, bf)))
            {
                basic_ids.push(id);
            }
        }
        let parcel = rasterize(grid, window, &geoms, &values)?;
        basic_ids.sort_unstable();
        let basic = parcel
            .iter()
            .map(|p| *p != 0 && basic_ids.binary_search(p).is_ok())
            .collect();
        Ok(FarmlandTile { parcel, basic })
    }
}
