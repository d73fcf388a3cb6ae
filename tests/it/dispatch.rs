//! Dispatch packages and the ledger over periods of a generated city: the package's files read
//! back the way a county's GIS reads them, the Excel list filled in and imported back applies
//! its edits, a file with a bad row changes nothing, and in the next period a persisting change
//! keeps its number, an accepted patch is not dispatched again, and rectified patches are
//! re-checked against the new land cover.

use crate::common::seeded_city;
use gdal::vector::LayerAccess;
use gdal::Dataset;
use gengbao::dispatch::{export_packages, read_returns};
use gengbao::domain::status::Status;
use gengbao::job::config::JobConfig;
use gengbao::job::layout::OutputLayout;
use gengbao::job::run::{run_period, RunOptions};
use gengbao::ledger::{Filter, Ledger, LedgerRules};
use std::path::Path;

/// The text of a field of a feature.
fn text(f: &gdal::vector::Feature, name: &str) -> Option<String> {
    f.field_as_string(f.field_index(name).unwrap()).unwrap()
}

/// (TBBH, value of `field`) of every feature of a vector file.
fn field_values(path: &Path, field: &str) -> Vec<(String, String)> {
    let ds = Dataset::open(path).unwrap();
    let mut layer = ds.layer(0).unwrap();
    layer
        .features()
        .map(|f| {
            (
                text(&f, "TBBH").unwrap_or_default(),
                text(&f, field).unwrap_or_default(),
            )
        })
        .collect()
}

/// Writes `rows` (header first) as the inspector's saved workbook.
fn save_xlsx(path: &Path, rows: &[Vec<String>]) {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (r, row) in rows.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            sheet.write_string(r as u32, c as u16, v).unwrap();
        }
    }
    book.save(path).unwrap();
}

#[test]
fn packages_round_trip_and_the_ledger_follows_patches_across_periods() {
    let tmp = tempfile::tempdir().unwrap();
    let city = seeded_city(&tmp.path().join("city"), 512, 3, 256, 1);
    // The round trip needs FNH patches by the second period: flag them at once.
    let config = std::fs::read_to_string(&city.job_config)
        .unwrap()
        .replace("fnh_min_periods = 2", "fnh_min_periods = 1");
    std::fs::write(&city.job_config, config).unwrap();
    let cfg = JobConfig::load(&city.job_config).unwrap();
    let (p2, p3) = (city.periods[1], city.periods[2]);
    for p in &city.periods[..2] {
        run_period(&cfg, *p, &RunOptions::quiet()).unwrap();
    }
    let out = cfg.layout().root().to_path_buf();

    // A county with two built-up patches in the second period.
    let ledger = Ledger::open_existing(&OutputLayout::new(&out).ledger_file()).unwrap();
    let fnh = ledger
        .list(&Filter {
            change: Some("FNH".into()),
            period: Some(p2.to_string()),
            ..Default::default()
        })
        .unwrap();
    let county = ["320901", "320902"]
        .into_iter()
        .find(|c| fnh.iter().filter(|e| e.county == *c).count() >= 2)
        .expect("a county with two FNH patches");
    let mine: Vec<_> = fnh.iter().filter(|e| e.county == county).collect();
    let (accepted, rectified) = (mine[0].tbbh.clone(), mine[1].tbbh.clone());
    drop(ledger);

    // A rectified patch on a farmland parcel that no planted change touches: cultivated.
    let farmland = Dataset::open(city.dir.join("farmland.gpkg")).unwrap();
    let footprints: Vec<_> = city
        .changes
        .iter()
        .chain(&city.passing)
        .map(|c| c.footprint().unwrap())
        .collect();
    let admin = Dataset::open(city.dir.join("admin.gpkg")).unwrap();
    let county_shape = admin
        .layer(0)
        .unwrap()
        .features()
        .find(|f| text(f, "XZQDM").as_deref() == Some(county))
        .unwrap()
        .geometry()
        .unwrap()
        .clone();
    let quiet_parcel = farmland
        .layer(0)
        .unwrap()
        .features()
        .filter_map(|f| f.geometry().cloned())
        .filter(|g| county_shape.contains(g) && footprints.iter().all(|fp| !fp.intersects(g)))
        .max_by(|a, b| a.area().total_cmp(&b.area()))
        .expect("an untouched parcel");

    // Package of the second period, with its zip.
    let packages = export_packages(&cfg, p2, &[county.to_string()], true).unwrap();
    assert_eq!(packages.len(), 1);
    let dir = &packages[0].dir;
    let zip_path = packages[0].zip.clone().expect("a zip was asked for");
    let mut zipped = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let folder = dir.file_name().unwrap().to_str().unwrap();
    let on_disk: Vec<String> = crate::common::files_below(dir)
        .iter()
        .map(|f| format!("{folder}/{}", f.display()))
        .collect();
    let mut in_zip: Vec<String> = zipped.file_names().map(String::from).collect();
    in_zip.sort();
    assert_eq!(in_zip, on_disk, "the zip holds the whole folder");
    let mut xlsx = Vec::new();
    std::io::Read::read_to_end(
        &mut zipped
            .by_name(&format!("{folder}/TB_{county}_{p2}.xlsx"))
            .unwrap(),
        &mut xlsx,
    )
    .unwrap();
    assert_eq!(
        xlsx,
        std::fs::read(dir.join(format!("TB_{county}_{p2}.xlsx"))).unwrap()
    );
    // The same package made again has the same bytes, so a county can check a re-issued
    // package by its checksum.
    let zip_bytes = std::fs::read(&zip_path).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = export_packages(&cfg, p2, &[county.to_string()], true).unwrap();
    let entries = |bytes: &[u8]| -> Vec<(String, Vec<u8>)> {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
        (0..z.len())
            .map(|i| {
                let mut e = z.by_index(i).unwrap();
                let mut content = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut content).unwrap();
                (e.name().to_string(), content)
            })
            .collect()
    };
    let again_bytes = std::fs::read(again[0].zip.as_ref().unwrap()).unwrap();
    for ((name, a), (_, b)) in entries(&zip_bytes).iter().zip(&entries(&again_bytes)) {
        assert!(a == b, "{name} differs when the package is made again");
    }
    assert!(zip_bytes == again_bytes, "the zip differs when made again");
    let stem = format!("TB_{county}_{p2}");
    for f in [
        "gpkg", "shp", "shx", "dbf", "prj", "cpg", "geojson", "xlsx", "csv",
    ] {
        assert!(dir.join(format!("{stem}.{f}")).exists(), "{stem}.{f}");
    }
    assert!(dir.join("report.html").exists() && dir.join("overview.png").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join(format!("{stem}.cpg")))
            .unwrap()
            .trim(),
        "CP936",
        "GBK by default"
    );
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for p in &mine {
        assert!(dir.join("chips").join(format!("{}.png", p.tbbh)).exists());
        assert!(report.contains(&format!("chips/{}.png", p.tbbh)));
    }

    // The Shapefile as a desktop GIS reads it: ASCII names, Chinese values, CRS, areas.
    let shp = Dataset::open(dir.join(format!("{stem}.shp"))).unwrap();
    let mut layer = shp.layer(0).unwrap();
    let names: Vec<String> = layer.defn().fields().map(|f| f.name()).collect();
    for n in [
        "TBBH", "XZQDM", "XZQMC", "XZDM", "XZMC", "BHLX", "BHLXMC", "TBMJ", "TBMJM", "ZT", "HCJG",
        "JZLX", "ZGZT", "BZ", "FJ",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    assert!(names.iter().all(|n| n.len() <= 10 && n.is_ascii()));
    let grid_srs = gdal::spatial_ref::SpatialRef::from_definition(&cfg.grid.crs).unwrap();
    assert_eq!(
        layer.spatial_ref().unwrap().auth_code().unwrap(),
        grid_srs.auth_code().unwrap()
    );
    let townships = Dataset::open(city.dir.join("townships.gpkg")).unwrap();
    let township_shapes: Vec<(String, String, gdal::vector::Geometry)> = townships
        .layer(0)
        .unwrap()
        .features()
        .map(|f| {
            (
                text(&f, "XZQDM").unwrap(),
                text(&f, "XZQMC").unwrap(),
                f.geometry().unwrap().clone(),
            )
        })
        .collect();
    let mut per_township: std::collections::BTreeMap<String, (String, usize)> = Default::default();
    let mut rows = 0;
    for f in layer.features() {
        rows += 1;
        // The township is the one holding most of the patch (of the two in its county).
        let (code, name) = (text(&f, "XZDM").unwrap(), text(&f, "XZMC").unwrap());
        let outline = f.geometry().unwrap();
        let (_, expected_name, shape) = township_shapes
            .iter()
            .find(|t| t.0 == code)
            .unwrap_or_else(|| panic!("XZDM {code} is not a township of the job"));
        assert!(code.starts_with(county) && *expected_name == name);
        let shared = outline.intersection(shape).map_or(0.0, |g| g.area());
        assert!(shared >= 0.5 * outline.area(), "{code} holds {shared} m²");
        per_township.entry(code).or_insert((name, 0)).1 += 1;
        let area = f
            .field_as_double(f.field_index("TBMJ").unwrap())
            .unwrap()
            .unwrap();
        let mu = f
            .field_as_double(f.field_index("TBMJM").unwrap())
            .unwrap()
            .unwrap();
        let drawn = f.geometry().unwrap().area();
        assert!(
            (area - drawn).abs() <= 0.01 * drawn,
            "TBMJ {area} vs outline {drawn}"
        );
        assert!((mu * 666.67 - area).abs() <= 0.01 * area);
        let name = text(&f, "XZQMC").unwrap();
        assert!(name == "西河县" || name == "东湖县", "{name}");
        assert_eq!(text(&f, "ZT").unwrap(), "已下发");
        assert!(text(&f, "BHLXMC").is_some_and(|v| !v.is_empty()));
    }
    assert_eq!(rows, packages[0].patches);
    // The report totals each township: its row ends with the patch count and area in 亩.
    assert!(report.contains("按乡镇汇总"));
    for (code, (name, n)) in &per_township {
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("<tr><td>{name}（{code}）</td>")))
            .unwrap_or_else(|| panic!("no report row for {name}"));
        let cells: Vec<&str> = row.split("<td class=\"n\">").skip(1).collect();
        assert_eq!(cells.len(), 8, "{row}");
        assert!(cells[6].starts_with(&format!("{n}<")), "{row}: {n} patches");
    }

    // The Excel list filled in by the county and imported back.
    let rows_of = |path: &Path| -> Vec<Vec<String>> {
        use calamine::Reader;
        let mut book = calamine::open_workbook_auto(path).unwrap();
        let range = book.worksheet_range_at(0).unwrap().unwrap();
        range
            .rows()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect()
    };
    let mut sheet = rows_of(&dir.join(format!("{stem}.xlsx")));
    let col = |name: &str| sheet[0].iter().position(|h| h == name).unwrap();
    let (c_tbbh, c_result, c_evidence, c_rect, c_note) = (
        col("图斑编号"),
        col("核查结果"),
        col("举证类型"),
        col("整改状态"),
        col("备注"),
    );
    for row in sheet.iter_mut().skip(1) {
        if row[c_tbbh] == accepted {
            row[c_result] = "举证".into();
            row[c_evidence] = "合法批准".into();
            row[c_note] = "用地批文 2026-17".into();
        } else if row[c_tbbh] == rectified {
            row[c_result] = "需整改".into();
            row[c_rect] = "已整改".into();
        }
    }
    let filled = tmp.path().join("returned.xlsx");
    save_xlsx(&filled, &sheet);
    let mut ledger = Ledger::open_existing(&OutputLayout::new(&out).ledger_file()).unwrap();

    // One bad row in the CSV twin: nothing applied, the row named.
    let csv_text = std::fs::read_to_string(dir.join(format!("{stem}.csv"))).unwrap();
    assert!(csv_text.starts_with('\u{feff}'), "UTF-8 with BOM for Excel");
    let mut lines: Vec<String> = csv_text.lines().map(String::from).collect();
    let bad_line = lines
        .iter()
        .position(|l| l.starts_with(&rectified))
        .unwrap();
    lines[bad_line] = lines[bad_line].trim_end_matches(",,,,").to_string() + ",不知道,,,,";
    let bad_csv = tmp.path().join("bad.csv");
    std::fs::write(&bad_csv, lines.join("\n")).unwrap();
    let history_before = ledger.history(None, Some(county)).unwrap().len();
    let report = ledger
        .import(
            &read_returns(&bad_csv).unwrap(),
            county,
            "county",
            tmp.path(),
            false,
        )
        .unwrap();
    assert_eq!(report.bad_rows.len(), 1, "{:?}", report.bad_rows);
    assert_eq!(report.bad_rows[0].0, bad_line + 1, "spreadsheet row number");
    assert!(report.bad_rows[0].1.contains("不知道"));
    assert_eq!(
        ledger.history(None, Some(county)).unwrap().len(),
        history_before
    );

    let report = ledger
        .import(
            &read_returns(&filled).unwrap(),
            county,
            "county",
            tmp.path(),
            false,
        )
        .unwrap();
    assert!(report.bad_rows.is_empty(), "{:?}", report.bad_rows);
    assert_eq!(
        ledger.entry(&accepted).unwrap().status,
        Status::EvidenceSubmitted
    );
    assert_eq!(ledger.entry(&rectified).unwrap().status, Status::Rectified);
    // The authority accepts the evidence.
    ledger
        .set_status(
            &accepted,
            county,
            Status::Accepted,
            "市局",
            "",
            None,
            &[],
            None,
        )
        .unwrap();

    // The untouched parcel, recorded as a rectified case in the second period.
    let mut template = read_period_patch(&out, p2, county);
    template.tbbh.clear();
    template.area_m2 = quiet_parcel.area();
    template.geometry = quiet_parcel;
    let mut one = [template];
    ledger
        .record_period(
            p2,
            &[county.to_string()],
            &mut one,
            &LedgerRules::default(),
            &|_| Ok(None),
        )
        .unwrap();
    let cultivated = one[0].tbbh.clone();
    for s in [
        Status::Dispatched,
        Status::Verifying,
        Status::RectificationRequired,
        Status::Rectifying,
        Status::Rectified,
    ] {
        ledger
            .set_status(&cultivated, county, s, "county", "", None, &[], None)
            .unwrap();
    }
    drop(ledger);

    // The third period.
    let summary = run_period(&cfg, p3, &RunOptions::quiet()).unwrap();
    let ledger = Ledger::open_existing(&OutputLayout::new(&out).ledger_file()).unwrap();
    assert_eq!(
        ledger.entry(&cultivated).unwrap().status,
        Status::ClosingProposed,
        "{:?}",
        summary.ledger
    );
    assert!(summary.ledger.proposed_for_closing.contains(&cultivated));
    assert_eq!(
        ledger.entry(&rectified).unwrap().status,
        Status::Rectifying,
        "still built-up"
    );
    let last = ledger
        .history(Some(&rectified), None)
        .unwrap()
        .pop()
        .unwrap();
    assert!(last.note.contains("not back"), "{}", last.note);
    let p3_numbers: Vec<String> = field_values(
        &cfg.layout()
            .period(p3)
            .dir()
            .join("counties")
            .join(county)
            .join(format!("TB_{county}_{p3}.geojson")),
        "ZT",
    )
    .into_iter()
    .map(|(t, _)| t)
    .collect();
    assert!(
        p3_numbers.contains(&accepted) && p3_numbers.contains(&rectified),
        "persisting changes keep their TBBH: {p3_numbers:?}"
    );
    drop(ledger);

    let packages = export_packages(&cfg, p3, &[county.to_string()], false).unwrap();
    let sent: Vec<String> = field_values(
        &packages[0].dir.join(format!("TB_{county}_{p3}.gpkg")),
        "ZT",
    )
    .into_iter()
    .map(|(t, _)| t)
    .collect();
    assert!(
        !sent.contains(&accepted),
        "accepted and not grown: not dispatched again"
    );
    assert!(
        sent.contains(&rectified),
        "not rectified: in the package again"
    );
}

/// One patch of a period as the ledger recorded it.
fn read_period_patch(
    out: &Path,
    period: gengbao::domain::period::Period,
    county: &str,
) -> gengbao::engine::patches::Patch {
    let mut ledger = Ledger::open_existing(&OutputLayout::new(out).ledger_file()).unwrap();
    // Dispatch with a failing write changes nothing and hands over the recorded patches.
    let mut got = None;
    let _ = ledger.dispatch(period, county, |patches| {
        got = Some(patches[0].clone());
        Err(gengbao::Error::usage("only reading", ""))
    });
    got.expect("a patch")
}
