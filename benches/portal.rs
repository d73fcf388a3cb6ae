//! The portal's list and map queries on a ledger of 100,000 patches (two counties of 50,000,
//! ten townships, three types), as the page asks them:
//! - `first_page` / `last_page`: 100 rows of a county's list, with the count of all;
//! - `township_and_type`: the first page filtered by township and type;
//! - `map_view`: the patches of a view of about 1/100 of the county (at most 5,000);
//! - `extent`: the bounding box the map fits at login;
//! - `places`: the counties and townships of the filters.
//!
//!
//! And the map tiles of a 4096 × 4096 px composite (Sentinel-2 L2A bands, a COG with
//! overviews, as a period run writes it), rendered as the page asks them:
//! - `tile_z15`: a tile at about the composite's resolution (4.8 m pixels);
//! - `tile_z11`: a tile of the zoomed-out city, read from the overviews;
//! - `tile_beyond`: a tile beside the composite (empty, nothing read).
//!
//! `cargo bench --bench portal`

use criterion::{criterion_group, criterion_main, Criterion};
use gengbao::domain::change::ChangeType;
use gengbao::job::layout::OutputLayout;
use gengbao::ledger::{Filter, Ledger, LedgerRules};

const PER_COUNTY: usize = 50_000;
const COUNTIES: [&str; 2] = ["320901", "320902"];
/// Patches lie on a grid of 250 × 200 cells of 50 m per county.
const COLUMNS: usize = 250;
const CELL_M: f64 = 50.0;

fn ledger_of_100k(dir: &std::path::Path) -> Ledger {
    let file = OutputLayout::new(dir).ledger_file();
    let mut ledger = Ledger::open(&file).unwrap();
    for (k, county) in COUNTIES.into_iter().enumerate() {
        let x0 = k as f64 * COLUMNS as f64 * CELL_M;
        let mut patches: Vec<_> = (0..PER_COUNTY)
            .map(|i| {
                let (col, row) = (i % COLUMNS, i / COLUMNS);
                let mut p = gengbao::samples::square_patch(
                    county,
                    x0 + col as f64 * CELL_M,
                    row as f64 * CELL_M,
                    20.0,
                    "2026-P1",
                );
                let town = row * 5 / (PER_COUNTY / COLUMNS);
                p.township_code = format!("{county}{town:03}");
                p.township_name = format!("第{town}镇");
                p.change = ChangeType::ALL[i % 3];
                p
            })
            .collect();
        ledger
            .record_period(
                "2026-P1".parse().unwrap(),
                &[county.to_string()],
                &mut patches,
                &LedgerRules::default(),
                &|_| Ok(None),
            )
            .unwrap();
    }
    ledger
}

fn list_and_map(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger_of_100k(tmp.path());
    let county = Filter {
        county: Some(COUNTIES[0].into()),
        ..Default::default()
    };
    assert_eq!(
        ledger.page(&county, 0, 100).unwrap().total,
        PER_COUNTY as u64
    );
    let mut g = c.benchmark_group("portal_100k");
    g.sample_size(20);
    g.bench_function("first_page", |b| {
        b.iter(|| ledger.page(&county, 0, 100).unwrap())
    });
    g.bench_function("last_page", |b| {
        b.iter(|| ledger.page(&county, PER_COUNTY as u64 - 100, 100).unwrap())
    });
    let narrow = Filter {
        township: Some(format!("{}002", COUNTIES[0])),
        change: Some("FLH".into()),
        ..county.clone()
    };
    assert!(ledger.page(&narrow, 0, 100).unwrap().total > 1000);
    g.bench_function("township_and_type", |b| {
        b.iter(|| ledger.page(&narrow, 0, 100).unwrap())
    });
    let side = COLUMNS as f64 * CELL_M / 10.0;
    let view = Filter {
        within: Some([1000.0, 1000.0, 1000.0 + side, 1000.0 + side]),
        ..county.clone()
    };
    let in_view = ledger.page(&view, 0, 5000).unwrap();
    assert!(in_view.total >= 400 && in_view.patches.len() as u64 == in_view.total);
    g.bench_function("map_view", |b| {
        b.iter(|| ledger.page(&view, 0, 5000).unwrap())
    });
    g.bench_function("extent", |b| b.iter(|| ledger.extent(&county).unwrap()));
    assert_eq!(ledger.places(None).unwrap().len(), 10);
    g.bench_function("places", |b| b.iter(|| ledger.places(None).unwrap()));
    g.finish();
}

/// A composite like a period's: `side` px of 10 m from (500000, 3500000) in UTM 50N, every
/// band a smooth pattern, written as a period run writes it (`to_cog`).
fn composite(path: &std::path::Path, side: usize) {
    let profile = gengbao::geo::sensor::SensorProfile::by_name("sentinel2-l2a").unwrap();
    let gtiff = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut ds = gtiff
        .create_with_band_type::<i16, _>(path, side, side, profile.bands.len())
        .unwrap();
    ds.set_geo_transform(&[500_000.0, 10.0, 0.0, 3_500_000.0, 0.0, -10.0])
        .unwrap();
    ds.set_projection(
        &gdal::spatial_ref::SpatialRef::from_epsg(32650)
            .unwrap()
            .to_wkt()
            .unwrap(),
    )
    .unwrap();
    for b in 1..=profile.bands.len() {
        let values: Vec<i16> = (0..side * side)
            .map(|i| (500 + (i % side) % 997 + (i / side) % 1499 + 200 * b) as i16)
            .collect();
        let mut buffer = gdal::raster::Buffer::new((side, side), values);
        let mut band = ds.rasterband(b).unwrap();
        band.set_no_data_value(Some(f64::from(i16::MIN))).unwrap();
        band.write((0, 0), (side, side), &mut buffer).unwrap();
    }
    drop(ds);
    gengbao::geo::raster::to_cog(path, gengbao::geo::raster::CogContent::Reflectance).unwrap();
}

fn tiles(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("composite.tif");
    composite(&path, 4096);
    let profile = gengbao::geo::sensor::SensorProfile::by_name("sentinel2-l2a").unwrap();
    let tiles = gengbao::render::tiles::TrueColourTiles::open(&path, profile).unwrap();
    let [w, s, e, n] = tiles.bounds();
    let (lon, lat) = ((w + e) / 2.0, (s + n) / 2.0);
    let mut g = c.benchmark_group("portal_tiles");
    g.sample_size(30);
    for z in [15u8, 11] {
        let (x, y) = gengbao::render::tiles::tile_at(lon, lat, z);
        g.bench_function(format!("tile_z{z}"), |b| {
            b.iter(|| tiles.tile(z, x, y).unwrap())
        });
    }
    let (x, y) = gengbao::render::tiles::tile_at(e + 1.0, lat, 15);
    g.bench_function("tile_beyond", |b| b.iter(|| tiles.tile(15, x, y).unwrap()));
    g.finish();
}

criterion_group!(benches, list_and_map, tiles);
criterion_main!(benches);
