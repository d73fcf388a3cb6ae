//! The time-series rules on a generated city run period after period: abandonment is flagged
//! after a year without cultivation and not before, fallow land cultivated again within the
//! year and a one-period flood are never flagged, a lasting change to water is flagged in its
//! second period, and every patch says when it was first seen and how long it has lasted.

use crate::common::{run_all, seeded_city};
use gdal::vector::Geometry;
use gengbao::domain::change::ChangeType;
use gengbao::evaluate::read_period_patches;
use gengbao::samples::PlantedChange;

/// Whether patches of `kind` cover at least half of the change's footprint.
fn flagged(patches: &[(ChangeType, Geometry)], change: &PlantedChange, kind: ChangeType) -> bool {
    let footprint = change.footprint().unwrap();
    2.0 * crate::common::covered_area(patches, kind, &footprint) >= footprint.area()
}

#[test]
fn persistence_rules_over_a_year_and_a_half() {
    let tmp = tempfile::tempdir().unwrap();
    // 10 periods from 2025-P1: abandonment planted from 2025-P2 to 2025-P5; this seed has
    // two ponds.
    let city = seeded_city(&tmp.path().join("city"), 384, 10, 192, 6);
    let cfg = run_all(&city, None);
    let patches: Vec<Vec<(ChangeType, Geometry)>> = city
        .periods
        .iter()
        .map(|p| read_period_patches(cfg.layout().period(*p).dir()).unwrap())
        .collect();
    let first_flagged =
        |c: &PlantedChange, kind| (0..city.periods.len()).find(|&k| flagged(&patches[k], c, kind));

    // Abandonment after a season with a sign of cultivation (green-up or harvest in P2..P5):
    // with k that season, the year without cultivation is k+1..k+6.
    let mut judged_ph = 0;
    for c in city.changes.iter().filter(|c| c.kind == ChangeType::PH) {
        let k = c.onset - 1;
        let first = first_flagged(c, ChangeType::PH);
        if (2..=5).contains(&city.periods[k].index) {
            judged_ph += 1;
            assert_eq!(
                first,
                Some(k + 6),
                "PH of parcel {} abandoned after {} is flagged at {:?}, expected {}",
                c.parcel,
                city.periods[k],
                first.map(|f| city.periods[f]),
                city.periods[k + 6]
            );
        } else {
            // After a winter period (no sign either way) the year may have begun earlier.
            assert!(
                first.is_some_and(|f| f + 2 >= c.onset + 5),
                "PH {c:?} at {first:?}"
            );
        }
    }
    assert!(
        judged_ph >= 2,
        "the city has too few abandonments after a crop season"
    );

    for c in &city.passing {
        for (k, p) in patches.iter().enumerate() {
            assert!(
                !flagged(p, c, c.kind),
                "passing {:?} ({} to {}) flagged as {} at {}",
                c.to,
                city.periods[c.onset],
                city.periods[c.until.unwrap()],
                c.kind.code(),
                city.periods[k]
            );
        }
    }
    assert!(city.passing.iter().any(|c| c.kind == ChangeType::PH));
    assert!(city.passing.iter().any(|c| c.kind == ChangeType::FLH));

    // A lasting change to water: one period is not enough, the second is.
    let ponds: Vec<&PlantedChange> = city
        .changes
        .iter()
        .filter(|c| {
            c.kind == ChangeType::FLH && c.to == gengbao::domain::land_cover::LandCover::Water
        })
        .collect();
    assert!(!ponds.is_empty(), "no pond planted");
    for c in ponds {
        assert_eq!(
            first_flagged(c, ChangeType::FLH),
            Some(c.onset + 1),
            "{c:?}"
        );
    }

    // Patch attributes: first seen and persistence.
    let last = *city.periods.last().unwrap();
    let gpkg = &cfg
        .layout()
        .period(last)
        .dir()
        .to_path_buf()
        .join("counties/320901/TB_320901_2026-P4.gpkg");
    let ds = gdal::Dataset::open(gpkg).unwrap();
    use gdal::vector::LayerAccess;
    let mut layer = ds.layer(0).unwrap();
    let mut seen = 0;
    for f in layer.features() {
        let text = |name| {
            f.field_as_string(f.field_index(name).unwrap())
                .unwrap()
                .unwrap()
        };
        let (first, kind) = (text("SCQS"), text("BHLX"));
        let persisted = f
            .field_as_integer(f.field_index("CXQS").unwrap())
            .unwrap()
            .unwrap();
        let first: gengbao::domain::period::Period = first.parse().unwrap();
        assert_eq!(first.offset(persisted - 1), last, "SCQS + CXQS - 1 is now");
        let min = match kind.as_str() {
            "FNH" => 1,
            "FLH" => 2,
            _ => 6,
        };
        assert!(persisted >= min, "{kind} patch persisted only {persisted}");
        seen += 1;
    }
    assert!(seen > 0);
}

/// Built-up ground as the generator's L2A files store it (reflectance × 10,000 + 1,000): low
/// NDVI, red close to blue, so the index rules call it built-up.
const BUILT_UP: [(&str, f32); 10] = [
    ("B02", 0.12),
    ("B03", 0.13),
    ("B04", 0.15),
    ("B05", 0.16),
    ("B06", 0.17),
    ("B07", 0.17),
    ("B08", 0.19),
    ("B8A", 0.19),
    ("B11", 0.24),
    ("B12", 0.22),
];

/// Paints the square `(x0, y0, x1, y1)` (job CRS) built-up and clear in every look of `period`.
fn paint_built_up(
    city_dir: &std::path::Path,
    cfg: &gengbao::job::config::JobConfig,
    period: gengbao::Period,
    square: (f64, f64, f64, f64),
) {
    for look in crate::common::looks(city_dir, cfg, period) {
        for (band, path) in &look.files {
            let dn = match BUILT_UP.iter().find(|(b, _)| b == band) {
                Some((_, reflectance)) => (reflectance * 10_000.0 + 1_000.0) as u16,
                None => 5, // SCL: not vegetated, clear
            };
            let ds = crate::common::open_for_update(path);
            let gt = ds.geo_transform().unwrap();
            let col = |x: f64| ((x - gt[0]) / gt[1]).round() as isize;
            let row = |y: f64| ((y - gt[3]) / gt[5]).round() as isize;
            let (c0, c1, r0, r1) = (col(square.0), col(square.2), row(square.3), row(square.1));
            let size = ((c1 - c0) as usize, (r1 - r0) as usize);
            let mut band = ds.rasterband(1).unwrap();
            if band.band_type() == gdal::raster::GdalDataType::UInt8 {
                let mut buf = gdal::raster::Buffer::new(size, vec![dn as u8; size.0 * size.1]);
                band.write((c0, r0), size, &mut buf).unwrap();
            } else {
                let mut buf = gdal::raster::Buffer::new(size, vec![dn; size.0 * size.1]);
                band.write((c0, r0), size, &mut buf).unwrap();
            }
        }
    }
}

/// The top-left pixels of two 8 × 8 px squares of grain that stays grain and unchanged in
/// both periods, on different rows of the city, from the generator's truth.
fn steady_grain_squares(
    city: &gengbao::samples::SampleCity,
    periods: [gengbao::Period; 2],
) -> Vec<(usize, usize)> {
    let read = |name: String| {
        gengbao::geo::raster::read_band_f64(&city.dir.join("truth").join(name), 1).unwrap()
    };
    let layers: Vec<_> = periods
        .iter()
        .flat_map(|p| {
            [
                read(format!("class_{p}.tif")),
                read(format!("change_{p}.tif")),
            ]
        })
        .collect();
    let (w, h) = (layers[0].0, layers[0].1);
    let steady = |i: usize| {
        layers[0].2[i] == 1.0
            && layers[2].2[i] == 1.0
            && layers[1].2[i] == 0.0
            && layers[3].2[i] == 0.0
    };
    let mut found: Vec<(usize, usize)> = Vec::new();
    for r in (8..h - 16).step_by(4) {
        for c in (8..w - 16).step_by(4) {
            let clear_of_others = found
                .iter()
                .all(|&(fr, fc)| fr.abs_diff(r) > 24 || fc.abs_diff(c) > 24);
            if clear_of_others && (0..64).all(|k| steady((r + k / 8) * w + c + k % 8)) {
                found.push((r, c));
            }
        }
    }
    found
}

/// `run` decides change as `detect` does, against the look of the same period a year
/// before: ground the classes call built-up that looked the same a year ago (a field under
/// plastic mulch every spring, a classifier's steady error) begins no change; ground that
/// departed from last year's look does. In a job's first year there is no such look and the
/// classes alone decide, so the first square is flagged then.
#[test]
fn a_change_is_a_departure_from_last_years_look() {
    use gengbao::job::run::{run_period, RunOptions};
    let tmp = tempfile::tempdir().unwrap();
    let city = seeded_city(&tmp.path().join("city"), 128, 8, 64, 7);
    let text = crate::common::config_text(&city)
        .replace("kind = \"auto\"", "kind = \"index\"")
        .replace("fnh_min_periods = 2 ", "fnh_min_periods = 1 ");
    assert!(
        text.contains("fnh_min_periods = 1 "),
        "the example config changed"
    );
    std::fs::write(&city.job_config, text).unwrap();
    let cfg = gengbao::job::config::JobConfig::load(&city.job_config).unwrap();
    let (last_year, now) = (city.periods[1], city.periods[7]);
    assert_eq!(now, last_year.offset(6));

    let squares = steady_grain_squares(&city, [last_year, now]);
    assert!(
        squares.len() >= 2,
        "two squares of steady grain: {squares:?}"
    );
    let grid =
        gdal::Dataset::open(city.dir.join("truth").join(format!("class_{now}.tif"))).unwrap();
    let gt = grid.geo_transform().unwrap();
    let square = |(r, c): (usize, usize)| {
        let (x0, y1) = (gt[0] + c as f64 * gt[1], gt[3] + r as f64 * gt[5]);
        (x0, y1 + 8.0 * gt[5], x0 + 8.0 * gt[1], y1)
    };
    let footprint = |s: (f64, f64, f64, f64)| {
        Geometry::from_wkt(&format!(
            "POLYGON(({0} {1},{2} {1},{2} {3},{0} {3},{0} {1}))",
            s.0, s.1, s.2, s.3
        ))
        .unwrap()
    };
    let (same, new) = (square(squares[0]), square(squares[1]));
    paint_built_up(&city.dir, &cfg, last_year, same);
    paint_built_up(&city.dir, &cfg, now, same);
    paint_built_up(&city.dir, &cfg, now, new);

    let built_share = |period, s| {
        let patches = read_period_patches(cfg.layout().period(period).dir()).unwrap();
        let f = footprint(s);
        crate::common::covered_area(&patches, ChangeType::FNH, &f) / f.area()
    };
    let first = run_period(&cfg, last_year, &RunOptions::quiet()).unwrap();
    assert_eq!(first.change_decision.compared_with, None);
    assert!(
        built_share(last_year, same) > 0.5,
        "first year: the classes alone flag it"
    );

    let summary = run_period(&cfg, now, &RunOptions::quiet()).unwrap();
    assert_eq!(
        summary.change_decision.compared_with.as_deref(),
        Some(last_year.to_string().as_str())
    );
    assert!(summary.change_decision.threshold.is_some());
    let (same_share, new_share) = (built_share(now, same), built_share(now, new));
    println!("a year later: square built both years {same_share:.2} flagged, built this year {new_share:.2}");
    assert!(
        new_share > 0.5,
        "ground that departed from last year's look: {new_share:.2} flagged"
    );
    assert!(
        same_share < 0.1,
        "ground that looks as last year: {same_share:.2} flagged"
    );
}
