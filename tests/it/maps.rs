//! Maps an inspector reads: the period quicklook hatches ground that no clear image saw, and
//! the county report, opened in a real browser (headless Chromium), shows its map with the
//! patches in their type's colours; a patch of the job's first period gets a before-chip.

use crate::common::{city, cloud_west, config_text, looks, seeded_city};
use gengbao::dispatch::export_packages;
use gengbao::job::config::JobConfig;
use gengbao::job::run::{run_period, RunOptions};
use std::path::Path;
use std::process::Command;

/// The map's colours (src/render): hatching of unobserved ground, and 非农化.
const HATCH_LINE: [u8; 3] = [110, 110, 110];
const FNH_RED: [u8; 3] = [220, 20, 30];
/// A chip panel without imagery (src/dispatch/chips.rs).
const NO_IMAGERY_GREY: [u8; 3] = [90, 90, 90];

fn pixels_of(png: &Path, colour: [u8; 3]) -> usize {
    image::open(png)
        .unwrap()
        .to_rgb8()
        .pixels()
        .filter(|p| p.0 == colour)
        .count()
}

#[test]
fn ground_no_clear_image_saw_is_hatched_on_the_quicklook() {
    let tmp = tempfile::tempdir().unwrap();
    let c = city(&tmp.path().join("city"), 128, 3, 64);
    let cfg = JobConfig::load(&c.job_config).unwrap();
    let (p1, p2) = (c.periods[0], c.periods[1]);
    run_period(&cfg, p1, &RunOptions::quiet()).unwrap();
    let clear = pixels_of(&cfg.layout().period(p1).quicklook(), HATCH_LINE);

    // The western quarter of every look of the second period is under cloud.
    assert!(cloud_west(&c.dir, &cfg, p2, 0.25) > 0);
    let summary = run_period(&cfg, p2, &RunOptions::quiet()).unwrap();
    let share = summary.coverage.clear_share.unwrap();
    assert!(
        (0.1..0.9).contains(&share),
        "part of the watched land seen clear, the summary says {share}"
    );
    assert!(summary.human().contains("% of its watched land seen clear"));
    let clouded = pixels_of(&cfg.layout().period(p2).quicklook(), HATCH_LINE);
    // The legend's swatch is hatched in both; half the map only in the clouded period.
    assert!(clear < 500, "{clear} hatch pixels on a clear period's map");
    assert!(
        clouded > 20 * clear.max(100),
        "part of the map unobserved, yet {clouded} hatch pixels (clear period: {clear})"
    );
}

#[test]
fn the_county_report_shows_its_map_in_a_browser() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("skipped: no chromium (scripts/setup.sh installs it)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let c = seeded_city(&tmp.path().join("city"), 512, 3, 256, 1);
    let config = config_text(&c).replace("fnh_min_periods = 2", "fnh_min_periods = 1");
    std::fs::write(&c.job_config, config).unwrap();
    let cfg = JobConfig::load(&c.job_config).unwrap();
    for p in &c.periods[..2] {
        run_period(&cfg, *p, &RunOptions::quiet()).unwrap();
    }
    let packages = export_packages(&cfg, c.periods[1], &[], false).unwrap();
    let package = packages
        .iter()
        .find(|p| pixels_of(&p.dir.join("overview.png"), FNH_RED) > 0)
        .expect("a county with 非农化 patches on its overview");
    let overview = image::open(package.dir.join("overview.png")).unwrap();
    assert!(
        overview.width() >= 560 && overview.height() >= 560,
        "overview of {}x{} px",
        overview.width(),
        overview.height()
    );

    let report = std::fs::read_to_string(package.dir.join("report.html")).unwrap();
    assert!(
        report.contains("本期晴空影像看到本县全部监测耕地"),
        "the report states what the period saw"
    );

    let shot = tmp.path().join("report.png");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,2400",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!(
            "file://{}",
            package.dir.join("report.html").display()
        ))
        .output()
        .unwrap();
    assert!(
        shot.exists(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The page shows the map as drawn: its 非农化 patches, unscaled, in the browser's image.
    let in_browser = pixels_of(&shot, FNH_RED);
    let on_map = pixels_of(&package.dir.join("overview.png"), FNH_RED);
    assert!(
        in_browser >= on_map,
        "the report in Chromium shows {in_browser} 非农化 pixels, its map has {on_map}"
    );

    // A job whose first period is the second: the period before it has no imagery, so the
    // before-chip shows the earliest image there is, not an empty grey panel.
    for acq in looks(&c.dir, &cfg, c.periods[0]) {
        std::fs::remove_dir_all(&acq.folder).unwrap();
    }
    let text = config_text(&c).replace("output = \"out\"", "output = \"out-later-start\"");
    std::fs::write(&c.job_config, text).unwrap();
    let cfg = JobConfig::load(&c.job_config).unwrap();
    run_period(&cfg, c.periods[1], &RunOptions::quiet()).unwrap();
    let chips: Vec<_> = export_packages(&cfg, c.periods[1], &[], false)
        .unwrap()
        .iter()
        .flat_map(|p| std::fs::read_dir(p.dir.join("chips")).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!chips.is_empty(), "patches in the job's first period");
    for chip in &chips {
        let empty_panel = pixels_of(chip, NO_IMAGERY_GREY);
        assert!(
            empty_panel < 1000,
            "{}: {empty_panel} pixels of an empty panel",
            chip.display()
        );
    }
}
