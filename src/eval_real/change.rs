//! The real change pairs: each scene through `detect` (with the spectral decision, and with
//! the classes alone), and the classical yardstick on the same pixels.
//!
//! Scenes (formats and traps from `../shared/data/README.md`):
//! - `landsat-taizhou`: Landsat TM/ETM+ DNs, 2000 → 2003, ENVI files; labels `change.bmp`
//!   (changed) and `unchanged.bmp` (unchanged), white on the image's own pixel grid.
//! - `oscd-train/<city>`: Sentinel-2 L1C band files in degrees (`imgs_1`, `imgs_2`), products
//!   from before 2022 (no −1000 offset); `cm/<city>-cm.tif` 1 = no change, 2 = change, on the
//!   pixels of `imgs_1/*_B02.tif` without georeferencing (given that file's here).
//!
//! A pixel counts as changed by gengbao when `flags.tif` is 1..3, or when the two class rasters
//! differ (both non-zero); as the data README's protocol has it, the better of the two
//! readings is the scene's figure, for either run of detect.

use super::{digital_numbers, ChangeScene};
use crate::detect::{detect, DetectOptions};
use crate::error::{Error, GdalContext, Result};
use crate::evaluate::{binary_score, change_vector_otsu, ir_mad, BinaryScore};
use crate::geo::grid::JobGrid;
use crate::geo::raster::{open_georeferenced, read_band_f64, warp_onto, Resample};
use crate::geo::sensor::SensorProfile;
use crate::geo::user_image;
use std::path::{Path, PathBuf};

/// One labelled pair, as the harness runs it.
pub(super) struct Scene {
    pub set: &'static str,
    pub name: String,
    pub before: PathBuf,
    pub after: PathBuf,
    pub sensor: &'static str,
    pub add_offset: Option<f32>,
    pub labels: Labels,
    /// Read only blue, green, red and NIR (B02, B03, B04, B08), stacked into one file, as a
    /// camera without shortwave infrared: Gaofen's path (the four-band model, the spectral
    /// decision on four bands), on real change.
    pub four_bands: bool,
}

/// Where a scene's reference change map is and how it reads.
pub(super) enum Labels {
    /// White pixels of a changed and an unchanged mask, on the before image's own pixels.
    Masks {
        changed: PathBuf,
        unchanged: PathBuf,
    },
    /// 1 = unchanged, 2 = changed on the pixels of `georeferencing`, a raster without its
    /// own georeferencing.
    Oscd {
        map: PathBuf,
        georeferencing: PathBuf,
    },
}

/// The change scenes found under `data`, Taizhou first, then the OSCD cities by name;
/// `cities` limits OSCD to those named.
pub(super) fn scenes(data: &Path, cities: Option<&[String]>) -> Result<Vec<Scene>> {
    let mut out = Vec::new();
    let taizhou = data.join("landsat-taizhou");
    if taizhou.join("2000TM").exists() {
        out.push(Scene {
            set: "landsat-taizhou",
            name: "taizhou".into(),
            before: taizhou.join("2000TM"),
            after: taizhou.join("2003TM"),
            sensor: "landsat-tm-dn",
            add_offset: None,
            labels: Labels::Masks {
                changed: taizhou.join("change.bmp"),
                unchanged: taizhou.join("unchanged.bmp"),
            },
            four_bands: false,
        });
    }
    let oscd = data.join("oscd-train");
    if oscd.is_dir() {
        let mut cities_found: Vec<String> = std::fs::read_dir(&oscd)
            .map_err(|e| Error::io(&oscd, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("imgs_1").is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        cities_found.sort();
        if let Some(unknown) = cities.and_then(|c| c.iter().find(|c| !cities_found.contains(c))) {
            return Err(Error::usage(
                format!("--city {unknown}: no such OSCD city in {}", oscd.display()),
                format!("name one of: {}", cities_found.join(", ")),
            ));
        }
        let wanted: Vec<&String> = cities_found
            .iter()
            .filter(|city| cities.is_none_or(|c| c.contains(city)))
            .collect();
        // All thirteen bands, then the same cities as a four-band camera would see them.
        for four_bands in [false, true] {
            for city in &wanted {
                let dir = oscd.join(city);
                let b02 = user_image::band_files(&dir.join("imgs_1"), &["B02"])?.remove(0);
                out.push(Scene {
                    set: if four_bands {
                        "oscd-train-four-bands"
                    } else {
                        "oscd-train"
                    },
                    name: city.to_string(),
                    before: dir.join("imgs_1"),
                    after: dir.join("imgs_2"),
                    sensor: if four_bands {
                        "gf2-pms"
                    } else {
                        "sentinel2-l1c"
                    },
                    add_offset: Some(0.0),
                    labels: Labels::Oscd {
                        map: dir.join("cm").join(format!("{city}-cm.tif")),
                        georeferencing: b02,
                    },
                    four_bands,
                });
            }
        }
    }
    Ok(out)
}

/// Runs one scene: detect with the spectral decision, detect on the classes alone, and the
/// yardstick, scored on the labelled pixels. `work` receives detect's outputs.
pub(super) fn run_scene(scene: &Scene, work: &Path) -> Result<ChangeScene> {
    std::fs::create_dir_all(work).map_err(|e| Error::io(work, e))?;
    let (before, after) = if scene.four_bands {
        (
            four_band_stack(
                &scene.before,
                &work.join(format!("{}-before.vrt", scene.name)),
            )?,
            four_band_stack(
                &scene.after,
                &work.join(format!("{}-after.vrt", scene.name)),
            )?,
        )
    } else {
        (scene.before.clone(), scene.after.clone())
    };
    let run = |classes_only: bool, out: PathBuf| {
        detect(&DetectOptions {
            sensor: Some(scene.sensor.into()),
            add_offset: scene.add_offset,
            classes_only,
            quiet: true,
            ..DetectOptions::new(before.clone(), after.clone(), out)
        })
    };
    let out = work.join(&scene.name);
    let summary = run(false, out.clone())?;
    let classes_out = work.join(format!("{}-classes-only", scene.name));
    run(true, classes_out.clone())?;
    let grid = JobGrid::of_dataset(
        &open_georeferenced(&out.join("class_before.tif"))?,
        &out.join("class_before.tif"),
    )?;
    let (changed, unchanged) = labels_on(&scene.labels, &grid, work)?;
    let labelled = changed
        .iter()
        .zip(&unchanged)
        .filter(|(c, u)| **c || **u)
        .count();
    if labelled == 0 {
        return Err(Error::input(
            scene.before.as_path(),
            "no labelled pixel falls on the image",
            "check the scene's reference masks",
        ));
    }
    let score = |predicted: &[bool]| binary_score(predicted, &changed, &unchanged);
    let [flags, classes] = detected(&out)?;
    let (gengbao_flags, gengbao_classes) = (score(&flags), score(&classes));
    let [classes_only_flags, classes_only] = detected(&classes_out)?;
    let [cva_otsu, ir_mad] =
        yardsticks_on(scene, &before, &after, &grid)?.map(|changed| score(&changed));
    Ok(ChangeScene {
        set: scene.set.into(),
        scene: scene.name.clone(),
        labelled_pixels: labelled,
        changed_share: changed.iter().filter(|c| **c).count() as f64 / labelled as f64,
        gengbao: best(&gengbao_flags, &gengbao_classes).clone(),
        gengbao_flags,
        gengbao_classes,
        classes_only: best(&score(&classes_only_flags), &score(&classes_only)).clone(),
        cva_otsu,
        ir_mad,
        threshold: summary.change_threshold,
        classifier: summary.classifier,
    })
}

/// Blue, green, red and NIR of a folder of Sentinel-2 band files stacked into one virtual
/// raster at `out`, in a four-band camera's order.
fn four_band_stack(folder: &Path, out: &Path) -> Result<PathBuf> {
    let fix = "restore the city's band files (B02, B03, B04 and B08 at 10 m)";
    let sources = user_image::band_files(folder, &["B02", "B03", "B04", "B08"])?
        .iter()
        .map(|f| open_georeferenced(f))
        .collect::<Result<Vec<_>>>()?;
    let opts = gdal::programs::raster::BuildVRTOptions::new(["-separate"]).in_file(folder, fix)?;
    gdal::programs::raster::build_vrt(Some(out), &sources, Some(opts)).in_file(folder, fix)?;
    Ok(out.to_path_buf())
}

/// The better (by F1) of two scores; an undefined F1 loses.
fn best<'a>(a: &'a BinaryScore, b: &'a BinaryScore) -> &'a BinaryScore {
    if b.f1 > a.f1 || a.f1.is_nan() {
        b
    } else {
        a
    }
}

/// gengbao's changed pixels in a detect output: by flag (1..3), and by class (both classes
/// known and different).
fn detected(out: &Path) -> Result<[Vec<bool>; 2]> {
    let band = |name: &str| Ok::<_, Error>(read_band_f64(&out.join(name), 1)?.2);
    let flags = band("flags.tif")?;
    let (before, after) = (band("class_before.tif")?, band("class_after.tif")?);
    Ok([
        flags.iter().map(|&f| (1.0..=3.0).contains(&f)).collect(),
        before
            .iter()
            .zip(&after)
            .map(|(&b, &a)| b != 0.0 && a != 0.0 && b != a)
            .collect(),
    ])
}

/// The reference's changed and unchanged pixels on `grid`.
fn labels_on(labels: &Labels, grid: &JobGrid, work: &Path) -> Result<(Vec<bool>, Vec<bool>)> {
    match labels {
        Labels::Masks { changed, unchanged } => {
            let white = |path: &Path| -> Result<Vec<bool>> {
                let (w, h, v) = read_band_f64(path, 1)?;
                if (w, h) != (grid.width, grid.height) {
                    return Err(Error::input(
                        path,
                        format!(
                            "is {w} x {h} px, the image {} x {}",
                            grid.width, grid.height
                        ),
                        "use the masks made for this image",
                    ));
                }
                Ok(v.iter().map(|&x| x > 127.0).collect())
            };
            Ok((white(changed)?, white(unchanged)?))
        }
        Labels::Oscd {
            map,
            georeferencing,
        } => {
            let georeferenced = work.join(format!(
                "{}-georeferenced.tif",
                map.file_stem().and_then(|s| s.to_str()).unwrap_or("cm")
            ));
            georeference_like(map, georeferencing, &georeferenced)?;
            let v = warp_onto(
                &georeferenced,
                grid,
                grid.full_window(),
                Resample::Nearest,
                Some(0.0),
            )?;
            let v = v.as_slice().expect("a read stack is in standard layout");
            Ok((
                v.iter().map(|&x| x == 2.0).collect(),
                v.iter().map(|&x| x == 1.0).collect(),
            ))
        }
    }
}

/// Writes `map`'s first band with the georeferencing of `like` (same pixel size).
fn georeference_like(map: &Path, like: &Path, out: &Path) -> Result<()> {
    let (w, h, values) = read_band_f64(map, 1)?;
    let like_ds = open_georeferenced(like)?;
    if like_ds.raster_size() != (w, h) {
        return Err(Error::input(
            map,
            format!(
                "is {w} x {h} px but {} is {:?}",
                like.display(),
                like_ds.raster_size()
            ),
            "use the change map made for this city's images",
        ));
    }
    let driver = gdal::DriverManager::get_driver_by_name("GTiff")
        .in_file(out, "GDAL's GeoTIFF driver is missing")?;
    let fix = "check that the work folder is writable";
    let mut ds = driver
        .create_with_band_type::<u8, _>(out, w, h, 1)
        .in_file(out, fix)?;
    ds.set_geo_transform(&like_ds.geo_transform()?)
        .in_file(out, fix)?;
    ds.set_projection(&like_ds.projection()).in_file(out, fix)?;
    let mut band = ds.rasterband(1).in_file(out, fix)?;
    band.set_no_data_value(Some(0.0)).in_file(out, fix)?;
    let bytes: Vec<u8> = values.iter().map(|&v| v as u8).collect();
    let mut buffer = gdal::raster::Buffer::new((w, h), bytes);
    band.write((0, 0), (w, h), &mut buffer).in_file(out, fix)?;
    Ok(())
}

/// The yardsticks' changed pixels: both images read onto `grid` as detect reads them (band
/// stacks, bilinear), then [`change_vector_otsu`] and [`ir_mad`].
fn yardsticks_on(
    scene: &Scene,
    before: &Path,
    after: &Path,
    grid: &JobGrid,
) -> Result<[Vec<bool>; 2]> {
    let profile = SensorProfile::by_name(scene.sensor)?;
    let read = |path: &Path, name: &str| digital_numbers(path, profile, None, grid, name);
    let before = read(before, "yardstick-before")?;
    let after = read(after, "yardstick-after")?;
    Ok([
        change_vector_otsu(before.view(), after.view()),
        ir_mad(before.view(), after.view()),
    ])
}
