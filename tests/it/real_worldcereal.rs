//! The index baseline's land-cover accuracy on real Sentinel-2 time series: the WorldCereal
//! patches of Flanders (annual crops, grassland, built-up from the parcel register), run
//! through the real job (folder of acquisitions, SCL masking, bimonthly composites, archive).
//! Skips with a message when the data is absent. Reproduce the README figures:
//! `cargo test --release --test it real_worldcereal -- --nocapture`.

use gdal::vector::{FieldValue, Geometry};

use gengbao::domain::period::Period;
use gengbao::evaluate::{class_score, ClassScore};
use gengbao::geo::raster::read_band_f64;
use gengbao::geo::vector::{write_layer, Areas, FieldSpec, Format};
use gengbao::job::config::JobConfig;
use gengbao::job::run::{run_period, RunOptions};
use std::path::{Path, PathBuf};

fn data_dir() -> Option<PathBuf> {
    crate::common::real_data("worldcereal-s2", "00002806639B424A/B02.tif")
}

/// WorldCereal land-cover code -> gengbao class (11 temporary crops, 13 grassland, 60 built-up).
fn to_gengbao(code: f64) -> f64 {
    match code as u32 {
        11 => 1.0,
        13 => 5.0,
        60 => 3.0,
        _ => 0.0,
    }
}

/// Which land the job watches.
enum Watched {
    /// One farmland polygon covering the patch.
    Everything,
    /// The parcel register's annual crops and meadows (labels 11 and 13) as farmland parcels.
    CropsAndMeadows,
}

/// Unpacks one WorldCereal patch (one file per band, one GDAL band per date) into a job: an
/// acquisition folder per date, a county covering the patch and the watched farmland.
fn make_job(patch: &Path, dir: &Path, watched: Watched) -> JobConfig {
    let profile = gengbao::geo::sensor::SensorProfile::by_name("sentinel2-l2a").unwrap();
    gengbao::train::unpack_band_stacks(patch, profile, dir).unwrap();
    let first = gdal::Dataset::open(patch.join("B02.tif")).unwrap();
    let (gt, (w, h)) = (first.geo_transform().unwrap(), first.raster_size());
    let srs = first.spatial_ref().unwrap();
    let (x0, y0, x1, y1) = (
        gt[0],
        gt[3] + gt[5] * h as f64,
        gt[0] + gt[1] * w as f64,
        gt[3],
    );
    let square = || {
        Geometry::from_wkt(&format!(
            "POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"
        ))
        .unwrap()
    };
    let text = |name| FieldSpec {
        name,
        ty: gdal_sys::OGRFieldType::OFTString,
        width: 0,
        alias: "",
    };
    let s = |v: &str| FieldValue::StringValue(v.into());
    write_layer(
        &dir.join("admin.gpkg"),
        Format::GeoPackage,
        "counties",
        &srs,
        Areas::Polygons,
        &[text("XZQDM"), text("XZQMC")],
        [(square(), vec![s("000001"), s("Flanders")])],
        "UTF-8",
    )
    .unwrap();
    let parcels = match watched {
        Watched::Everything => vec![square()],
        Watched::CropsAndMeadows => crops_and_meadows(patch, dir),
    };
    write_layer(
        &dir.join("farmland.gpkg"),
        Format::GeoPackage,
        "farmland",
        &srs,
        Areas::Polygons,
        &[text("BSM"), text("DLBM")],
        parcels
            .into_iter()
            .enumerate()
            .map(|(k, g)| (g, vec![s(&(k + 1).to_string()), s("0103")])),
        "UTF-8",
    )
    .unwrap();
    let epsg = srs.auth_code().unwrap();
    let cfg = gengbao::job::config::EXAMPLE
        .replace("EPSG:32650", &format!("EPSG:{epsg}"))
        .replace("# add_offset = 0 ", "add_offset = 0 ")
        .replace("tile_size = 512 ", "tile_size = 64 ")
        .replace("basic_field = \"JBNT\"", "")
        .replace("kind = \"auto\"", "kind = \"index\"");
    std::fs::write(dir.join("job.toml"), cfg).unwrap();
    JobConfig::load(&dir.join("job.toml")).unwrap()
}

/// The areas the parcel register labels annual crop or grassland, as polygons.
fn crops_and_meadows(patch: &Path, dir: &Path) -> Vec<Geometry> {
    let labels = gdal::Dataset::open(patch.join("label_LC.tif")).unwrap();
    let (w, h) = labels.raster_size();
    let values = read_band_f64(&patch.join("label_LC.tif"), 1).unwrap().2;
    let key_path = dir.join("crops_and_meadows.tif");
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut key = driver
        .create_with_band_type::<u16, _>(&key_path, w, h, 1)
        .unwrap();
    key.set_geo_transform(&labels.geo_transform().unwrap())
        .unwrap();
    key.set_projection(&labels.projection()).unwrap();
    let mut buffer = gdal::raster::Buffer::new(
        (w, h),
        values
            .iter()
            .map(|&v| u16::from(v == 11.0 || v == 13.0))
            .collect(),
    );
    key.rasterband(1)
        .unwrap()
        .write((0, 0), (w, h), &mut buffer)
        .unwrap();
    drop(key);
    gengbao::geo::vectorise::polygonize(&key_path, &dir.join("crops_and_meadows.fgb"))
        .unwrap()
        .map(|p| p.unwrap().1)
        .collect()
}

#[test]
fn index_baseline_land_cover_on_worldcereal_flanders() {
    let Some(root) = data_dir() else {
        eprintln!("SKIPPED: ../shared/data/worldcereal-s2 not found (set GENGBAO_REAL_DATA to the data folder)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    println!("| patch | period | pixels | OA | kappa | F1 annual crop | F1 grass | F1 built-up |\n|---|---|---|---|---|---|---|---|");
    let mut pooled_truth = Vec::new();
    let mut pooled_pred = Vec::new();
    // The labels are one crop season: 2018 for the first patch, 2019 for the second.
    for (patch, year) in [("00002806639B424A", 2018), ("0000280849BAC91C", 2019)] {
        let cfg = make_job(
            &root.join(patch),
            &tmp.path().join(patch),
            Watched::Everything,
        );
        let truth: Vec<f64> = read_band_f64(&root.join(patch).join("label_LC.tif"), 1)
            .unwrap()
            .2
            .into_iter()
            .map(to_gengbao)
            .collect();
        let first = Period {
            year: year - 1,
            index: 5,
        };
        for k in 0..8 {
            let p = first.offset(k);
            let s = run_period(&cfg, p, &RunOptions::quiet());
            let Ok(_) = s else { continue };
            // Score the periods of the labelled season that have half a year of history.
            if p.year != year || k < 2 {
                continue;
            }
            let pred = read_band_f64(&cfg.layout().period(p).class(), 1).unwrap().2;
            let sc: ClassScore = class_score(&truth, &pred);
            let f = |c: u8| sc.f1.get(&c).map_or("-".to_string(), |v| format!("{v:.2}"));
            println!(
                "| {patch} | {p} | {} | {:.3} | {:.3} | {} | {} | {} |",
                sc.pixels,
                sc.overall_accuracy,
                sc.kappa,
                f(1),
                f(5),
                f(3)
            );
            pooled_truth.extend_from_slice(&truth);
            pooled_pred.extend(pred);
        }
    }
    let all = class_score(&pooled_truth, &pooled_pred);
    println!(
        "pooled: {} pixel-periods, OA {:.3}, kappa {:.3}, F1 {:?}",
        all.pixels, all.overall_accuracy, all.kappa, all.f1
    );
    println!(
        "confusion (rows truth 1..6, columns predicted 1..6): {:?}",
        all.confusion
    );
    assert!(all.pixels > 10_000, "too few labelled pixels scored");
    // Annual crops are the watched class: the baseline must recognise most of them.
    assert!(
        all.f1.get(&1).copied().unwrap_or(0.0) > 0.5,
        "annual crop F1 {:?}",
        all.f1.get(&1)
    );
}

/// The parcel register's crops and meadows, watched through the labelled season by the default
/// job (the learned model, default rules): nothing was built on them, so every FNH patch is a
/// false alarm. A ploughed or harvested field is bare for a period; FNH waits for a second
/// one (`fnh_min_periods = 2`).
#[test]
fn ploughed_fields_are_not_flagged_as_built_on_a_real_series() {
    let Some(root) = data_dir() else {
        eprintln!("SKIPPED: ../shared/data/worldcereal-s2 not found (set GENGBAO_REAL_DATA to the data folder)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (mut periods, mut patches, mut area) = (0, 0, 0.0);
    for (patch, year) in [("00002806639B424A", 2018), ("0000280849BAC91C", 2019)] {
        let cfg = make_job(
            &root.join(patch),
            &tmp.path().join(patch),
            Watched::CropsAndMeadows,
        );
        let text = std::fs::read_to_string(&cfg.source)
            .unwrap()
            .replace("kind = \"index\"", "kind = \"auto\"");
        std::fs::write(&cfg.source, text).unwrap();
        let cfg = JobConfig::load(&cfg.source).unwrap();
        // From the series' first whole period to its last: a year and a bit, so that the
        // last three periods are compared with the same season a year before.
        let first = Period {
            year: year - 1,
            index: 4,
        };
        for k in 0..9 {
            let p = first.offset(k);
            let Ok(summary) = run_period(&cfg, p, &RunOptions::quiet()) else {
                continue;
            };
            periods += 1;
            let dir = cfg.layout().period(p).dir().to_path_buf();
            let mut counts = [0usize; 3];
            for (kind, geometry) in gengbao::evaluate::read_period_patches(&dir).unwrap() {
                counts[kind as usize - 1] += 1;
                if kind == gengbao::domain::change::ChangeType::FNH {
                    patches += 1;
                    area += geometry.area();
                }
            }
            println!(
                "{patch} {p}: FNH {} FLH {} PH {} patches; compared with {:?}",
                counts[0], counts[1], counts[2], summary.change_decision.compared_with
            );
        }
    }
    println!("{periods} periods: {patches} FNH patches, {area:.0} m²");
    assert!(periods >= 16, "only {periods} periods ran");
    // Flagged at once (`fnh_min_periods = 1`), the same periods gave 20 FNH patches over
    // 4.9 ha; waiting for a second bare period, 5 over 0.36 ha (field edges along roads).
    assert!(
        patches <= 12 && area < 20_000.0,
        "{patches} FNH patches ({area:.0} m²) on fields and meadows"
    );
}

/// Real Sentinel-2 L2A bands (WorldCereal's first Flanders patch, 2017-2018) repackaged as the
/// products the hubs deliver: SAFE folders and zips of JPEG 2000 bands, of processing
/// baselines before and after 04.00 (their DNs without and with the +1000). The job pointed
/// at them, with no offset set, gives the classes, flags and composites of the same bands in
/// folders run with `add_offset = 0`, in every period.
#[test]
fn real_bands_delivered_as_safe_products_give_the_band_folders_results() {
    let Some(root) = data_dir() else {
        eprintln!("SKIPPED: ../shared/data/worldcereal-s2 not found (set GENGBAO_REAL_DATA to the data folder)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("job");
    let cfg = make_job(&root.join("00002806639B424A"), &dir, Watched::Everything);
    let downloads = tmp.path().join("downloads");
    let products = crate::catalog::as_safe_products(
        &dir.join("imagery"),
        &downloads,
        0,
        |k| k % 3 == 0,
        |k| k % 2 == 1,
    );
    let text = std::fs::read_to_string(dir.join("job.toml"))
        .unwrap()
        .replace("add_offset = 0 ", "# add_offset = 0 ")
        .replace(
            "folder = \"imagery\"",
            &format!("folder = {:?}", downloads.display().to_string()),
        )
        .replace("output = \"out\"", "output = \"out-safe\"");
    assert!(text.contains("out-safe") && text.contains("# add_offset = 0 "));
    std::fs::write(dir.join("job-safe.toml"), text).unwrap();
    let safe_cfg = JobConfig::load(&dir.join("job-safe.toml")).unwrap();

    let profile = gengbao::geo::sensor::SensorProfile::by_name("sentinel2-l2a").unwrap();
    let catalog =
        gengbao::geo::imagery::Catalog::scan(&downloads, profile, &Default::default()).unwrap();
    assert_eq!(catalog.acquisitions.len(), products);
    assert!(catalog.damaged.is_empty() && catalog.unplaced.is_empty());
    let mut compared = 0;
    for p in catalog.periods() {
        let from_bands = run_period(&cfg, p, &RunOptions::quiet());
        let from_products = run_period(&safe_cfg, p, &RunOptions::quiet());
        assert_eq!(from_bands.is_ok(), from_products.is_ok(), "{p}");
        if from_bands.is_err() {
            continue;
        }
        for file in ["class.tif", "flags.tif", "composite.tif"] {
            let a = std::fs::read(cfg.layout().period(p).dir().join(file)).unwrap();
            let b = std::fs::read(safe_cfg.layout().period(p).dir().join(file)).unwrap();
            assert!(
                a == b,
                "{p} {file} differs between band folders and products"
            );
        }
        compared += 1;
    }
    assert!(compared >= 5, "{compared} periods compared");
}
