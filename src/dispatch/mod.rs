//! Dispatch packages (下发包): what a county receives for a period, and reading back what it
//! returns.
//!
//! Takes: the job's ledger (which patches go out, with their status), the period's archive
//! (class and flag rasters) and the imagery of the period and of the period before each
//! patch began. Gives, per county, in `<output>/dispatch/<period>/<county>/`:
//! - `TB_<county>_<period>` as GeoPackage (Chinese aliases), Shapefile (.prj, .cpg) and
//!   GeoJSON, with the return fields (核查结果, 举证类型, 整改状态, 备注, 附件) blank;
//! - the same list as Excel (Chinese headers, drop-down lists in the return columns) and as
//!   CSV (UTF-8 with BOM): filled in by the county and read back by `gengbao ledger import`;
//! - `chips/<TBBH>.png`: before and after true-colour chips with the outline, dates and number;
//! - `overview.png` and `report.html`: totals by type in 亩, the map, the list with thumbnails.
//!
//! Packages are staged and moved into place whole; the ledger marks new patches dispatched in
//! the same step, so a failed export changes nothing.

use crate::domain::change::ChangeType;
use crate::domain::period::Period;
use crate::engine::patch_record::{patch_values, write_county, PATCH_FIELDS};
use crate::engine::patches::{Patch, SQM_PER_MU};
use crate::error::{Error, GdalContext, Result};
use crate::geo::composite;
use crate::geo::grid::{overlaps, Bounds, JobGrid, Window};
use crate::geo::imagery::{Acquisition, Catalog};
use crate::geo::layers::County;
use crate::geo::raster::rasterize;
use crate::geo::sensor::SensorProfile;
use crate::geo::vector::{field, FieldSpec};
use crate::job::config::JobConfig;
use crate::job::layout::PeriodFiles;
use crate::job::staging::StagingDir;
use crate::ledger::{Ledger, ReturnRow};
use crate::render::{flag_colour, text_font, write_quicklook};
use gdal::spatial_ref::SpatialRef;
use gdal::vector::{FieldValue, LayerAccess};
use gdal_sys::OGRFieldType::OFTString;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The fields a county fills in and returns, in every format of the package.
pub const RETURN_FIELDS: [FieldSpec; 5] = [
    field("HCJG", OFTString, 12, "核查结果"),
    field("JZLX", OFTString, 16, "举证类型"),
    field("ZGZT", OFTString, 12, "整改状态"),
    field("BZ", OFTString, 254, "备注"),
    field("FJ", OFTString, 254, "附件"),
];

/// What `gengbao export` wrote for one county.
#[derive(Debug, Clone, Serialize)]
pub struct PackageSummary {
    pub county: String,
    pub dir: PathBuf,
    pub patches: usize,
    pub files: Vec<String>,
    /// The package as one zip beside the folder, when asked for.
    pub zip: Option<PathBuf>,
}

/// The zip's name in a county's staging folder.
const STAGED_ZIP: &str = "package.zip";

/// Writes the dispatch packages of `period`: of the `counties` given, or of every county of the job
/// when none is; with `zip`, also `<county>.zip` beside each folder.
pub fn export_packages(
    cfg: &JobConfig,
    period: Period,
    counties: &[String],
    zip: bool,
) -> Result<Vec<PackageSummary>> {
    let layout = cfg.layout();
    let archive = layout.period(period);
    if !crate::job::schedule::is_done(cfg, period) {
        return Err(Error::input(
            archive.dir(),
            format!("period {period} has not been run"),
            format!(
                "run it first: gengbao run --config {} --period {period}",
                cfg.source.display()
            ),
        ));
    }
    let class_tif = archive.class();
    let flags_tif = archive.flags();
    let class_ds = gdal::Dataset::open(&class_tif).in_file(&class_tif, "re-run the period")?;
    let grid = JobGrid::of_dataset(&class_ds, &class_tif)?;
    drop(class_ds);
    let srs = grid.spatial_ref()?;
    let admin = cfg.counties(&srs)?;
    let admin = admin.only(counties)?;
    let profile = SensorProfile::by_name(&cfg.imagery.sensor)?;
    let catalog = Catalog::scan(&cfg.resolve(&cfg.imagery.folder), profile)?;
    let imagery = ChipImagery {
        catalog: &catalog,
        profile,
        add_offset: cfg.imagery.add_offset.unwrap_or(profile.add_offset),
        grid: &grid,
        srs: &srs,
        located: Default::default(),
    };
    text_font()?;
    let _lock = crate::job::lock::JobLock::acquire(&layout)?;
    let mut ledger = Ledger::open_existing(&layout.ledger_file())?;
    let mut out = Vec::new();
    for c in &admin.counties {
        let target = layout.package(period, &c.code);
        let zip_target = zip.then(|| target.with_extension("zip"));
        // One staging folder for the package and its zip: they share a parent folder, and a
        // second staging folder there would clear the first as a leftover of this process.
        let staging = StagingDir::beside(&target)?;
        let package = staging.path().join(&c.code);
        let mut files = Vec::new();
        let patches = ledger.dispatch(period, &c.code, |patches| {
            files = write_package(
                &package, cfg, period, c, patches, &imagery, &class_tif, &flags_tif,
            )?;
            if zip_target.is_some() {
                zip_folder(&package, &c.code, period, &staging.path().join(STAGED_ZIP))?;
            }
            Ok(())
        })?;
        staging.move_entry(&c.code, &target)?;
        if let Some(zip_target) = &zip_target {
            staging.move_entry(STAGED_ZIP, zip_target)?;
        }
        out.push(PackageSummary {
            county: c.code.clone(),
            dir: target,
            patches: patches.len(),
            files,
            zip: zip_target,
        });
    }
    Ok(out)
}

/// Zips every file under `dir` into `zip_path`, inside a folder `folder`. Entries are sorted and
/// dated the period's last day, so the same package gives the same bytes.
fn zip_folder(dir: &Path, folder: &str, period: Period, zip_path: &Path) -> Result<()> {
    use chrono::Datelike;
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    let err =
        |e: zip::result::ZipError| Error::input(zip_path, e.to_string(), "check free disk space");
    let day = period.last_day();
    let stamp = zip::DateTime::from_date_and_time(
        day.year() as u16,
        day.month() as u8,
        day.day() as u8,
        0,
        0,
        0,
    )
    .map_err(|_| {
        Error::input(
            zip_path,
            format!("{day} cannot be a zip date"),
            "use a period after 1980",
        )
    })?;
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(stamp)
        .unix_permissions(0o644);
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let path = entry.map_err(|e| Error::io(&d, e))?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let file = std::fs::File::create(zip_path).map_err(|e| Error::io(zip_path, e))?;
    let mut writer = zip::ZipWriter::new(std::io::BufWriter::new(file));
    for path in files {
        let relative = path.strip_prefix(dir).expect("found under dir");
        let name = format!("{folder}/{}", relative.to_string_lossy());
        writer.start_file(name, options).map_err(err)?;
        let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        std::io::copy(&mut file, &mut writer).map_err(|e| Error::io(zip_path, e))?;
    }
    let mut out = writer.finish().map_err(err)?;
    out.flush().map_err(|e| Error::io(zip_path, e))?;
    out.get_ref().sync_all().map_err(|e| Error::io(zip_path, e))
}

/// Writes every file of one county's package into `dir`; returns their names.
#[allow(clippy::too_many_arguments)]
fn write_package(
    dir: &Path,
    cfg: &JobConfig,
    period: Period,
    county: &County,
    patches: &[Patch],
    imagery: &ChipImagery,
    class_tif: &Path,
    flags_tif: &Path,
) -> Result<Vec<String>> {
    let stem = PeriodFiles::county_stem(&county.code, period);
    write_county(
        dir,
        &stem,
        imagery.srs,
        patches,
        &cfg.output.shapefile_encoding,
        &RETURN_FIELDS,
    )?;
    write_xlsx(&dir.join(format!("{stem}.xlsx")), patches)?;
    write_csv(&dir.join(format!("{stem}.csv")), patches)?;
    let chips = dir.join("chips");
    std::fs::create_dir_all(&chips).map_err(|e| Error::io(&chips, e))?;
    for p in patches {
        imagery.chip(p, period, &chips.join(format!("{}.png", p.tbbh)))?;
    }
    let (minx, miny, maxx, maxy) = county.envelope;
    let envelope = gdal::vector::Envelope {
        MinX: minx,
        MaxX: maxx,
        MinY: miny,
        MaxY: maxy,
    };
    write_quicklook(
        class_tif,
        flags_tif,
        &dir.join("overview.png"),
        1200,
        Some(imagery.grid.window_around(&envelope, 4)),
    )?;
    write_report(
        &dir.join("report.html"),
        county,
        period,
        &stem,
        patches,
        cfg.townships.is_some(),
    )?;
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    Ok(files)
}

/// Header of every column of the spreadsheet list: the patch fields' Chinese names, then the
/// return fields'.
fn list_headers() -> Vec<&'static str> {
    PATCH_FIELDS
        .iter()
        .map(|(f, _)| f.alias)
        .chain(RETURN_FIELDS.iter().map(|f| f.alias))
        .collect()
}

fn xlsx_error(path: &Path, e: rust_xlsxwriter::XlsxError) -> Error {
    Error::input(path, e.to_string(), "check that the folder is writable")
}

fn write_xlsx(path: &Path, patches: &[Patch]) -> Result<()> {
    use rust_xlsxwriter::{DataValidation, Format, Workbook};
    let err = |e| xlsx_error(path, e);
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("图斑清单").map_err(err)?;
    let header = Format::new().set_bold().set_background_color(0xDDEBF7);
    let to_fill = Format::new().set_bold().set_background_color(0xFFF2CC);
    let headers = list_headers();
    for (c, h) in headers.iter().enumerate() {
        let format = if c >= PATCH_FIELDS.len() {
            &to_fill
        } else {
            &header
        };
        sheet
            .write_string_with_format(0, c as u16, *h, format)
            .map_err(err)?;
        sheet
            .set_column_width(c as u16, (h.chars().count() * 2 + 2).max(12) as f64)
            .map_err(err)?;
    }
    for (r, p) in patches.iter().enumerate() {
        let row = r as u32 + 1;
        for (c, v) in patch_values(p).into_iter().enumerate() {
            let col = c as u16;
            match v {
                FieldValue::RealValue(x) => sheet.write_number(row, col, x),
                FieldValue::IntegerValue(x) => sheet.write_number(row, col, x),
                FieldValue::StringValue(s) => sheet.write_string(row, col, s),
                other => sheet.write_string(row, col, format!("{other:?}")),
            }
            .map_err(err)?;
        }
    }
    if !patches.is_empty() {
        let last = patches.len() as u32;
        let first_return = PATCH_FIELDS.len() as u16;
        let lists: [(u16, Vec<&str>); 3] = [
            (first_return, crate::ledger::RESULT_VALUES.to_vec()),
            (
                first_return + 1,
                crate::domain::status::Evidence::ALL
                    .map(|e| e.label_zh())
                    .to_vec(),
            ),
            (
                first_return + 2,
                crate::ledger::RECTIFICATION_VALUES.to_vec(),
            ),
        ];
        for (col, values) in lists {
            let rule = DataValidation::new()
                .allow_list_strings(&values)
                .map_err(err)?;
            sheet
                .add_data_validation(1, col, last, col, &rule)
                .map_err(err)?;
        }
    }
    sheet.set_freeze_panes(1, 1).map_err(err)?;
    book.save(path).map_err(err)
}

fn write_csv(path: &Path, patches: &[Patch]) -> Result<()> {
    let err =
        |e: csv::Error| Error::input(path, e.to_string(), "check that the folder is writable");
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    {
        let mut w = csv::Writer::from_writer(&mut bytes);
        w.write_record(list_headers()).map_err(err)?;
        for p in patches {
            let mut row: Vec<String> = patch_values(p)
                .into_iter()
                .map(|v| match v {
                    FieldValue::RealValue(x) => x.to_string(),
                    FieldValue::IntegerValue(x) => x.to_string(),
                    FieldValue::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .collect();
            row.extend(RETURN_FIELDS.iter().map(|_| String::new()));
            w.write_record(&row).map_err(err)?;
        }
        w.flush().map_err(|e| Error::io(path, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Count and 亩 of each change type per township, for the report; a note when the job gives no
/// township layer.
fn township_table(patches: &[Patch], townships_given: bool) -> String {
    if !townships_given {
        return "<h2>按乡镇汇总</h2>\n<p>任务配置未给出乡镇界线（[townships]），不按乡镇汇总。</p>\n"
            .to_string();
    }
    // Patches outside every township sort last under an explicit label.
    // (outside every township, code) -> (name, (count, m²) per type)
    type Row<'a> = (&'a str, [(usize, f64); 3]);
    let mut rows: BTreeMap<(bool, &str), Row> = BTreeMap::new();
    for p in patches {
        let outside = p.township_code.is_empty();
        let row = rows
            .entry((outside, p.township_code.as_str()))
            .or_insert((p.township_name.as_str(), [(0, 0.0); 3]));
        let t = &mut row.1[p.change as usize - 1];
        t.0 += 1;
        t.1 += p.area_m2;
    }
    let mut h = "<h2>按乡镇汇总</h2>\n<table>\n<tr><th rowspan=\"2\">乡镇</th>".to_string();
    for t in ChangeType::ALL {
        h += &format!("<th colspan=\"2\">{}</th>", t.label_zh());
    }
    h += "<th colspan=\"2\">合计</th></tr>\n<tr>";
    h += &"<th>图斑数</th><th>面积（亩）</th>".repeat(ChangeType::ALL.len() + 1);
    h += "</tr>\n";
    let cells = |counts: &[(usize, f64); 3]| {
        let (n, a) = counts.iter().fold((0, 0.0), |s, c| (s.0 + c.0, s.1 + c.1));
        counts
            .iter()
            .chain(std::iter::once(&(n, a)))
            .map(|(n, a)| {
                format!(
                    "<td class=\"n\">{n}</td><td class=\"n\">{:.2}</td>",
                    a / SQM_PER_MU
                )
            })
            .collect::<String>()
    };
    for ((outside, code), (name, counts)) in &rows {
        let label = if *outside {
            "乡镇界外".to_string()
        } else {
            format!("{}（{}）", escape(name), escape(code))
        };
        h += &format!("<tr><td>{label}</td>{}</tr>\n", cells(counts));
    }
    h += "</table>\n";
    h
}

fn write_report(
    path: &Path,
    county: &County,
    period: Period,
    stem: &str,
    patches: &[Patch],
    townships_given: bool,
) -> Result<()> {
    let mut by_type: BTreeMap<(u8, &str), (usize, f64, f64, f64)> = BTreeMap::new();
    for p in patches {
        let t = by_type
            .entry((p.change as u8, p.change.label_zh()))
            .or_default();
        t.0 += 1;
        t.1 += p.area_m2;
        t.2 += p.farmland_m2;
        t.3 += p.basic_farmland_m2;
    }
    let mu = |m2: f64| m2 / SQM_PER_MU;
    let mut models: Vec<&str> = patches.iter().map(|p| p.model_version.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    let mut h = String::new();
    h += "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n";
    h += &format!(
        "<title>{} {} 耕地变化图斑核查报告</title>\n",
        escape(&county.name),
        period
    );
    h += "<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top}th{background:#ddebf7}td.n{text-align:right}.legend span{display:inline-block;width:1em;height:1em;margin:0 .3em 0 1em;vertical-align:middle}</style>\n</head>\n<body>\n";
    h += &format!(
        "<h1>{}（{}）{} 耕地变化图斑核查报告</h1>\n",
        escape(&county.name),
        escape(&county.code),
        period
    );
    h += &format!(
        "<p>下发图斑 {} 个。模型版本（MXBB）：{}。图斑清单：{stem}.xlsx（填写后用 <code>gengbao ledger import</code> 导入），{stem}.gpkg / .shp / .geojson。</p>\n",
        patches.len(),
        if models.is_empty() { "—".to_string() } else { escape(&models.join(", ")) }
    );
    h += "<h2>按类型汇总</h2>\n<table>\n<tr><th>变化类型</th><th>图斑数</th><th>面积（亩）</th><th>其中耕地（亩）</th><th>其中永久基本农田（亩）</th></tr>\n";
    let mut total = (0usize, 0.0, 0.0, 0.0);
    for ((_, label), t) in &by_type {
        h += &format!(
            "<tr><td>{label}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td></tr>\n",
            t.0,
            mu(t.1),
            mu(t.2),
            mu(t.3)
        );
        total = (total.0 + t.0, total.1 + t.1, total.2 + t.2, total.3 + t.3);
    }
    h += &format!(
        "<tr><th>合计</th><th class=\"n\">{}</th><th class=\"n\">{:.2}</th><th class=\"n\">{:.2}</th><th class=\"n\">{:.2}</th></tr>\n</table>\n",
        total.0,
        mu(total.1),
        mu(total.2),
        mu(total.3)
    );
    h += &township_table(patches, townships_given);
    h += "<h2>总览图</h2>\n<p class=\"legend\">";
    for (flag, label) in [(1u8, "非农化"), (2, "非粮化"), (3, "撂荒")] {
        let [r, g, b] = flag_colour(flag).expect("a change flag");
        h += &format!("<span style=\"background:rgb({r},{g},{b})\"></span>{label}");
    }
    h += "</p>\n<img src=\"overview.png\" alt=\"总览图\" style=\"max-width:100%\">\n";
    h += "<h2>图斑清单</h2>\n<table>\n<tr><th>图斑编号</th><th>乡镇</th><th>变化类型</th><th>前地类 → 后地类</th><th>面积（亩）</th><th>首次发现</th><th>持续期次</th><th>置信度</th><th>经度, 纬度</th><th>状态</th><th>影像（前 / 后）</th></tr>\n";
    for p in patches {
        h += &format!(
            "<tr><td>{tbbh}</td><td>{}</td><td>{}</td><td>{} → {}</td><td class=\"n\">{:.2}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td>{:.6}, {:.6}</td><td>{}</td><td><a href=\"chips/{tbbh}.png\"><img src=\"chips/{tbbh}.png\" alt=\"{tbbh}\" width=\"320\"></a></td></tr>\n",
            escape(&p.township_name),
            p.change.label_zh(),
            p.before.label_zh(),
            p.after.label_zh(),
            p.area_mu,
            escape(&p.first_seen),
            p.persisted,
            p.confidence,
            p.lon_lat.0,
            p.lon_lat.1,
            p.status.label_zh(),
            tbbh = escape(&p.tbbh),
        );
    }
    h += "</table>\n</body>\n</html>\n";
    std::fs::write(path, h).map_err(|e| Error::io(path, e))
}

/// Composites the imagery of a period around a patch, for its chips.
struct ChipImagery<'a> {
    catalog: &'a Catalog,
    profile: &'static SensorProfile,
    add_offset: f32,
    grid: &'a JobGrid,
    srs: &'a SpatialRef,
    /// Extents of each period's acquisitions in the grid CRS, found once per period.
    located: std::cell::RefCell<BTreeMap<Period, Vec<(usize, Bounds)>>>,
}

/// Red, green and blue reflectance of a chip window, and the dates composited.
type TrueColour = ([Vec<f32>; 3], String);

/// Chip panels are drawn at this many screen pixels a side, at least.
const PANEL: usize = 240;

impl ChipImagery<'_> {
    /// True colour of `period` over `window` (NaN where nothing clear was seen) and the
    /// dates composited, or None when the period has no imagery there.
    fn true_colour(&self, period: Period, window: Window) -> Result<Option<TrueColour>> {
        let acquisitions = self.catalog.in_period(period);
        let mut located = self.located.borrow_mut();
        let extents = match located.entry(period) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(
                acquisitions
                    .iter()
                    .enumerate()
                    .map(|(i, a)| Ok((i, a.check_and_locate(self.srs)?)))
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        let bounds = self.grid.window_bounds(window);
        let covering: Vec<&Acquisition> = extents
            .iter()
            .filter(|(_, e)| overlaps(*e, bounds))
            .map(|&(i, _)| acquisitions[i])
            .collect();
        let (Some(first), Some(last)) = (covering.first(), covering.last()) else {
            return Ok(None);
        };
        let dates = format!(
            "{}-{}",
            first.date.format("%Y%m%d"),
            last.date.format("%Y%m%d")
        );
        let comp = composite::build(&covering, self.profile, self.add_offset, self.grid, window)?;
        let [blue, green, red, ..] = comp.canonical(self.profile);
        Ok(Some(([red.to_vec(), green.to_vec(), blue.to_vec()], dates)))
    }

    /// Before and after chips of a patch side by side, with its outline, number and dates.
    fn chip(&self, p: &Patch, period: Period, png: &Path) -> Result<()> {
        let w0 = self.grid.window_around(&p.geometry.envelope(), 0);
        // Square, with room around the patch to see its context.
        let side = (w0.width.max(w0.height) + 24).max(48);
        let window = Window {
            x: w0.x - ((side - w0.width) / 2) as isize,
            y: w0.y - ((side - w0.height) / 2) as isize,
            width: side,
            height: side,
        };
        let inside = rasterize(self.grid, window, std::slice::from_ref(&p.geometry), &[1.0])?;
        let before_period = p
            .first_seen
            .parse::<Period>()
            .map(|f| f.prev())
            .unwrap_or(period.prev());
        let after = self.true_colour(period, window)?;
        let before = self.true_colour(before_period, window)?;
        let stretch = stretch_of([&before, &after]);
        let scale = PANEL.div_ceil(side).max(1);
        let panel = side * scale;
        let (gap, top, bottom) = (8usize, 30usize, 24usize);
        let (w, h) = (2 * panel + 3 * gap, top + panel + bottom);
        let mut img = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([255, 255, 255]));
        for (k, layer) in [&before, &after].into_iter().enumerate() {
            let x0 = gap + k * (panel + gap);
            for py in 0..panel {
                for px in 0..panel {
                    let i = (py / scale) * side + px / scale;
                    let rgb = match layer {
                        Some((bands, _)) => std::array::from_fn(|b| stretch[b].apply(bands[b][i])),
                        None => [90, 90, 90],
                    };
                    img.put_pixel((x0 + px) as u32, (top + py) as u32, image::Rgb(rgb));
                }
            }
            draw_outline(&mut img, &inside, side, scale, x0, top);
        }
        let dates = |layer: &Option<TrueColour>| {
            layer
                .as_ref()
                .map_or("no imagery".to_string(), |(_, d)| d.clone())
        };
        let captions = [
            format!("before {before_period}  {}", dates(&before)),
            format!("after {period}  {}", dates(&after)),
        ];
        let title = format!(
            "{}  {} {:.2} mu  conf {:.2}",
            p.tbbh,
            p.change.code(),
            p.area_mu,
            p.confidence
        );
        label(&mut img, &title, &captions, panel, gap, top).map_err(|e| {
            Error::input(
                png,
                format!("cannot draw the labels: {e}"),
                "check the font (GENGBAO_FONT)",
            )
        })?;
        img.save(png)
            .map_err(|e| Error::input(png, e.to_string(), "check that the folder is writable"))
    }
}

/// A linear stretch of one band between robust low and high values.
#[derive(Debug, Clone, Copy)]
struct Stretch {
    low: f32,
    high: f32,
}

impl Stretch {
    fn apply(self, v: f32) -> u8 {
        if !v.is_finite() {
            return 40;
        }
        let t = ((v - self.low) / (self.high - self.low).max(1e-6)).clamp(0.0, 1.0);
        (t * 255.0).round() as u8
    }
}

/// The 2nd and 98th percentiles of each band over both chips, so that before and after share
/// one stretch and can be compared.
fn stretch_of(layers: [&Option<TrueColour>; 2]) -> [Stretch; 3] {
    std::array::from_fn(|b| {
        let mut values: Vec<f32> = layers
            .iter()
            .filter_map(|l| l.as_ref())
            .flat_map(|(bands, _)| bands[b].iter().copied().filter(|v| v.is_finite()))
            .collect();
        if values.len() < 2 {
            return Stretch {
                low: 0.0,
                high: 0.3,
            };
        }
        values.sort_by(f32::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Stretch {
            low: at(0.02),
            high: at(0.98),
        }
    })
}

/// Draws the patch outline (the sides of its pixels that face outside) in yellow.
fn draw_outline(
    img: &mut image::RgbImage,
    inside: &[i32],
    side: usize,
    scale: usize,
    x0: usize,
    y0: usize,
) {
    let at = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < side
            && (y as usize) < side
            && inside[y as usize * side + x as usize] != 0
    };
    let yellow = image::Rgb([255, 230, 0]);
    let thick = (scale / 2).clamp(1, 3);
    for y in 0..side as isize {
        for x in 0..side as isize {
            if !at(x, y) {
                continue;
            }
            let (px, py) = (x0 + x as usize * scale, y0 + y as usize * scale);
            for t in 0..thick {
                for s in 0..scale {
                    if !at(x, y - 1) {
                        img.put_pixel((px + s) as u32, (py + t) as u32, yellow);
                    }
                    if !at(x, y + 1) {
                        img.put_pixel((px + s) as u32, (py + scale - 1 - t) as u32, yellow);
                    }
                    if !at(x - 1, y) {
                        img.put_pixel((px + t) as u32, (py + s) as u32, yellow);
                    }
                    if !at(x + 1, y) {
                        img.put_pixel((px + scale - 1 - t) as u32, (py + s) as u32, yellow);
                    }
                }
            }
        }
    }
}

fn label(
    img: &mut image::RgbImage,
    title: &str,
    captions: &[String; 2],
    panel: usize,
    gap: usize,
    top: usize,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let (w, h) = img.dimensions();
    let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
    let font = |size| ("sans-serif", size).into_font();
    root.draw(&Text::new(title.to_string(), (gap as i32, 7), font(17)))?;
    for (k, c) in captions.iter().enumerate() {
        let x = (gap + k * (panel + gap)) as i32;
        root.draw(&Text::new(
            c.clone(),
            (x, (top + panel + 5) as i32),
            font(13),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// The column of each return field in a header row: by Chinese name or ASCII name.
fn columns(headers: &[String], path: &Path) -> Result<(usize, [Option<usize>; 5])> {
    let find = |ascii: &str, alias: &str| {
        headers
            .iter()
            .position(|h| h.trim() == ascii || h.trim() == alias)
    };
    let tbbh = find("TBBH", "图斑编号").ok_or_else(|| {
        Error::input(
            path,
            "no 图斑编号 (TBBH) column",
            "import the list of a dispatch package, filled in, with its header row",
        )
    })?;
    let fields = RETURN_FIELDS.map(|f| find(f.name, f.alias));
    if fields.iter().all(Option::is_none) {
        return Err(Error::input(
            path,
            "none of the return columns 核查结果 / 举证类型 / 整改状态 / 备注 / 附件",
            "import the list of a dispatch package, filled in, with its header row",
        ));
    }
    Ok((tbbh, fields))
}

fn to_row(row: usize, cells: &[String], tbbh: usize, fields: &[Option<usize>; 5]) -> ReturnRow {
    let get = |c: Option<usize>| {
        c.and_then(|c| cells.get(c))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    ReturnRow {
        row,
        tbbh: get(Some(tbbh)),
        result: get(fields[0]),
        evidence: get(fields[1]),
        rectification: get(fields[2]),
        note: get(fields[3]),
        attachments: get(fields[4])
            .split([';', '；', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    }
}

/// Reads a county's returned results: the package's Excel list, its CSV twin, or its
/// GeoPackage, filled in. Rows are numbered as the spreadsheet shows them (header = row 1);
/// a GeoPackage's by feature id.
pub fn read_returns(path: &Path) -> Result<Vec<ReturnRow>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let unreadable = |e: String| {
        Error::input(
            path,
            format!("cannot read the file: {e}"),
            "save it again as .xlsx, .csv (UTF-8) or .gpkg",
        )
    };
    let mut rows = Vec::new();
    match ext.as_str() {
        "xlsx" | "xls" | "xlsm" | "ods" => {
            use calamine::Reader;
            let mut book =
                calamine::open_workbook_auto(path).map_err(|e| unreadable(e.to_string()))?;
            let range = book
                .worksheet_range_at(0)
                .ok_or_else(|| unreadable("no worksheet".into()))?
                .map_err(|e| unreadable(e.to_string()))?;
            let mut lines = range
                .rows()
                .map(|r| r.iter().map(|c| c.to_string()).collect::<Vec<String>>());
            let headers = lines.next().unwrap_or_default();
            let (tbbh, fields) = columns(&headers, path)?;
            for (k, cells) in lines.enumerate() {
                if cells.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                rows.push(to_row(k + 2, &cells, tbbh, &fields));
            }
        }
        "csv" => {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .has_headers(false)
                .from_path(path)
                .map_err(|e| unreadable(e.to_string()))?;
            let mut records = reader.records();
            let headers: Vec<String> = match records.next() {
                Some(r) => r
                    .map_err(|e| unreadable(e.to_string()))?
                    .iter()
                    .map(|h| h.trim_start_matches('\u{feff}').to_string())
                    .collect(),
                None => Vec::new(),
            };
            let (tbbh, fields) = columns(&headers, path)?;
            for (k, r) in records.enumerate() {
                let cells: Vec<String> = r
                    .map_err(|e| unreadable(format!("row {}: {e}", k + 2)))?
                    .iter()
                    .map(String::from)
                    .collect();
                if cells.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                rows.push(to_row(k + 2, &cells, tbbh, &fields));
            }
        }
        "gpkg" => {
            let ds = gdal::Dataset::open(path).map_err(|e| unreadable(e.to_string()))?;
            let mut layer = ds.layer(0).map_err(|e| unreadable(e.to_string()))?;
            let headers: Vec<String> = layer.defn().fields().map(|f| f.name()).collect();
            let (tbbh, fields) = columns(&headers, path)?;
            for f in layer.features() {
                let cells = (0..headers.len())
                    .map(|i| f.field_as_string(i).map(Option::unwrap_or_default))
                    .collect::<std::result::Result<Vec<String>, _>>()
                    .map_err(|e| unreadable(e.to_string()))?;
                rows.push(to_row(f.fid().unwrap_or(0) as usize, &cells, tbbh, &fields));
            }
        }
        other => {
            return Err(Error::input(
                path,
                format!("`.{other}` is not a returned-results format"),
                "import the package's .xlsx, .csv or .gpkg, filled in",
            ))
        }
    }
    Ok(rows)
}
