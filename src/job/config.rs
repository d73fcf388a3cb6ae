//! The job configuration (TOML). Paths are relative to the config file. Unknown keys are errors,
//! so a typo is caught before hours of processing rather than silently ignored.
//! `gengbao init` writes [`EXAMPLE`], the commented reference of every key.

use crate::classify::ClassifierKind;
use crate::error::{Error, Result};
use crate::geo::gaofen::CalibrationTable;
use crate::geo::imagery::Catalog;
use crate::geo::imagery::ProductReading;
use crate::geo::layers::{Admin, AdminLevel, AdminSource};
use crate::geo::rpc::{Elevation, GROUND_HEIGHTS};
use crate::geo::sensor::SensorProfile;
use crate::job::layout::OutputLayout;
use gdal::spatial_ref::SpatialRef;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const EXAMPLE: &str = r#"# gengbao job configuration. Paths are relative to this file.

[job]
name = "sample-city"            # used in summaries and the run log
output = "out"                  # results go to <output>/<period>/

[aoi]                           # administrative boundaries: one polygon per county
path = "admin.gpkg"
layer = "counties"              # optional: the first layer when omitted
code_field = "XZQDM"            # 6-digit county code (行政区代码)
name_field = "XZQMC"            # county name (行政区名称)
# encoding = "GBK"              # a Shapefile's text encoding when it has no .cpg (read from
                                # the .cpg or the .dbf otherwise; also in [townships], [farmland])

# [townships]                   # optional: township (乡镇) boundaries; patches then carry
# path = "townships.gpkg"       # their township (XZDM/XZMC), reports total by township
# layer = "townships"
# code_field = "XZQDM"          # 9-digit township code
# name_field = "XZQMC"

[farmland]                      # cultivated-land (耕地) parcels: the area that is watched
path = "farmland.gpkg"
layer = "farmland"
id_field = "BSM"                # parcel id (标识码)
class_field = "DLBM"            # land class: 0101 paddy, 0102 irrigated, 0103 dry land
classes = ["01"]                # class codes (prefixes) that are cultivated land: a full
                                # land-use layer can be given, only these are watched
basic_field = "JBNT"            # optional: permanent basic farmland flag (1/Y = yes)
# invalid_geometries = "repair" # parcels whose ring crosses itself: "repair" (GEOS MakeValid,
                                # listed as a warning) or "refuse" (the run stops with the list)

[imagery]
folder = "imagery"              # scanned recursively: products as downloaded (Sentinel-2
                                # .SAFE folders or zips, Landsat C2 L2 tars, Gaofen .tar.gz or
                                # TIFF + .xml), or one sub-folder per acquisition
                                # named with its date (YYYYMMDD), one GeoTIFF per band
# stac = "items.json"          # instead of folder: a saved STAC API search (item collection),
                                # a static catalog or collection, a local file or an http(s)
                                # address; assets local or http(s) COGs
sensor = "sentinel2-l2a"        # see `gengbao sensors`
# add_offset = 0                # DN offset, overriding the profile's and the products' own:
                                # SAFE products state theirs; band files of processing
                                # baseline 04.00+ (2022 on) carry -1000, older ones 0
# min_clear_share = 0.0         # a period is committed only when every county's watched land
                                # was seen clear at least this much (0..1); a county of which
                                # nothing was seen always stops it, keeping earlier results
# height = 50.0                 # Gaofen L1A products placed by RPCs: the area's mean ground
                                # height in metres (above the WGS 84 ellipsoid, as RPCs take
                                # it), when [grid] dem is not given
# calibration = "gains.toml"    # Gaofen: cameras and years that extend the built-in table

[grid]
crs = "EPSG:32650"              # the job's CRS (e.g. EPSG:4527 for CGCS2000 GK zone 39)
resolution = 10.0               # metres
tile_size = 512                 # pixels per tile side
halo = 0                        # extra pixels read around each tile, for classifiers that
                                # look at neighbours (the index baseline is per pixel)
# dem = "srtm.tif"              # heights in metres on which Gaofen L1A products placed by
                                # RPCs are orthorectified

[rules]
min_area_m2 = 400.0             # minimum mapping unit for every change type
# min_area_m2_by_type = { FNH = 200.0, FLH = 400.0, PH = 1000.0 }
# Consecutive bimonthly periods (now included) a change must be seen before it is flagged;
# a rule also waits until that many periods are archived (FLH: at least 3, since a perennial
# crop is told from grain over half a year). Runs longer than a year are remembered.
fnh_min_periods = 2             # 非农化: one bare period is a ploughed field as often as a
                                # building site; the next confirms it (1: flag at once)
flh_min_periods = 2             # 非粮化: one odd period is rotation or flooding
ph_min_periods = 6              # 撂荒: a year without a sign of cultivation
cultivation_signs = "bare-soil-or-canopy"  # what shows a field is worked: bare soil (NDVI <= 0.25)
                                # or a dense canopy (NDVI >= 0.7), for double-cropped land whose
                                # bare days may pass under clouds; "bare-soil" where fields are
                                # single-cropped: lush weeds then do not pass for a crop

[classifier]
kind = "auto"                   # "auto": the learned model shipped with gengbao when the sensor
                                # has its bands (Sentinel-2), else "index"; "learned": the shipped
                                # model or an error; "index": spectral-temporal index rules;
                                # "torch": your model file
# model = "models/landcover.pt" # with kind = "torch"; its card is <model>.json

[schedule]                      # `gengbao schedule` and `gengbao run --period due`
# start = "2025-P1"             # first period of the job (default: the first with imagery)
delay_days = 10                 # days after a period ends before its imagery is expected

[ledger]                        # the record of every patch (<output>/ledger.sqlite)
match_overlap = 0.3             # a period's patch is a known patch when they share this much
                                # of the smaller one's area
regrowth_margin = 0.2           # an accepted patch is dispatched again when it grows by more

[output]
shapefile_encoding = "GBK"      # "GBK" (most Chinese desktop GIS) or "UTF-8"
threads = 0                     # 0 = all cores (under Slurm: the task's CPUs)

[cluster]                       # `gengbao schedule --emit slurm|k8s`: a period as shards
shards = 4                      # tasks of the tile stage; then one merge
cpus_per_shard = 2
memory_per_shard = "8G"         # Slurm --mem, Kubernetes memory (G becomes Gi)
memory_merge = "16G"            # the merge assembles and vectorises the whole job
time_limit = "04:00:00"         # Slurm --time of each task, Kubernetes activeDeadlineSeconds of each Job
partition = ""                  # Slurm partition ("" = the cluster's default)
image = "gengbao:latest"        # Kubernetes: a container image with gengbao on its PATH
volume_claim = "gengbao-data"   # Kubernetes: the volume holding the job, mounted at the
                                # job folder's own path
"#;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub job: JobSection,
    pub aoi: AoiSection,
    /// Township boundaries, the same shape of layer as `[aoi]`.
    pub townships: Option<AoiSection>,
    pub farmland: FarmlandSection,
    pub imagery: ImagerySection,
    pub grid: GridSection,
    #[serde(default)]
    pub rules: RulesSection,
    #[serde(default)]
    pub classifier: ClassifierSection,
    #[serde(default)]
    pub schedule: ScheduleSection,
    #[serde(default)]
    pub ledger: crate::ledger::LedgerRules,
    #[serde(default)]
    pub output: OutputSection,
    #[serde(default)]
    pub cluster: ClusterSection,
    /// Folder of the config file; relative paths are resolved against it.
    #[serde(skip)]
    pub base: PathBuf,
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSection {
    pub name: String,
    pub output: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AoiSection {
    pub path: PathBuf,
    pub layer: Option<String>,
    #[serde(default = "default_code_field")]
    pub code_field: String,
    #[serde(default = "default_name_field")]
    pub name_field: String,
    /// The encoding of a Shapefile's text when it has no `.cpg` (e.g. "GBK").
    pub encoding: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FarmlandSection {
    pub path: PathBuf,
    pub layer: Option<String>,
    #[serde(default = "default_id_field")]
    pub id_field: String,
    #[serde(default = "default_class_field")]
    pub class_field: String,
    pub basic_field: Option<String>,
    /// Class codes (prefixes of `class_field`) that are cultivated land; other features of the
    /// layer are not watched.
    #[serde(default = "default_farmland_classes")]
    pub classes: Vec<String>,
    /// Parcels whose geometry is invalid: repaired (default) or refused.
    #[serde(default)]
    pub invalid_geometries: crate::geo::layers::InvalidGeometries,
    /// The encoding of a Shapefile's text when it has no `.cpg` (e.g. "GBK").
    pub encoding: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagerySection {
    /// The folder scanned for products and acquisition folders; empty when `stac` is given.
    #[serde(default)]
    pub folder: PathBuf,
    /// A STAC document (item collection, catalog, collection or item) instead of a folder:
    /// a path (relative to the job file) or an `http(s)://` address.
    #[serde(default)]
    pub stac: Option<PathBuf>,
    pub sensor: String,
    /// DN offset of the products, overriding the profile's (e.g. 0 for Sentinel-2 processed
    /// before baseline 04.00).
    pub add_offset: Option<f32>,
    /// Share of a county's watched land that must be seen clear for a period to be committed;
    /// a county of which nothing was seen always stops it.
    #[serde(default)]
    pub min_clear_share: f64,
    /// The area's mean ground height in metres, on which Gaofen L1A products placed by RPCs
    /// are orthorectified when `[grid] dem` is not given.
    pub height: Option<f64>,
    /// A Gaofen calibration table (TOML, as `src/geo/gaofen_calibration.toml`) whose cameras
    /// and years extend or replace the built-in ones.
    pub calibration: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSection {
    pub crs: String,
    pub resolution: f64,
    #[serde(default = "default_tile_size")]
    pub tile_size: usize,
    #[serde(default = "default_halo")]
    pub halo: usize,
    /// A DEM (heights in metres, any CRS GDAL reads) on which Gaofen L1A products placed by
    /// RPCs are orthorectified.
    pub dem: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSection {
    #[serde(default = "default_min_area")]
    pub min_area_m2: f64,
    #[serde(default)]
    pub min_area_m2_by_type: BTreeMap<String, f64>,
    #[serde(default = "default_fnh_min_periods")]
    pub fnh_min_periods: usize,
    #[serde(default = "default_flh_min_periods")]
    pub flh_min_periods: usize,
    #[serde(default = "default_ph_min_periods")]
    pub ph_min_periods: usize,
    #[serde(default)]
    pub cultivation_signs: crate::domain::change::CultivationSigns,
}

impl RulesSection {
    pub fn persistence(&self) -> crate::domain::change::Rules {
        crate::domain::change::Rules::new(
            self.fnh_min_periods,
            self.flh_min_periods,
            self.ph_min_periods,
        )
        .with_cultivation(self.cultivation_signs)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSection {
    #[serde(default)]
    pub kind: ClassifierKind,
    pub model: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// First period of the job; the first period with imagery when absent.
    pub start: Option<String>,
    #[serde(default = "default_delay_days")]
    pub delay_days: u32,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        ScheduleSection {
            start: None,
            delay_days: default_delay_days(),
        }
    }
}

fn default_delay_days() -> u32 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    #[serde(default = "default_encoding")]
    pub shapefile_encoding: String,
    #[serde(default)]
    pub threads: usize,
}

/// How a period runs on a cluster as shards (`gengbao schedule --emit slurm|k8s`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    pub shards: usize,
    pub cpus_per_shard: usize,
    pub memory_per_shard: String,
    pub memory_merge: String,
    pub time_limit: String,
    pub partition: String,
    pub image: String,
    pub volume_claim: String,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            shards: 4,
            cpus_per_shard: 2,
            memory_per_shard: "8G".into(),
            memory_merge: "16G".into(),
            time_limit: "04:00:00".into(),
            partition: String::new(),
            image: "gengbao:latest".into(),
            volume_claim: "gengbao-data".into(),
        }
    }
}

/// Longest persistence a rule may ask for: the runs are archived as bytes.
const MAX_RULE_PERIODS: usize = 255;

fn default_code_field() -> String {
    "XZQDM".into()
}
fn default_name_field() -> String {
    "XZQMC".into()
}
fn default_id_field() -> String {
    "BSM".into()
}
fn default_class_field() -> String {
    "DLBM".into()
}
fn default_farmland_classes() -> Vec<String> {
    vec!["01".into()]
}
fn default_tile_size() -> usize {
    512
}
fn default_halo() -> usize {
    0
}
fn default_min_area() -> f64 {
    400.0
}
fn default_fnh_min_periods() -> usize {
    2
}
fn default_flh_min_periods() -> usize {
    2
}
fn default_ph_min_periods() -> usize {
    6
}
fn default_encoding() -> String {
    "GBK".into()
}

impl Default for RulesSection {
    fn default() -> Self {
        RulesSection {
            min_area_m2: default_min_area(),
            min_area_m2_by_type: BTreeMap::new(),
            fnh_min_periods: default_fnh_min_periods(),
            flh_min_periods: default_flh_min_periods(),
            ph_min_periods: default_ph_min_periods(),
            cultivation_signs: Default::default(),
        }
    }
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            shapefile_encoding: default_encoding(),
            threads: 0,
        }
    }
}

impl JobConfig {
    /// Every county of the job's `[aoi]` layer, in `grid_srs`.
    pub fn counties(&self, grid_srs: &SpatialRef) -> Result<Admin> {
        self.admin_layer(&self.aoi, AdminLevel::County, grid_srs)
    }

    /// The job's `[townships]` layer, when it has one: units with the same code and name
    /// fields as counties, one level down.
    pub fn townships(&self, grid_srs: &SpatialRef) -> Result<Option<Admin>> {
        self.townships
            .as_ref()
            .map(|t| self.admin_layer(t, AdminLevel::Township, grid_srs))
            .transpose()
    }

    fn admin_layer(
        &self,
        section: &AoiSection,
        level: AdminLevel,
        srs: &SpatialRef,
    ) -> Result<Admin> {
        let path = self.resolve(&section.path);
        let source = AdminSource {
            path: &path,
            layer: section.layer.as_deref(),
            code_field: &section.code_field,
            name_field: &section.name_field,
            level,
            encoding: section.encoding.as_deref(),
        };
        Admin::open(source, srs)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::input(
                path,
                "no such job config",
                "pass an existing file to --config; `gengbao init JOB.toml` writes an example",
            ),
            _ => Error::io(path, e),
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            let (_, _, malformed) = encoding_rs::GB18030.decode(&bytes);
            let problem = if malformed {
                "is not UTF-8 text"
            } else {
                "is saved as GBK (Chinese Windows' default), not UTF-8 as TOML files must be"
            };
            Error::input(
                path,
                problem,
                "save it as UTF-8 (the editor's Save As, encoding UTF-8; or `iconv -f GBK -t UTF-8 OLD > NEW`)",
            )
        })?;
        // Windows Notepad starts UTF-8 files with a byte-order mark.
        Self::parse(text.trim_start_matches('\u{feff}'), path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut cfg: JobConfig = toml::from_str(text).map_err(|e| {
            let key = e
                .message()
                .split('`')
                .nth(1)
                .map(str::to_string)
                .unwrap_or_else(|| "?".into());
            Error::config(
                path,
                key,
                e.to_string().trim_end().to_string(),
                "compare with the commented example written by `gengbao init`",
            )
        })?;
        // From the root, so that the job's files have one identity however the config was
        // named (a shard given `job.toml` from its folder, `../city/job.toml` or the full path).
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        cfg.base = from_root(folder);
        cfg.source = path.to_path_buf();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value the types cannot, in the order of the example config.
    fn validate(&self) -> Result<()> {
        self.validate_grid_and_rules()?;
        self.validate_schedule_and_outputs()
    }

    /// A refusal of the value of `key`.
    fn refuse(&self, key: &str, problem: String, fix: &str) -> Result<()> {
        Err(Error::config(&self.source, key, problem, fix))
    }

    fn validate_grid_and_rules(&self) -> Result<()> {
        if let Some(dem) = &self.grid.dem {
            if !self.resolve(dem).is_file() {
                return self.refuse(
                    "grid.dem",
                    format!("{} is not a file", self.resolve(dem).display()),
                    "give the path (relative to the job config) of a DEM raster GDAL reads, e.g. SRTM or ASTER GDEM GeoTIFF",
                );
            }
        }
        if let Some(h) = self.imagery.height {
            if !GROUND_HEIGHTS.contains(&h) {
                return self.refuse(
                    "imagery.height",
                    format!("{h} m is not a ground height"),
                    "give the area's mean height in metres, -500 to 9000",
                );
            }
            if self.grid.dem.is_some() {
                return self.refuse(
                    "imagery.height",
                    "both `[grid] dem` and `[imagery] height` are set".into(),
                    "keep the DEM (it follows the relief) and remove `height`",
                );
            }
        }
        match (self.imagery.folder.as_os_str().is_empty(), &self.imagery.stac) {
            (true, None) => {
                return self.refuse(
                    "imagery.folder",
                    "no imagery source: neither `folder` nor `stac` is set".into(),
                    "set `folder = \"imagery\"` (the folder holding the products) or `stac = \"items.json\"` in [imagery]",
                )
            }
            (false, Some(_)) => {
                return self.refuse(
                    "imagery.stac",
                    "both `folder` and `stac` are set; a job reads one imagery source".into(),
                    "keep one of them in [imagery]",
                )
            }
            _ => {}
        }
        if !(0.0..=1.0).contains(&self.imagery.min_clear_share) {
            return self.refuse(
                "imagery.min_clear_share",
                format!("{} is not a share in 0..1", self.imagery.min_clear_share),
                "use e.g. 0.5 (half of each county's watched land seen clear), or 0",
            );
        }
        if self.grid.resolution.is_nan() || self.grid.resolution <= 0.0 {
            return self.refuse(
                "grid.resolution",
                format!("{} is not a positive size", self.grid.resolution),
                "give the pixel size in CRS units, e.g. 10.0",
            );
        }
        if self.grid.tile_size < 16 || self.grid.tile_size > 8192 {
            return self.refuse(
                "grid.tile_size",
                format!("{} is outside 16..8192", self.grid.tile_size),
                "use e.g. 512",
            );
        }
        if self.grid.halo * 2 >= self.grid.tile_size {
            return self.refuse(
                "grid.halo",
                format!(
                    "{} is too large for tile_size {}",
                    self.grid.halo, self.grid.tile_size
                ),
                "use a halo well below half the tile size, e.g. 8",
            );
        }
        match crate::geo::sensor::SensorProfile::by_name(&self.imagery.sensor) {
            Err(e) => return self.refuse("imagery.sensor", e.to_string(), "see `gengbao sensors`"),
            Ok(p) if p.dark_object_subtraction => {
                return self.refuse(
                    "imagery.sensor",
                    format!(
                    "profile `{}` needs whole-scene statistics and serves `gengbao detect` only",
                    p.name
                ),
                    "use calibrated surface reflectance (e.g. landsat-tm-sr) for folder jobs",
                )
            }
            Ok(_) => {}
        }
        for key in self.rules.min_area_m2_by_type.keys() {
            if crate::domain::change::ChangeType::from_code(key).is_none() {
                return self.refuse(
                    "rules.min_area_m2_by_type",
                    format!("unknown change type `{key}`"),
                    "use FNH, FLH or PH",
                );
            }
        }
        for (key, value) in [
            ("rules.fnh_min_periods", self.rules.fnh_min_periods),
            ("rules.flh_min_periods", self.rules.flh_min_periods),
            ("rules.ph_min_periods", self.rules.ph_min_periods),
        ] {
            if !(1..=MAX_RULE_PERIODS).contains(&value) {
                return self.refuse(
                    key,
                    format!("{value} is outside 1..{MAX_RULE_PERIODS}"),
                    "use a number of bimonthly periods (defaults: FNH 2, FLH 2, PH 6)",
                );
            }
        }
        Ok(())
    }

    fn validate_schedule_and_outputs(&self) -> Result<()> {
        let output = self.resolve(&self.job.output);
        if output.exists() && !output.is_dir() {
            return self.refuse(
                "job.output",
                format!("{} is a file, not a folder", output.display()),
                "name a folder (new or existing) for the results",
            );
        }
        if let Some(start) = &self.schedule.start {
            if let Err(e) = start.parse::<crate::domain::period::Period>() {
                return self.refuse(
                    "schedule.start",
                    e.to_string(),
                    "write a period as YYYY-Pn, e.g. 2025-P1",
                );
            }
        }
        if !(self.ledger.match_overlap > 0.0 && self.ledger.match_overlap <= 1.0) {
            return self.refuse(
                "ledger.match_overlap",
                format!("{} is outside (0, 1]", self.ledger.match_overlap),
                "use a share of the smaller patch, e.g. 0.3",
            );
        }
        if !(self.ledger.regrowth_margin >= 0.0 && self.ledger.regrowth_margin.is_finite()) {
            return self.refuse(
                "ledger.regrowth_margin",
                format!("{} is not a share >= 0", self.ledger.regrowth_margin),
                "use a growth share, e.g. 0.2 for 20 %",
            );
        }
        if self.schedule.delay_days > 28 {
            return self.refuse(
                "schedule.delay_days",
                format!("{} is more than 28", self.schedule.delay_days),
                "use 0..28 days: the timer fires in the month after a period ends",
            );
        }
        if self.classifier.kind == ClassifierKind::Torch && self.classifier.model.is_none() {
            return self.refuse(
                "classifier.model",
                "kind = \"torch\" needs a model file".into(),
                "set model = \"path/to/model.pt\" (its card is model.pt.json)",
            );
        }
        match self.output.shapefile_encoding.to_ascii_uppercase().as_str() {
            "GBK" | "UTF-8" | "UTF8" => {}
            other => {
                return self.refuse(
                    "output.shapefile_encoding",
                    format!("unsupported encoding `{other}`"),
                    "use \"GBK\" or \"UTF-8\"",
                )
            }
        }
        let srs = gdal::spatial_ref::SpatialRef::from_definition(&self.grid.crs).map_err(|e| {
            Error::config(
                &self.source,
                "grid.crs",
                format!("`{}` is not a CRS GDAL knows: {e}", self.grid.crs),
                "use an EPSG code such as \"EPSG:32650\" or \"EPSG:4527\"",
            )
        })?;
        if let Err(problem) = crate::geo::grid::check_metric(&srs) {
            return self.refuse(
                "grid.crs",
                format!("`{}` {problem}", self.grid.crs),
                "use a projected CRS in metres: a CGCS2000 Gauss-Krüger zone (EPSG:4513-4554, e.g. EPSG:4527) or a UTM zone",
            );
        }
        let areas = std::iter::once(("rules.min_area_m2", self.rules.min_area_m2)).chain(
            self.rules
                .min_area_m2_by_type
                .values()
                .map(|&v| ("rules.min_area_m2_by_type", v)),
        );
        for (key, v) in areas {
            if !(v.is_finite() && v >= 0.0) {
                return self.refuse(
                    key,
                    format!("{v} is not an area"),
                    "give square metres, e.g. 400.0",
                );
            }
        }
        if self.farmland.classes.is_empty() {
            return self.refuse(
                "farmland.classes",
                "no land classes are watched".into(),
                "list the class code prefixes of cultivated land, e.g. [\"01\"]",
            );
        }
        Ok(())
    }

    /// The imagery source: the STAC file or the folder, resolved.
    pub(crate) fn imagery_source(&self) -> PathBuf {
        match &self.imagery.stac {
            Some(address) if crate::geo::stac::is_remote(address) => address.clone(),
            stac => self.resolve(stac.as_deref().unwrap_or(&self.imagery.folder)),
        }
    }

    /// The catalog of the job's imagery, from its folder or its STAC file.
    pub(crate) fn catalog(&self, profile: &'static SensorProfile) -> Result<Catalog> {
        match &self.imagery.stac {
            Some(_) => Catalog::from_stac(&self.imagery_source(), profile),
            None => Catalog::scan(
                &self.resolve(&self.imagery.folder),
                profile,
                &self.product_reading()?,
            ),
        }
    }

    /// How the job reads products that need more than their own files (Gaofen L1A): its
    /// elevation (`[grid] dem`, else `[imagery] height`) and calibration table.
    pub fn product_reading(&self) -> Result<ProductReading> {
        let elevation = self.elevation();
        let mut calibration = CalibrationTable::builtin();
        if let Some(table) = &self.imagery.calibration {
            calibration = calibration.extended_by(&self.resolve(table))?;
        }
        Ok(ProductReading {
            elevation,
            calibration,
        })
    }

    /// The ground's elevation Gaofen L1A products are placed on: `[grid] dem`, else
    /// `[imagery] height`.
    pub(crate) fn elevation(&self) -> Elevation {
        match (&self.grid.dem, self.imagery.height) {
            (Some(dem), _) => Elevation::Dem(self.resolve(dem)),
            (None, Some(h)) => Elevation::Height(h),
            (None, None) => Elevation::Unknown,
        }
    }

    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// The job's output folder.
    pub fn layout(&self) -> OutputLayout {
        OutputLayout::new(self.resolve(&self.job.output))
    }

    pub(crate) fn min_area_for(&self, code: &str) -> f64 {
        self.rules
            .min_area_m2_by_type
            .get(code)
            .copied()
            .unwrap_or(self.rules.min_area_m2)
    }
}

/// `path` from the root, symlinks and `..` resolved where it exists (cron starts in the
/// user's home, systemd in `/`, a cluster's task wherever its node likes).
pub(crate) fn from_root(path: &Path) -> PathBuf {
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Any text is a config or a clean error naming the file.
        #[test]
        fn any_text_is_a_config_or_a_clean_error(s in "\\PC{0,200}") {
            if let Err(e) = JobConfig::parse(&s, Path::new("/x/job.toml")) {
                proptest::prop_assert!(e.to_string().contains("job.toml"));
            }
        }

        /// The example with one line replaced by any text (a typo, a wrong type, a stray
        /// character) is a config or an error naming the file, never a panic.
        #[test]
        fn the_example_with_a_line_changed_never_panics(line in 0usize..120, text in "\\PC{0,40}") {
            let mut lines: Vec<&str> = EXAMPLE.lines().collect();
            let at = line % lines.len();
            lines[at] = &text;
            if let Err(e) = JobConfig::parse(&lines.join("\n"), Path::new("/x/job.toml")) {
                proptest::prop_assert!(e.to_string().contains("job.toml"));
            }
        }
    }

    #[test]
    fn gaofen_elevation_comes_from_the_dem_or_a_height_never_both() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("srtm.tif"), b"heights").unwrap();
        let with = |grid: &str, imagery: &str| {
            let text = EXAMPLE
                .replace("[grid]\n", &format!("[grid]\n{grid}\n"))
                .replace("[imagery]\n", &format!("[imagery]\n{imagery}\n"));
            JobConfig::parse(&text, &dir.path().join("job.toml"))
        };
        let dem = with("dem = \"srtm.tif\"", "").unwrap();
        assert!(matches!(
            dem.product_reading().unwrap().elevation,
            Elevation::Dem(p) if p == dir.path().join("srtm.tif")
        ));
        let typo = with("dem = \"strm.tif\"", "").unwrap_err().to_string();
        assert!(
            typo.contains("grid.dem") && typo.contains("strm.tif"),
            "{typo}"
        );
        let height = with("", "height = 35.0").unwrap();
        assert!(matches!(
            height.product_reading().unwrap().elevation,
            Elevation::Height(h) if h == 35.0
        ));
        let neither = with("", "").unwrap();
        assert!(matches!(
            neither.product_reading().unwrap().elevation,
            Elevation::Unknown
        ));
        let both = with("dem = \"srtm.tif\"", "height = 35.0").unwrap_err();
        assert!(both.to_string().contains("imagery.height"), "{both}");
        let slip = with("", "height = 35000.0").unwrap_err();
        assert!(slip.to_string().contains("not a ground height"), "{slip}");
        let table = with("", "calibration = \"missing.toml\"").unwrap();
        let e = table.product_reading().unwrap_err().to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }

    #[test]
    fn example_parses() {
        let cfg = JobConfig::parse(EXAMPLE, Path::new("/x/job.toml")).unwrap();
        assert_eq!(cfg.grid.tile_size, 512);
        assert_eq!(cfg.layout().root(), Path::new("/x/out"));
        assert_eq!(cfg.min_area_for("PH"), 400.0);
    }

    #[test]
    fn the_signs_of_cultivation_are_chosen_by_name() {
        use crate::domain::change::CultivationSigns;
        let with = |value: &str| {
            let text = EXAMPLE.replace(
                "cultivation_signs = \"bare-soil-or-canopy\"",
                &format!("cultivation_signs = \"{value}\""),
            );
            JobConfig::parse(&text, Path::new("job.toml"))
                .map(|cfg| cfg.rules.persistence().cultivation)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            with("bare-soil-or-canopy"),
            Ok(CultivationSigns::BareSoilOrCanopy)
        );
        assert_eq!(with("bare-soil"), Ok(CultivationSigns::BareSoil));
        let err = with("canopy").unwrap_err();
        assert!(
            err.contains("cultivation_signs") && err.contains("bare-soil"),
            "{err}"
        );
    }

    #[test]
    fn a_typo_names_the_key() {
        let text = EXAMPLE.replace("tile_size = 512", "tile_sise = 512");
        let err = JobConfig::parse(&text, Path::new("job.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tile_sise"), "{err}");
        assert!(err.contains("job.toml"), "{err}");
    }

    #[test]
    fn a_geographic_crs_is_refused() {
        let text = EXAMPLE.replace("EPSG:32650", "EPSG:4490");
        let err = JobConfig::parse(&text, Path::new("job.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("grid.crs") && err.contains("Gauss"), "{err}");
    }

    #[test]
    fn a_bad_value_names_the_key_and_fix() {
        let text = EXAMPLE.replace("resolution = 10.0", "resolution = -1.0");
        let err = JobConfig::parse(&text, Path::new("job.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("grid.resolution") && err.contains("fix:"),
            "{err}"
        );
    }
}
