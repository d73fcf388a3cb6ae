//! Bad inputs stop the run with a message naming the file (or config key) and the fix, and
//! leave no partial output: neither a period folder nor a staging folder. Most cases break a
//! copy of a job that already has results; those results and its ledger stay byte for byte.

use crate::common::{city, cloud_west, copy_dir, files_below, looks, open_for_update};
use gengbao::job::config::JobConfig;
use gengbao::job::run::{run_period, RunOptions};
use gengbao::samples::SampleCity;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Case {
    dir: PathBuf,
    config: PathBuf,
    /// The job's results before the input was broken (files below `out/`), when it had any.
    results: Option<Vec<(PathBuf, Vec<u8>)>>,
}

fn fresh(template: &SampleCity, root: &Path, name: &str) -> Case {
    let dir = root.join(name);
    copy_dir(&template.dir, &dir);
    Case {
        config: dir.join("job.toml"),
        dir,
        results: None,
    }
}

/// A copy of the city whose first period has been run: a bad input found on a re-run must
/// leave those results and the ledger as they were.
fn with_results(template: &SampleCity, root: &Path, name: &str) -> Case {
    let mut case = fresh(template, root, name);
    let cfg = JobConfig::load(&case.config).unwrap();
    run_period(&cfg, "2025-P1".parse().unwrap(), &RunOptions::quiet()).unwrap();
    case.results = Some(job_results(&case));
    case
}

/// What a failed run must not change: every file below `out/` but the checkpoints a run
/// keeps to resume.
fn job_results(case: &Case) -> Vec<(PathBuf, Vec<u8>)> {
    contents_below(&case.dir.join("out"))
        .into_iter()
        .filter(|(f, _)| !f.starts_with(".checkpoints"))
        .collect()
}

fn edit_config(case: &Case, from: &str, to: &str) {
    let text = fs::read_to_string(&case.config).unwrap();
    assert!(text.contains(from), "config has no `{from}`");
    fs::write(&case.config, text.replace(from, to)).unwrap();
}

fn first_acquisition(dir: &Path) -> PathBuf {
    let mut acq: Vec<PathBuf> = fs::read_dir(dir.join("imagery"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    acq.sort();
    acq.remove(0)
}

fn band_file(acq: &Path, band: &str) -> PathBuf {
    fs::read_dir(acq)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(&format!("_{band}_")))
        .unwrap()
}

/// Every file below `dir` (relative to it) with its bytes.
fn contents_below(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_below(dir)
        .into_iter()
        .map(|f| {
            let bytes = fs::read(dir.join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

/// Points the case's job at the shipped model cut in half (a download stopped midway), its
/// card beside it.
fn cut_model(case: &Case) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let bytes = fs::read(shipped.join("gengbao-s2-v1.ot")).unwrap();
    let model = case.dir.join("model.ot");
    fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    fs::copy(
        shipped.join("gengbao-s2-v1.ot.json"),
        case.dir.join("model.ot.json"),
    )
    .unwrap();
    edit_config(
        case,
        "kind = \"auto\"",
        &format!("kind = \"torch\"\nmodel = \"{}\"", model.display()),
    );
}

/// The error of running `period` of the case's job, which must fail.
fn run_error(case: &Case, period: gengbao::Period) -> String {
    let cfg = JobConfig::load(&case.config).unwrap();
    run_period(&cfg, period, &RunOptions::quiet())
        .expect_err("the run must fail")
        .to_string()
}

/// Runs the first period; expects failure naming `must_name`, and no output left behind.
fn expect_failure(case: &Case, must_name: &[&str]) -> String {
    let text = match JobConfig::load(&case.config) {
        Err(e) => e.to_string(),
        Ok(_) => run_error(case, "2025-P1".parse().unwrap()),
    };
    for m in must_name {
        assert!(text.contains(m), "error does not name `{m}`:\n{text}");
    }
    assert!(text.contains("fix:"), "error gives no fix:\n{text}");
    match &case.results {
        Some(before) => {
            let after = job_results(case);
            let changed: Vec<_> = before
                .iter()
                .filter(|b| !after.contains(b))
                .map(|(f, _)| f)
                .chain(after.iter().filter(|a| !before.contains(a)).map(|(f, _)| f))
                .collect();
            assert!(changed.is_empty(), "the failed run changed {changed:?}");
        }
        None => {
            let out = case.dir.join("out");
            assert!(
                files_below(&out).is_empty(),
                "partial output left: {:?}",
                files_below(&out)
            );
        }
    }
    text
}

#[test]
fn each_bad_input_is_named_with_a_fix_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);

    // A band file is missing from an acquisition.
    let c = with_results(&template, tmp.path(), "missing_band");
    let acq = first_acquisition(&c.dir);
    fs::remove_file(band_file(&acq, "B11")).unwrap();
    expect_failure(
        &c,
        &[
            "missing band file B11",
            acq.file_name().unwrap().to_str().unwrap(),
        ],
    );

    // A band file is not a readable raster.
    let c = with_results(&template, tmp.path(), "corrupt");
    let bad = band_file(&first_acquisition(&c.dir), "B04");
    fs::write(&bad, b"II*\0 this is not really a tiff").unwrap();
    expect_failure(
        &c,
        &[bad.file_name().unwrap().to_str().unwrap(), "cannot be read"],
    );

    // A band file has no CRS.
    let c = with_results(&template, tmp.path(), "no_crs");
    let bad = band_file(&first_acquisition(&c.dir), "B08");
    strip_crs(&bad);
    expect_failure(
        &c,
        &[
            bad.file_name().unwrap().to_str().unwrap(),
            "no coordinate reference system",
        ],
    );

    // The admin layer holds no polygons: the area of interest is empty.
    let c = with_results(&template, tmp.path(), "empty_aoi");
    empty_layer(&c.dir.join("admin.gpkg"), "counties");
    expect_failure(&c, &["admin.gpkg", "area of interest is empty"]);

    // The farmland layer holds no parcels.
    let c = with_results(&template, tmp.path(), "empty_farmland");
    empty_layer(&c.dir.join("farmland.gpkg"), "farmland");
    expect_failure(&c, &["farmland.gpkg", "[farmland] classes"]);

    // The farmland layer lacks the id field named in the config.
    let c = with_results(&template, tmp.path(), "no_id_field");
    edit_config(&c, "id_field = \"BSM\"", "id_field = \"PARCEL_ID\"");
    expect_failure(&c, &["farmland.gpkg", "PARCEL_ID"]);

    // A class filter that matches no feature of the farmland layer.
    let c = with_results(&template, tmp.path(), "no_watched_class");
    edit_config(&c, "classes = [\"01\"]", "classes = [\"02\"]");
    expect_failure(&c, &["farmland.gpkg", "DLBM", "[farmland] classes"]);

    // A typo in the config.
    let c = with_results(&template, tmp.path(), "typo");
    edit_config(&c, "resolution = 10.0", "resolutoin = 10.0");
    expect_failure(&c, &["job.toml", "resolutoin"]);

    // A period without imagery.
    let c = with_results(&template, tmp.path(), "no_imagery");
    let err = run_error(&c, "2030-P1".parse().unwrap());
    assert!(
        err.contains("no acquisitions dated inside 2030-P1") && err.contains("2025-P1"),
        "{err}"
    );
}

#[test]
fn a_failed_rerun_keeps_the_previous_results_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);
    let c = fresh(&template, tmp.path(), "rerun");
    let cfg = JobConfig::load(&c.config).unwrap();
    let p = "2025-P1".parse().unwrap();
    run_period(&cfg, p, &RunOptions::quiet()).unwrap();
    let out = c.dir.join("out").join("2025-P1");
    let before = contents_below(&out);
    fs::remove_file(band_file(&first_acquisition(&c.dir), "B12")).unwrap();
    assert!(run_period(&cfg, p, &RunOptions::quiet()).is_err());
    let after = contents_below(&out);
    assert_eq!(
        before, after,
        "a failed re-run changed the previous results"
    );
    let leftovers: Vec<_> = fs::read_dir(c.dir.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        // The tiles finished before the failure are kept for the next attempt to resume.
        .filter(|n| n != ".checkpoints")
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

#[test]
fn the_binary_exits_non_zero_with_the_message() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |config: &str, period: &str| {
        let cfg = tmp.path().join("job.toml");
        fs::write(&cfg, config).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gengbao"))
            .args(["run", "--config", cfg.to_str().unwrap(), "--period", period])
            .output()
            .unwrap();
        assert!(!out.status.success(), "exit code 0 for a bad run");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(
        &gengbao::job::config::EXAMPLE.replace("[grid]", "[grdi]"),
        "2025-P1",
    );
    assert!(
        err.contains("grdi") && err.contains("job.toml") && err.contains("fix:"),
        "{err}"
    );
    let err = run(gengbao::job::config::EXAMPLE, "2025-P9");
    assert!(err.contains("2025-P9") && err.contains("YYYY-Pn"), "{err}");
}

fn strip_crs(path: &Path) {
    let (w, h, values) = crate::common::band_u16(path);
    let src = gdal::Dataset::open(path).unwrap();
    let gt = src.geo_transform().unwrap();
    drop(src);
    fs::remove_file(path).unwrap();
    let drv = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut ds = drv.create_with_band_type::<u16, _>(path, w, h, 1).unwrap();
    ds.set_geo_transform(&gt).unwrap();
    let mut buf = gdal::raster::Buffer::new((w, h), values);
    ds.rasterband(1)
        .unwrap()
        .write((0, 0), (w, h), &mut buf)
        .unwrap();
}

fn empty_layer(path: &Path, layer: &str) {
    sql(path, &format!("DELETE FROM {layer}"));
}

#[test]
fn detect_refuses_images_whose_bands_fit_no_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("rgb.tif");
    crate::common::geotiff(&path, 8, 3, 10.0, |_, _| 0);
    let opts = |sensor: Option<&str>| gengbao::detect::DetectOptions {
        sensor: sensor.map(str::to_string),
        ..gengbao::detect::DetectOptions::new(path.clone(), path.clone(), tmp.path().join("out"))
    };
    let err = gengbao::detect::detect(&opts(None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rgb.tif") && err.contains("3 bands") && err.contains("--sensor"),
        "{err}"
    );
    let err = gengbao::detect::detect(&opts(Some("sentinel2-l2a")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expects 10"), "{err}");
    assert!(!tmp.path().join("out").join("flags.tif").exists());
}

fn sql(path: &Path, statement: &str) {
    let ds = open_for_update(path);
    ds.execute_sql(statement, None, gdal::vector::sql::Dialect::SQLITE)
        .unwrap();
}

#[test]
fn county_codes_are_checked_and_parts_of_a_county_are_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);

    let c = fresh(&template, tmp.path(), "empty_code");
    sql(
        &c.dir.join("admin.gpkg"),
        "UPDATE counties SET XZQDM = '' WHERE XZQDM = '320902'",
    );
    expect_failure(&c, &["admin.gpkg", "county code"]);

    let c = fresh(&template, tmp.path(), "path_in_code");
    sql(
        &c.dir.join("admin.gpkg"),
        "UPDATE counties SET XZQDM = '../x' WHERE XZQDM = '320902'",
    );
    expect_failure(&c, &["admin.gpkg", "../x"]);

    // Two features with one code: one county, one package, counted once.
    let c = fresh(&template, tmp.path(), "two_parts");
    sql(
        &c.dir.join("admin.gpkg"),
        "UPDATE counties SET XZQDM = '320901' WHERE XZQDM = '320902'",
    );
    let cfg = JobConfig::load(&c.config).unwrap();
    let s = run_period(&cfg, "2025-P1".parse().unwrap(), &RunOptions::quiet()).unwrap();
    assert_eq!(s.counties.len(), 1);
    let whole = fresh(&template, tmp.path(), "two_counties");
    let cfg = JobConfig::load(&whole.config).unwrap();
    let two = run_period(&cfg, "2025-P1".parse().unwrap(), &RunOptions::quiet()).unwrap();
    assert_eq!(
        s.counties[0].coverage.watched_pixels, two.coverage.watched_pixels,
        "the merged county holds the watched land of both parts"
    );
}

#[test]
fn a_listing_into_a_closed_pipe_ends_quietly_with_success() {
    // The reader is gone before gengbao writes its first line, as with `… | head -1` once
    // head has its line.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_gengbao"))
        .arg("sensors")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");

    // A full disk behind a redirection is an error, never a silently cut listing.
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gengbao"))
        .arg("sensors")
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{stderr}");
    assert!(
        stderr.contains("standard output") && stderr.contains("fix:"),
        "{stderr}"
    );
}

#[test]
fn a_period_seen_only_through_clouds_is_not_committed_and_keeps_earlier_results() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);
    let c = fresh(&template, tmp.path(), "all_cloud");
    let cfg = JobConfig::load(&c.config).unwrap();
    let p1 = "2025-P1".parse().unwrap();
    run_period(&cfg, p1, &RunOptions::quiet()).unwrap();
    let out = c.dir.join("out").join("2025-P1");
    let before = contents_below(&out);
    assert!(!before.is_empty());

    // Every look of the period turns to cloud, as a wrong or late delivery would.
    assert!(
        cloud_west(&c.dir, &cfg, p1, 1.0) > 0,
        "the city has looks in 2025-P1"
    );

    let err = run_period(&cfg, p1, &RunOptions::quiet()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("2025-P1")
            && text.contains("0.0% of")
            && text.contains("320901")
            && text.contains("320902")
            && text.contains("fix:"),
        "{text}"
    );
    assert_eq!(gengbao::job::cycle::exit_code_of(&err), 5);
    for (f, bytes) in &before {
        assert!(
            &fs::read(out.join(f)).unwrap() == bytes,
            "{} changed",
            f.display()
        );
    }
}

/// Every band file of `look` placed `metres` further east.
fn moved_east(look: &gengbao::geo::imagery::Acquisition, metres: f64) {
    for file in look.files.values() {
        let mut ds = open_for_update(file);
        let mut gt = ds.geo_transform().unwrap();
        gt[0] += metres;
        ds.set_geo_transform(&gt).unwrap();
    }
}

#[test]
fn imagery_that_misses_the_counties_is_no_result() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);
    let c = fresh(&template, tmp.path(), "far_away");
    let cfg = JobConfig::load(&c.config).unwrap();
    let p1 = "2025-P1".parse().unwrap();
    // Every band of the period placed 100 km east, as a wrong tile of a delivery would be.
    for acq in looks(&c.dir, &cfg, p1) {
        moved_east(&acq, 100_000.0);
    }
    let err = run_period(&cfg, p1, &RunOptions::quiet()).unwrap_err();
    assert_eq!(
        gengbao::job::cycle::exit_code_of(&err),
        5,
        "imagery beside the counties is no usable imagery"
    );
    let text = err.to_string();
    assert!(
        text.contains("0.0% of") && text.contains("320901"),
        "{text}"
    );
    assert!(!c.dir.join("out").join("2025-P1").exists());

    // One look of a period 100 km away among good ones: the period runs on the others, and
    // the look is named, with where its ground is.
    let p2 = "2025-P2".parse().unwrap();
    let away = looks(&c.dir, &cfg, p2).remove(0);
    moved_east(&away, 100_000.0);
    let s = run_period(&cfg, p2, &RunOptions::quiet()).unwrap();
    assert_eq!(s.inputs.imagery_off_area.len(), 1, "{:?}", s.inputs);
    let named = &s.inputs.imagery_off_area[0];
    assert!(
        named.starts_with(&away.folder.display().to_string()) && named.contains("its ground is x"),
        "{named}"
    );
    assert!(s.human().contains("do not reach the job's area"));
}

#[test]
fn a_county_no_clear_image_saw_stops_the_period_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    // A city whose western county (320901) ends before x = 1000 m of 1920.
    let template = city(&tmp.path().join("template"), 192, 3, 64);
    let c = fresh(&template, tmp.path(), "west_clouded");
    let cfg = JobConfig::load(&c.config).unwrap();
    let p1 = "2025-P1".parse().unwrap();
    // Clouds over the western county and part of the eastern one.
    cloud_west(&c.dir, &cfg, p1, 0.53);
    let err = run_period(&cfg, p1, &RunOptions::quiet()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("320901") && !text.contains("320902") && text.contains("--county"),
        "{text}"
    );
    assert_eq!(gengbao::job::cycle::exit_code_of(&err), 5);
    assert!(!c.dir.join("out").join("2025-P1").exists());

    // The county that was seen can be run alone; its partial view is stated.
    let opts = RunOptions {
        counties: vec!["320902".into()],
        ..RunOptions::quiet()
    };
    let s = run_period(&cfg, p1, &opts).unwrap();
    let share = s.counties[0].coverage.clear_share.unwrap();
    assert!(share > 0.0 && share < 1.0, "{share}");

    // A floor above what was seen stops it too, naming the key to lower.
    let c = fresh(&template, tmp.path(), "floor");
    edit_config(&c, "[imagery]\n", "[imagery]\nmin_clear_share = 0.95\n");
    let cfg = JobConfig::load(&c.config).unwrap();
    cloud_west(&c.dir, &cfg, p1, 0.2);
    let err = run_error(&c, p1);
    assert!(
        err.contains("320901") && err.contains("min_clear_share"),
        "{err}"
    );
}

#[test]
fn files_that_are_not_what_they_claim_are_named_for_what_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);

    // A picture saved from a viewer and renamed to a band file.
    let c = with_results(&template, tmp.path(), "png_as_tif");
    let bad = band_file(&first_acquisition(&c.dir), "B03");
    image::RgbImage::from_pixel(32, 32, image::Rgb([90, 120, 60]))
        .save_with_format(&bad, image::ImageFormat::Png)
        .unwrap();
    let err = expect_failure(&c, &[bad.file_name().unwrap().to_str().unwrap(), "PNG"]);
    assert!(
        err.contains("not a georeferenced raster") && !err.contains("EPSG:32650"),
        "{err}"
    );

    // An empty band file (a download cut off at its start).
    let c = with_results(&template, tmp.path(), "zero_bytes");
    let bad = band_file(&first_acquisition(&c.dir), "B02");
    fs::write(&bad, b"").unwrap();
    expect_failure(&c, &[bad.file_name().unwrap().to_str().unwrap()]);

    // A band file cut short by an interrupted download: its header reads, its blocks do not.
    let c = with_results(&template, tmp.path(), "cut_band");
    let bad = band_file(&first_acquisition(&c.dir), "B04");
    let bytes = fs::read(&bad).unwrap();
    fs::write(&bad, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = run_error(&c, "2025-P1".parse().unwrap());
    assert!(
        err.contains(bad.file_name().unwrap().to_str().unwrap())
            && err.contains("damaged or cut short")
            && err.contains("fix:"),
        "{err}"
    );
    // Found in the tile that reads it: the tiles done before are kept to resume, the
    // results the job had are unchanged.
    assert!(
        Some(job_results(&c)) == c.results,
        "the failed run changed the job's results"
    );

    // A job config saved as GBK by a Chinese Windows editor.
    let c = with_results(&template, tmp.path(), "gbk_config");
    let text = fs::read_to_string(&c.config).unwrap() + "# 西河县 耕地监测\n";
    let (gbk, _, _) = encoding_rs::GBK.encode(&text);
    fs::write(&c.config, &gbk).unwrap();
    let err = JobConfig::load(&c.config).unwrap_err().to_string();
    assert!(
        err.contains("job.toml") && err.contains("GBK") && err.contains("UTF-8"),
        "{err}"
    );
    // The same file saved as UTF-8 with Notepad's byte-order mark is read.
    fs::write(&c.config, format!("\u{feff}{text}")).unwrap();
    JobConfig::load(&c.config).unwrap();

    // A model file cut short: named as damaged, without libtorch's C++ trace.
    let c = with_results(&template, tmp.path(), "cut_model");
    cut_model(&c);
    let err = expect_failure(&c, &["model.ot", "damaged", "fix:"]);
    assert!(
        !err.contains("Exception raised") && !err.contains("frame #") && err.lines().count() <= 3,
        "{err}"
    );

    // A folder key that names a file.
    let c = with_results(&template, tmp.path(), "folder_is_a_file");
    edit_config(&c, "folder = \"imagery\"", "folder = \"job.toml\"");
    expect_failure(&c, &["job.toml", "imagery.folder"]);

    // An output folder that is a file.
    let c = with_results(&template, tmp.path(), "output_is_a_file");
    fs::write(c.dir.join("results"), b"not a folder").unwrap();
    edit_config(&c, "output = \"out\"", "output = \"results\"");
    let err = JobConfig::load(&c.config).unwrap_err().to_string();
    assert!(
        err.contains("results") && err.contains("job.output") && err.contains("fix:"),
        "{err}"
    );
    assert_eq!(fs::read(c.dir.join("results")).unwrap(), b"not a folder");
}

/// Turns the largest feature of the vector file at `path` for which `chosen` holds into a
/// bow-tie over its extent (a ring crossing itself); returns its `field`.
fn bow_tie(path: &Path, chosen: impl Fn(&str) -> bool, field: &str) -> String {
    use gdal::vector::LayerAccess;
    let ds = open_for_update(path);
    let mut layer = ds.layer(0).unwrap();
    let value = |f: &gdal::vector::Feature| {
        f.field_as_string(f.field_index(field).unwrap())
            .unwrap()
            .unwrap_or_default()
    };
    let (fid, envelope) = layer
        .features()
        .filter(|f| chosen(&value(f)))
        .map(|f| {
            let g = f.geometry().unwrap();
            (f.fid().unwrap(), g.envelope(), g.area())
        })
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .map(|(fid, e, _)| (fid, e))
        .unwrap();
    let mut feature = layer.feature(fid).unwrap();
    let (x0, y0, x1, y1) = (envelope.MinX, envelope.MinY, envelope.MaxX, envelope.MaxY);
    let bow_tie = gdal::vector::Geometry::from_wkt(&format!(
        "POLYGON(({x0} {y0},{x1} {y1},{x1} {y0},{x0} {y1},{x0} {y0}))"
    ))
    .unwrap();
    assert!(!bow_tie.is_valid());
    feature.set_geometry(bow_tie).unwrap();
    layer.set_feature(feature).unwrap();
    let back = value(&layer.feature(fid).unwrap());
    back
}

/// The largest watched parcel of the case's farmland as a bow-tie; returns its BSM.
fn bow_tie_parcel(case: &Case) -> String {
    let path = case.dir.join("farmland.gpkg");
    let ds = gdal::Dataset::open(&path).unwrap();
    let watched: std::collections::HashSet<String> = {
        use gdal::vector::LayerAccess;
        let mut layer = ds.layer(0).unwrap();
        let field = |f: &gdal::vector::Feature, n: &str| {
            f.field_as_string(f.field_index(n).unwrap())
                .unwrap()
                .unwrap_or_default()
        };
        layer
            .features()
            .filter(|f| field(f, "DLBM").starts_with("01"))
            .map(|f| field(&f, "BSM"))
            .collect()
    };
    drop(ds);
    bow_tie(&path, |bsm| watched.contains(bsm), "BSM")
}

#[test]
fn self_intersecting_parcels_and_boundaries_are_repaired_and_listed_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);
    let c = fresh(&template, tmp.path(), "bow_tie");
    let bsm = bow_tie_parcel(&c);
    let cfg = JobConfig::load(&c.config).unwrap();
    let s = run_period(&cfg, "2025-P1".parse().unwrap(), &RunOptions::quiet()).unwrap();
    assert_eq!(s.inputs.farmland_repaired, std::slice::from_ref(&bsm));
    assert!(
        s.human().contains("invalid geometries were repaired") && s.human().contains(&bsm),
        "{}",
        s.human()
    );

    // A county boundary crossing itself: repaired and named.
    let c = fresh(&template, tmp.path(), "county_bow_tie");
    bow_tie(&c.dir.join("admin.gpkg"), |code| code == "320901", "XZQDM");
    let cfg = JobConfig::load(&c.config).unwrap();
    let s = run_period(&cfg, "2025-P1".parse().unwrap(), &RunOptions::quiet()).unwrap();
    assert_eq!(s.inputs.admin_repaired, ["320901"]);
    assert!(
        s.human().contains("320901 cross themselves"),
        "{}",
        s.human()
    );

    let c = fresh(&template, tmp.path(), "bow_tie_refused");
    let bsm = bow_tie_parcel(&c);
    edit_config(
        &c,
        "[imagery]\n",
        "invalid_geometries = \"refuse\"\n\n[imagery]\n",
    );
    expect_failure(&c, &["farmland.gpkg", &bsm, "invalid_geometries"]);
}

/// The case's county layer as a Shapefile written in `encoding` by a tool that records no
/// encoding (no .cpg, no language id in the .dbf); the config points at it.
fn undeclared_shapefile(case: &Case, encoding: &str) {
    let status = Command::new("ogr2ogr")
        .current_dir(&case.dir)
        .args(["-f", "ESRI Shapefile", "admin.shp", "admin.gpkg", "-lco"])
        .arg(format!("ENCODING={encoding}"))
        .status()
        .expect("ogr2ogr (gdal-bin, installed by scripts/setup.sh)");
    assert!(status.success());
    let _ = fs::remove_file(case.dir.join("admin.cpg"));
    let dbf = case.dir.join("admin.dbf");
    let mut bytes = fs::read(&dbf).unwrap();
    bytes[29] = 0;
    fs::write(&dbf, bytes).unwrap();
    edit_config(case, "path = \"admin.gpkg\"", "path = \"admin.shp\"");
    edit_config(case, "layer = \"counties\" ", "layer = \"admin\" ");
}

#[test]
fn county_names_are_never_mojibake() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);
    let p1 = "2025-P1".parse().unwrap();

    // GBK text, no word of which encoding: refused with the key that fixes it.
    let c = fresh(&template, tmp.path(), "gbk_shp");
    undeclared_shapefile(&c, "CP936");
    let err = expect_failure(&c, &["admin.shp", "[aoi] encoding", "GBK"]);
    assert!(err.contains("not UTF-8"), "{err}");
    // With the key set, the names read right.
    edit_config(
        &c,
        "name_field = \"XZQMC\" ",
        "encoding = \"GBK\"\nname_field = \"XZQMC\" ",
    );
    let s = run_period(
        &JobConfig::load(&c.config).unwrap(),
        p1,
        &RunOptions::quiet(),
    )
    .unwrap();
    let names: Vec<&str> = s.counties.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["西河县", "东湖县"]);

    // UTF-8 text without a .cpg is read as UTF-8, not as Latin-1.
    let c = fresh(&template, tmp.path(), "utf8_shp");
    undeclared_shapefile(&c, "UTF-8");
    let s = run_period(
        &JobConfig::load(&c.config).unwrap(),
        p1,
        &RunOptions::quiet(),
    )
    .unwrap();
    let names: Vec<&str> = s.counties.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["西河县", "东湖县"]);
}

/// A small tmpfs mounted for the length of a test (needs root; None where mounting is not
/// allowed, as in unprivileged containers).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, kib: usize) -> Option<SmallDisk> {
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_named_as_a_full_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);
    let c = fresh(&template, tmp.path(), "full_disk");
    let Some(_disk) = SmallDisk::mount(&c.dir.join("small"), 256) else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    };
    edit_config(&c, "output = \"out\"", "output = \"small/out\"");
    let out = Command::new(env!("CARGO_BIN_EXE_gengbao"))
        .args([
            "run",
            "--config",
            c.config.to_str().unwrap(),
            "--period",
            "2025-P1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no space left on the disk") && stderr.contains("[job] output"),
        "{stderr}"
    );
    assert!(!stderr.contains("NULL pointer"), "{stderr}");
    assert!(
        !c.dir.join("small/out/2025-P1").exists(),
        "nothing committed"
    );
}

#[test]
fn a_damaged_ledger_is_named_and_the_period_is_not_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);
    let c = fresh(&template, tmp.path(), "cut_ledger");
    let cfg = JobConfig::load(&c.config).unwrap();
    run_period(&cfg, "2025-P1".parse().unwrap(), &RunOptions::quiet()).unwrap();
    let p1 = c.dir.join("out").join("2025-P1");
    let before = contents_below(&p1);
    let ledger = c.dir.join("out").join("ledger.sqlite");
    let bytes = fs::read(&ledger).unwrap();
    fs::write(&ledger, &bytes[..bytes.len() / 2]).unwrap();
    let err = run_error(&c, "2025-P2".parse().unwrap());
    assert!(
        err.contains("ledger.sqlite") && err.contains("damaged") && err.contains("backup"),
        "{err}"
    );
    assert!(!c.dir.join("out").join("2025-P2").exists());
    assert_eq!(contents_below(&p1), before, "the earlier period changed");
}

#[test]
fn parcel_ids_carried_twice_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);
    let c = fresh(&template, tmp.path(), "duplicate_ids");
    sql(
        &c.dir.join("farmland.gpkg"),
        "UPDATE farmland SET BSM = 'DUP-1' WHERE fid IN (SELECT fid FROM farmland WHERE DLBM LIKE '01%' LIMIT 2)",
    );
    let cfg = JobConfig::load(&c.config).unwrap();
    let s = run_period(&cfg, "2025-P1".parse().unwrap(), &RunOptions::quiet()).unwrap();
    assert_eq!(s.inputs.farmland_duplicate_ids, ["DUP-1"]);
    assert!(s.human().contains("DUP-1"), "{}", s.human());
}

#[test]
fn an_unusable_temporary_folder_does_not_matter() {
    // Scratch files live in the staging folder beside the results, never in TMPDIR.
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);
    let c = fresh(&template, tmp.path(), "no_tmpdir");
    let out = Command::new(env!("CARGO_BIN_EXE_gengbao"))
        .args([
            "run",
            "--config",
            c.config.to_str().unwrap(),
            "--period",
            "2025-P1",
        ])
        .env("TMPDIR", tmp.path().join("does-not-exist"))
        .env("CPL_TMPDIR", tmp.path().join("does-not-exist"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(c.dir.join("out/2025-P1/summary.json").exists());
}

#[test]
fn acquisitions_in_another_crs_are_warped_onto_the_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);
    let p1 = "2025-P1".parse().unwrap();
    let classes = |c: &Case| -> Vec<u8> {
        let cfg = JobConfig::load(&c.config).unwrap();
        run_period(&cfg, p1, &RunOptions::quiet()).unwrap();
        let ds = gdal::Dataset::open(c.dir.join("out/2025-P1/class.tif")).unwrap();
        let band = ds.rasterband(1).unwrap();
        band.read_band_as::<u8>().unwrap().into_shape_and_vec().1
    };
    // The period seen by its first look alone, so that a look put in the wrong place could
    // not be made up for by the others.
    let first_look_only = |c: &Case| {
        let cfg = JobConfig::load(&c.config).unwrap();
        let looks = looks(&c.dir, &cfg, p1);
        for acq in &looks[1..] {
            fs::remove_dir_all(&acq.folder).unwrap();
        }
        looks[0].folder.clone()
    };
    let same = fresh(&template, tmp.path(), "one_crs");
    first_look_only(&same);
    let expected = classes(&same);

    // The look delivered in the next UTM zone (EPSG:32651).
    let c = fresh(&template, tmp.path(), "other_crs");
    let acq = first_look_only(&c);
    for band in fs::read_dir(&acq).unwrap().map(|e| e.unwrap().path()) {
        let warped = band.with_extension("warped.tif");
        let resampling = if band.to_string_lossy().contains("SCL") {
            "near"
        } else {
            "bilinear"
        };
        let status = Command::new("gdalwarp")
            .args(["-q", "-t_srs", "EPSG:32651", "-r", resampling])
            .arg(&band)
            .arg(&warped)
            .status()
            .expect("gdalwarp (gdal-bin, installed by scripts/setup.sh)");
        assert!(status.success());
        fs::rename(&warped, &band).unwrap();
    }
    let got = classes(&c);
    let agree = got.iter().zip(&expected).filter(|(a, b)| a == b).count();
    assert!(
        agree as f64 >= 0.9 * expected.len() as f64,
        "{agree} of {} pixels keep their class",
        expected.len()
    );
}

#[test]
fn a_ledger_held_by_another_program_is_named_and_nothing_is_committed() {
    let tmp = tempfile::tempdir().unwrap();
    // A city with patches to record in the second period.
    let template = crate::common::seeded_city(&tmp.path().join("template"), 512, 3, 256, 1);
    let mut c = fresh(&template, tmp.path(), "held_ledger");
    edit_config(&c, "fnh_min_periods = 2", "fnh_min_periods = 1");
    let cfg = JobConfig::load(&c.config).unwrap();
    run_period(&cfg, "2025-P1".parse().unwrap(), &RunOptions::quiet()).unwrap();
    c.results = Some(job_results(&c));
    // A SQLite browser in the middle of a write (SQLite waits 30 s for it, then gives up).
    let other = rusqlite::Connection::open(c.dir.join("out").join("ledger.sqlite")).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = run_error(&c, "2025-P2".parse().unwrap());
    assert!(
        err.contains("ledger.sqlite") && err.contains("another program holds the ledger"),
        "{err}"
    );
    other.execute_batch("ROLLBACK").unwrap();
    drop(other);
    assert!(!c.dir.join("out").join("2025-P2").exists());
    assert!(
        Some(job_results(&c)) == c.results,
        "the failed run changed the job's results"
    );
}

#[test]
fn a_province_wide_farmland_layer_of_a_million_parcels_gives_the_same_results() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);
    let p1 = "2025-P1".parse().unwrap();
    let c = fresh(&template, tmp.path(), "county_layer");
    let cfg = JobConfig::load(&c.config).unwrap();
    let small = run_period(&cfg, p1, &RunOptions::quiet()).unwrap();
    let flags = fs::read(c.dir.join("out/2025-P1/flags.tif")).unwrap();

    // The same parcels inside a layer of a million more, elsewhere in the province.
    let c = fresh(&template, tmp.path(), "province_layer");
    sql(
        &c.dir.join("farmland.gpkg"),
        "INSERT INTO farmland (geom, BSM, DLBM) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) \
         SELECT AsGPB(BuildMbr(600000 + (i % 1000) * 20, 3600000 + (i / 1000) * 20, \
                               600010 + (i % 1000) * 20, 3600010 + (i / 1000) * 20, 32650)), \
                'P' || i, '0101' FROM n",
    );
    let cfg = JobConfig::load(&c.config).unwrap();
    let huge = run_period(&cfg, p1, &RunOptions::quiet()).unwrap();
    assert_eq!(
        huge.inputs.farmland_parcels,
        small.inputs.farmland_parcels + 1_000_000
    );
    assert!(
        fs::read(c.dir.join("out/2025-P1/flags.tif")).unwrap() == flags,
        "the far parcels changed the flags"
    );
}

#[test]
fn the_libraries_own_words_follow_gengbaos_message_and_go_to_the_run_log() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);
    let c = fresh(&template, tmp.path(), "cut_model_cli");
    cut_model(&c);
    let out = Command::new(env!("CARGO_BIN_EXE_gengbao"))
        .args([
            "run",
            "--config",
            c.config.to_str().unwrap(),
            "--period",
            "2025-P1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first_error = stderr
        .lines()
        .position(|l| l.starts_with("error:"))
        .unwrap();
    assert!(
        stderr
            .lines()
            .take(first_error)
            .all(|l| !l.contains("GDAL") && !l.contains("libtorch")),
        "library words before gengbao's message:\n{stderr}"
    );
    assert!(stderr.contains("damaged or incomplete"), "{stderr}");
    assert!(
        !stderr.contains("Exception raised from") && !stderr.contains("frame #"),
        "a C++ trace on stderr:\n{stderr}"
    );
    let log = fs::read_to_string(c.dir.join("out/gengbao.log")).unwrap();
    assert!(log.contains("library: libtorch:"), "{log}");
}

#[test]
fn imagery_gengbao_cannot_place_is_named_never_silently_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let template = city(&tmp.path().join("template"), 128, 3, 64);

    // Products as the hubs deliver them, and nothing gengbao reads: not "0 periods, exit 0".
    let c = fresh(&template, tmp.path(), "only_products");
    let imagery = c.dir.join("imagery");
    fs::remove_dir_all(&imagery).unwrap();
    fs::create_dir_all(imagery.join("GF2_PMS1_E120.1_N32.2_20250105_L1A0003000001")).unwrap();
    fs::write(
        imagery.join("LC08_L2SP_119038_20250115_20250125_02_T1.tar"),
        b"ustar",
    )
    .unwrap();
    fs::write(
        imagery
            .join("GF2_PMS1_E120.1_N32.2_20250105_L1A0003000001")
            .join("GF2_PMS1_E120.1_N32.2_20250105_L1A0003000001-MSS1.tif"),
        b"II*\0",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gengbao"))
        .args([
            "run",
            "--config",
            c.config.to_str().unwrap(),
            "--period",
            "all",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0 with nothing run:\n{stderr}");
    assert!(
        stderr.contains("no acquisition gengbao can read")
            && stderr.contains("MSS1.tif")
            && stderr.contains("fix:"),
        "{stderr}"
    );

    // Beside readable acquisitions, a packed product gengbao does not read is run without
    // and named, and so is a Sentinel-2 zip it cannot open.
    let c = fresh(&template, tmp.path(), "stray_zip");
    let tar = "LC08_L2SP_119038_20250115_20250125_02_T1.tar";
    fs::write(c.dir.join("imagery").join(tar), b"ustar").unwrap();
    fs::write(c.dir.join("imagery").join("S2B_MSIL2A_20250301.zip"), b"PK").unwrap();
    let cfg = JobConfig::load(&c.config).unwrap();
    let s = run_period(&cfg, "2025-P1".parse().unwrap(), &RunOptions::quiet()).unwrap();
    assert_eq!(s.inputs.imagery_unplaced, [tar]);
    assert!(s.inputs.imagery_damaged[0].starts_with("S2B_MSIL2A_20250301.zip: "));
    assert!(s.human().contains("not read"), "{}", s.human());
}
