//! The images of a pair as users have them.
//!
//! Takes: each date as one multi-band raster, or as a folder with one file per band (the band
//! named as a token of the file name, e.g. `..._B02.tif`, at any resolution, as Sentinel-2
//! tiles and OSCD come); optionally the names of a file's bands in its own order, for files
//! that keep a non-standard one (EuroSAT stores B8A last); an image placed by RPCs (Gaofen's
//! L1A) with the ground's elevation, orthorectified first ([`crate::geo::rpc`]). Gives: per
//! date, one raster with the
//! profile's bands in the profile's order (the file itself, or a virtual raster held in GDAL's
//! memory file system for as long as the pair is open; an image placed by RPCs is then warped
//! once onto the grid into a scratch GeoTIFF, [`BandStack::placed_on_grid`], as a job's
//! Gaofen acquisitions are, [`Acquisition::placed_on_grid`]), and [`UserImage`], which reads it onto
//! a grid as a single-look composite: what `detect` classifies, and what a model trained on
//! labelled image patches learns from.

use crate::error::{Error, GdalContext, Result};
use crate::geo::composite::{cloud_margin, hide_unwatched, without_visible_clouds, Composite};
use crate::geo::gaofen::{self, Calibration, CalibrationTable, ProductMetadata};
use crate::geo::grid::{JobGrid, Window};
use crate::geo::imagery::{
    dark_objects, date_in, has_band_token, is_raster_file, to_reflectance, Acquisition, Damage,
    ProductReading,
};
use crate::geo::raster::{open_georeferenced, warp_onto, Resample};
use crate::geo::rpc::{self, Elevation};
use crate::geo::sensor::{SensorProfile, PROFILES};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One date's bands in the profile's order.
#[derive(Debug)]
pub(crate) struct BandStack {
    /// What the tiles read: the user's file, or a virtual raster.
    pub path: PathBuf,
    /// A virtual raster in GDAL's memory file system, removed on drop.
    virtual_raster: bool,
    /// Whether the image was placed by RPCs and orthorectified here: an L1A product.
    pub orthorectified: bool,
    /// The L1A images this stack shows band for band, when it is one (or a mosaic of
    /// pieces) orthorectified as it is: a warp onto another grid starts from them.
    l1a: Option<L1aImages>,
    /// The virtual rasters `path` reads (orthorectified images, a split product's pieces),
    /// kept for as long as it does.
    _sources: Vec<BandStack>,
}

/// L1A images placed by RPCs and the ground's elevation they are placed on.
#[derive(Debug, Clone)]
struct L1aImages {
    pieces: Vec<PathBuf>,
    elevation: Elevation,
}

impl Drop for BandStack {
    fn drop(&mut self) {
        if self.virtual_raster {
            if let Ok(c) = std::ffi::CString::new(self.path.to_string_lossy().as_bytes()) {
                // SAFETY: a NUL-terminated path; unlinking a missing file only returns an error.
                unsafe { gdal_sys::VSIUnlink(c.as_ptr()) };
            }
        }
    }
}

impl BandStack {
    /// An image placed by RPCs, warped once onto `window` of `grid` (bilinear) into the tiled
    /// GeoTIFF `out`; `None` for any other stack, which is read as it is. Read through the
    /// RPC transformer instead, every tile's read warps every band of the image again:
    /// GDAL's transformer (the RPCs, the DEM and the projection, per pixel) costs the same
    /// for one band as for four, and an image on the grid is read as stored. `nodata` marks
    /// the ground the image does not cover; `user_path` is the image the user gave, for
    /// messages.
    pub(crate) fn placed_on_grid(
        &self,
        grid: &JobGrid,
        window: Window,
        nodata: f64,
        out: &Path,
        user_path: &Path,
    ) -> Result<Option<BandStack>> {
        if !self.orthorectified {
            return Ok(None);
        }
        // From the L1A images themselves when the stack is theirs as they are: one
        // resampling instead of two, and the transformer's cost follows the grid's pixels,
        // not the image's.
        let fix = "check the product with `gdalinfo`";
        let (sources, mut args) = match &self.l1a {
            Some(l1a) => (
                l1a.pieces
                    .iter()
                    .map(|p| gdal::Dataset::open(p).in_file(p, fix))
                    .collect::<Result<Vec<_>>>()?,
                vec![
                    "-rpc".to_string(),
                    "-to".into(),
                    rpc::transformer_option(user_path, &l1a.elevation)?,
                    // Exact, as the image's own grid is made.
                    "-et".into(),
                    "0".into(),
                ],
            ),
            None => (
                vec![gdal::Dataset::open(&self.path).in_file(user_path, fix)?],
                Vec::new(),
            ),
        };
        let (x0, y0, x1, y1) = grid.window_bounds(window);
        let res = grid.resolution.to_string();
        let nodata = nodata.to_string();
        args.extend(["-of".into(), "GTiff".into(), "-t_srs".into()]);
        args.push(grid.crs_wkt.clone());
        args.push("-te".into());
        args.extend([x0, y0, x1, y1].map(|v| v.to_string()));
        args.extend([
            "-tr".into(),
            res.clone(),
            res,
            "-r".into(),
            "bilinear".into(),
        ]);
        args.extend([
            "-srcnodata".into(),
            nodata.clone(),
            "-dstnodata".into(),
            nodata,
        ]);
        // Band-interleaved, so that a read of one band decodes that band only; a light
        // compression, since the file lives as long as the run.
        for co in [
            "TILED=YES",
            "INTERLEAVE=BAND",
            "COMPRESS=ZSTD",
            "ZSTD_LEVEL=1",
            "PREDICTOR=2",
            "BIGTIFF=IF_SAFER",
        ] {
            args.extend(["-co".into(), co.into()]);
        }
        crate::geo::raster::gdal_warp(&sources, &args, out).map_err(|message| {
            Error::input(
                user_path,
                format!(
                    "could not be orthorectified into {} ({message})",
                    out.display()
                ),
                "check the product with `gdalinfo`, the DEM's coverage and the free space of the output folder",
            )
        })?;
        Ok(Some(BandStack {
            path: out.to_path_buf(),
            virtual_raster: false,
            orthorectified: true,
            _sources: Vec::new(),
            l1a: None,
        }))
    }
}

/// One date's image, ready to be read onto a grid window by window.
pub(crate) struct UserImage {
    pub stack: BandStack,
    pub profile: &'static SensorProfile,
    /// Per band: reflectance = (DN + shift) × scale. The profile's scale and DN offset (the
    /// offset overridden on request) less the dark object where the profile subtracts it, or
    /// a Gaofen L1A product's calibration.
    shift: Vec<f32>,
    scale: Vec<f32>,
    /// The calibration of a Gaofen product read with its `.xml`.
    pub calibration: Option<Calibration>,
}

impl UserImage {
    /// The image at `path` (a file or a folder of band files, see [`band_stack`]); `name`
    /// tells apart the virtual rasters of one process. A Gaofen image with its product
    /// `.xml` beside it is calibrated from `table` ([`crate::geo::gaofen`]).
    pub fn open(
        path: &Path,
        profile: &'static SensorProfile,
        band_order: Option<&[String]>,
        add_offset: Option<f32>,
        elevation: &Elevation,
        table: &CalibrationTable,
        name: &str,
    ) -> Result<Self> {
        let (stack, calibration) = if profile.guessable() {
            (
                band_stack(path, profile, band_order, elevation, name)?,
                None,
            )
        } else {
            gaofen_product(path, profile, band_order, elevation, table, name)?
        };
        let n = profile.bands.len();
        if calibration.is_some() && add_offset.is_some() {
            return Err(Error::usage(
                format!(
                    "--add-offset is given, but {} is a Gaofen L1A product, calibrated from its .xml",
                    path.display()
                ),
                "leave out --add-offset: it applies to reflectance products",
            ));
        }
        let offset = add_offset.unwrap_or(profile.add_offset);
        let (shift, scale) = match &calibration {
            Some(c) => (
                c.dn_offset.iter().map(|&o| o as f32).collect(),
                c.reflectance_per_dn.iter().map(|&k| k as f32).collect(),
            ),
            None => {
                let dark = if profile.dark_object_subtraction {
                    dark_objects(&stack.path, profile)?
                } else {
                    vec![0.0; n]
                };
                (
                    dark.iter().map(|d| offset - d).collect(),
                    (0..n).map(|b| profile.scale_of(b)).collect(),
                )
            }
        };
        Ok(UserImage {
            stack,
            profile,
            shift,
            scale,
            calibration,
        })
    }

    /// The reflectance of a window of `grid` (bilinear onto it) as a single-look composite;
    /// pixels whose `watched` value is 0 count as unobserved.
    pub fn composite(
        &self,
        grid: &JobGrid,
        w: Window,
        watched: Option<&[i32]>,
    ) -> Result<Composite> {
        let profile = self.profile;
        // The cloud test decides by extent: it sees around the window (and under pixels off
        // the parcels) before the window is cut out.
        let margin = cloud_margin(profile, grid.resolution);
        let mut bands = warp_onto(
            &self.stack.path,
            grid,
            w.grown(margin),
            Resample::Bilinear,
            Some(profile.nodata),
        )?;
        for (i, mut b) in bands.outer_iter_mut().enumerate() {
            let b = b
                .as_slice_mut()
                .expect("a read stack is in standard layout");
            to_reflectance(profile, self.shift[i], self.scale[i], b);
        }
        let mut bands = without_visible_clouds(bands, profile, grid.resolution, margin);
        if let Some(parcels) = watched {
            for mut b in bands.outer_iter_mut() {
                let b = b
                    .as_slice_mut()
                    .expect("a cut window is copied in standard layout");
                hide_unwatched(b, parcels);
            }
        }
        Ok(Composite::single(profile, bands))
    }
}

/// A Gaofen product as delivered (a TIFF, a piece, a `.tar.gz`; [`gaofen::product_pieces`])
/// read as one band stack, with its calibration when its `.xml` is found. An image placed by
/// RPCs without one is refused: its values are raw DNs.
fn gaofen_product(
    given: &Path,
    profile: &SensorProfile,
    band_order: Option<&[String]>,
    elevation: &Elevation,
    table: &CalibrationTable,
    name: &str,
) -> Result<(BandStack, Option<Calibration>)> {
    let (stack, image) = match gaofen::product_pieces(given)?.as_slice() {
        [one] => (
            band_stack(one, profile, band_order, elevation, name)?,
            one.clone(),
        ),
        _ if band_order.is_some() => {
            return Err(Error::usage(
                format!(
                "--bands is given, but {} is a product in pieces, read in the camera's band order",
                given.display()
            ),
                "leave out --bands",
            ))
        }
        pieces => (
            mosaic_pieces(pieces, profile, elevation, name)?,
            pieces[0].clone(),
        ),
    };
    let calibration = match gaofen::product_xml(&image) {
        Some(xml) => {
            let meta = ProductMetadata::read(&xml)?;
            if !gaofen::camera_fits(profile.name, &meta.camera) {
                return Err(Error::input(
                    &xml,
                    format!(
                        "is a {} product, which the profile {} does not read",
                        meta.camera, profile.name
                    ),
                    "name the camera's profile (gf1-wfv, gf2-pms or gf6-wfv) with `--sensor` (detect) or `[imagery] sensor` (a job), or move the product out of the job's imagery folder",
                ));
            }
            Some(table.calibration(&meta, profile.bands.len(), &xml)?)
        }
        None if stack.orthorectified => {
            return Err(Error::input(
                given,
                format!(
                    "holds an L1A product's raw DNs (it is placed by RPCs) without its {}: the camera, date and sun angle that calibrate them",
                    gaofen::expected_xml_name(&image)
                ),
                "keep the product's .xml beside the image as delivered, or give the product's .tar.gz",
            ));
        }
        None => None,
    };
    Ok((stack, calibration))
}

/// A Gaofen product as delivered ([`gaofen::is_product`]) as one acquisition of `profile`:
/// orthorectified on `reading`'s elevation when placed by RPCs, calibrated from its `.xml`
/// with `reading`'s table, dated by its `.xml` (else by a `YYYYMMDD` in its name), each band
/// a virtual raster of its own. `Ok(Err(why))` for a product that cannot be read as
/// delivered or is another camera's (left out of the catalog and listed); `Err` for what
/// no product of the folder can do without, and only the job can mend: the ground's
/// elevation for a product placed by RPCs, the calibration table's coefficients for its
/// camera.
pub(crate) fn gaofen_acquisition(
    path: &Path,
    profile: &'static SensorProfile,
    reading: &ProductReading,
) -> Result<std::result::Result<Acquisition, Damage>> {
    let damage = |e: Error| match e {
        Error::Input { problem, fix, .. } => format!("{problem} ({fix})"),
        other => other.to_string(),
    };
    let (stack, calibration) = match gaofen_product(
        path,
        profile,
        None,
        &reading.elevation,
        &reading.calibration,
        "run",
    ) {
        Ok(read) => read,
        Err(e) => return job_fault(path, profile, reading).map(|()| Err(damage(e))),
    };
    let date = calibration
        .as_ref()
        .and_then(|c| chrono::NaiveDate::parse_from_str(&c.date, "%Y-%m-%d").ok())
        .or_else(|| date_in(&path.file_name()?.to_string_lossy()));
    let Some(date) = date else {
        return Ok(Err(
            "has no date: neither a product .xml with its CenterTime nor YYYYMMDD in its name"
                .into(),
        ));
    };
    let in_product = |e: Error| match e {
        Error::Input { problem, fix, .. } => Error::input(path, problem, fix),
        other => other,
    };
    let image = open_georeferenced(&stack.path).map_err(in_product)?;
    if image.raster_count() != profile.bands.len() {
        return Ok(Err(format!(
            "has {} bands, {} has {}",
            image.raster_count(),
            profile.name,
            profile.bands.len()
        )));
    }
    let (files, mut rasters) = one_band_rasters(&image, path, profile)?;
    drop(image);
    rasters.push(stack);
    Ok(Ok(Acquisition {
        date,
        folder: path.to_path_buf(),
        files,
        offset: None,
        container: Some(path.to_path_buf()),
        calibration,
        _virtual_rasters: Some(std::sync::Arc::new(rasters)),
    }))
}

/// Each band of a product's `image` as a virtual raster of its own (what an acquisition's
/// band files are), by profile band name.
fn one_band_rasters(
    image: &gdal::Dataset,
    path: &Path,
    profile: &SensorProfile,
) -> Result<(std::collections::BTreeMap<String, PathBuf>, Vec<BandStack>)> {
    let mut files = std::collections::BTreeMap::new();
    let mut rasters = Vec::new();
    for (k, band) in profile.bands.iter().enumerate() {
        let single = BandStack {
            path: virtual_path(&format!("run-{band}")),
            virtual_raster: true,
            orthorectified: false,
            _sources: Vec::new(),
            l1a: None,
        };
        let opts = gdal::programs::raster::BuildVRTOptions::new(["-b", &(k + 1).to_string()])
            .in_file(path, "check the product with `gdalinfo`")?;
        gdal::programs::raster::build_vrt(Some(&single.path), &[image], Some(opts))
            .in_file(path, "check the product with `gdalinfo`")?;
        files.insert(band.to_string(), single.path.clone());
        rasters.push(single);
    }
    Ok((files, rasters))
}

impl Acquisition {
    /// A product placed by RPCs, warped once onto `window` of `grid` into the GeoTIFF `out`
    /// ([`BandStack::placed_on_grid`]); `None` for any other acquisition, which is read as it
    /// is.
    pub(crate) fn placed_on_grid(
        &self,
        profile: &'static SensorProfile,
        grid: &JobGrid,
        window: Window,
        out: &Path,
    ) -> Result<Option<Acquisition>> {
        let Some(stack) = self._virtual_rasters.as_ref().and_then(|r| r.last()) else {
            return Ok(None);
        };
        let Some(placed) = stack.placed_on_grid(grid, window, profile.nodata, out, &self.folder)?
        else {
            return Ok(None);
        };
        let image = gdal::Dataset::open(&placed.path)
            .in_file(&placed.path, "check the free space of the output folder")?;
        let (files, mut rasters) = one_band_rasters(&image, &self.folder, profile)?;
        drop(image);
        rasters.push(placed);
        Ok(Some(Acquisition {
            files,
            _virtual_rasters: Some(std::sync::Arc::new(rasters)),
            ..self.clone()
        }))
    }
}

/// Refuses a DEM without heights at some of `points` (degrees: the ground the job reads;
/// `None`: all its own ground) that the image at `path` (each piece of a split product)
/// placed by RPCs shows, see [`rpc::check_dem_covers`]. Images placed otherwise, and a mean
/// height, need nothing.
pub(crate) fn check_elevation_covers(
    path: &Path,
    elevation: &Elevation,
    points: Option<&[(f64, f64)]>,
) -> Result<()> {
    let Elevation::Dem(dem) = elevation else {
        return Ok(());
    };
    let pieces = gaofen::product_pieces(path).unwrap_or_else(|_| vec![path.to_path_buf()]);
    let mut grounds = Vec::new();
    for piece in pieces {
        let Ok(ds) = gdal::Dataset::open(&piece) else {
            continue;
        };
        if rpc::placed_by_rpcs(&ds) {
            grounds.push(rpc::RpcGround::of(&piece, &ds)?);
        }
    }
    let own: Vec<(f64, f64)>;
    let points = match points {
        Some(points) => points,
        None => {
            own = grounds.iter().flat_map(rpc::RpcGround::lattice).collect();
            &own
        }
    };
    let shown: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|&(lon, lat)| grounds.iter().any(|g| g.shows(lon, lat)))
        .collect();
    if shown.is_empty() {
        return Ok(());
    }
    rpc::check_dem_covers(dem, path, &shown)
}

/// The points of the ground a job reads, in degrees: the nodes of a lattice of 128 × 128
/// cells over `grid` (in `srs`) inside one of `counties`.
pub(crate) fn ground_points(
    grid: &JobGrid,
    srs: &gdal::spatial_ref::SpatialRef,
    counties: &[crate::geo::layers::County],
) -> Result<Vec<(f64, f64)>> {
    let cells = 128;
    let (x0, y0, x1, y1) = grid.window_bounds(grid.full_window());
    let mut points = Vec::with_capacity((cells + 1) * (cells + 1));
    for i in 0..=cells {
        for j in 0..=cells {
            let f = |a: f64, b: f64, k: usize| a + (b - a) * k as f64 / cells as f64;
            points.push((f(x0, x1, i), f(y0, y1, j)));
        }
    }
    let shapes = counties
        .iter()
        .map(|c| Ok((c.envelope, gdal::vector::Geometry::from_wkb(&c.wkb)?)))
        .collect::<gdal::errors::Result<Vec<_>>>()?;
    let mut point = gdal::vector::Geometry::empty(gdal::vector::OGRwkbGeometryType::wkbPoint)?;
    // A province's counties have thousands of vertices each: the envelope first.
    points.retain(|&(x, y)| {
        point.set_point_2d(0, (x, y));
        shapes.iter().any(|((x0, y0, x1, y1), shape)| {
            (*x0..=*x1).contains(&x) && (*y0..=*y1).contains(&y) && shape.contains(&point)
        })
    });
    let mut srs = srs.clone();
    srs.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let to_degrees = crate::geo::raster::transform_between(&srs, &crate::geo::raster::lon_lat()?)?;
    let (mut xs, mut ys): (Vec<f64>, Vec<f64>) = points.into_iter().unzip();
    to_degrees.transform_coords(&mut xs, &mut ys, &mut [])?;
    Ok(xs.into_iter().zip(ys).collect())
}

/// Why a Gaofen product could not be read, when the job is to blame rather than the
/// product: no elevation for a product placed by RPCs, no coefficients for its camera in the
/// calibration table. Asked only after a read failed, so a readable product is opened once.
fn job_fault(path: &Path, profile: &SensorProfile, reading: &ProductReading) -> Result<()> {
    let Some(first) = gaofen::product_pieces(path)
        .ok()
        .and_then(|p| p.first().cloned())
    else {
        return Ok(());
    };
    if matches!(reading.elevation, Elevation::Unknown)
        && gdal::Dataset::open(&first).is_ok_and(|ds| rpc::placed_by_rpcs(&ds))
    {
        return Err(Error::input(
            path,
            "is an L1A product placed by RPCs, which need the ground's elevation to land on the map",
            "set the job's `[grid] dem = \"DEM.tif\"` (e.g. SRTM) or `[imagery] height = 50` (the area's mean height in metres); for training, orthorectify it first (`gdalwarp -rpc -to RPC_DEM=DEM.tif IMAGE.tiff OUT.tif`) and copy IMAGE.xml to OUT.xml, which calibrates it",
        ));
    }
    match gaofen::product_xml(&first).map(|xml| (ProductMetadata::read(&xml), xml)) {
        Some((Ok(meta), xml)) if gaofen::camera_fits(profile.name, &meta.camera) => reading
            .calibration
            .calibration(&meta, profile.bands.len(), &xml)
            .map(|_| ()),
        _ => Ok(()),
    }
}

/// Names the virtual rasters of this process apart.
static NEXT_VIRTUAL: AtomicUsize = AtomicUsize::new(0);

fn virtual_path(name: &str) -> PathBuf {
    let k = NEXT_VIRTUAL.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!(
        "/vsimem/gengbao-{}-{k}/{name}.vrt",
        std::process::id()
    ))
}

/// The sensor profile of an image: the one named, else the one its bands identify (a file's
/// band count or band order, a folder's band files).
pub(crate) fn profile_of(
    path: &Path,
    sensor: Option<&str>,
    band_order: Option<&[String]>,
) -> Result<&'static SensorProfile> {
    if let Some(name) = sensor {
        return SensorProfile::by_name(name);
    }
    if gaofen::is_archive(path) {
        return Err(Error::input(
            path,
            "is a packed product, whose camera gengbao does not guess",
            "name it with --sensor gf1-wfv, gf2-pms or gf6-wfv",
        ));
    }
    let found = if path.is_dir() {
        let files = raster_files(path)?;
        // The profile with the most bands that all have a file.
        PROFILES
            .iter()
            .filter(|p| p.guessable())
            .filter(|p| p.bands.iter().all(|b| files.iter().any(|f| stem_has(f, b))))
            .max_by_key(|p| p.bands.len())
    } else if let Some(order) = band_order {
        let named = PROFILES
            .iter()
            .filter(|p| p.guessable() && p.bands.len() == order.len())
            .find(|p| p.bands.iter().all(|b| order.iter().any(|o| o == b)));
        return named.ok_or_else(|| {
            Error::usage(
                format!("--bands {} is no sensor profile's set of bands", order.join(",")),
                "name every band of the file with a profile's band names, or name the profile with --sensor (see `gengbao sensors`)",
            )
        });
    } else {
        let bands = match gdal::Dataset::open(path) {
            Ok(ds) if rpc::placed_by_rpcs(&ds) => ds.raster_count(),
            _ => open_georeferenced(path)?.raster_count(),
        };
        return SensorProfile::for_band_count(bands).ok_or_else(|| {
            Error::input(
                path,
                format!("{bands} bands do not identify a sensor profile"),
                "name one with --sensor (see `gengbao sensors`)",
            )
        });
    };
    found.ok_or_else(|| {
        Error::input(
            path,
            "its bands do not identify a sensor profile",
            "name one with --sensor (see `gengbao sensors`)",
        )
    })
}

/// The image at `path` with `profile`'s bands in order: a file as it is, a file's bands
/// reordered by `band_order`, or a folder's band files stacked; a file placed by RPCs is
/// orthorectified first on `elevation`.
pub(crate) fn band_stack(
    path: &Path,
    profile: &SensorProfile,
    band_order: Option<&[String]>,
    elevation: &Elevation,
    name: &str,
) -> Result<BandStack> {
    if path.is_dir() {
        return stack_band_files(path, profile, name);
    }
    if let Ok(ds) = gdal::Dataset::open(path) {
        if rpc::placed_by_rpcs(&ds) {
            let ortho = BandStack {
                path: virtual_path(&format!("{name}-orthorectified")),
                virtual_raster: true,
                orthorectified: true,
                _sources: Vec::new(),
                l1a: None,
            };
            rpc::orthorectify(
                path,
                &ds,
                elevation,
                rpc::utm_zone_of(path, &ds)?,
                None,
                &ortho.path,
            )?;
            // The user knows the file they gave, not GDAL's memory file system.
            let mut stack = band_stack(&ortho.path, profile, band_order, elevation, name).map_err(
                |e| match e {
                    Error::Input {
                        path: p,
                        problem,
                        fix,
                    } if p == ortho.path => {
                        Error::input(path, format!("orthorectified, {problem}"), fix)
                    }
                    other => other,
                },
            )?;
            if stack.path == ortho.path {
                let mut ortho = ortho;
                ortho.l1a = Some(L1aImages {
                    pieces: vec![path.to_path_buf()],
                    elevation: elevation.clone(),
                });
                return Ok(ortho);
            }
            stack.orthorectified = true;
            stack._sources.push(ortho);
            return Ok(stack);
        }
    }
    let ds = open_georeferenced(path)?;
    let count = ds.raster_count();
    let Some(order) = band_order else {
        if count != profile.bands.len() {
            return Err(Error::input(
                path,
                format!(
                    "has {count} bands but profile `{}` expects {} ({})",
                    profile.name,
                    profile.bands.len(),
                    profile.bands.join(" ")
                ),
                "pick the profile that matches the file's band layout with --sensor, or name the file's bands with --bands",
            ));
        }
        return Ok(BandStack {
            path: path.to_path_buf(),
            virtual_raster: false,
            orthorectified: false,
            _sources: Vec::new(),
            l1a: None,
        });
    };
    if order.len() != count {
        return Err(Error::input(
            path,
            format!("has {count} bands but --bands names {}", order.len()),
            "name every band of the file, in the file's order",
        ));
    }
    let mut args = vec!["-resolution".to_string(), "highest".into()];
    for band in profile.bands {
        let k = order.iter().position(|o| o == band).ok_or_else(|| {
            Error::usage(
                format!(
                    "--bands does not name band {band} of profile `{}`",
                    profile.name
                ),
                format!(
                    "name the file's bands with the profile's names: {}",
                    profile.bands.join(" ")
                ),
            )
        })?;
        args.extend(["-b".into(), (k + 1).to_string()]);
    }
    build_virtual(&[ds], &args, path, name)
}

/// A product split into pieces (GF-6 WFV), each placed by its own RPCs: every piece
/// orthorectified onto the first one's UTM zone, then mosaicked into one virtual raster.
fn mosaic_pieces(
    pieces: &[PathBuf],
    profile: &SensorProfile,
    elevation: &Elevation,
    name: &str,
) -> Result<BandStack> {
    let fix = "give the product's pieces as delivered, each with its .rpb";
    let mut grid: Option<(u32, f64)> = None;
    let mut orthos = Vec::with_capacity(pieces.len());
    for (k, piece) in pieces.iter().enumerate() {
        let ds = gdal::Dataset::open(piece).in_file(piece, fix)?;
        if !rpc::placed_by_rpcs(&ds) {
            return Err(Error::input(
                piece,
                "is a piece of a split product without RPCs: the pieces cannot be put together",
                fix,
            ));
        }
        let ortho = BandStack {
            path: virtual_path(&format!("{name}-piece-{}", k + 1)),
            virtual_raster: true,
            orthorectified: true,
            _sources: Vec::new(),
            l1a: None,
        };
        // One grid for all pieces: the first piece's zone and pixel size, aligned.
        let (epsg, pixel_m) = match grid {
            Some(g) => g,
            None => {
                let epsg = rpc::utm_zone_of(piece, &ds)?;
                rpc::orthorectify(piece, &ds, elevation, epsg, None, &ortho.path)?;
                let size = open_georeferenced(&ortho.path)?.geo_transform()?[1];
                *grid.insert((epsg, size))
            }
        };
        rpc::orthorectify(piece, &ds, elevation, epsg, Some(pixel_m), &ortho.path)?;
        orthos.push(ortho);
    }
    let datasets = orthos
        .iter()
        .map(|o| open_georeferenced(&o.path))
        .collect::<Result<Vec<_>>>()?;
    let fill = profile.nodata.to_string();
    let args = [
        "-resolution",
        "highest",
        "-srcnodata",
        &fill,
        "-vrtnodata",
        &fill,
    ]
    .map(String::from);
    let mut mosaic = build_virtual(&datasets, &args, &pieces[0], name)?;
    let bands = open_georeferenced(&mosaic.path)?.raster_count();
    if bands != profile.bands.len() {
        return Err(Error::input(
            &pieces[0],
            format!(
                "has {bands} bands but profile `{}` expects {}",
                profile.name,
                profile.bands.len()
            ),
            "pick the profile of the product's camera with --sensor",
        ));
    }
    mosaic.orthorectified = true;
    mosaic._sources = orthos;
    mosaic.l1a = Some(L1aImages {
        pieces: pieces.to_vec(),
        elevation: elevation.clone(),
    });
    Ok(mosaic)
}

/// The raster files directly in `folder`, sorted.
fn raster_files(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| Error::io(folder, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_raster_file(p))
        .collect();
    files.sort();
    Ok(files)
}

fn stem_has(file: &Path, band: &str) -> bool {
    file.file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| has_band_token(s, band))
}

/// The file of each of `bands` in `folder` (named with the band as a token); an error names
/// a band without a file or with two.
pub(crate) fn band_files(folder: &Path, bands: &[&str]) -> Result<Vec<PathBuf>> {
    let files = raster_files(folder)?;
    bands
        .iter()
        .map(|band| {
            let matching: Vec<&PathBuf> = files.iter().filter(|f| stem_has(f, band)).collect();
            match matching.as_slice() {
                [one] => Ok((*one).clone()),
                [] => Err(Error::input(
                    folder,
                    format!("no file for band {band}"),
                    format!(
                        "put one file per band in the folder, named with the band (e.g. `..._{band}.tif`), or pick another profile with --sensor"
                    ),
                )),
                [a, b, ..] => Err(Error::input(
                    folder,
                    format!("band {band} has two files: {} and {}", a.display(), b.display()),
                    "keep one file per band in the folder",
                )),
            }
        })
        .collect()
}

fn stack_band_files(folder: &Path, profile: &SensorProfile, name: &str) -> Result<BandStack> {
    let datasets = band_files(folder, profile.bands)?
        .iter()
        .map(|f| open_georeferenced(f))
        .collect::<Result<Vec<_>>>()?;
    let mut args: Vec<String> = ["-separate", "-resolution", "highest", "-r", "bilinear"]
        .map(String::from)
        .to_vec();
    if profile.nodata.is_finite() {
        // Band files rarely declare the product's fill value: without it, resampling the
        // coarser bands would blend the fill into real pixels at the edges.
        let fill = profile.nodata.to_string();
        args.extend(["-srcnodata".into(), fill.clone(), "-vrtnodata".into(), fill]);
    }
    let stack = build_virtual(&datasets, &args, folder, name)?;
    let stacked = open_georeferenced(&stack.path)?.raster_count();
    if stacked != profile.bands.len() {
        return Err(Error::input(
            folder,
            format!(
                "only {stacked} of the {} band files stack into one image",
                profile.bands.len()
            ),
            "give every band file of the folder the same CRS (check them with `gdalinfo`)",
        ));
    }
    Ok(stack)
}

fn build_virtual(
    sources: &[gdal::Dataset],
    args: &[String],
    source_path: &Path,
    name: &str,
) -> Result<BandStack> {
    let path = virtual_path(name);
    let fix = "check the bands with `gdalinfo`: they must be readable, overlap and share a CRS";
    let opts = gdal::programs::raster::BuildVRTOptions::new(args.iter().map(String::as_str))
        .in_file(source_path, fix)?;
    let vrt = gdal::programs::raster::build_vrt(Some(&path), sources, Some(opts))
        .in_file(source_path, fix)?;
    drop(vrt);
    Ok(BandStack {
        path,
        virtual_raster: true,
        orthorectified: false,
        _sources: Vec::new(),
        l1a: None,
    })
}
