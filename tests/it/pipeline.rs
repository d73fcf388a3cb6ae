//! The bimonthly job on a generated city: planted changes are found, seams do not split
//! patches, runs are deterministic, and a county run leaves other counties alone.

use crate::common::{city, config_text, run_all, snapshot};
use gdal::vector::LayerAccess;
use gdal::Metadata;
use gengbao::evaluate::{read_period_patches, score_against_truth};
use gengbao::geo::raster::read_band_f64;
use gengbao::job::run::{run_period, RunOptions};
use std::fs;

#[test]
fn planted_changes_are_found_as_patches_of_the_right_type() {
    let tmp = tempfile::tempdir().unwrap();
    let city = city(&tmp.path().join("city"), 384, 8, 128);
    let cfg = run_all(&city, None);
    let last = *city.periods.last().unwrap();
    let reported = read_period_patches(cfg.layout().period(last).dir()).unwrap();
    let scores =
        score_against_truth(&city.dir.join("truth"), &last.to_string(), &reported).unwrap();
    eprintln!("scores at {last}: {scores:#?}");
    // Matching: a planted change is found when >= 50 % of it is covered by patches of its
    // type; a patch is correct when >= 50 % of it is planted change of its type.
    let (planted, found) = ["FNH", "FLH"].iter().fold((0, 0), |(p, f), t| {
        (p + scores[t].planted, f + scores[t].found)
    });
    assert!(planted >= 8, "too few planted changes to judge: {planted}");
    assert!(
        found as f64 >= 0.9 * planted as f64,
        "found {found} of {planted} FNH+FLH"
    );
    let (reported_n, correct) = ["FNH", "FLH", "PH"].iter().fold((0, 0), |(r, c), t| {
        (r + scores[t].reported, c + scores[t].correct)
    });
    assert!(reported_n > 0);
    assert!(
        correct as f64 >= 0.9 * reported_n as f64,
        "only {correct} of {reported_n} patches match a planted change"
    );
    assert!(
        summary_classifier(&cfg, last) != "index-v1",
        "the learned model is the default"
    );
    // One field, one patch: a county's FLH and PH patches each lie on their own parcel.
    for p in &city.periods {
        let fields = whole_field_patches(cfg.layout().period(*p).dir());
        let distinct: std::collections::BTreeSet<_> = fields.iter().collect();
        assert_eq!(distinct.len(), fields.len(), "{p}: a field in two patches");
    }

    // The index rules on the same city, every period: the learned model finds at least as
    // many planted changes of each type.
    let index_dir = tmp.path().join("index");
    crate::common::copy_dir(&city.dir, &index_dir);
    let index_cfg_path = index_dir.join("job.toml");
    let text = fs::read_to_string(&index_cfg_path)
        .unwrap()
        .replace("kind = \"auto\"", "kind = \"index\"");
    fs::write(&index_cfg_path, &text).unwrap();
    let index_cfg = gengbao::job::config::JobConfig::load(&index_cfg_path).unwrap();
    for p in &city.periods {
        gengbao::job::run::run_period(&index_cfg, *p, &gengbao::job::run::RunOptions::quiet())
            .unwrap();
    }
    assert_eq!(summary_classifier(&index_cfg, last), "index-v1");
    for p in &city.periods {
        let score = |c: &gengbao::job::config::JobConfig| {
            let reported = read_period_patches(c.layout().period(*p).dir()).unwrap();
            score_against_truth(&city.dir.join("truth"), &p.to_string(), &reported).unwrap()
        };
        let (learned, index) = (score(&cfg), score(&index_cfg));
        for t in ["FNH", "FLH", "PH"] {
            let of = |s: &std::collections::BTreeMap<_, gengbao::evaluate::ObjectScore>| {
                s.get(t).cloned().unwrap_or_default()
            };
            let (learned, index) = (of(&learned), of(&index));
            eprintln!(
                "{p} {t}: learned found {}/{} reported {} correct {}; index found {} reported {} correct {}",
                learned.found, learned.planted, learned.reported, learned.correct,
                index.found, index.reported, index.correct
            );
            assert!(
                learned.found >= index.found,
                "{p} {t}: the learned model found {} planted changes, the index rules {}",
                learned.found,
                index.found
            );
        }
    }
    // Every county got its dispatch package in three formats, with a .prj and a .cpg.
    for code in ["320901", "320902"] {
        let dir = cfg.layout().period(last).counties().join(code);
        for ext in ["gpkg", "shp", "shx", "dbf", "prj", "cpg", "geojson"] {
            assert!(
                dir.join(format!("TB_{code}_{last}.{ext}")).exists(),
                "missing {ext} for {code}"
            );
        }
    }
    // Chinese attributes: GBK bytes in the .dbf (what most Chinese desktop GIS expect), read
    // back as text through the .cpg, and field aliases in the GeoPackage.
    let dir = cfg.layout().period(last).counties().join("320901");
    let dbf = fs::read(dir.join(format!("TB_320901_{last}.dbf"))).unwrap();
    let gbk_xihe = [0xCE, 0xF7, 0xBA, 0xD3, 0xCF, 0xD8];
    assert!(
        dbf.windows(6).any(|w| w == gbk_xihe),
        "county name is not GBK-encoded in the .dbf"
    );
    let shp = gdal::Dataset::open(dir.join(format!("TB_320901_{last}.shp"))).unwrap();
    let mut layer = shp.layer(0).unwrap();
    let f = layer.features().next().expect("county 320901 has patches");
    // Each patch names the farmland parcel (BSM) it lies on.
    let bsm = f
        .field_as_string(f.field_index("GDBSM").unwrap())
        .unwrap()
        .unwrap_or_default();
    assert!(bsm.starts_with("3209") && bsm.len() == 13, "GDBSM `{bsm}`");
    assert_eq!(
        f.field_as_string(f.field_index("XZQMC").unwrap())
            .unwrap()
            .as_deref(),
        Some("西河县")
    );
    let gpkg = gdal::Dataset::open(dir.join(format!("TB_320901_{last}.gpkg"))).unwrap();
    let mut aliases = gpkg
        .execute_sql(
            "SELECT name FROM gpkg_data_columns WHERE column_name = 'TBBH'",
            None,
            gdal::vector::sql::Dialect::SQLITE,
        )
        .unwrap()
        .expect("alias table");
    let alias = aliases
        .features()
        .next()
        .unwrap()
        .field_as_string(0)
        .unwrap();
    assert_eq!(alias.as_deref(), Some("图斑编号"));

    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(cfg.layout().period(last).summary()).unwrap()).unwrap();
    assert_eq!(summary["counties"].as_array().unwrap().len(), 2);
    assert!(summary["totals"]["FNH"]["count"].as_u64().unwrap() > 0);
}

#[test]
fn tile_seams_do_not_change_or_split_patches_and_runs_repeat_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let city = city(&tmp.path().join("city"), 256, 4, 64);
    let text = config_text(&city);
    let last = *city.periods.last().unwrap();
    let mut outputs = Vec::new();
    for (name, tile) in [
        ("small_tiles", 64),
        ("small_tiles_again", 64),
        ("one_tile", 256),
    ] {
        let t = text
            .replace("output = \"out\"", &format!("output = \"{name}\""))
            .replace("tile_size = 64 ", &format!("tile_size = {tile} "));
        let cfg = run_all(&city, Some(t));
        let dir = cfg.layout().period(last).dir().to_path_buf();
        let mut bytes = Vec::new();
        // Every format a county receives, the GeoPackage's and the Shapefile's "last
        // changed" stamps included.
        for code in ["320901", "320902"] {
            for ext in ["geojson", "gpkg", "shp", "shx", "dbf", "prj", "cpg"] {
                bytes.push(
                    fs::read(
                        dir.join("counties")
                            .join(code)
                            .join(format!("TB_{code}_{last}.{ext}")),
                    )
                    .unwrap(),
                );
            }
        }
        let rasters = ["flags.tif", "class.tif", "composite.tif"].map(|f| dir.join(f));
        // Cloud-Optimized, so that web maps and QGIS read them over HTTP.
        for r in &rasters {
            let layout = gdal::Dataset::open(r)
                .unwrap()
                .metadata_item("LAYOUT", "IMAGE_STRUCTURE");
            assert_eq!(layout.as_deref(), Some("COG"), "{}", r.display());
        }
        outputs.push((
            bytes,
            rasters.clone().map(|r| read_band_f64(&r, 1).unwrap().2),
            rasters.map(|r| fs::read(r).unwrap()),
        ));
    }
    // 16 tiles of 64 px against a single tile: the same patches, byte for byte, so no patch
    // was cut at a seam (changes are planted across multiples of 128 px), and the same
    // rasters.
    assert_eq!(outputs[0].0, outputs[2].0, "tiling changed the patches");
    assert!(outputs[0].1 == outputs[2].1, "tiling changed the rasters");
    assert_eq!(outputs[0], outputs[1], "two identical runs differ");
    let geojson = String::from_utf8(outputs[0].0[0].clone()).unwrap();
    let number = format!("\"TBBH\": \"320901{}", last.to_string().replace('-', ""));
    assert!(
        geojson.contains(&number),
        "patch numbers are county code + period + sequence"
    );
}

#[test]
fn a_county_run_leaves_the_other_county_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let city = city(&tmp.path().join("city"), 256, 3, 128);
    let cfg = run_all(&city, None);
    let last = *city.periods.last().unwrap();
    let other = cfg.layout().period(last).counties().join("320902");
    let before = snapshot(&other);
    let mine = cfg.layout().period(last).counties().join("320901");
    let mine_mtime = fs::metadata(mine.join(format!("TB_320901_{last}.gpkg")))
        .unwrap()
        .modified()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let s = run_period(
        &cfg,
        last,
        &RunOptions {
            counties: vec!["320901".into()],
            quiet: true,
        },
    )
    .unwrap();
    assert_eq!(s.counties.len(), 1);
    let after = snapshot(&other);
    assert_eq!(before, after, "the other county's files changed");
    assert!(
        fs::metadata(mine.join(format!("TB_320901_{last}.gpkg")))
            .unwrap()
            .modified()
            .unwrap()
            > mine_mtime,
        "the county's own package was not rewritten"
    );
}

#[test]
fn a_job_on_a_gauss_krueger_grid_reprojects_the_utm_imagery() {
    let tmp = tempfile::tempdir().unwrap();
    let city = city(&tmp.path().join("city"), 256, 8, 128);
    // CGCS2000 / 3-degree Gauss-Kruger CM 117E: imagery and layers stay in UTM 50N.
    // One tile: each warp of a reprojected band builds a PROJ transformation (slow, see README).
    let text = config_text(&city)
        .replace("crs = \"EPSG:32650\"", "crs = \"EPSG:4548\"")
        .replace("tile_size = 128 ", "tile_size = 512 ");
    let cfg = run_all(&city, Some(text));
    let last = *city.periods.last().unwrap();
    let dir = cfg.layout().period(last).dir().to_path_buf();
    let prj = fs::read_to_string(
        dir.join("counties/320901")
            .join(format!("TB_320901_{last}.prj")),
    )
    .unwrap();
    assert!(
        prj.contains("CGCS2000") || prj.contains("China_Geodetic_Coordinate_System_2000"),
        "{prj}"
    );
    let reported = read_period_patches(&dir).unwrap();
    let scores =
        score_against_truth(&city.dir.join("truth"), &last.to_string(), &reported).unwrap();
    eprintln!("scores on the GK grid: {scores:#?}");
    let (planted, found) = ["FNH", "FLH"].iter().fold((0, 0), |(p, f), t| {
        (p + scores[t].planted, f + scores[t].found)
    });
    // Resampling blurs edges, so a little less than on the native grid.
    assert!(
        found as f64 >= 0.8 * planted as f64,
        "found {found} of {planted} FNH+FLH"
    );
}

#[test]
fn only_cultivated_classes_of_a_land_use_layer_are_watched() {
    let tmp = tempfile::tempdir().unwrap();
    let city = city(&tmp.path().join("city"), 256, 3, 128);
    let last = *city.periods.last().unwrap();
    let geojson = |cfg: &gengbao::job::config::JobConfig| {
        fs::read(
            cfg.layout()
                .period(last)
                .dir()
                .to_path_buf()
                .join("counties/320901")
                .join(format!("TB_320901_{last}.geojson")),
        )
        .unwrap()
    };
    let plain = geojson(&run_all(&city, None));
    // A full land-use layer: add a forest feature (0301) over the whole city.
    {
        let ds = crate::common::open_for_update(&city.dir.join("farmland.gpkg"));
        let layer = ds.layer(0).unwrap();
        let mut f = gdal::vector::Feature::new(layer.defn()).unwrap();
        f.set_field_string(f.field_index("BSM").unwrap(), "FOREST1")
            .unwrap();
        f.set_field_string(f.field_index("DLBM").unwrap(), "0301")
            .unwrap();
        f.set_field_string(f.field_index("DLMC").unwrap(), "乔木林地")
            .unwrap();
        f.set_geometry(gdal::vector::Geometry::from_wkt("POLYGON((500000 3500000,502560 3500000,502560 3497440,500000 3497440,500000 3500000))").unwrap()).unwrap();
        f.create(&layer).unwrap();
    }
    let text = config_text(&city).replace("output = \"out\"", "output = \"out_landuse\"");
    let filtered = geojson(&run_all(&city, Some(text.clone())));
    assert_eq!(
        plain, filtered,
        "a forest feature of the land-use layer changed the patches"
    );
    let unfiltered = geojson(&run_all(
        &city,
        Some(
            text.replace("output = \"out_landuse\"", "output = \"out_all\"")
                .replace("classes = [\"01\"]", "classes = [\"01\", \"03\"]"),
        ),
    ));
    assert!(
        unfiltered.len() > plain.len(),
        "watching forest land too must flag more"
    );
}

fn summary_classifier(
    cfg: &gengbao::job::config::JobConfig,
    p: gengbao::domain::period::Period,
) -> String {
    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(cfg.layout().period(p).summary()).unwrap()).unwrap();
    summary["classifier"].as_str().unwrap().to_string()
}

/// (county, type, parcel) of every FLH and PH patch of a period.
fn whole_field_patches(period_dir: &std::path::Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for county in fs::read_dir(period_dir.join("counties")).unwrap() {
        let county = county.unwrap().path();
        for file in fs::read_dir(&county).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_none_or(|e| e != "gpkg") {
                continue;
            }
            let ds = gdal::Dataset::open(&file).unwrap();
            let mut layer = ds.layer(0).unwrap();
            for f in layer.features() {
                let text = |name: &str| {
                    let i = f.field_index(name).unwrap();
                    f.field_as_string(i).unwrap().unwrap_or_default()
                };
                let kind = text("BHLX");
                if kind == "FLH" || kind == "PH" {
                    out.push((text("XZQDM"), kind, text("GDBSM")));
                }
            }
        }
    }
    out
}

/// Layers as the bureaus keep them: the 三调 farmland and the county outlines as Shapefiles in
/// CGCS2000 degrees (EPSG:4490), their text in GBK without a `.cpg`; the farmland's `.dbf`
/// names its code page (language id 0x4D, as ArcGIS writes it), the counties' does not and
/// the job says `encoding = "GBK"`. The patches name the same parcels as from the
/// GeoPackages in the job's own CRS, and the county names read as Chinese.
#[test]
fn farmland_in_cgcs2000_degrees_and_gbk_shapefiles_gives_the_same_patches() {
    let tmp = tempfile::tempdir().unwrap();
    let city = city(&tmp.path().join("city"), 256, 3, 128);
    let last = *city.periods.last().unwrap();
    let reference = run_all(&city, None);
    let expected = whole_field_patches(reference.layout().period(last).dir());
    assert!(!expected.is_empty(), "the city has FLH or PH patches");

    let as_bureau_shapefile = |source: &str, layer: &str, code_page_in_dbf: bool| {
        let status = std::process::Command::new("ogr2ogr")
            .current_dir(&city.dir)
            .args([
                "-f",
                "ESRI Shapefile",
                "-t_srs",
                "EPSG:4490",
                "-lco",
                "ENCODING=CP936",
            ])
            .arg(format!("{layer}_4490.shp"))
            .args([source, layer])
            .status()
            .expect("ogr2ogr (gdal-bin, installed by scripts/setup.sh)");
        assert!(status.success());
        fs::remove_file(city.dir.join(format!("{layer}_4490.cpg"))).unwrap();
        let dbf = city.dir.join(format!("{layer}_4490.dbf"));
        let mut bytes = fs::read(&dbf).unwrap();
        bytes[29] = if code_page_in_dbf { 0x4D } else { 0 };
        fs::write(&dbf, bytes).unwrap();
        let prj = fs::read_to_string(city.dir.join(format!("{layer}_4490.prj"))).unwrap();
        assert!(prj.contains("2000"), "{prj}");
    };
    as_bureau_shapefile("farmland.gpkg", "farmland", true);
    as_bureau_shapefile("admin.gpkg", "counties", false);
    let text = config_text(&city)
        .replace("path = \"farmland.gpkg\"", "path = \"farmland_4490.shp\"")
        .replace("layer = \"farmland\"", "layer = \"farmland_4490\"")
        .replace("path = \"admin.gpkg\"", "path = \"counties_4490.shp\"")
        .replace(
            "layer = \"counties\" ",
            "encoding = \"GBK\"\nlayer = \"counties_4490\" ",
        )
        .replace("output = \"out\"", "output = \"out_cgcs2000\"");
    assert!(text.contains("counties_4490") && text.contains("farmland_4490.shp"));
    let cfg = run_all(&city, Some(text));
    assert_eq!(
        whole_field_patches(cfg.layout().period(last).dir()),
        expected
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(cfg.layout().period(last).summary()).unwrap()).unwrap();
    let names: Vec<&str> = summary["counties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["西河县", "东湖县"]);
}
