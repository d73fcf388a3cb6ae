//! The portal's list and map queries on a ledger of 100,000 patches (two counties of 50,000,
//! ten townships, three types), as the page asks them:
//! - `first_page` / `last_page`: 100 rows of a county's list, with the count of all;
//! - `township_and_type`: the first page filtered by township and type;
//! - `map_view`: the patches of a view of about 1/100 of the county (at most 5,000);
//! - `extent`: the bounding box the map fits at login;
//! - `places`: the counties and townships of the filters.
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

criterion_group!(benches, list_and_map);
criterion_main!(benches);
