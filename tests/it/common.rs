//! Helpers shared by the behaviour tests: small generated cities and whole-job runs.

use gengbao::job::config::JobConfig;
use gengbao::job::run::{run_period, RunOptions};
use gengbao::samples::{generate, SampleCity, SampleOptions};
use std::path::{Path, PathBuf};

pub fn city(dir: &Path, size: usize, periods: usize, tile_size: usize) -> SampleCity {
    seeded_city(dir, size, periods, tile_size, 7)
}

pub fn seeded_city(
    dir: &Path,
    size: usize,
    periods: usize,
    tile_size: usize,
    seed: u64,
) -> SampleCity {
    generate(
        dir,
        &SampleOptions {
            size,
            periods,
            tile_size,
            seed,
            ..Default::default()
        },
    )
    .expect("generate city")
}

/// Runs every period of the city in order; returns the config used.
pub fn run_all(city: &SampleCity, config_text: Option<String>) -> JobConfig {
    let path = city.job_config.clone();
    if let Some(text) = config_text {
        std::fs::write(&path, text).unwrap();
    }
    let cfg = JobConfig::load(&path).expect("config");
    for p in &city.periods {
        run_period(&cfg, *p, &RunOptions::quiet()).expect("run period");
    }
    cfg
}

pub fn config_text(city: &SampleCity) -> String {
    std::fs::read_to_string(&city.job_config).unwrap()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Every file below `dir`, relative, sorted.
/// The first band of a raster whole, as 16-bit values: (width, height, values).
pub fn band_u16(path: &Path) -> (usize, usize, Vec<u16>) {
    let ds = gdal::Dataset::open(path).unwrap();
    let (w, h) = ds.raster_size();
    let values = ds
        .rasterband(1)
        .unwrap()
        .read_as::<u16>((0, 0), (w, h), (w, h), None)
        .unwrap()
        .into_shape_and_vec()
        .1;
    (w, h, values)
}

/// The entries of a folder, in name order.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    found.sort();
    found
}

pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(
                    files_below(&p)
                        .into_iter()
                        .map(|f| Path::new(p.file_name().unwrap()).join(f)),
                );
            } else {
                out.push(PathBuf::from(p.file_name().unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Every file below `dir` with its bytes and modification time, to prove nothing changed.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, std::time::SystemTime)> {
    files_below(dir)
        .into_iter()
        .map(|f| {
            let full = dir.join(&f);
            (
                f,
                std::fs::read(&full).unwrap(),
                std::fs::metadata(&full).unwrap().modified().unwrap(),
            )
        })
        .collect()
}

/// Writes a u16 GeoTIFF in UTM 50N with its top-left corner at (500000, 3500000):
/// `value(band, pixel)` fills it (bands from 1, pixels row by row).
pub fn geotiff(
    path: &Path,
    size: usize,
    bands: usize,
    pixel_m: f64,
    value: impl Fn(usize, usize) -> u16,
) {
    let drv = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut ds = drv
        .create_with_band_type::<u16, _>(path, size, size, bands)
        .unwrap();
    ds.set_geo_transform(&[500000.0, pixel_m, 0.0, 3500000.0, 0.0, -pixel_m])
        .unwrap();
    ds.set_spatial_ref(&gdal::spatial_ref::SpatialRef::from_epsg(32650).unwrap())
        .unwrap();
    for b in 1..=bands {
        let mut buf = gdal::raster::Buffer::new(
            (size, size),
            (0..size * size).map(|i| value(b, i)).collect(),
        );
        ds.rasterband(b)
            .unwrap()
            .write((0, 0), (size, size), &mut buf)
            .unwrap();
    }
}

/// A folder of `../shared/data` (or of `GENGBAO_REAL_DATA`), when `probe` exists in it.
pub fn real_data(folder: &str, probe: &str) -> Option<PathBuf> {
    let root = std::env::var_os("GENGBAO_REAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let dir = root.join(folder);
    dir.join(probe).exists().then_some(dir)
}

/// The area of `footprint` that patches of `kind` cover (m²).
pub fn covered_area(
    patches: &[(gengbao::domain::change::ChangeType, gdal::vector::Geometry)],
    kind: gengbao::domain::change::ChangeType,
    footprint: &gdal::vector::Geometry,
) -> f64 {
    patches
        .iter()
        .filter(|(t, _)| *t == kind)
        .filter_map(|(_, g)| g.intersection(footprint))
        .map(|g| g.area())
        .sum()
}

/// The acquisitions of `period` in the city's imagery, as the job's catalog finds them.
pub fn looks(
    city_dir: &Path,
    cfg: &JobConfig,
    period: gengbao::Period,
) -> Vec<gengbao::geo::imagery::Acquisition> {
    let profile = gengbao::geo::sensor::SensorProfile::by_name(&cfg.imagery.sensor).unwrap();
    let catalog = gengbao::geo::imagery::Catalog::scan(
        &city_dir.join("imagery"),
        profile,
        &Default::default(),
    )
    .unwrap();
    catalog.in_period(period).into_iter().cloned().collect()
}

/// A raster or vector file opened for writing in place.
pub fn open_for_update(path: &Path) -> gdal::Dataset {
    gdal::Dataset::open_ex(
        path,
        gdal::DatasetOptions {
            open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Turns the western `share` of every look of `period` in the city's imagery to cloud (SCL 9),
/// as a late or wrong delivery would; returns how many looks were clouded.
pub fn cloud_west(city_dir: &Path, cfg: &JobConfig, period: gengbao::Period, share: f64) -> usize {
    let looks = looks(city_dir, cfg, period);
    for acq in &looks {
        let ds = open_for_update(&acq.files["SCL"]);
        let mut band = ds.rasterband(1).unwrap();
        let (w, h) = band.size();
        let west = ((w as f64 * share).round() as usize).min(w);
        let mut cloud = gdal::raster::Buffer::new((west, h), vec![9u8; west * h]);
        band.write((0, 0), (west, h), &mut cloud).unwrap();
    }
    looks.len()
}

/// Packs the files of `folder` (or only `file` of it) into the `.tar.gz` at `tar`, as the
/// Gaofen data centres deliver products.
pub fn pack(folder: &Path, file: Option<&str>, tar: &Path) {
    let files: Vec<std::ffi::OsString> = match file {
        Some(f) => vec![f.into()],
        None => std::fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect(),
    };
    let packed = std::process::Command::new("tar")
        .arg("czf")
        .arg(tar)
        .arg("-C")
        .arg(folder)
        .args(files)
        .status()
        .unwrap();
    assert!(packed.success());
}

/// Serves the files below `root` over HTTP on 127.0.0.1 for as long as the tests run, as a
/// static file host or an object store does for GDAL's `/vsicurl/`: GET and HEAD, byte
/// ranges, kept-alive connections, 404 for what is not a file. Gives the base address
/// (`http://127.0.0.1:PORT/`) and the count of requests answered.
pub fn serve_files(root: &Path) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{atomic::AtomicUsize, Arc};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let answered = Arc::new(AtomicUsize::new(0));
    let (root, count) = (root.to_path_buf(), answered.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (root, count) = (root.clone(), count.clone());
            std::thread::spawn(move || answer_requests(stream, &root, &count));
        }
    });
    (base, answered)
}

fn answer_requests(
    stream: std::net::TcpStream,
    root: &Path,
    count: &std::sync::atomic::AtomicUsize,
) {
    use std::io::{BufRead, Write};
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut range: Option<(u64, Option<u64>)> = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("range") {
                    range = value
                        .trim()
                        .strip_prefix("bytes=")
                        .and_then(|r| r.split_once('-'))
                        .map(|(a, b)| (a.parse().unwrap_or(0), b.parse().ok()));
                }
            }
        }
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut words = request.split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
        let relative = target.split('?').next().unwrap().trim_start_matches('/');
        let file = root.join(relative);
        let body = if file.is_file() {
            std::fs::read(&file).ok()
        } else {
            None
        };
        let (head, slice) = match &body {
            None => (
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
                &[][..],
            ),
            Some(bytes) => {
                let len = bytes.len() as u64;
                match range {
                    Some((start, _)) if start >= len => (
                        format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n"),
                        &[][..],
                    ),
                    Some((start, end)) => {
                        let end = end.unwrap_or(len - 1).min(len - 1);
                        (
                            format!(
                                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{end}/{len}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n\r\n",
                                end - start + 1
                            ),
                            &bytes[start as usize..=end as usize],
                        )
                    }
                    None => (
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\n\r\n"),
                        &bytes[..],
                    ),
                }
            }
        };
        let sent = out.write_all(head.as_bytes()).and_then(|_| {
            if method == "HEAD" {
                Ok(())
            } else {
                out.write_all(slice)
            }
        });
        if sent.is_err() {
            return;
        }
    }
}
