//! `gengbao detect` on the real Landsat pair of Taizhou (2000 -> 2003), scored against the
//! reference change / no-change masks, beside change vector analysis with an Otsu threshold
//! computed on the same reflectance. Skips with a message when the data is absent.
//! Reproduce the README figures: `cargo test --release --test real_taizhou -- --nocapture`.

use gengbao::detect::{detect, DetectOptions};
use gengbao::domain::change::change_vector_otsu;
use gengbao::evaluate::{binary_score, BinaryScore};
use gengbao::geo::grid::JobGrid;
use gengbao::geo::imagery::{dark_objects, to_reflectance};
use gengbao::geo::raster::{read_band_f64, warp_onto, Resample};
use gengbao::geo::sensor::SensorProfile;
use std::path::{Path, PathBuf};

fn data_dir() -> Option<PathBuf> {
    crate::common::real_data("landsat-taizhou", "2000TM")
}

fn reflectance(path: &Path, profile: &SensorProfile) -> Vec<Vec<f32>> {
    let grid = JobGrid::of_dataset(&gdal::Dataset::open(path).unwrap(), path).unwrap();
    let dark = dark_objects(path, profile).unwrap();
    let mut bands = warp_onto(
        path,
        &grid,
        grid.full_window(),
        Resample::Nearest,
        Some(profile.nodata),
    )
    .unwrap();
    for (i, mut b) in bands.outer_iter_mut().enumerate() {
        let b = b.as_slice_mut().unwrap();
        to_reflectance(profile, i, profile.add_offset - dark[i], b);
    }
    bands
        .outer_iter()
        .map(|b| b.iter().copied().collect())
        .collect()
}

fn show(name: &str, s: &BinaryScore) {
    println!(
        "| {name} | {:.3} | {:.3} | {:.3} |",
        s.precision, s.recall, s.f1
    );
}

#[test]
fn detect_on_the_taizhou_landsat_pair_is_scored_against_the_reference() {
    let Some(dir) = data_dir() else {
        eprintln!("SKIPPED: ../shared/data/landsat-taizhou not found (set GENGBAO_REAL_DATA to the data folder)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("taizhou");
    let summary = detect(&DetectOptions {
        sensor: Some("landsat-tm-dn".into()),
        ..DetectOptions::new(dir.join("2000TM"), dir.join("2003TM"), out.clone())
    })
    .unwrap();
    for f in [
        "class_before.tif",
        "class_after.tif",
        "flags.tif",
        "patches.gpkg",
        "summary.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let mask = |f: &str| {
        read_band_f64(&dir.join(f), 1)
            .unwrap()
            .2
            .iter()
            .map(|&v| v > 0.0)
            .collect::<Vec<bool>>()
    };
    let (changed, unchanged) = (mask("change.bmp"), mask("unchanged.bmp"));
    let flags = read_band_f64(&out.join("flags.tif"), 1).unwrap().2;
    let before = read_band_f64(&out.join("class_before.tif"), 1).unwrap().2;
    let after = read_band_f64(&out.join("class_after.tif"), 1).unwrap().2;
    let flagged: Vec<bool> = flags.iter().map(|&f| f == 1.0 || f == 2.0).collect();
    let class_changed: Vec<bool> = before.iter().zip(&after).map(|(b, a)| b != a).collect();

    let profile = SensorProfile::by_name("landsat-tm-dn").unwrap();
    let cva = change_vector_otsu(
        &reflectance(&dir.join("2000TM"), profile),
        &reflectance(&dir.join("2003TM"), profile),
    );

    let ours_flags = binary_score(&flagged, &changed, &unchanged);
    let ours_class = binary_score(&class_changed, &changed, &unchanged);
    let baseline = binary_score(&cva, &changed, &unchanged);
    println!("{}", summary.human());
    println!("| method | precision | recall | F1 |\n|---|---|---|---|");
    show("gengbao detect: FNH+FLH flags", &ours_flags);
    show("gengbao detect: any land-cover class change", &ours_class);
    show("CVA + Otsu (classical baseline)", &baseline);

    let labelled = ours_flags.true_positive
        + ours_flags.false_positive
        + ours_flags.false_negative
        + ours_flags.true_negative;
    let prevalence =
        (ours_flags.true_positive + ours_flags.false_negative) as f64 / labelled as f64;
    // Flags are leads for inspectors: they must be far more often right than a random guess.
    assert!(
        ours_flags.precision > 1.5 * prevalence,
        "flag precision {:.3} vs prevalence {prevalence:.3}",
        ours_flags.precision
    );
    assert!(ours_flags.recall > 0.05 && baseline.f1.is_finite());
}
