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
