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

use crate::domain::period::Period;
use crate::engine::patch_record::write_county;
use crate::engine::patches::Patch;
use crate::error::{Error, GdalContext, Result};
use crate::geo::grid::JobGrid;
use crate::geo::layers::County;
use crate::geo::sensor::SensorProfile;
use crate::geo::vector::{field, FieldSpec};
use crate::job::config::JobConfig;
use crate::job::layout::PeriodFiles;
use crate::job::staging::StagingDir;
use crate::ledger::Ledger;
use crate::render::{text_font, MapSheet};
use gdal_sys::OGRFieldType::OFTString;
use serde::Serialize;
use std::path::{Path, PathBuf};

mod chips;
pub(crate) mod lists;
mod report;
mod returns;

use chips::ChipImagery;
use lists::{write_csv, write_xlsx};
use report::write_report;
pub use returns::read_returns;

/// The fields a county fills in and returns, in every format of the package.
pub(crate) const RETURN_FIELDS: [FieldSpec; 5] = [
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
    let ndvi_tif = archive.ndvi();
    let clear_shares = crate::job::summary::clear_shares(&archive.summary())?;
    let class_ds = gdal::Dataset::open(&class_tif).in_file(&class_tif, "re-run the period")?;
    let grid = JobGrid::of_dataset(&class_ds, &class_tif)?;
    drop(class_ds);
    let srs = grid.spatial_ref()?;
    let admin = cfg.counties(&srs)?;
    let admin = admin.only(counties)?;
    let profile = SensorProfile::by_name(&cfg.imagery.sensor)?;
    let catalog = cfg.catalog(profile)?;
    let imagery = ChipImagery {
        catalog: &catalog,
        profile,
        add_offset: cfg.imagery.add_offset,
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
                &package,
                cfg,
                period,
                c,
                patches,
                &imagery,
                (&class_tif, &ndvi_tif),
                clear_shares.get(&c.code).copied().flatten(),
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
    (class_tif, ndvi_tif): (&Path, &Path),
    clear_share: Option<f64>,
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
    write_xlsx(
        &dir.join(format!("{stem}.xlsx")),
        patches,
        period.last_day(),
    )?;
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
    MapSheet {
        title: format!(
            "{} {} · {period} 耕地变化图斑总览",
            county.name, county.code
        ),
        subtitle: format!(
            "影像 {} · 晴空覆盖监测耕地 {} · 下发图斑 {} 处 · 模型 {}",
            imagery.image_dates(period),
            clear_share.map_or("-".to_string(), |s| format!("{:.1}%", 100.0 * s)),
            patches.len(),
            patches.first().map_or("-", |p| p.model_version.as_str())
        ),
        grid: imagery.grid,
        window: imagery.grid.window_around(&envelope, 4),
        class_tif,
        ndvi_tif,
        patches,
        counties: std::slice::from_ref(county),
    }
    .write(&dir.join("overview.png"), 1200)?;
    write_report(
        &dir.join("report.html"),
        county,
        period,
        &stem,
        patches,
        cfg.townships.is_some(),
        clear_share,
    )?;
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    Ok(files)
}
