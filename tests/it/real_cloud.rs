//! The visible-band cloud test of sensors without a quality band (Gaofen), judged on real
//! Sentinel-2 looks, blue, green, red and NIR only:
//! - against Sentinel-2's own scene classification (SCL) on the two WorldCereal L2A series of
//!   Flanders, every date: SCL's cloud classes (medium and high probability, cirrus) are the
//!   reference clouds, its vegetation, bare soil, water and snow classes the reference clear
//!   ground; shadows and unclassified pixels are scored neither way;
//! - on OSCD's cloud-free city pairs (top-of-atmosphere looks, as a calibrated Gaofen L1A
//!   product is): how much of each look it calls cloud, and how much of the ground that
//!   changed between the two looks (new roofs, cleared sites) it would hide.
//!
//! Skips with a message when the data is absent. Reproduce the README figures:
//! `cargo test --release --test it real_cloud -- --nocapture`.

use gengbao::geo::sensor::visible_clouds;
use std::path::{Path, PathBuf};

/// Sentinel-2's pixel side, metres (OSCD's degree pixels are as wide on the ground).
const PIXEL_M: f64 = 10.0;

/// One raster: (width, height, one vector per GDAL band, as reflectance: DN / 10,000).
fn bands(path: &Path) -> (usize, usize, Vec<Vec<f32>>) {
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
        let band = |b: &str| bands(&dir.join(patch).join(format!("{b}.tif")));
        let (w, h, blue) = band("B02");
        let (_, _, green) = band("B03");
        let (_, _, red) = band("B04");
        let (_, _, nir) = band("B08");
        // SCL is at 20 m: each of its pixels covers 2 × 2 of the 10 m bands.
        let (sw, _, scl) = band("SCL");
        let (mut tp, mut fp, mut fn_, mut clear) = (0usize, 0usize, 0usize, 0usize);
        for d in 0..blue.len() {
            let clouds = visible_clouds(&blue[d], &green[d], &red[d], &nir[d], w, PIXEL_M);
            for (i, &cloud) in clouds.iter().enumerate().take(w * h) {
                let class = (scl[d][(i / w / 2) * sw + (i % w) / 2] * 1e4).round() as u16;
                let reference_cloud = matches!(class, 8..=10);
                let reference_clear = matches!(class, 4..=6 | 11);
                if !(reference_cloud || reference_clear) || blue[d][i] <= 0.0 {
                    continue;
                }
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

/// Blue, green, red and NIR of one OSCD look (`imgs_1` or `imgs_2`): width, height, bands.
fn oscd_look(folder: &Path) -> (usize, usize, Vec<Vec<f32>>) {
    let file = |band: &str| -> PathBuf {
        std::fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(&format!("_{band}.tif")))
            .unwrap()
    };
    let looks: Vec<_> = ["B02", "B03", "B04", "B08"]
        .iter()
        .map(|b| bands(&file(b)))
        .collect();
    let (w, h) = (looks[0].0, looks[0].1);
    (w, h, looks.into_iter().map(|l| l.2[0].clone()).collect())
}

#[test]
fn the_visible_cloud_test_leaves_cloud_free_city_scenes_and_their_new_buildings_seen() {
    let Some(dir) = crate::common::real_data("oscd-train", "paris/imgs_1") else {
        eprintln!("skipped: ../shared/data/oscd-train is absent");
        return;
    };
    // OSCD's fourteen city pairs were chosen cloud-free, and what changed in them is mostly
    // new buildings and roads: bright, flat across the visible bands, as clouds are.
    let (mut called, mut hidden) = (Vec::new(), Vec::new());
    for city in crate::common::entries(&dir) {
        let clouds = ["imgs_1", "imgs_2"].map(|date| {
            let (w, h, b) = oscd_look(&city.join(date));
            let clouds = visible_clouds(&b[0], &b[1], &b[2], &b[3], w, PIXEL_M);
            let share = clouds.iter().filter(|&&c| c).count() as f64 / clouds.len() as f64;
            called.push((share, city.join(date)));
            (w, h, clouds)
        });
        // The change mask is on the first look's pixels; the second look covers the same
        // extent with a few pixels fewer, so its pixel is found by scaling.
        let name = city.file_name().unwrap().to_string_lossy().into_owned();
        let (_, _, mask) = bands(&city.join("cm").join(format!("{name}-cm.tif")));
        let [(w1, h1, first), (w2, h2, second)] = &clouds;
        let (mut changed, mut under_cloud) = (0usize, 0usize);
        for (i, &m) in mask[0].iter().enumerate() {
            if (m * 1e4).round() as u8 != 2 {
                continue;
            }
            let (r, c) = (i / w1, i % w1);
            let j = (r * h2 / h1) * w2 + c * w2 / w1;
            changed += 1;
            under_cloud += usize::from(first[i] || second[j]);
        }
        hidden.push((under_cloud as f64 / changed as f64, name));
    }
    called.sort_by(|a, b| a.0.total_cmp(&b.0));
    hidden.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median, (worst, at)) = (called[called.len() / 2].0, called.last().unwrap());
    println!(
        "{} cloud-free looks: median {median:.3} called cloud, at worst {worst:.3} ({})",
        called.len(),
        at.display()
    );
    let (median_hidden, (worst_hidden, city)) =
        (hidden[hidden.len() / 2].0, hidden.last().unwrap());
    println!(
        "changed ground under a cloud in either look, over {} cities: median {median_hidden:.3}, at worst {worst_hidden:.3} ({city})",
        hidden.len()
    );
    assert!(median < 0.01, "median {median}");
    assert!(*worst < 0.1, "{worst} at {}", at.display());
    assert!(median_hidden < 0.02, "median {median_hidden}");
    assert!(*worst_hidden < 0.15, "{worst_hidden} in {city}");
}
