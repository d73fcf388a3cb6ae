//! Throughput of the pipeline's hot stages other than classification (`benches/classify.rs`),
//! in job-grid pixels per second, on one 512 x 512 tile of a city made by gengbao's own
//! generator (its first period: 4 Sentinel-2 L2A-like acquisitions of 10 bands at 10 and 20 m plus
//! SCL, DEFLATE GeoTIFFs):
//! - `read`: one band onto the tile as reflectance; a 10 m band lies on the grid and is read as
//!   stored, a 20 m band goes through GDAL's bilinear warper;
//! - `composite`: the period composite of the 4 acquisitions (every band, SCL masks, NDVI);
//! - `change_rules`: signals, runs, the rules' judgement (flag, patch key, attributes) of every
//!   pixel, with the parcel shares of detect;
//! - `vectorise`: polygons of a 2048 x 2048 key raster with 534 patches and scattered pixels.
//!
//! The stages run single-threaded here; the pipeline runs one tile per core.
//! `cargo bench --bench stages`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gengbao::domain::change::{ChangeType, ParcelShares, Rules};
use gengbao::engine::judge::{judge_tile, History, Observation};
use gengbao::geo::grid::{JobGrid, Window};
use gengbao::geo::imagery::Catalog;
use gengbao::geo::sensor::SensorProfile;
use gengbao::geo::vectorise::{patch_key, polygonize};
use gengbao::samples::{generate, SampleOptions};
use rand::{Rng, SeedableRng};

const SIDE: usize = 512;

fn tile() -> Window {
    Window {
        x: 256,
        y: 256,
        width: SIDE,
        height: SIDE,
    }
}

fn imagery_stages(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let city = generate(
        &tmp.path().join("city"),
        &SampleOptions {
            size: 1024,
            periods: 3,
            ..SampleOptions::default()
        },
    )
    .unwrap();
    let profile = SensorProfile::by_name("sentinel2-l2a").unwrap();
    let catalog = Catalog::scan(&city.dir.join("imagery"), profile, &Default::default()).unwrap();
    let acquisitions = catalog.in_period(city.periods[0]);
    assert_eq!(acquisitions.len(), 4, "a period of the generator");
    let first = acquisitions[0];
    let on_grid = &first.files["B04"];
    let grid = JobGrid::of_dataset(&gdal::Dataset::open(on_grid).unwrap(), on_grid).unwrap();
    let w = tile();

    let mut group = c.benchmark_group("stages_512x512_tile");
    group.throughput(Throughput::Elements(w.len() as u64));
    group.sample_size(20);
    for band in ["B04", "B11"] {
        group.bench_function(format!("read_{band}"), |b| {
            b.iter(|| {
                first
                    .read_reflectance(profile, profile.add_offset, band, &grid, w)
                    .unwrap()
            })
        });
    }
    group.bench_function("composite_4_acquisitions", |b| {
        b.iter(|| gengbao::geo::composite::build(&acquisitions, profile, None, &grid, w).unwrap())
    });
    group.finish();
}

fn change_rules(c: &mut Criterion) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let n = SIDE * SIDE;
    let before: Vec<u8> = (0..n).map(|_| rng.gen_range(1..=6)).collect();
    let now: Vec<u8> = (0..n).map(|_| rng.gen_range(1..=6)).collect();
    let parcel: Vec<i32> = (0..n).map(|i| (i / 4096) as i32).collect();
    let rules = Rules::new(1, 2, 6);
    let mut group = c.benchmark_group("stages_512x512_tile");
    group.throughput(Throughput::Elements(n as u64));
    // The per-pixel work of a tile as the pipeline and detect do it: signals, runs, the
    // rules' judgement with its patch key and attributes, and the parcel shares.
    group.bench_function("change_rules", |b| {
        b.iter(|| {
            let history = History {
                classes: &[],
                confidences: &[],
                periods: 5,
            };
            let change = judge_tile(n, &rules, history, |i| {
                Some(Observation {
                    county: 1,
                    watched: parcel[i] != 0,
                    basic: false,
                    baseline: before[i],
                    now: now[i],
                    confidence: 0.95,
                    cultivation: Some(i % 3 == 0),
                    runs_before: [1; 3],
                    sure: true,
                    departed: Some(i % 5 != 0),
                })
            });
            let mut shares = ParcelShares::default();
            for (&p, &flag) in parcel.iter().zip(&change.flag) {
                shares.add(p, flag);
            }
            (change, shares.share(1, ChangeType::FLH))
        })
    });
    group.finish();
}

fn vectorise(c: &mut Criterion) {
    const KEY_SIDE: usize = 2048;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("key.tif");
    let scratch = tmp.path().join("key.fgb");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut key = vec![0u16; KEY_SIDE * KEY_SIDE];
    // 40 x 40 fields of 51 px, one in three (534) changed on a random rectangle, and 1 % of
    // all pixels flagged on their own (the single-pixel noise a polygoniser must also walk).
    for field in (0..1600).step_by(3) {
        let (fx, fy) = ((field % 40) * 51, (field / 40) * 51);
        let (w, h) = (rng.gen_range(4..40), rng.gen_range(4..40));
        let flag = rng.gen_range(1..=3);
        for y in fy..fy + h {
            for x in fx..fx + w {
                key[y * KEY_SIDE + x] = patch_key(1, flag);
            }
        }
    }
    for v in key.iter_mut() {
        if rng.gen_bool(0.01) {
            *v = patch_key(1, 2);
        }
    }
    let side_m = KEY_SIDE as f64 * 10.0;
    let grid = JobGrid::covering(
        gdal::spatial_ref::SpatialRef::from_epsg(32650)
            .unwrap()
            .to_wkt()
            .unwrap(),
        (
            500_000.0,
            3_500_000.0 - side_m,
            500_000.0 + side_m,
            3_500_000.0,
        ),
        10.0,
        512,
        0,
    )
    .unwrap();
    let mut tiff = gengbao::geo::raster::GridTiff::create::<u16>(&path, &grid, 1, None).unwrap();
    tiff.write(1, grid.full_window(), key).unwrap();
    tiff.close().unwrap();
    let mut group = c.benchmark_group("stages_2048x2048_keys");
    group.throughput(Throughput::Elements((KEY_SIDE * KEY_SIDE) as u64));
    group.sample_size(10);
    group.bench_function("vectorise", |b| {
        b.iter(|| polygonize(&path, &scratch).unwrap().count())
    });
    group.finish();
}

criterion_group!(benches, imagery_stages, change_rules, vectorise);
criterion_main!(benches);
