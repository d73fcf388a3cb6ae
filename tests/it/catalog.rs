//! The imagery catalog finds acquisitions by the naming of real products, dates them from
//! their own names, and the sample generator never deletes a folder it did not make.

use crate::common::geotiff;
use gengbao::geo::imagery::Catalog;
use gengbao::geo::sensor::SensorProfile;
use gengbao::samples::{generate, SampleOptions};
use std::fs;
use std::path::Path;

fn tiny_tif(path: &Path) {
    geotiff(path, 4, 1, 30.0, |_, _| 0);
}

#[test]
fn landsat_collection_2_folders_are_catalogued() {
    let tmp = tempfile::tempdir().unwrap();
    // The delivery folder's own date must not date the scene.
    let scene = tmp
        .path()
        .join("delivery_20241231")
        .join("LT05_L2SP_119038_20050713_20200902_02_T1");
    fs::create_dir_all(&scene).unwrap();
    for band in [
        "SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7", "QA_PIXEL",
    ] {
        tiny_tif(&scene.join(format!(
            "LT05_L2SP_119038_20050713_20200902_02_T1_{band}.TIF"
        )));
    }
    let profile = SensorProfile::by_name("landsat-tm-sr").unwrap();
    let cat = Catalog::scan(tmp.path(), profile).unwrap();
    assert_eq!(cat.acquisitions.len(), 1);
    let a = &cat.acquisitions[0];
    assert_eq!(
        a.date.to_string(),
        "2005-07-13",
        "dated by the scene, not the delivery folder"
    );
    assert_eq!(a.files.len(), 7);
    assert!(a.files["SR_B1"].to_string_lossy().ends_with("_SR_B1.TIF"));
    // A missing band is named.
    fs::remove_file(scene.join("LT05_L2SP_119038_20050713_20200902_02_T1_SR_B5.TIF")).unwrap();
    let err = Catalog::scan(tmp.path(), profile).unwrap_err().to_string();
    assert!(err.contains("missing band file SR_B5"), "{err}");
}

#[test]
fn sentinel2_band_names_do_not_match_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let acq = tmp
        .path()
        .join("S2A_MSIL2A_20250412T030551_N0511_R075_T50SKE_20250412T064531");
    fs::create_dir_all(&acq).unwrap();
    for band in [
        "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "SCL",
    ] {
        tiny_tif(&acq.join(format!("T50SKE_20250412T030551_{band}_20m.jp2.tif")));
    }
    let cat = Catalog::scan(tmp.path(), SensorProfile::by_name("sentinel2-l2a").unwrap()).unwrap();
    assert_eq!(cat.acquisitions.len(), 1);
    assert_eq!(cat.acquisitions[0].date.to_string(), "2025-04-12");
    assert!(cat.acquisitions[0].files["B08"]
        .to_string_lossy()
        .contains("_B08_"));
}

#[test]
fn samples_never_delete_a_folder_they_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("my_data");
    fs::create_dir_all(&mine).unwrap();
    fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let opts = SampleOptions {
        size: 128,
        periods: 3,
        ..Default::default()
    };
    let err = generate(&mine, &opts)
        .err()
        .expect("must refuse")
        .to_string();
    assert!(
        err.contains("my_data") && err.contains("not a sample city"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );
    // A previous sample city is replaced, and nothing is left beside it.
    let city = tmp.path().join("city");
    generate(&city, &opts).unwrap();
    generate(&city, &opts).unwrap();
    let mut names: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["city", "my_data"]);
}

#[test]
fn fill_values_of_untagged_band_files_never_blend_into_real_pixels() {
    use gengbao::geo::grid::JobGrid;
    use gengbao::geo::raster::{warp_onto, Resample};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("B11_20m.tif");
    // A 20 m band without a nodata tag: left half fill (0), right half 3000.
    geotiff(&path, 8, 1, 20.0, |_, i| if i % 8 < 4 { 0 } else { 3000 });
    let grid = JobGrid {
        crs_wkt: gdal::spatial_ref::SpatialRef::from_epsg(32650)
            .unwrap()
            .to_wkt()
            .unwrap(),
        origin_x: 500000.0,
        origin_y: 3500000.0,
        resolution: 10.0,
        width: 16,
        height: 16,
        tile_size: 16,
        halo: 0,
    };
    let warp = |nodata| {
        warp_onto(&path, &grid, grid.full_window(), Resample::Bilinear, nodata)
            .unwrap()
            .into_raw_vec()
    };
    let blended = |v: &[f32]| v.iter().filter(|x| !x.is_nan() && **x != 3000.0).count();
    // Without the product's nodata value, bilinear resampling mixes the fill into the edge.
    assert!(
        blended(&warp(None)) > 0,
        "the fixture no longer shows the problem"
    );
    let out = warp(Some(0.0));
    assert!(
        out.iter().all(|v| v.is_nan() || *v == 3000.0),
        "blended values: {:?}",
        out.iter()
            .filter(|v| !v.is_nan() && **v != 3000.0)
            .collect::<Vec<_>>()
    );
    assert!(
        out.iter().filter(|v| **v == 3000.0).count() >= 16 * 7,
        "the valid half is kept"
    );
}
