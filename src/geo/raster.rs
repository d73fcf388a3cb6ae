//! GDAL plumbing shared by the stages: warping any file onto a grid window, burning polygons
//! into a window, reading grid-aligned rasters back, and writing tiled GeoTIFFs.

use crate::error::{Error, GdalContext, Result};
use crate::geo::grid::{JobGrid, Window};
use gdal::raster::{Buffer, GdalType, RasterCreationOptions};
use gdal::spatial_ref::{CoordTransform, SpatialRef};
use gdal::vector::Geometry;
use gdal::{Dataset, DriverManager};
use gdal_sys::GDALResampleAlg;
use ndarray::Array3;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy)]
pub enum Resample {
    /// For categorical bands (quality masks).
    Nearest,
    /// For reflectance: 20 m bands onto a 10 m grid, reprojection.
    Bilinear,
}

/// An in-memory raster laid on `window` of `grid`.
fn mem_dataset<T: GdalType>(grid: &JobGrid, window: Window, bands: usize) -> Result<Dataset> {
    let driver = DriverManager::get_driver_by_name("MEM")?;
    let mut ds = driver.create_with_band_type::<T, _>("", window.width, window.height, bands)?;
    ds.set_geo_transform(&grid.window_transform(window))?;
    ds.set_projection(&grid.crs_wkt)?;
    Ok(ds)
}

/// Opens a raster and checks that it is georeferenced, so that warping cannot silently place
/// it at the wrong spot.
pub(crate) fn open_georeferenced(path: &Path) -> Result<Dataset> {
    let ds = Dataset::open(path).map_err(|e| {
        Error::input(
            path,
            format!("cannot be read as a raster ({e})"),
            "re-download or re-export the file; check it with `gdalinfo`",
        )
    })?;
    let gt = ds.geo_transform().unwrap_or([0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    let placed = gt != [0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let format = ds.driver().short_name();
    // A picture (a PNG or JPEG saved from a viewer, renamed .tif) carries neither: it is not
    // imagery with a missing attribute, and assigning a CRS would not place it.
    if !placed && ds.projection().trim().is_empty() && !["GTiff", "COG"].contains(&format.as_str())
    {
        return Err(Error::input(
            path,
            format!(
                "is a {} picture ({format}), not a georeferenced raster: it has no map coordinates",
                ds.driver().long_name()
            ),
            "use the band file as the product delivers it (GeoTIFF or JPEG 2000 with its georeferencing), not an image exported from a viewer",
        ));
    }
    if ds.projection().trim().is_empty() {
        return Err(Error::input(
            path,
            "has no coordinate reference system",
            "assign the product's CRS (its metadata names it, e.g. the UTM zone of a Sentinel-2 tile): `gdal_edit.py -a_srs EPSG:<code> FILE`",
        ));
    }
    if !placed {
        return Err(Error::input(
            path,
            "has no geotransform (pixel-to-map georeferencing)",
            "georeference the file (e.g. `gdal_translate -a_ullr ...`) before using it",
        ));
    }
    Ok(ds)
}

thread_local! {
    /// Coordinate transformations already built by this thread, by (source WKT, target WKT):
    /// building one makes PROJ search its database (tens of milliseconds between datums).
    static TRANSFORMS: std::cell::RefCell<std::collections::HashMap<(String, String), std::rc::Rc<CoordTransform>>> = Default::default();
}

/// WGS 84 in degrees, longitude first (as RPCs, DEMs in degrees and GeoJSON have it).
pub(crate) fn lon_lat() -> gdal::errors::Result<SpatialRef> {
    let mut wgs84 = SpatialRef::from_epsg(4326)?;
    wgs84.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    Ok(wgs84)
}

/// The transformation between two CRSs (x = easting, y = northing on both sides), built once
/// per thread and pair. The cache is keyed by WKT, which does not record the axis order:
/// every caller passes CRSs set to the traditional GIS order.
pub(crate) fn transform_between(
    from: &SpatialRef,
    to: &SpatialRef,
) -> gdal::errors::Result<std::rc::Rc<CoordTransform>> {
    let key = (from.to_wkt()?, to.to_wkt()?);
    if let Some(t) = TRANSFORMS.with(|c| c.borrow().get(&key).cloned()) {
        return Ok(t);
    }
    let t = std::rc::Rc::new(CoordTransform::new(from, to)?);
    TRANSFORMS.with(|c| c.borrow_mut().insert(key, t.clone()));
    Ok(t)
}

/// The bounds of `b` after transformation, from 21 points along each edge. (GDAL 3.6's
/// OCTTransformBounds builds a new PROJ transformation on every call, which costs tens of
/// milliseconds; transforming points reuses `t`.)
pub(crate) fn transform_bounds(
    t: &CoordTransform,
    b: crate::geo::grid::Bounds,
) -> gdal::errors::Result<crate::geo::grid::Bounds> {
    let (x0, y0, x1, y1) = b;
    let n = 21;
    let (mut xs, mut ys) = (Vec::with_capacity(4 * n), Vec::with_capacity(4 * n));
    for k in 0..n {
        let f = k as f64 / (n - 1) as f64;
        for (x, y) in [
            (x0 + f * (x1 - x0), y0),
            (x0 + f * (x1 - x0), y1),
            (x0, y0 + f * (y1 - y0)),
            (x1, y0 + f * (y1 - y0)),
        ] {
            xs.push(x);
            ys.push(y);
        }
    }
    t.transform_coords(&mut xs, &mut ys, &mut [])?;
    let fold = |v: &[f64], f: fn(f64, f64) -> f64, init: f64| v.iter().copied().fold(init, f);
    Ok((
        fold(&xs, f64::min, f64::INFINITY),
        fold(&ys, f64::min, f64::INFINITY),
        fold(&xs, f64::max, f64::NEG_INFINITY),
        fold(&ys, f64::max, f64::NEG_INFINITY),
    ))
}

/// Reads every band of `path`, warped onto `window` of `grid`, as f32 digital numbers (bands ×
/// rows × columns).
/// Pixels the file does not cover, or where it holds its nodata value, are NaN. `nodata` is the
/// product's nodata value, used when the file does not declare one (many band files don't),
/// so that resampling never blends fill values into real pixels.
pub fn warp_onto(
    path: &Path,
    grid: &JobGrid,
    window: Window,
    resample: Resample,
    nodata: Option<f64>,
) -> Result<Array3<f32>> {
    let file = open_georeferenced(path)?;
    if let Some(offset) = aligned_offset(&file, grid)? {
        return read_aligned(&file, path, offset, window, nodata);
    }
    let src = match nodata.filter(|v| v.is_finite()) {
        Some(nd) if file.rasterband(1)?.no_data_value().is_none() => {
            let v = nd.to_string();
            let opts = gdal::programs::raster::BuildVRTOptions::new([
                "-srcnodata",
                v.as_str(),
                "-vrtnodata",
                v.as_str(),
            ])?;
            gdal::programs::raster::build_vrt(None, &[file], Some(opts))
                .in_file(path, "check the file with `gdalinfo`")?
        }
        _ => file,
    };
    let bands = src.raster_count();
    let dst = mem_dataset::<f32>(grid, window, bands)?;
    for b in 1..=bands {
        let mut band = dst.rasterband(b)?;
        band.set_no_data_value(Some(f64::NAN))?;
        let mut fill = Buffer::new((window.width, window.height), vec![f32::NAN; window.len()]);
        band.write((0, 0), (window.width, window.height), &mut fill)?;
    }
    let alg = match resample {
        Resample::Nearest => GDALResampleAlg::GRA_NearestNeighbour,
        Resample::Bilinear => GDALResampleAlg::GRA_Bilinear,
    };
    // SAFETY: both handles are valid open datasets for the duration of the call; null WKTs
    // mean "use the datasets' own CRS".
    let rv = unsafe {
        gdal_sys::GDALReprojectImage(
            src.c_dataset(),
            std::ptr::null(),
            dst.c_dataset(),
            std::ptr::null(),
            alg,
            0.0,
            // GDAL's approximate transformer (at most 1/8 pixel off): exact transformation is
            // about 1.4x slower when reprojecting. The approximation depends on the window,
            // so a reprojected job's boundary pixels may change with the tile size (not between
            // runs).
            0.125,
            None,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if rv != gdal_sys::CPLErr::CE_None {
        let message = last_gdal_error();
        return Err(damaged_blocks(path, &message).unwrap_or_else(|| {
            Error::input(
                path,
                format!("cannot be warped onto the job grid: {message}"),
                "check that the file's CRS can be transformed to the job CRS (`gdalinfo`)",
            )
        }));
    }
    let mut out = vec![f32::NAN; bands * window.len()];
    for (b, values) in (1..=bands).zip(out.chunks_exact_mut(window.len())) {
        let size = (window.width, window.height);
        dst.rasterband(b)?
            .read_into_slice((0, 0), size, size, values, None)?;
    }
    Ok(band_stack(bands, window, out))
}

/// `values`, band after band of `window`'s rows, as bands × rows × columns.
fn band_stack(bands: usize, window: Window, values: Vec<f32>) -> Array3<f32> {
    Array3::from_shape_vec((bands, window.height, window.width), values)
        .expect("every band holds the window's pixels")
}

/// Where the grid's origin falls in the file's pixels, when the file lies on the grid: the
/// same CRS and pixel size, north up, a whole number of pixels apart. Warping such a file is
/// the identity (bilinear weights are 1 and 0), so it is read as stored, which skips GDAL's
/// warper (about a fifth of a two-date detection's time).
fn aligned_offset(file: &Dataset, grid: &JobGrid) -> Result<Option<(isize, isize)>> {
    let Ok(gt) = file.geo_transform() else {
        return Ok(None);
    };
    let r = grid.resolution;
    let same_size = (gt[1] - r).abs() <= 1e-9 * r && (gt[5] + r).abs() <= 1e-9 * r;
    if !same_size || gt[2] != 0.0 || gt[4] != 0.0 {
        return Ok(None);
    }
    let (dx, dy) = ((grid.origin_x - gt[0]) / r, (gt[3] - grid.origin_y) / r);
    if (dx - dx.round()).abs() > 1e-6 || (dy - dy.round()).abs() > 1e-6 {
        return Ok(None);
    }
    let mut srs = SpatialRef::from_wkt(&file.projection())?;
    srs.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    if srs != grid.spatial_ref()? {
        return Ok(None);
    }
    Ok(Some((dx.round() as isize, dy.round() as isize)))
}

/// [`warp_onto`] for a file on the grid: the window's pixels as stored, NaN outside the file
/// and where it holds its (or the product's) nodata value.
fn read_aligned(
    file: &Dataset,
    path: &Path,
    (dx, dy): (isize, isize),
    window: Window,
    nodata: Option<f64>,
) -> Result<Array3<f32>> {
    let in_file = Window {
        x: window.x + dx,
        y: window.y + dy,
        ..window
    };
    let bands = file.raster_count();
    let mut out = vec![f32::NAN; bands * window.len()];
    for (b, values) in (1..=bands).zip(out.chunks_exact_mut(window.len())) {
        read_grid_window_into(file, b, in_file, values).map_err(|e| match e {
            Error::Gdal(e) => damaged_blocks(path, &e.to_string()).unwrap_or_else(|| {
                Error::input(path, e.to_string(), "check the file with `gdalinfo`")
            }),
            other => other,
        })?;
        let band = file.rasterband(b)?;
        if let Some(fill) = band.no_data_value().or(nodata).filter(|v| v.is_finite()) {
            for v in values.iter_mut().filter(|v| f64::from(**v) == fill) {
                *v = f32::NAN;
            }
        }
    }
    Ok(band_stack(bands, window, out))
}

/// A raster whose header reads but whose blocks do not decode: a download cut short or a
/// file overwritten in part. GDAL's own words name the block, not the cause.
fn damaged_blocks(path: &Path, gdal_message: &str) -> Option<Error> {
    let damaged = [
        "IReadBlock failed",
        "TIFFRead",
        "Read error",
        "ZIPDecode",
        "LZWDecode",
    ]
    .iter()
    .any(|m| gdal_message.contains(m));
    damaged.then(|| {
        let detail = gdal_message.rsplit(": ").next().unwrap_or(gdal_message).trim_end_matches(['\'', '.']);
        Error::input(
            path,
            format!("is damaged or cut short: its pixel blocks cannot be decoded ({detail})"),
            "download or export the file again (`gdalinfo -checksum FILE` reads every block and shows the damage)",
        )
    })
}

/// The files inside a tar (plain or gzipped), read in place through GDAL's `/vsitar/`: the
/// root every entry joins onto, and the entries (relative, at any depth). The error says why
/// the archive cannot be read.
pub(crate) fn tar_entries(tar: &Path) -> std::result::Result<(PathBuf, Vec<PathBuf>), String> {
    let absolute = std::path::absolute(tar).unwrap_or(tar.to_path_buf());
    let root = PathBuf::from(format!("/vsitar/{}", absolute.display()));
    match gdal::vsi::read_dir(&root, true) {
        Ok(entries) if !entries.is_empty() => Ok((root, entries)),
        Ok(_) => Err("is not a readable tar (no files in it)".into()),
        Err(e) => Err(format!("is not a readable tar ({e})")),
    }
}

/// The bytes of a small file GDAL reaches: a plain path, or one inside an archive
/// (`/vsitar/…`, `/vsizip/…`) read in place. `None` when there is no such file.
pub(crate) fn read_small_file(path: &Path) -> Option<Vec<u8>> {
    let name = std::ffi::CString::new(path.to_string_lossy().as_bytes()).ok()?;
    let (mut bytes, mut size): (*mut u8, gdal_sys::vsi_l_offset) = (std::ptr::null_mut(), 0);
    // SAFETY: a NUL-terminated name; the handle GDAL opens is closed here; GDAL allocates
    // the file's buffer (at most 16 MiB), which is copied and then freed with VSIFree, as its
    // documentation requires.
    unsafe {
        // Opened first: a missing file is an answer here, not an error for GDAL to print.
        let file = gdal_sys::VSIFOpenL(name.as_ptr(), c"rb".as_ptr());
        if file.is_null() {
            return None;
        }
        let read = gdal_sys::VSIIngestFile(file, name.as_ptr(), &mut bytes, &mut size, 16 << 20);
        gdal_sys::VSIFCloseL(file);
        if read == 0 || bytes.is_null() {
            return None;
        }
        let copy = std::slice::from_raw_parts(bytes, size as usize).to_vec();
        gdal_sys::VSIFree(bytes.cast());
        Some(copy)
    }
}

/// Size in bytes and modification time (seconds since 1970, 0 when the server does not
/// say) of a file GDAL reaches: inside an archive or remote (`/vsicurl/`, `/vsis3/`).
/// `None` when there is no such file.
pub(crate) fn vsi_stat(path: &Path) -> Option<(u64, i64)> {
    let name = std::ffi::CString::new(path.to_string_lossy().as_bytes()).ok()?;
    // SAFETY: VSIStatBufL is the platform's `struct stat64`, which GDAL fills; the buffer is
    // zeroed and lives across the call.
    unsafe {
        let mut buf: libc::stat64 = std::mem::zeroed();
        let flags = 1 | 4; // VSI_STAT_EXISTS_FLAG | VSI_STAT_SIZE_FLAG
        let found = gdal_sys::VSIStatExL(
            name.as_ptr(),
            (&mut buf as *mut libc::stat64).cast::<gdal_sys::VSIStatBufL>(),
            flags,
        );
        (found == 0).then_some((buf.st_size as u64, buf.st_mtime))
    }
}

pub(crate) fn last_gdal_error() -> String {
    // SAFETY: CPLGetLastErrorMsg returns a pointer to a thread-local, NUL-terminated string.
    unsafe {
        let msg = gdal_sys::CPLGetLastErrorMsg();
        if msg.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(msg).to_string_lossy().into_owned()
    }
}

/// Burns `geometries` (already in the grid CRS) into `window` with one value each; 0 elsewhere.
/// A pixel belongs to a polygon when its centre is inside it.
pub(crate) fn rasterize(
    grid: &JobGrid,
    window: Window,
    geometries: &[Geometry],
    values: &[f64],
) -> Result<Vec<i32>> {
    burn(grid, window, geometries, values, false)
}

/// As [`rasterize`], but every pixel a geometry touches is burnt: for drawing, where a patch
/// smaller than a screen pixel must still show and a boundary line must not break up.
pub(crate) fn rasterize_touched(
    grid: &JobGrid,
    window: Window,
    geometries: &[Geometry],
    values: &[f64],
) -> Result<Vec<i32>> {
    burn(grid, window, geometries, values, true)
}

fn burn(
    grid: &JobGrid,
    window: Window,
    geometries: &[Geometry],
    values: &[f64],
    all_touched: bool,
) -> Result<Vec<i32>> {
    let mut ds = mem_dataset::<i32>(grid, window, 1)?;
    if !geometries.is_empty() {
        let options = gdal::raster::RasterizeOptions {
            all_touched,
            ..Default::default()
        };
        gdal::raster::rasterize(&mut ds, &[1], geometries, values, Some(options))?;
    }
    let band = ds.rasterband(1)?;
    let buf = band.read_as::<i32>(
        (0, 0),
        (window.width, window.height),
        (window.width, window.height),
        None,
    )?;
    Ok(buf.into_shape_and_vec().1)
}

/// Reads `window` of band `band` of a raster laid on the job grid (archives, mosaics).
/// Parts of the window outside the raster read as `fill`.
pub(crate) fn read_grid_window<T: GdalType + Copy>(
    ds: &Dataset,
    band: usize,
    window: Window,
    fill: T,
) -> Result<Vec<T>> {
    let mut out = vec![fill; window.len()];
    read_grid_window_into(ds, band, window, &mut out)?;
    Ok(out)
}

/// [`read_grid_window`] into `out` (the window's pixels, row-major), whose values stay where
/// the window lies outside the raster.
fn read_grid_window_into<T: GdalType + Copy>(
    ds: &Dataset,
    band: usize,
    window: Window,
    out: &mut [T],
) -> Result<()> {
    let (w, h) = ds.raster_size();
    let x0 = window.x.max(0);
    let y0 = window.y.max(0);
    let x1 = (window.x + window.width as isize).min(w as isize);
    let y1 = (window.y + window.height as isize).min(h as isize);
    if x1 <= x0 || y1 <= y0 {
        return Ok(());
    }
    let (iw, ih) = ((x1 - x0) as usize, (y1 - y0) as usize);
    let band = ds.rasterband(band)?;
    // A window inside the raster (every tile but the edge ones) is read in place.
    if iw * ih == window.len() {
        band.read_into_slice((x0, y0), (iw, ih), (iw, ih), out, None)?;
        return Ok(());
    }
    // Any values of the right type: the read overwrites them all.
    let mut part = out[..iw * ih].to_vec();
    band.read_into_slice((x0, y0), (iw, ih), (iw, ih), &mut part, None)?;
    for (r, row) in part.chunks_exact(iw).enumerate() {
        let dst = ((y0 - window.y) as usize + r) * window.width + (x0 - window.x) as usize;
        out[dst..dst + iw].copy_from_slice(row);
    }
    Ok(())
}

/// A tiled, compressed GeoTIFF on the job grid, written window by window.
pub struct GridTiff {
    ds: Dataset,
    path: PathBuf,
    /// Whether each write is flushed (see [`GridTiff::write`]).
    flush_each_write: bool,
}

/// Side of a GridTiff block: 256, or the largest power of two under it that divides the
/// grid's tiles, so that a tile's write completes whole blocks. None when no side of at least
/// 16 (TIFF's smallest) divides them.
fn block_side(tile_size: usize) -> Option<usize> {
    let side = 256usize.min(1 << tile_size.trailing_zeros().min(8));
    (side >= 16).then_some(side)
}

impl GridTiff {
    pub fn create<T: GdalType>(
        path: &Path,
        grid: &JobGrid,
        bands: usize,
        nodata: Option<f64>,
    ) -> Result<Self> {
        Self::create_with::<T>(path, grid, bands, nodata, &["COMPRESS=DEFLATE", "ZLEVEL=6"])
    }

    /// Integer measurements kept in the archive (a period's composite): horizontal
    /// differencing, then Zstandard's fastest level, which packs reflectance as tightly as
    /// DEFLATE in a fraction of its time (README, "Speed").
    pub(crate) fn create_measurements<T: GdalType>(
        path: &Path,
        grid: &JobGrid,
        bands: usize,
        nodata: Option<f64>,
    ) -> Result<Self> {
        Self::create_with::<T>(
            path,
            grid,
            bands,
            nodata,
            &["COMPRESS=ZSTD", "ZSTD_LEVEL=1", "PREDICTOR=2"],
        )
    }

    /// A work file read once by a later stage: Zstandard's fastest level, since only speed
    /// matters for it.
    pub(crate) fn create_scratch<T: GdalType>(
        path: &Path,
        grid: &JobGrid,
        bands: usize,
        nodata: Option<f64>,
    ) -> Result<Self> {
        Self::create_with::<T>(
            path,
            grid,
            bands,
            nodata,
            &["COMPRESS=ZSTD", "ZSTD_LEVEL=1"],
        )
    }

    fn create_with<T: GdalType>(
        path: &Path,
        grid: &JobGrid,
        bands: usize,
        nodata: Option<f64>,
        compression: &[&str],
    ) -> Result<Self> {
        let driver = DriverManager::get_driver_by_name("GTiff")?;
        let block = block_side(grid.tile_size);
        let side = block.unwrap_or(256);
        let (block_x, block_y) = (format!("BLOCKXSIZE={side}"), format!("BLOCKYSIZE={side}"));
        // Bands are written one at a time, so each is stored on its own (INTERLEAVE=BAND).
        // With GDAL's default pixel interleaving, a block flushed before all its bands were
        // written is decoded and encoded again for each later band: 15 % of an 8192² two-date
        // detection's time went there.
        let options = RasterCreationOptions::from_iter(
            [
                "TILED=YES",
                block_x.as_str(),
                block_y.as_str(),
                "INTERLEAVE=BAND",
                "BIGTIFF=IF_SAFER",
            ]
            .into_iter()
            .chain(compression.iter().copied()),
        );
        let mut ds = driver
            .create_with_band_type_with_options::<T, _>(
                path,
                grid.width,
                grid.height,
                bands,
                &options,
            )
            .in_file(
                path,
                "check that the output folder is writable and has free space",
            )?;
        ds.set_geo_transform(&grid.geo_transform())?;
        ds.set_projection(&grid.crs_wkt)?;
        if let Some(nd) = nodata {
            for b in 1..=bands {
                ds.rasterband(b)?.set_no_data_value(Some(nd))?;
            }
        }
        Ok(GridTiff {
            ds,
            path: path.to_path_buf(),
            flush_each_write: block.is_some(),
        })
    }

    pub fn write<T: GdalType + Copy>(
        &mut self,
        band: usize,
        window: Window,
        data: Vec<T>,
    ) -> Result<()> {
        let mut buf = Buffer::new((window.width, window.height), data);
        let fix = "check that the output folder has free space";
        let mut raster_band = self.ds.rasterband(band)?;
        raster_band
            .write(
                (window.x, window.y),
                (window.width, window.height),
                &mut buf,
            )
            .in_file(&self.path, fix)?;
        // Blocks land in the file in the order they are flushed. Left to the block cache,
        // that order follows the reader threads' timing, and the same run wrote different
        // bytes; flushed here, they land in write order. Tiles that do not cover whole
        // blocks are left to the cache: a flushed partial block would be written again.
        if !self.flush_each_write {
            return Ok(());
        }
        // SAFETY: the band handle is valid while `self.ds` lives.
        let rv = unsafe { gdal_sys::GDALFlushRasterCache(raster_band.c_rasterband()) };
        if rv != gdal_sys::CPLErr::CE_None {
            return Err(Error::failed_write(
                &self.path,
                format!("writing failed: {}", last_gdal_error()),
                fix,
            ));
        }
        Ok(())
    }

    pub fn close(self) -> Result<()> {
        self.ds.close()?;
        Ok(())
    }
}

/// What a raster holds, which decides how its Cloud-Optimized copy is compressed and how
/// its overviews are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CogContent {
    /// Codes (classes, flags): DEFLATE, overviews by the nearest code.
    Codes,
    /// Reflectance (the period composite): Zstandard at its fastest level with horizontal
    /// differencing, on two threads, overviews by the average of the observed pixels.
    Reflectance,
}

/// Rewrites a finished GeoTIFF as a Cloud-Optimized GeoTIFF in place (GDAL's COG driver:
/// 256 px blocks, overviews, the layout web maps and QGIS read over HTTP by range requests).
/// The same raster gives the same bytes. The copy is written beside the file and renamed
/// over it, so a failure leaves the original.
pub fn to_cog(path: &Path, content: CogContent) -> Result<()> {
    let fix = "check that the output folder is writable and has free space";
    let src = Dataset::open(path).in_file(path, fix)?;
    let driver = DriverManager::get_driver_by_name("COG")?;
    let options = match content {
        CogContent::Codes => RasterCreationOptions::from_iter([
            "COMPRESS=DEFLATE",
            "LEVEL=6",
            "BLOCKSIZE=256",
            "BIGTIFF=IF_SAFER",
            "RESAMPLING=NEAREST",
        ]),
        CogContent::Reflectance => RasterCreationOptions::from_iter([
            "COMPRESS=ZSTD",
            "LEVEL=1",
            "PREDICTOR=YES",
            "NUM_THREADS=2",
            "BLOCKSIZE=256",
            "BIGTIFF=IF_SAFER",
            "RESAMPLING=AVERAGE",
        ]),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("raster");
    let tmp = path.with_file_name(format!(".{name}.cog"));
    src.create_copy(&driver, &tmp, &options)
        .in_file(&tmp, fix)?;
    drop(src);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Runs GDAL's warper (`gdalwarp`'s `args`) from `sources` (later ones over earlier ones
/// where they overlap) into `out`; GDAL's message when it fails.
pub(crate) fn gdal_warp(
    sources: &[Dataset],
    args: &[String],
    out: &Path,
) -> std::result::Result<(), String> {
    let mut argv = gdal::cpl::CslStringList::new();
    for a in args {
        argv.add_string(a).map_err(|e| e.to_string())?;
    }
    let dest = std::ffi::CString::new(out.to_string_lossy().as_bytes())
        .map_err(|_| format!("{} holds a NUL byte", out.display()))?;
    // SAFETY: the options list and the destination name outlive the calls; the source handle
    // is a valid open dataset; the returned dataset is closed here and the options freed.
    unsafe {
        // A warning left by an earlier call must not be reported as this warp's failure.
        gdal_sys::CPLErrorReset();
        let opts = gdal_sys::GDALWarpAppOptionsNew(argv.as_ptr() as *mut _, std::ptr::null_mut());
        if opts.is_null() {
            return Err(format!("GDAL refused the warp options {args:?}"));
        }
        let mut handles: Vec<_> = sources.iter().map(|s| s.c_dataset()).collect();
        let mut usage_error = 0;
        let warped = gdal_sys::GDALWarp(
            dest.as_ptr(),
            std::ptr::null_mut(),
            handles.len() as std::ffi::c_int,
            handles.as_mut_ptr(),
            opts,
            &mut usage_error,
        );
        gdal_sys::GDALWarpAppOptionsFree(opts);
        if warped.is_null() {
            return Err(last_gdal_error());
        }
        gdal_sys::GDALClose(warped);
    }
    Ok(())
}

/// Reads a whole single-band raster (small rasters only: labels, reference masks).
pub fn read_band_f64(path: &Path, band: usize) -> Result<(usize, usize, Vec<f64>)> {
    let ds = Dataset::open(path).in_file(path, "check the path and that GDAL can read it")?;
    let (w, h) = ds.raster_size();
    let buf = ds
        .rasterband(band)?
        .read_as::<f64>((0, 0), (w, h), (w, h), None)?;
    Ok((w, h, buf.into_shape_and_vec().1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a 1024 x 256 raster as four tiles, east to west, and gives its bytes.
    fn written_east_to_west(path: &Path) -> Vec<u8> {
        let crs = SpatialRef::from_epsg(32650).unwrap().to_wkt().unwrap();
        let grid = JobGrid::covering(crs, (0.0, 0.0, 10240.0, 2560.0), 10.0, 256, 0).unwrap();
        let mut tiff = GridTiff::create::<u16>(path, &grid, 1, None).unwrap();
        for tile in grid.tiles().iter().rev() {
            let w = tile.core;
            let values = (0..w.len()).map(|i| (i as u16) ^ (w.x as u16)).collect();
            tiff.write(1, w, values).unwrap();
        }
        tiff.close().unwrap();
        std::fs::read(path).unwrap()
    }

    #[test]
    fn blocks_divide_the_tiles() {
        assert_eq!(block_side(512), Some(256));
        assert_eq!(block_side(384), Some(128));
        assert_eq!(block_side(64), Some(64));
        assert_eq!(block_side(16), Some(16));
        assert_eq!(block_side(100), None);
    }

    #[test]
    fn a_rasters_bytes_do_not_depend_on_the_block_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let roomy = written_east_to_west(&tmp.path().join("roomy.tif"));
        // A cache of one block makes GDAL evict (and write) each tile's blocks as the next
        // tile comes in, while a roomy one keeps them all to the end.
        // SAFETY: plain setters of GDAL's process-wide cache size.
        let before = unsafe { gdal_sys::GDALGetCacheMax64() };
        unsafe { gdal_sys::GDALSetCacheMax64(256 * 256 * 2) };
        let tight = written_east_to_west(&tmp.path().join("tight.tif"));
        unsafe { gdal_sys::GDALSetCacheMax64(before) };
        assert!(
            roomy == tight,
            "the file's bytes follow the cache's flushing order"
        );
    }
}
