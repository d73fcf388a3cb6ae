//! The visible-band cloud test of sensors without a quality band (Gaofen), judged on real
//! Sentinel-2 L2A series against their own scene classification (SCL): the two WorldCereal
//! patches of Flanders, every date, blue, green, red and NIR only. SCL's cloud classes
//! (medium and high probability, cirrus) are the reference clouds; its vegetation, bare soil,
//! water and snow classes the reference clear ground; shadows and unclassified pixels are
//! scored neither way. Skips with a message when the data is absent. Reproduce the README
//! figures: `cargo test --release --test it real_cloud -- --nocapture`.

use gengbao::geo::sensor::cloudy_in_visible;

/// Every band of a patch file: one GDAL band per date, as reflectance (L2A DN / 10,000).
fn series(path: &std::path::Path) -> (usize, usize, Vec<Vec<f32>>) {
    let ds = gdal::Dataset::open(path).unwrap();
    let (w, h) = ds.raster_size();
    let dates = (1..=ds.raster_count())
        .map(|b| {
            ds.rasterband(b)
                .unwrap()
                .read_as::<f32>((0, 0), (w, h), (w, h), None)
                .unwrap()
                .into_shape_and_vec()
                .1
                .into_iter()
                .map(|v| v / 1e4)
                .collect()
        })
        .collect();
    (w, h, dates)
}

#[test]
fn the_visible_cloud_test_agrees_with_sentinel_2_scene_classification() {
    let Some(dir) = crate::common::real_data("worldcereal-s2", "00002806639B424A/B02.tif") else {
        eprintln!("skipped: ../shared/data/worldcereal-s2 is absent");
        return;
    };
    for patch in ["00002806639B424A", "0000280849BAC91C"] {
        let band = |b: &str| series(&dir.join(patch).join(format!("{b}.tif")));
        let (w, h, blue) = band("B02");
        let (_, _, green) = band("B03");
        let (_, _, red) = band("B04");
        let (_, _, nir) = band("B08");
        // SCL is at 20 m: each of its pixels covers 2 × 2 of the 10 m bands.
        let (sw, _, scl) = band("SCL");
        let (mut tp, mut fp, mut fn_, mut clear) = (0usize, 0usize, 0usize, 0usize);
        for d in 0..blue.len() {
            for i in 0..w * h {
                let class = (scl[d][(i / w / 2) * sw + (i % w) / 2] * 1e4).round() as u16;
                let reference_cloud = matches!(class, 8..=10);
                let reference_clear = matches!(class, 4..=6 | 11);
                if !(reference_cloud || reference_clear) || blue[d][i] <= 0.0 {
                    continue;
                }
                let cloud = cloudy_in_visible(blue[d][i], green[d][i], red[d][i], nir[d][i]);
                match (cloud, reference_cloud) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => fn_ += 1,
                    (false, false) => {}
                }
                clear += usize::from(reference_clear);
            }
        }
        let precision = tp as f64 / (tp + fp) as f64;
        let recall = tp as f64 / (tp + fn_) as f64;
        let false_share = fp as f64 / clear as f64;
        println!(
            "{patch}: {} dates, cloud precision {precision:.3} recall {recall:.3} F1 {:.3}, clear ground called cloud {false_share:.3}",
            blue.len(),
            2.0 * precision * recall / (precision + recall)
        );
        assert!(precision > 0.9 && recall > 0.75, "{patch}");
        assert!(false_share < 0.06, "{patch}");
    }
}

#[test]
fn the_visible_cloud_test_leaves_cloud_free_city_scenes_seen() {
    let Some(dir) = crate::common::real_data("oscd-train", "paris/imgs_1") else {
        eprintln!("skipped: ../shared/data/oscd-train is absent");
        return;
    };
    // OSCD's fourteen city pairs were chosen cloud-free: top-of-atmosphere looks (L1C), as a
    // calibrated Gaofen L1A product is, of the grey roofs and haze that trouble the test.
    let mut shares = Vec::new();
    for city in std::fs::read_dir(&dir).unwrap() {
        let city = city.unwrap().path();
        for date in ["imgs_1", "imgs_2"] {
            let folder = city.join(date);
            let file = |band: &str| {
                std::fs::read_dir(&folder)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| p.to_string_lossy().ends_with(&format!("_{band}.tif")))
                    .unwrap()
            };
            let bands: Vec<Vec<f32>> = ["B02", "B03", "B04", "B08"]
                .iter()
                .map(|b| series(&file(b)).2.remove(0))
                .collect();
            let n = bands[0].len();
            let cloudy = (0..n)
                .filter(|&i| cloudy_in_visible(bands[0][i], bands[1][i], bands[2][i], bands[3][i]))
                .count();
            shares.push((cloudy as f64 / n as f64, folder));
        }
    }
    shares.sort_by(|a, b| a.0.total_cmp(&b.0));
    let median = shares[shares.len() / 2].0;
    let (worst, at) = shares.last().unwrap();
    println!(
        "{} cloud-free looks: median {:.3} called cloud, at worst {worst:.3} ({})",
        shares.len(),
        median,
        at.display()
    );
    assert!(median < 0.03, "median {median}");
    assert!(*worst < 0.3, "{worst} at {}", at.display());
}
