//! `detect` on a pair of images with labelled points: the models trained on the points find a
//! block built over and a parcel left to grass, flag nothing on unchanged land nor for a spot
//! of another crop in a grain field, and a points file with a bad label is refused by name
//! with nothing written.

use gdal::spatial_ref::SpatialRef;
use gdal::vector::{FieldValue, Geometry, LayerAccess};
use gdal_sys::OGRFieldType::OFTInteger;
use gengbao::detect::{detect, DetectOptions};
use gengbao::domain::change::ChangeType;
use gengbao::geo::vector::{write_layer, Areas, Format};
use std::path::{Path, PathBuf};

const SIZE: usize = 96;
const ORIGIN: (f64, f64) = (500_000.0, 3_500_000.0);

/// Surface reflectance x 10000 of B2 B3 B4 B5 B6 B7 B8 B8A B11 B12 per gengbao class 1..6.
const SPECTRA: [[u16; 10]; 6] = [
    [420, 720, 430, 1250, 2750, 3350, 3600, 3700, 2050, 1050],
    [560, 860, 660, 1330, 2350, 2750, 2950, 3050, 2450, 1500],
    [1250, 1420, 1580, 1720, 1880, 1990, 2080, 2140, 2620, 2380],
    [720, 820, 580, 480, 380, 330, 290, 270, 140, 90],
    [640, 930, 980, 1480, 2020, 2280, 2420, 2520, 2850, 2000],
    [290, 530, 290, 880, 2250, 2850, 3100, 3200, 1450, 680],
];

/// Grain on the west half (the watched parcels, one orchard parcel in the south), forest,
/// built-up, water and grass to the east.
fn land(col: usize, row: usize) -> u8 {
    match col {
        0..48 if row >= 80 => 2,
        0..48 => 1,
        48..64 => 6,
        64..80 if row < 48 => 3,
        64..80 => 4,
        _ => 5,
    }
}

/// The built-over block and the parcel left to grass, as (x0, y0, x1, y1) pixels.
const BUILT: (usize, usize, usize, usize) = (8, 8, 24, 24);
const GRASS: (usize, usize, usize, usize) = (8, 40, 40, 64);
/// A spot of orchard in the grain parcel that holds the built block: 2 % of the parcel.
const SPOT: (usize, usize, usize, usize) = (30, 10, 36, 16);

fn inside(r: (usize, usize, usize, usize), col: usize, row: usize) -> bool {
    (r.0..r.2).contains(&col) && (r.1..r.3).contains(&row)
}

fn land_after(col: usize, row: usize) -> u8 {
    if inside(BUILT, col, row) {
        3
    } else if inside(GRASS, col, row) {
        5
    } else if inside(SPOT, col, row) {
        2
    } else {
        land(col, row)
    }
}

/// A deterministic ±4 % texture, so that no two pixels are alike.
fn texture(band: usize, i: usize) -> f32 {
    let h = (i as u64 * 2_654_435_761 + band as u64 * 40_503) % 1000;
    1.0 + (h as f32 / 1000.0 - 0.5) * 0.08
}

fn image(path: &Path, class_of: fn(usize, usize) -> u8) {
    crate::common::geotiff(path, SIZE, 10, 10.0, |b, i| {
        let class = class_of(i % SIZE, i / SIZE);
        (f32::from(SPECTRA[class as usize - 1][b - 1]) * texture(b, i)).round() as u16
    });
}

fn rect((x0, y0, x1, y1): (usize, usize, usize, usize)) -> Geometry {
    let (w, n) = (ORIGIN.0 + x0 as f64 * 10.0, ORIGIN.1 - y0 as f64 * 10.0);
    let (e, s) = (ORIGIN.0 + x1 as f64 * 10.0, ORIGIN.1 - y1 as f64 * 10.0);
    Geometry::bbox(w, s, e, n).unwrap()
}

/// Every third pixel in each direction as a labelled point, with `class_of`'s label.
fn points(path: &Path, class_of: impl Fn(usize, usize) -> u8) {
    use gdal::vector::{Feature, LayerOptions};
    let driver = gdal::DriverManager::get_driver_by_name("GPKG").unwrap();
    let mut ds = driver.create_vector_only(path).unwrap();
    let srs = SpatialRef::from_epsg(32650).unwrap();
    let layer = ds
        .create_layer(LayerOptions {
            name: "samples",
            srs: Some(&srs),
            ty: gdal_sys::OGRwkbGeometryType::wkbPoint,
            options: None,
        })
        .unwrap();
    layer.create_defn_fields(&[("class", OFTInteger)]).unwrap();
    for row in (1..SIZE).step_by(3) {
        for col in (1..SIZE).step_by(3) {
            let mut p = Geometry::empty(gdal_sys::OGRwkbGeometryType::wkbPoint).unwrap();
            p.add_point_2d((
                ORIGIN.0 + (col as f64 + 0.5) * 10.0,
                ORIGIN.1 - (row as f64 + 0.5) * 10.0,
            ));
            let mut f = Feature::new(layer.defn()).unwrap();
            f.set_geometry(p).unwrap();
            f.set_field(0, &FieldValue::IntegerValue(i32::from(class_of(col, row))))
                .unwrap();
            f.create(&layer).unwrap();
        }
    }
}

fn scene(dir: &Path) {
    image(&dir.join("t1.tif"), land);
    image(&dir.join("t2.tif"), land_after);
    points(&dir.join("train_t1.gpkg"), land);
    points(&dir.join("train_t2.gpkg"), land_after);
    let (x0, _, x1, y1) = GRASS;
    let parcels = [
        (0, 0, 48, 40),
        GRASS,
        (0, 40, x0, 80),
        (x1, 40, 48, 80),
        (x0, y1, x1, 80),
        (0, 80, 48, 96),
    ]
    .map(rect)
    .into_iter()
    .map(|g| (g, vec![]))
    .collect::<Vec<_>>();
    let srs = SpatialRef::from_epsg(32650).unwrap();
    write_layer(
        &dir.join("parcels.gpkg"),
        Format::GeoPackage,
        "parcels",
        &srs,
        Areas::Polygons,
        &[],
        parcels,
        "UTF-8",
    )
    .unwrap();
}

fn options(dir: &Path, out: &Path) -> DetectOptions {
    DetectOptions {
        farmland: Some(dir.join("parcels.gpkg")),
        samples_before: Some(dir.join("train_t1.gpkg")),
        samples_after: Some(dir.join("train_t2.gpkg")),
        abandonment: true,
        quiet: true,
        ..DetectOptions::new(dir.join("t1.tif"), dir.join("t2.tif"), out.to_path_buf())
    }
}

#[test]
fn models_trained_on_points_find_the_built_block_and_the_abandoned_parcel() {
    let tmp = tempfile::tempdir().unwrap();
    scene(tmp.path());
    let out = tmp.path().join("out");
    detect(&options(tmp.path(), &out)).unwrap();
    for f in ["model_before.ot", "model_before.ot.json", "model_after.ot"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let patches = read_patches(&out);
    assert_found(&patches, ChangeType::FNH, BUILT);
    assert_found(&patches, ChangeType::PH, GRASS);
    // Nothing else: every patch lies on a planted change.
    let planted = rect(BUILT).union(&rect(GRASS)).unwrap();
    for (kind, g) in &patches {
        let on = g.intersection(&planted).map_or(0.0, |i| i.area());
        assert!(
            on >= 0.9 * g.area(),
            "a spurious {kind:?} patch of {} m²",
            g.area()
        );
    }
}

#[test]
fn two_runs_on_the_same_pair_train_byte_identical_models_and_write_identical_patches() {
    let tmp = tempfile::tempdir().unwrap();
    scene(tmp.path());
    let outs = ["a", "b"].map(|run| {
        let out = tmp.path().join(run);
        detect(&options(tmp.path(), &out)).unwrap();
        out
    });
    for f in ["model_before.ot", "model_after.ot", "patches.gpkg"] {
        let [a, b] = &outs.clone().map(|out| std::fs::read(out.join(f)).unwrap());
        assert!(a == b, "{f} differs between two runs");
    }
    // The patches' model version (MXBB) is the models' content hash, so it repeats too.
    let [a, b] = outs.map(|out| {
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        summary["classifier"].as_str().unwrap().to_string()
    });
    assert_eq!(a, b);
}

/// Patches of `kind` cover at least 90 % of the `planted` rectangle.
fn assert_found(
    patches: &[(ChangeType, Geometry)],
    kind: ChangeType,
    planted: (usize, usize, usize, usize),
) {
    let truth = rect(planted);
    let found = crate::common::covered_area(patches, kind, &truth);
    assert!(
        found >= 0.9 * truth.area(),
        "{kind:?}: {found} of {} m² found",
        truth.area()
    );
}

/// (type, outline) of the patches written to `out`.
fn read_patches(out: &Path) -> Vec<(ChangeType, Geometry)> {
    gengbao::evaluate::read_patches(&out.join("patches.gpkg"), "BHLX").unwrap()
}

#[test]
fn a_spot_of_another_crop_is_reported_only_when_parcel_shares_are_off() {
    let tmp = tempfile::tempdir().unwrap();
    scene(tmp.path());
    let out = tmp.path().join("out");
    // The default run finds nothing there (the test above); without the share it does, so
    // the spot is visible to the models and the parcel rule is what holds it back.
    detect(&DetectOptions {
        min_parcel_share: 0.0,
        ..options(tmp.path(), &out)
    })
    .unwrap();
    assert_found(&read_patches(&out), ChangeType::FLH, SPOT);
}

#[test]
fn a_share_outside_0_to_1_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    scene(tmp.path());
    let out = tmp.path().join("out");
    let err = detect(&DetectOptions {
        min_parcel_share: 67.0,
        ..options(tmp.path(), &out)
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--min-parcel-share 67") && err.contains("between 0 and 1"),
        "{err}"
    );
    assert!(!out.exists(), "the output folder was created");
}

#[test]
fn a_points_file_with_a_bad_label_is_named_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    scene(tmp.path());
    points(&tmp.path().join("bad.gpkg"), |col, row| {
        if col > 90 && row > 90 {
            9
        } else {
            land(col, row)
        }
    });
    let out = tmp.path().join("out");
    let err = detect(&DetectOptions {
        samples_before: Some(tmp.path().join("bad.gpkg")),
        ..options(tmp.path(), &out)
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("bad.gpkg") && err.contains("class 1..6") && err.contains("fix"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The raster `name` of a detect output, as bytes of its pixel values.
fn pixels(out: &Path, name: &str) -> Vec<f64> {
    gengbao::geo::raster::read_band_f64(&out.join(name), 1)
        .unwrap()
        .2
}

#[test]
fn bands_stored_in_another_order_are_read_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    scene(tmp.path());
    let standard = tmp.path().join("standard");
    detect(&options(tmp.path(), &standard)).unwrap();
    // Both dates with their bands reversed in the file, named in the file's order.
    let names = [
        "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12",
    ];
    for (file, class_of) in [
        ("t1_rev.tif", land as fn(usize, usize) -> u8),
        ("t2_rev.tif", land_after),
    ] {
        crate::common::geotiff(&tmp.path().join(file), SIZE, 10, 10.0, |b, i| {
            let band = 11 - b;
            let class = class_of(i % SIZE, i / SIZE);
            (f32::from(SPECTRA[class as usize - 1][band - 1]) * texture(band, i)).round() as u16
        });
    }
    let reordered = tmp.path().join("reordered");
    let mut order: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    order.reverse();
    detect(&DetectOptions {
        before: tmp.path().join("t1_rev.tif"),
        after: tmp.path().join("t2_rev.tif"),
        band_order: Some(order.clone()),
        ..options(tmp.path(), &reordered)
    })
    .unwrap();
    for f in [
        "class_before.tif",
        "class_after.tif",
        "change.tif",
        "flags.tif",
    ] {
        assert!(pixels(&standard, f) == pixels(&reordered, f), "{f} differs");
    }
    // A band the profile needs and --bands does not name is refused by name.
    order[0] = "B01".into();
    let err = detect(&DetectOptions {
        before: tmp.path().join("t1_rev.tif"),
        after: tmp.path().join("t2_rev.tif"),
        band_order: Some(order),
        sensor: Some("sentinel2-l2a".into()),
        ..options(tmp.path(), &tmp.path().join("bad"))
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("B12") && err.contains("--bands"), "{err}");
}

#[test]
fn an_after_image_in_degrees_as_band_files_is_warped_onto_the_before_grid() {
    use gengbao::geo::grid::JobGrid;
    use gengbao::geo::raster::{warp_onto, GridTiff, Resample};
    let tmp = tempfile::tempdir().unwrap();
    scene(tmp.path());
    let standard = tmp.path().join("standard");
    detect(&options(tmp.path(), &standard)).unwrap();

    // The after image in WGS 84 degrees, one file per band, as OSCD ships Sentinel-2.
    let utm = SpatialRef::from_epsg(32650).unwrap();
    let mut wgs84 = SpatialRef::from_epsg(4326).unwrap();
    wgs84.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let to_wgs84 = gdal::spatial_ref::CoordTransform::new(&utm, &wgs84).unwrap();
    let (mut xs, mut ys) = (
        vec![ORIGIN.0, ORIGIN.0 + 960.0],
        vec![ORIGIN.1 - 960.0, ORIGIN.1],
    );
    to_wgs84
        .transform_coords(&mut xs, &mut ys, &mut [])
        .unwrap();
    let degrees = JobGrid::covering(
        wgs84.to_wkt().unwrap(),
        (xs[0], ys[0], xs[1], ys[1]),
        0.0001,
        512,
        0,
    )
    .unwrap();
    let stack = warp_onto(
        &tmp.path().join("t2.tif"),
        &degrees,
        degrees.full_window(),
        Resample::Bilinear,
        Some(0.0),
    )
    .unwrap();
    let folder = tmp.path().join("t2_bands");
    std::fs::create_dir(&folder).unwrap();
    let names = [
        "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12",
    ];
    for (band, name) in stack.outer_iter().zip(names) {
        let path = folder.join(format!("S2_20250601_{name}.tif"));
        let mut tiff = GridTiff::create::<u16>(&path, &degrees, 1, Some(0.0)).unwrap();
        let values: Vec<u16> = band
            .iter()
            .map(|v| if v.is_finite() { v.round() as u16 } else { 0 })
            .collect();
        tiff.write(1, degrees.full_window(), values).unwrap();
        tiff.close().unwrap();
    }

    let out = tmp.path().join("out");
    detect(&DetectOptions {
        after: folder,
        ..options(tmp.path(), &out)
    })
    .unwrap();
    // The results lie on the before image's grid, and its classes are the standard run's.
    assert_eq!(
        pixels(&out, "class_before.tif"),
        pixels(&standard, "class_before.tif")
    );
    assert_found(&read_patches(&out), ChangeType::FNH, BUILT);
}

#[test]
fn a_gaofen_pair_without_shortwave_infrared_is_read_by_the_four_band_model() {
    let tmp = tempfile::tempdir().unwrap();
    // Bands 1 to 4 of a Gaofen camera: blue, green, red and NIR of the spectra above.
    const GF_BANDS: [usize; 4] = [0, 1, 2, 6];
    for (file, class_of) in [
        ("gf_t1.tif", land as fn(usize, usize) -> u8),
        ("gf_t2.tif", land_after),
    ] {
        crate::common::geotiff(&tmp.path().join(file), SIZE, 4, 10.0, |b, i| {
            let class = class_of(i % SIZE, i / SIZE);
            let band = GF_BANDS[b - 1];
            (f32::from(SPECTRA[class as usize - 1][band]) * texture(b, i)).round() as u16
        });
    }
    let out = tmp.path().join("out");
    let summary = detect(&gaofen_options(
        "gf2-pms",
        tmp.path().join("gf_t1.tif"),
        tmp.path().join("gf_t2.tif"),
        out.clone(),
    ))
    .unwrap();
    let card: serde_json::Value =
        serde_json::from_str(include_str!("../../models/gengbao-4band-v1.ot.json")).unwrap();
    assert_eq!(
        summary.classifier,
        card["version"].as_str().unwrap(),
        "the shipped four-band model, not the index rules (which need SWIR)"
    );
    let (change, after) = (pixels(&out, "change.tif"), pixels(&out, "class_after.tif"));
    let block: Vec<usize> = (0..SIZE * SIZE)
        .filter(|&i| inside(BUILT, i % SIZE, i / SIZE))
        .collect();
    let share = |hits: usize| hits as f64 / block.len() as f64;
    let changed = block.iter().filter(|&&i| change[i] == 1.0).count();
    assert!(share(changed) > 0.8, "{changed} of the block changed");
    // The classes name the change: these spectra are surface reflectance made up for the
    // tests, not the top-of-atmosphere looks the model learned, so which class is not asked.
    let before = pixels(&out, "class_before.tif");
    let renamed = block
        .iter()
        .filter(|&&i| after[i] != before[i] && after[i] > 0.0)
        .count();
    assert!(
        share(renamed) > 0.8,
        "{renamed} of the block took another class"
    );
}

/// RPCs of a 64 × 64 px image near Guangzhou at about 4 m whose view leans east: a point
/// `RELIEF_PX` pixels further along a row per 500 m of height (an affine model is enough).
const RPC_LON: f64 = 113.5;
const RPC_LAT: f64 = 23.1;
const RPC_LAT_SCALE: f64 = 32.0 * 4.0 / 110_574.0;
const RPC_LON_SCALE: f64 = 32.0 * 4.0 / 102_430.0;
const RELIEF_PX: f64 = 8.0;

/// A Gaofen camera as the tests make its L1A products: the test spectra's bands its bands
/// show, and CRESDA's 2018 gains and the bands' solar irradiance.
struct Camera {
    satellite: &'static str,
    sensor: &'static str,
    spectra: &'static [usize],
    gains: &'static [f64],
    esun: &'static [f64],
}

const GF2_PMS1: Camera = Camera {
    satellite: "GF2",
    sensor: "PMS1",
    spectra: &[0, 1, 2, 6],
    gains: &[0.1356, 0.1736, 0.1644, 0.1788],
    esun: &[1941.76, 1853.73, 1541.79, 1086.47],
};

/// Blue, green, red, NIR, red edge 1 and 2, then purple and yellow shown as blue and green.
const GF6_WFV: Camera = Camera {
    satellite: "GF6",
    sensor: "WFV",
    spectra: &[0, 1, 2, 6, 3, 4, 0, 1],
    gains: &[
        0.0667, 0.0517, 0.0485, 0.0298, 0.0530, 0.0450, 0.0814, 0.0559,
    ],
    esun: &[
        1952.16, 1847.43, 1554.76, 1074.06, 1412.00, 1267.39, 1792.64, 1736.92,
    ],
};

/// A GF-2 PMS1 L1A product of 5 May 2018 as delivered: the TIFF of raw DNs placed by the
/// RPCs above, and its `.xml` (camera, time, sun). The DNs are those that the camera's 2018
/// gains and the sun `sun_zenith` degrees from the zenith turn into the test spectra's
/// reflectance.
fn rpc_image(path: &Path, class_of: impl Fn(usize, usize) -> usize, sun_zenith: f64) {
    write_product_xml(&path.with_extension("xml"), &GF2_PMS1, sun_zenith);
    rpc_piece(path, &GF2_PMS1, 0, class_of, sun_zenith);
}

fn write_product_xml(path: &Path, camera: &Camera, sun_zenith: f64) {
    std::fs::write(
        path,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ProductMetaData>\n<SatelliteID>{}</SatelliteID>\n<SensorID>{}</SensorID>\n<ProductLevel>LEVEL1A</ProductLevel>\n<CenterTime>2018-05-05 11:26:43</CenterTime>\n<SolarAzimuth>120.0</SolarAzimuth>\n<SolarZenith>{sun_zenith}</SolarZenith>\n</ProductMetaData>\n",
            camera.satellite, camera.sensor
        ),
    )
    .unwrap();
}

/// The TIFF of one 64 × 64 px piece of an L1A product of `camera`, `east` pieces east of the
/// RPCs' centre; `class_of` takes the product's column (the piece's plus 64 per piece east).
fn rpc_piece(
    path: &Path,
    camera: &Camera,
    east: usize,
    class_of: impl Fn(usize, usize) -> usize,
    sun_zenith: f64,
) {
    use gdal::Metadata;
    let size = 64;
    let bands = camera.gains.len();
    let drv = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut ds = drv
        .create_with_band_type::<u16, _>(path, size, size, bands)
        .unwrap();
    let coeffs = |set: &[(usize, f64)]| {
        let mut c = [0.0; 20];
        for &(k, v) in set {
            c[k] = v;
        }
        c.map(|v| v.to_string()).join(" ")
    };
    let lon = RPC_LON + 2.0 * RPC_LON_SCALE * east as f64;
    // Terms in RPC00B order: 1, L(on), P (lat), H(eight), ...
    for (key, value) in [
        ("LINE_OFF", "32".to_string()),
        ("SAMP_OFF", "32".into()),
        ("LINE_SCALE", "32".into()),
        ("SAMP_SCALE", "32".into()),
        ("LAT_OFF", RPC_LAT.to_string()),
        ("LONG_OFF", lon.to_string()),
        ("LAT_SCALE", RPC_LAT_SCALE.to_string()),
        ("LONG_SCALE", RPC_LON_SCALE.to_string()),
        ("HEIGHT_OFF", "0".into()),
        ("HEIGHT_SCALE", "500".into()),
        ("LINE_NUM_COEFF", coeffs(&[(2, -1.0)])),
        ("LINE_DEN_COEFF", coeffs(&[(0, 1.0)])),
        ("SAMP_NUM_COEFF", coeffs(&[(1, 1.0), (3, RELIEF_PX / 32.0)])),
        ("SAMP_DEN_COEFF", coeffs(&[(0, 1.0)])),
    ] {
        ds.set_metadata_item(key, &value, "RPC").unwrap();
    }
    // 5 May is day 125.
    let d = 1.0 - 0.01672 * (0.9856f64 * (125.0 - 4.0)).to_radians().cos();
    let per_dn: Vec<f64> = (0..bands)
        .map(|b| {
            std::f64::consts::PI * camera.gains[b] * d * d
                / (camera.esun[b] * sun_zenith.to_radians().cos())
        })
        .collect();
    for b in 1..=bands {
        let values = (0..size * size)
            .map(|i| {
                let (col, row) = (i % size + size * east, i / size);
                let band = camera.spectra[b - 1];
                let reflectance = f64::from(SPECTRA[class_of(col, row) - 1][band]) / 1e4
                    * f64::from(texture(b, i));
                (reflectance / per_dn[b - 1]).round() as u16
            })
            .collect();
        let mut buf = gdal::raster::Buffer::new((size, size), values);
        ds.rasterband(b)
            .unwrap()
            .write((0, 0), (size, size), &mut buf)
            .unwrap();
    }
}

/// The changed pixels' centre in degrees (longitude, latitude).
fn changed_centre(out: &Path) -> (f64, f64) {
    let path = out.join("change.tif");
    let ds = gdal::Dataset::open(&path).unwrap();
    let gt = ds.geo_transform().unwrap();
    let (w, _, change) = gengbao::geo::raster::read_band_f64(&path, 1).unwrap();
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
    for (i, &v) in change.iter().enumerate() {
        if v == 1.0 {
            sx += gt[0] + ((i % w) as f64 + 0.5) * gt[1];
            sy += gt[3] + ((i / w) as f64 + 0.5) * gt[5];
            n += 1.0;
        }
    }
    assert!(n > 20.0, "{n} changed pixels");
    let mut utm = ds.spatial_ref().unwrap();
    utm.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let mut wgs = SpatialRef::from_epsg(4326).unwrap();
    wgs.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let t = gdal::spatial_ref::CoordTransform::new(&utm, &wgs).unwrap();
    let (mut x, mut y, mut z) = ([sx / n], [sy / n], [0.0]);
    t.transform_coords(&mut x, &mut y, &mut z).unwrap();
    (x[0], y[0])
}

#[test]
fn a_gaofen_image_placed_by_rpcs_lands_on_the_ground_its_dem_gives() {
    let tmp = tempfile::tempdir().unwrap();
    // A block built over between the dates: image rows and columns 20 to 30.
    let block = (20, 20, 30, 30);
    rpc_image(&tmp.path().join("before.tif"), |_, _| 1, 30.0);
    rpc_image(
        &tmp.path().join("after.tif"),
        |col, row| if inside(block, col, row) { 3 } else { 1 },
        30.0,
    );
    // Flat ground at 500 m, in degrees as DEMs come.
    let flat = |name: &str, columns: usize| {
        let dem = tmp.path().join(name);
        let drv = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
        let mut ds = drv
            .create_with_band_type::<f32, _>(&dem, columns, 40, 1)
            .unwrap();
        ds.set_geo_transform(&[113.49, 0.0005, 0.0, 23.11, 0.0, -0.0005])
            .unwrap();
        ds.set_spatial_ref(&SpatialRef::from_epsg(4326).unwrap())
            .unwrap();
        let mut buf = gdal::raster::Buffer::new((columns, 40), vec![500f32; columns * 40]);
        ds.rasterband(1)
            .unwrap()
            .write((0, 0), (columns, 40), &mut buf)
            .unwrap();
        dem
    };
    let dem = flat("dem.tif", 40);
    let run = |elevation: gengbao::geo::rpc::Elevation, out: &str| {
        let out = tmp.path().join(out);
        detect(&DetectOptions {
            sensor: Some("gf2-pms".into()),
            elevation,
            quiet: true,
            ..DetectOptions::new(
                tmp.path().join("before.tif"),
                tmp.path().join("after.tif"),
                out.clone(),
            )
        })
        .map(|_| out)
    };
    use gengbao::geo::rpc::Elevation;
    let err = run(Elevation::Unknown, "none").unwrap_err().to_string();
    assert!(err.contains("before.tif") && err.contains("--dem"), "{err}");

    // A DEM cut off before the image's east edge has no height for that ground: refused,
    // naming the DEM and the ground it lacks, before anything is written.
    let err = run(Elevation::Dem(flat("west.tif", 18)), "west")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("west.tif") && err.contains("before.tif") && err.contains("has no heights"),
        "{err}"
    );
    assert!(!tmp.path().join("west").exists(), "nothing written");

    let (lon, lat) = changed_centre(&run(Elevation::Dem(dem), "dem").unwrap());
    // The block's centre, row and column 25, solved from the RPCs at 500 m.
    let (line, samp) = (((25.0 - 32.0) / 32.0), ((25.0 - 32.0) / 32.0));
    let want_lat = RPC_LAT - line * RPC_LAT_SCALE;
    let want_lon = RPC_LON + (samp - RELIEF_PX / 32.0) * RPC_LON_SCALE;
    let metres =
        |dlon: f64, dlat: f64| ((dlon * 102_430.0).powi(2) + (dlat * 110_574.0).powi(2)).sqrt();
    let off = metres(lon - want_lon, lat - want_lat);
    assert!(off < 4.0, "landed {off:.1} m from where the DEM puts it");
    // At sea level the same pixels land 8 pixels (32 m) west: the elevation is what places
    // them.
    let (lon0, lat0) = changed_centre(&run(Elevation::Height(0.0), "sea-level").unwrap());
    let moved = metres(lon0 - lon, lat0 - lat);
    assert!((moved - 32.0).abs() < 4.0, "moved {moved:.1} m");
}

#[test]
fn a_gaofen_l1a_pair_is_calibrated_from_its_xml_whatever_the_sun() {
    let tmp = tempfile::tempdir().unwrap();
    // The same ground (the test landscape, shrunk to 64 px) under a high sun and a low one:
    // the low sun's DNs are 0.94 / 0.64 = 1.46 times smaller.
    let ground = |col: usize, row: usize| usize::from(land(col * 3 / 2, row * 3 / 2));
    rpc_image(&tmp.path().join("high_sun.tif"), ground, 20.0);
    rpc_image(&tmp.path().join("low_sun.tif"), ground, 50.0);
    let out = tmp.path().join("out");
    let summary = detect(&gaofen_options(
        "gf2-pms",
        tmp.path().join("high_sun.tif"),
        tmp.path().join("low_sun.tif"),
        out.clone(),
    ))
    .unwrap();
    let (before, after) = (
        summary.calibration_before.as_ref().unwrap(),
        summary.calibration_after.as_ref().unwrap(),
    );
    assert_eq!(
        (before.camera.as_str(), before.coefficients_year),
        ("GF2-PMS1", 2018)
    );
    assert_eq!(
        (before.solar_zenith_deg, after.solar_zenith_deg),
        (20.0, 50.0)
    );
    assert!(before.note.is_none());
    let ratio = after.reflectance_per_dn[3] / before.reflectance_per_dn[3];
    assert!((ratio - 20f64.to_radians().cos() / 50f64.to_radians().cos()).abs() < 1e-9);
    // Once calibrated the two looks are one ground: the same classes, nothing changed.
    let (class_before, class_after) = (
        pixels(&out, "class_before.tif"),
        pixels(&out, "class_after.tif"),
    );
    let seen: Vec<usize> = (0..class_before.len())
        .filter(|&i| class_before[i] > 0.0 && class_after[i] > 0.0)
        .collect();
    assert!(
        seen.len() > 3000,
        "{} pixels classified in both",
        seen.len()
    );
    let same = seen
        .iter()
        .filter(|&&i| class_before[i] == class_after[i])
        .count();
    assert!(
        same as f64 > 0.98 * seen.len() as f64,
        "{same} of {} pixels kept their class",
        seen.len()
    );
    let patches: usize = summary.patches.values().map(|t| t.count).sum();
    assert_eq!(patches, 0, "{:?}", summary.patches);

    // And they are the ground's reflectance: the classes' shares are those of the same
    // landscape given as calibrated reflectance × 10,000.
    const GF_BANDS: [usize; 4] = [0, 1, 2, 6];
    let reflectance = tmp.path().join("reflectance.tif");
    crate::common::geotiff(&reflectance, 64, 4, 4.0, |b, i| {
        let class = ground(i % 64, i / 64);
        (f32::from(SPECTRA[class - 1][GF_BANDS[b - 1]]) * texture(b, i)).round() as u16
    });
    let reference = tmp.path().join("reference");
    detect(&gaofen_options(
        "gf2-pms",
        reflectance.clone(),
        reflectance,
        reference.clone(),
    ))
    .unwrap();
    let shares = |classes: &[f64]| {
        let seen: Vec<f64> = classes.iter().copied().filter(|&c| c > 0.0).collect();
        (1..=6)
            .map(|k| seen.iter().filter(|&&c| c == f64::from(k)).count() as f64 / seen.len() as f64)
            .collect::<Vec<f64>>()
    };
    let (calibrated, wanted) = (
        shares(&class_before),
        shares(&pixels(&reference, "class_before.tif")),
    );
    let apart: f64 = calibrated
        .iter()
        .zip(&wanted)
        .map(|(a, b)| (a - b).abs())
        .sum();
    assert!(
        apart < 0.1,
        "class shares {calibrated:?}, of the reflectance {wanted:?}"
    );
}

#[test]
fn a_gaofen_l1a_image_without_its_xml_is_refused_not_read_as_reflectance() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["before.tif", "after.tif"] {
        rpc_image(&tmp.path().join(name), |_, _| 1, 30.0);
    }
    std::fs::remove_file(tmp.path().join("after.xml")).unwrap();
    let out = tmp.path().join("out");
    let err = detect(&gaofen_options(
        "gf2-pms",
        tmp.path().join("before.tif"),
        tmp.path().join("after.tif"),
        out.clone(),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("after.tif") && err.contains("after.xml"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn a_gaofen_product_is_read_from_its_tar_gz_as_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let product = "GF2_PMS1_E113.5_N23.1_20180505_L1A0003167897";
    let folder = tmp.path().join(product);
    std::fs::create_dir(&folder).unwrap();
    let ground = |col: usize, row: usize| usize::from(land(col * 3 / 2, row * 3 / 2));
    rpc_image(&folder.join(format!("{product}-MSS1.tiff")), ground, 30.0);
    // The panchromatic image beside it is not the one read.
    crate::common::geotiff(
        &folder.join(format!("{product}-PAN1.tiff")),
        8,
        1,
        1.0,
        |_, _| 1,
    );
    let tar = tmp.path().join(format!("{product}.tar.gz"));
    crate::common::pack(&folder, None, &tar);
    let run = |before: &Path, out: &str| {
        let out = tmp.path().join(out);
        detect(&gaofen_options(
            "gf2-pms",
            before.to_path_buf(),
            before.to_path_buf(),
            out.clone(),
        ))
        .map(|summary| (summary, pixels(&out, "class_before.tif")))
    };
    let (summary, from_tar) = run(&tar, "from-tar").unwrap();
    assert_eq!(
        summary
            .calibration_before
            .as_ref()
            .map(|c| c.camera.as_str()),
        Some("GF2-PMS1")
    );
    // The same classes as from the extracted TIFF.
    let (_, extracted) = run(&folder.join(format!("{product}-MSS1.tiff")), "extracted").unwrap();
    assert!(from_tar.iter().filter(|&&c| c > 0.0).count() > 3000);
    assert_eq!(from_tar, extracted);
    // The camera is named, never guessed; an L1A product's offset is its calibration's.
    for (sensor, add_offset, says) in [
        (None, None, "--sensor gf1-wfv, gf2-pms or gf6-wfv"),
        (Some("gf2-pms"), Some(-1000.0), "--add-offset"),
    ] {
        let err = detect(&DetectOptions {
            sensor: sensor.map(String::from),
            add_offset,
            elevation: gengbao::geo::rpc::Elevation::Height(0.0),
            quiet: true,
            ..DetectOptions::new(tar.clone(), tar.clone(), tmp.path().join("refused"))
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(says), "{err}");
    }
    // A tar without a multispectral image is named with what it holds.
    let empty = tmp.path().join("GF2_PMS1_X_L1A0.tar.gz");
    crate::common::pack(&folder, Some(&format!("{product}-PAN1.tiff")), &empty);
    let err = run(&empty, "empty").unwrap_err().to_string();
    assert!(
        err.contains("GF2_PMS1_X_L1A0.tar.gz") && err.contains("no multispectral"),
        "{err}"
    );
}

#[test]
fn a_gaofen_6_product_in_pieces_is_mosaicked_into_one_image() {
    let tmp = tempfile::tempdir().unwrap();
    let product = "GF6_WFV_E113.5_N23.1_20180505_L1A1119838015";
    let folder = tmp.path().join(product);
    std::fs::create_dir(&folder).unwrap();
    // Water in the west piece, grain in the east one: the two pieces meet at column 64.
    let ground = |col: usize, _row: usize| if col < 64 { 4 } else { 1 };
    for piece in 1..=2 {
        rpc_piece(
            &folder.join(format!("{product}-{piece}.tiff")),
            &GF6_WFV,
            piece - 1,
            ground,
            30.0,
        );
    }
    write_product_xml(&folder.join(format!("{product}.xml")), &GF6_WFV, 30.0);
    let tar = tmp.path().join(format!("{product}.tar.gz"));
    crate::common::pack(&folder, None, &tar);
    let out = tmp.path().join("out");
    let summary = detect(&gaofen_options("gf6-wfv", tar.clone(), tar, out.clone())).unwrap();
    assert_eq!(
        summary
            .calibration_before
            .as_ref()
            .map(|c| c.camera.as_str()),
        Some("GF6-WFV")
    );
    // One image twice as wide as a piece, classified on both sides of the seam.
    let one_piece = 64 * 64;
    let classes = pixels(&out, "class_before.tif");
    let classified = classes.iter().filter(|&&c| c > 0.0).count();
    assert!(
        classified > one_piece * 3 / 2,
        "{classified} pixels classified, {one_piece} in a piece"
    );
    // Given the extracted first piece, its sibling is gathered too: the same image.
    let extracted = tmp.path().join("extracted");
    detect(&gaofen_options(
        "gf6-wfv",
        folder.join(format!("{product}-1.tiff")),
        folder.join(format!("{product}-1.tiff")),
        extracted.clone(),
    ))
    .unwrap();
    assert_eq!(pixels(&extracted, "class_before.tif"), classes);
    let width = summary.width;
    let (west, east) = (
        classes[width / 4 + width * summary.height / 2],
        classes[3 * width / 4 + width * summary.height / 2],
    );
    assert!(
        west > 0.0 && east > 0.0 && west != east,
        "west {west}, east {east}"
    );
}

#[test]
fn a_cloud_over_a_gaofen_field_is_unobserved_not_a_change_and_a_new_roof_as_bright_is_one() {
    let tmp = tempfile::tempdir().unwrap();
    const GF_BANDS: [usize; 4] = [0, 1, 2, 6];
    // A cumulus over the grain fields in the second image: white and bright, 200 m across.
    const CLOUD: (usize, usize, usize, usize) = (10, 30, 40, 60);
    const CLOUD_TOP: [u16; 4] = [3200, 3300, 3400, 3800];
    // And a new roof, 50 m across, on a grain field, of the cloud's very reflectance: only
    // its extent tells it from a cloud.
    const ROOF: (usize, usize, usize, usize) = (34, 10, 39, 15);
    for (file, cloudy) in [
        ("gf_t1.tif", false),
        ("gf_t2.tif", true),
        ("gf_t3.tif", false),
    ] {
        crate::common::geotiff(&tmp.path().join(file), SIZE, 4, 10.0, |b, i| {
            let (col, row) = (i % SIZE, i / SIZE);
            if cloudy && inside(CLOUD, col, row) {
                return (f32::from(CLOUD_TOP[b - 1]) * texture(b, i)).round() as u16;
            }
            if cloudy && inside(ROOF, col, row) {
                return (f32::from(CLOUD_TOP[b - 1]) * texture(b, i)).round() as u16;
            }
            let class = land(col, row);
            (f32::from(SPECTRA[class as usize - 1][GF_BANDS[b - 1]]) * texture(b, i)).round() as u16
        });
    }
    let out = tmp.path().join("out");
    let summary = detect(&gaofen_options(
        "gf2-pms",
        tmp.path().join("gf_t1.tif"),
        tmp.path().join("gf_t2.tif"),
        out.clone(),
    ))
    .unwrap();
    let (before, after, change) = (
        pixels(&out, "class_before.tif"),
        pixels(&out, "class_after.tif"),
        pixels(&out, "change.tif"),
    );
    let cloud: Vec<usize> = (0..SIZE * SIZE)
        .filter(|&i| inside(CLOUD, i % SIZE, i / SIZE))
        .collect();
    let share = |f: &dyn Fn(usize) -> bool| {
        cloud.iter().filter(|&&i| f(i)).count() as f64 / cloud.len() as f64
    };
    assert!(
        share(&|i| before[i] > 0.0) > 0.95,
        "the clear date is classified"
    );
    assert!(
        share(&|i| after[i] == 0.0) > 0.95,
        "the cloud is not classified"
    );
    assert_eq!(share(&|i| change[i] == 1.0), 0.0, "a cloud is no change");
    // The roof is too small to be a cloud: it is seen, and it is the one change.
    let roof: Vec<usize> = (0..SIZE * SIZE)
        .filter(|&i| inside(ROOF, i % SIZE, i / SIZE))
        .collect();
    let on_roof = |f: &dyn Fn(usize) -> bool| {
        roof.iter().filter(|&&i| f(i)).count() as f64 / roof.len() as f64
    };
    assert_eq!(on_roof(&|i| after[i] == 0.0), 0.0, "the roof is seen");
    assert!(on_roof(&|i| change[i] == 1.0) > 0.8, "the roof is a change");
    // The 3 × 3 mean of the change decision reaches one pixel past the roof, no further.
    let (x0, y0, x1, y1) = ROOF;
    let near_roof = (x0 - 1, y0 - 1, x1 + 1, y1 + 1);
    let elsewhere = (0..SIZE * SIZE)
        .filter(|&i| !inside(near_roof, i % SIZE, i / SIZE) && change[i] == 1.0)
        .count();
    assert_eq!(elsewhere, 0, "changed pixels away from the roof");
    // Crop before, built-up after: the roof is reported as 非农化, and nothing else is.
    let count = |kind: &str| summary.patches[kind].count;
    assert!(
        count("FNH") == 1 && count("FLH") + count("PH") == 0,
        "{:?}",
        summary.patches
    );
    // The summary says how much of the ground each date saw.
    let [seen_before, seen_after] = summary.seen_share;
    let clouded = cloud.len() as f64 / (SIZE * SIZE) as f64;
    assert!(seen_before > 0.97, "{seen_before}");
    assert!(
        (seen_before - seen_after - clouded).abs() < 0.02,
        "{seen_before} {seen_after}"
    );
    // The other way round, the cloudy date is the before one, and it alone is short.
    let swapped = detect(&gaofen_options(
        "gf2-pms",
        tmp.path().join("gf_t2.tif"),
        tmp.path().join("gf_t3.tif"),
        tmp.path().join("swapped"),
    ))
    .unwrap();
    let [cloudy, clear] = swapped.seen_share;
    assert!(clear > 0.97, "{clear}");
    assert!((clear - cloudy - clouded).abs() < 0.02, "{cloudy} {clear}");
}

/// `detect` on a Gaofen pair as the tests run it: the camera named, the ground at sea level
/// for images placed by RPCs (a georeferenced image ignores it).
fn gaofen_options(sensor: &str, before: PathBuf, after: PathBuf, out: PathBuf) -> DetectOptions {
    DetectOptions {
        sensor: Some(sensor.into()),
        elevation: gengbao::geo::rpc::Elevation::Height(0.0),
        quiet: true,
        ..DetectOptions::new(before, after, out)
    }
}
