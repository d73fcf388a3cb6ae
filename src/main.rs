//! `gengbao`: the command line over the library. Each subcommand parses its arguments, calls
//! one library entry point and prints a short human summary; errors go to stderr.
//!
//! Exit codes (for cron and systemd): 0 done; 1 failed (the message names the file and the
//! fix); 2 bad command line; 3 another run holds the job's lock; 4 `run --period due` ran
//! what it could but some periods that are over still have no imagery.

use clap::{Parser, Subcommand};
use gengbao::dispatch::read_returns;
use gengbao::domain::change::DEFAULT_MIN_PARCEL_SHARE;
use gengbao::engine::patches::SQM_PER_MU;
use gengbao::evaluate::score_period;
use gengbao::geo::rpc::Elevation;
use gengbao::geo::sensor::PROFILES;
use gengbao::job::config::EXAMPLE;
use gengbao::job::cycle::exit_code_of;
use gengbao::job::schedule::{self, Emit};
use gengbao::ledger::{Filter, Transition};
use gengbao::train::{evaluate_classifier, train, Evaluation, Split, TrainConfig};
use gengbao::{
    detect, eval_real, export_packages, generate, run_periods, Classifier, DetectOptions, Error,
    EvalRealOptions, Evidence, JobConfig, Ledger, Period, PeriodSelector, Result, RunOptions,
    SampleOptions, Status, TorchClassifier,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `println!` for standard output through [`gengbao::progress::write_stdout`]: a closed pipe
/// ends the output, not the command.
macro_rules! say {
    ($($arg:tt)*) => {
        gengbao::progress::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[derive(Parser)]
#[command(
    name = "gengbao",
    version,
    about = "耕保: cultivated-land supervision from satellite imagery"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a sample city (imagery, parcels, counties, planted changes, truth, job config).
    Samples {
        /// The folder to write the city into.
        #[arg(long)]
        out: PathBuf,
        /// Side of the city in 10 m pixels.
        #[arg(long, default_value_t = 768)]
        size: usize,
        /// Number of bimonthly periods, from 2025-P1.
        #[arg(long, default_value_t = 8)]
        periods: usize,
        /// Seed of the generator: the same seed gives the same city, byte for byte.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Tile size written into the generated job config.
        #[arg(long, default_value_t = 512)]
        tile_size: usize,
    },
    /// Write a commented example job config.
    Init {
        /// Where to write it.
        #[arg(default_value = "job.toml")]
        path: PathBuf,
    },
    /// Run one period of a job (YYYY-Pn), or `all` periods that have imagery, in order.
    Run {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
        /// A period (2025-P3), `all` (every period with imagery), or `due` (every period that
        /// is over and not run yet, oldest first: the catch-up after an outage).
        #[arg(long)]
        period: PeriodSelector,
        /// Only these counties (XZQDM codes); repeat the flag for several.
        #[arg(long = "county")]
        counties: Vec<String>,
        /// No progress bars (for logs and scripts).
        #[arg(long)]
        quiet: bool,
        /// Only the tile stage of shard i of N (`i/N`, i from 0) of the period planned with
        /// `gengbao plan`; `gengbao merge` finishes the period.
        #[arg(long, conflicts_with = "counties")]
        shard: Option<gengbao::job::shards::Shard>,
    },
    /// Split a period into shards that run apart (Slurm array tasks, Kubernetes indexed
    /// jobs): which tiles each one does, balanced by watched farmland.
    Plan {
        /// The job's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The period to split (e.g. 2025-P3).
        #[arg(long)]
        period: Period,
        /// How many shards.
        #[arg(long)]
        shards: usize,
    },
    /// Finish a period run as shards: check every shard finished with the plan's inputs, then
    /// assemble, vectorise, update the ledger and commit, as `run` does.
    Merge {
        /// The job's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The period whose shards ran.
        #[arg(long)]
        period: Period,
        /// No progress bars (for logs and scripts).
        #[arg(long)]
        quiet: bool,
    },
    /// Generate the sample city and run every period: the quick start.
    Demo {
        /// The folder for the city (`city/`) and its results (`city/out/`).
        #[arg(long, default_value = "gengbao-demo")]
        out: PathBuf,
        /// Side of the city in 10 m pixels.
        #[arg(long, default_value_t = 768)]
        size: usize,
    },
    /// Two-date detection on a pair of co-registered multi-band images.
    Detect {
        /// The earlier image: one multi-band raster in the sensor profile's band order (or in
        /// the order --bands gives), or a folder with one file per band named with the band
        /// (`..._B02.tif`). Its grid is the grid of the results; an image in degrees or with
        /// pixels that are not square is put on a square grid in metres (the local UTM zone
        /// for degrees) at its pixel size.
        #[arg(long)]
        before: PathBuf,
        /// The later image, same bands, on any grid and CRS: warped onto the earlier one's.
        #[arg(long)]
        after: PathBuf,
        /// The bands of the image files in the files' own order, by the profile's band names
        /// (e.g. `--bands B01,B02,B03,B04,B05,B06,B07,B08,B09,B10,B11,B12,B8A`).
        #[arg(long, value_delimiter = ',')]
        bands: Option<Vec<String>>,
        /// Cultivated-land parcels; without them the whole image is watched.
        #[arg(long)]
        farmland: Option<PathBuf>,
        /// Sensor profile (see `gengbao sensors`); guessed from the bands when omitted.
        #[arg(long)]
        sensor: Option<String>,
        /// DN offset of the images, overriding the profile's (e.g. 0 for Sentinel-2 processed
        /// before baseline 04.00, whose DNs carry no -1000 offset).
        #[arg(long, allow_hyphen_values = true)]
        add_offset: Option<f32>,
        /// A DEM (GeoTIFF or any raster GDAL reads, heights in metres) for images placed by
        /// RPCs (Gaofen L1A), which are orthorectified onto it.
        #[arg(long, conflicts_with = "height")]
        dem: Option<PathBuf>,
        /// The scene's mean height in metres, for images placed by RPCs, without a DEM.
        #[arg(long, allow_hyphen_values = true, value_parser = ground_height)]
        height: Option<f64>,
        /// A table of Gaofen calibration coefficients (TOML, the format of the built-in
        /// src/geo/gaofen_calibration.toml) adding cameras or years to the built-in one.
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// The folder for the results (class rasters, flags, patches.gpkg, summary.json).
        #[arg(long)]
        out: PathBuf,
        /// Minimum patch area in m².
        #[arg(long, default_value_t = gengbao::detect::DEFAULT_MIN_AREA_M2)]
        min_area: f64,
        /// A learned model (TorchScript or VarStore, card beside it as <model>.json) instead
        /// of the model shipped in gengbao (used when the sensor has its bands, else the index
        /// rules).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Labelled points on the earlier image (vector file, class codes 1..6 in
        /// --sample-class-field): a model is trained on them for that image.
        #[arg(long)]
        samples_before: Option<PathBuf>,
        /// Labelled points on the later image.
        #[arg(long)]
        samples_after: Option<PathBuf>,
        /// Integer field of the labelled points holding the class code (1..6).
        #[arg(long, default_value = gengbao::detect::DEFAULT_SAMPLE_CLASS_FIELD)]
        sample_class_field: String,
        /// Flag 撂荒 (PH) from the pair: cropland before, grass or shrub after. Use it when the
        /// later image is in the growing season, when a field still farmed shows a crop or
        /// tillage; the year-long rule needs `gengbao run` over periods.
        #[arg(long)]
        abandonment: bool,
        /// A pixel is flagged only when a learned model is at least this sure (0..1) of both its
        /// classes (the index rules' confidence is not a probability and is not held to it).
        #[arg(long, default_value_t = gengbao::detect::DEFAULT_MIN_CONFIDENCE)]
        min_confidence: f32,
        /// With --farmland, an FLH or PH patch must take, with the other pixels of its type
        /// in its parcel, at least this share (0..1) of the parcel's convertible land: a crop
        /// change or abandonment is a field's, a few odd pixels in a grain field are not.
        /// [default: two-thirds]
        #[arg(long)]
        min_parcel_share: Option<f64>,
        /// Decide change from the two classifications alone. By default a pixel changes only
        /// where both images together show it (change vectors of the per-image standardised
        /// bands against the scene's own minimum-error threshold), and the classes name it.
        #[arg(long)]
        classes_only: bool,
        /// No progress bars (for logs and scripts).
        #[arg(long)]
        quiet: bool,
    },
    /// List the periods that are done, due or missing imagery; or print timer entries.
    Schedule {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
        /// Today's date (YYYY-MM-DD) instead of the clock's.
        #[arg(long)]
        today: Option<String>,
        /// Print a crontab line or systemd service and timer units instead of the list; or a
        /// script that runs one period as shards on Slurm or Kubernetes (`[cluster]`).
        #[arg(long, value_enum)]
        emit: Option<Emit>,
    },
    /// Score a period's patches against the truth of a generated city.
    Score {
        /// The generated city folder (with truth/).
        #[arg(long)]
        city: PathBuf,
        /// The period's results folder (<output>/<period>).
        #[arg(long)]
        results: PathBuf,
        /// The period the results are of (YYYY-Pn).
        #[arg(long)]
        period: Period,
    },
    /// Train a land-cover model from labelled datasets (see models/gengbao-s2-v1.train.toml).
    Train {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
        /// No progress bars (for logs and scripts).
        #[arg(long)]
        quiet: bool,
    },
    /// Score a model on the labelled pixels of a training config's datasets: JSON, Markdown
    /// and PNG confusion matrices, real and generated data apart.
    Eval {
        /// A model file (card beside it), or `builtin` for the model shipped in gengbao.
        #[arg(long)]
        model: String,
        /// Training config whose datasets and split to use.
        #[arg(long)]
        data: PathBuf,
        /// Which labelled pixels to score.
        #[arg(long, value_enum, default_value_t = Split::Test)]
        split: Split,
        /// The folder for eval.json, eval.md and the confusion matrices.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run every labelled real set of a data folder through gengbao and the classical
    /// yardsticks on the same pixels: eval-real.json and eval-real.md (change pairs:
    /// Taizhou and the OSCD cities; land cover: the EuroSAT patches, the WorldCereal Flanders
    /// series and Digital Earth Africa's crop points, on held-out folds).
    EvalReal {
        /// The data folder, laid out as ../shared/data/README.md describes.
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        /// The folder for the report and each scene's detect outputs (under work/).
        #[arg(long)]
        out: PathBuf,
        /// Only these OSCD cities (repeat the option); all by default.
        #[arg(long = "city")]
        cities: Vec<String>,
        /// Change pairs only, without the land-cover sets.
        #[arg(long)]
        change_only: bool,
        /// Hold out only these Digital Earth Africa regions (repeat the option); all by default.
        #[arg(long = "region")]
        regions: Vec<String>,
    },
    /// List the sensor profiles.
    Sensors,
    /// Write the dispatch packages of a period (per county: GeoPackage, Shapefile, GeoJSON,
    /// Excel and CSV lists, image chips, overview map, HTML report) into
    /// <output>/dispatch/<period>/<county>; new patches become dispatched (已下发).
    Export {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
        /// The period (YYYY-Pn), already run.
        #[arg(long)]
        period: Period,
        /// Only these counties (XZQDM codes); repeat the flag for several.
        #[arg(long = "county")]
        counties: Vec<String>,
        /// Also write each county's package as one zip beside its folder.
        #[arg(long)]
        zip: bool,
    },
    /// The patch ledger: list, show, change status, history, import a county's results.
    Ledger {
        #[command(subcommand)]
        action: LedgerAction,
    },
    /// The inspectors' portal over the job's ledger: an HTTP API with accounts per county.
    Serve {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
        /// The address to listen on (e.g. 0.0.0.0:8443 to serve the intranet, with TLS).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// A site photo taken farther than this from its patch (metres) is flagged.
        #[arg(long, default_value_t = gengbao::portal::server::DEFAULT_EVIDENCE_DISTANCE_M)]
        evidence_distance_m: f64,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key); cookies are then
        /// marked Secure.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// The portal's accounts: add, list, disable, reset a password.
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
}

#[derive(Subcommand)]
enum UsersAction {
    /// Add an account; the password is read from standard input.
    Add {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
        /// The login name.
        #[arg(long)]
        name: String,
        /// admin (all counties), county (its county: statuses and returns), inspector (its
        /// county: field checks and evidence), auditor (all counties, read only).
        #[arg(long)]
        role: String,
        /// The county (XZQDM) of a county or inspector account.
        #[arg(long)]
        county: Option<String>,
        /// Read the password from standard input (required: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List the accounts.
    List {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
    },
    /// Disable an account: it can no longer log in, and its sessions end.
    Disable {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
        /// The login name.
        #[arg(long)]
        name: String,
    },
    /// Set a new password (from standard input), enable the account and lift a lock.
    Reset {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
        /// The login name.
        #[arg(long)]
        name: String,
        /// Read the password from standard input (required: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum LedgerAction {
    /// List patches, filtered by county, type, status and period seen.
    List {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
        /// Only this county's patches (XZQDM).
        #[arg(long)]
        county: Option<String>,
        /// FNH, FLH or PH.
        #[arg(long = "type")]
        change: Option<String>,
        /// A status code (e.g. dispatched) or its Chinese label (已下发).
        #[arg(long)]
        status: Option<String>,
        /// Seen in this period.
        #[arg(long)]
        period: Option<String>,
    },
    /// One patch: its attributes, the periods it was seen and its history.
    Show {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
        /// The patch number (图斑编号).
        tbbh: String,
    },
    /// Move one patch of a county to a new status (the allowed ones are listed on refusal).
    SetStatus {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
        /// The county the patch belongs to (XZQDM): a county changes only its own patches.
        #[arg(long)]
        county: String,
        /// The patch number (图斑编号).
        tbbh: String,
        /// The new status: code or Chinese label (e.g. verifying / 核查中).
        status: String,
        /// Who makes the change (name or office), recorded in the history.
        #[arg(long)]
        who: String,
        /// A note recorded with the change.
        #[arg(long, default_value = "")]
        note: String,
        /// Evidence type, required for evidence_submitted (已举证): 合法批准, 设施农业,
        /// 临时用地 or 误报.
        #[arg(long)]
        evidence: Option<String>,
        /// Photo or document files supporting the change; repeat for several.
        #[arg(long = "attach")]
        attachments: Vec<PathBuf>,
    },
    /// The recorded transitions, oldest first: of one patch, a county, or all.
    History {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
        /// Only this county's patches (XZQDM).
        #[arg(long)]
        county: Option<String>,
        /// Only this patch (图斑编号).
        tbbh: Option<String>,
    },
    /// Apply a county's returned results (the package's .xlsx, .csv or .gpkg, filled in).
    /// Nothing is applied when a row is bad, unless --apply-valid.
    Import {
        /// The job's configuration file (TOML; `gengbao init` writes an example).
        #[arg(long)]
        config: PathBuf,
        /// The county that returned the file (XZQDM).
        #[arg(long)]
        county: String,
        /// The returned file.
        file: PathBuf,
        /// Recorded in the history (default: the county's import).
        #[arg(long)]
        who: Option<String>,
        /// Apply the valid rows even when some rows are bad.
        #[arg(long)]
        apply_valid: bool,
    },
}

fn users_command(action: UsersAction) -> Result<u8> {
    use gengbao::portal::{Accounts, Role};
    let open = |config: &Path| -> Result<Accounts> {
        Accounts::open(&JobConfig::load(config)?.layout().ledger_file())
    };
    let password = || -> Result<String> {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| {
            Error::usage(
                format!("no password on standard input ({e})"),
                "pipe it in: `printf '%s\\n' \"$PW\" | gengbao users add …`",
            )
        })?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    match action {
        UsersAction::Add {
            config,
            name,
            role,
            county,
            password_stdin: _,
        } => {
            let role = Role::parse(&role).ok_or_else(|| {
                Error::usage(
                    format!("no role {role}"),
                    "use admin, county, inspector or auditor",
                )
            })?;
            open(&config)?.add(&name, role, county.as_deref(), &password()?)?;
            say!("added {name} ({})", role.code());
        }
        UsersAction::List { config } => {
            for a in open(&config)?.list()? {
                say!(
                    "{}\t{}\t{}\t{}",
                    a.name,
                    a.role.code(),
                    a.county.as_deref().unwrap_or("all counties"),
                    if a.disabled { "disabled" } else { "enabled" }
                );
            }
        }
        UsersAction::Disable { config, name } => {
            open(&config)?.disable(&name)?;
            say!("disabled {name}");
        }
        UsersAction::Reset {
            config,
            name,
            password_stdin: _,
        } => {
            open(&config)?.reset(&name, &password()?)?;
            say!("new password set for {name}; the account is enabled");
        }
    }
    Ok(0)
}

/// Opens the job's ledger for a ledger command: it must exist.
fn open_ledger(config: &Path) -> Result<Ledger> {
    let cfg = JobConfig::load(config)?;
    Ledger::open_existing(&cfg.layout().ledger_file())
}

fn status_of(s: &str) -> Result<Status> {
    Status::parse(s).ok_or_else(|| {
        Error::usage(
            format!("`{s}` is not a status"),
            format!("use one of {}", Status::ALL.map(|s| s.both()).join(", ")),
        )
    })
}

fn ledger_command(action: LedgerAction) -> Result<u8> {
    match action {
        LedgerAction::List {
            config,
            county,
            change,
            status,
            period,
        } => {
            let filter = Filter {
                county,
                change,
                status: status.as_deref().map(status_of).transpose()?,
                period,
                ..Default::default()
            };
            ledger_list(&open_ledger(&config)?, &filter)
        }
        LedgerAction::Show { config, tbbh } => ledger_show(&open_ledger(&config)?, &tbbh),
        LedgerAction::SetStatus {
            config,
            county,
            tbbh,
            status,
            who,
            note,
            evidence,
            attachments,
        } => {
            let mut ledger = open_ledger(&config)?;
            let to = status_of(&status)?;
            let evidence = evidence.as_deref().map(evidence_of).transpose()?;
            for a in &attachments {
                if !a.exists() {
                    return Err(Error::input(
                        a,
                        "attachment not found",
                        "give the path of an existing file",
                    ));
                }
            }
            let attachments: Vec<String> = attachments
                .iter()
                .map(|a| a.display().to_string())
                .collect();
            ledger.set_status(
                &tbbh,
                &county,
                to,
                &who,
                &note,
                evidence,
                &attachments,
                None,
            )?;
            say!("{tbbh}: now {}", to.both());
            Ok(0)
        }
        LedgerAction::History {
            config,
            county,
            tbbh,
        } => {
            let ledger = open_ledger(&config)?;
            print_history(&ledger.history(tbbh.as_deref(), county.as_deref())?);
            Ok(0)
        }
        LedgerAction::Import {
            config,
            county,
            file,
            who,
            apply_valid,
        } => ledger_import(&mut open_ledger(&config)?, &county, &file, who, apply_valid),
    }
}

fn evidence_of(e: &str) -> Result<Evidence> {
    Evidence::parse(e).ok_or_else(|| {
        Error::usage(
            format!("`{e}` is not an evidence type"),
            format!(
                "use one of {}",
                Evidence::ALL.map(|e| e.label_zh()).join(", ")
            ),
        )
    })
}

fn ledger_list(ledger: &Ledger, filter: &Filter) -> Result<u8> {
    let entries = ledger.list(filter)?;
    say!(
        "{:<20} {:<8} {:<4} {:<10} {:<8} {:<8} {:>10} {:>4}",
        "TBBH",
        "XZQDM",
        "BHLX",
        "ZT",
        "first",
        "last",
        "mu",
        "CXQS"
    );
    for e in &entries {
        say!(
            "{:<20} {:<8} {:<4} {:<10} {:<8} {:<8} {:>10.2} {:>4}",
            e.tbbh,
            e.county,
            e.change,
            e.status.label_zh(),
            e.first_period,
            e.last_period,
            e.area_m2 / SQM_PER_MU,
            e.persisted
        );
    }
    say!("{} patches", entries.len());
    Ok(0)
}

fn ledger_show(ledger: &Ledger, tbbh: &str) -> Result<u8> {
    let e = ledger.entry(tbbh)?;
    say!(
        "{}  county {}  {}  status {}{}",
        e.tbbh,
        e.county,
        e.change,
        e.status.both(),
        e.evidence
            .map(|v| format!("  evidence {}", v.label_zh()))
            .unwrap_or_default()
    );
    say!("seen:");
    for (period, area, confidence) in ledger.sightings(tbbh)? {
        say!(
            "   {period}  {area:.0} m² ({:.2} mu)  confidence {confidence:.2}",
            area / SQM_PER_MU
        );
    }
    say!("history:");
    print_history(&ledger.history(Some(tbbh), None)?);
    Ok(0)
}

fn ledger_import(
    ledger: &mut Ledger,
    county: &str,
    file: &Path,
    who: Option<String>,
    apply_valid: bool,
) -> Result<u8> {
    let rows = read_returns(file)?;
    let who = who.unwrap_or_else(|| format!("county {county} returned results"));
    let base = file.parent().unwrap_or(Path::new("."));
    let report = ledger.import(&rows, county, &who, base, apply_valid)?;
    for (row, reason) in &report.bad_rows {
        eprintln!("{}: row {row}: {reason}", file.display());
    }
    if !report.bad_rows.is_empty() && !apply_valid {
        eprintln!(
            "nothing applied: {} of {} rows are bad\n  fix: correct those rows and import again, or add --apply-valid to apply the others",
            report.bad_rows.len(),
            rows.len()
        );
        return Ok(1);
    }
    for (tbbh, steps) in &report.applied {
        say!(
            "{tbbh}: {}",
            steps
                .iter()
                .map(|s| s.label_zh())
                .collect::<Vec<_>>()
                .join(" -> ")
        );
    }
    say!(
        "{} patches changed, {} rows unchanged, {} bad rows skipped",
        report.applied.len(),
        report.unchanged,
        report.bad_rows.len()
    );
    Ok(0)
}

fn print_history(transitions: &[Transition]) {
    for t in transitions {
        say!(
            "   {}  {}  {} -> {}  by {}{}{}{}",
            t.at,
            t.tbbh,
            t.from
                .map_or("(new)".to_string(), |s| s.label_zh().to_string()),
            t.to.label_zh(),
            t.who,
            t.period
                .as_deref()
                .map(|p| format!("  [{p}]"))
                .unwrap_or_default(),
            if t.note.is_empty() {
                String::new()
            } else {
                format!("  {}", t.note)
            },
            if t.attachments.is_empty() {
                String::new()
            } else {
                format!("  attachments: {}", t.attachments.join(", "))
            }
        );
    }
}

/// Runs the selected periods, printing each period's summary; gives the exit code.
fn run(config: &Path, selector: PeriodSelector, counties: Vec<String>, quiet: bool) -> Result<u8> {
    let cfg = JobConfig::load(config)?;
    let opts = RunOptions { counties, quiet };
    let outcome = run_periods(&cfg, selector, &opts, |p, s| {
        say!("{}", s.human());
        say!("   results: {}", cfg.layout().period(p).dir().display());
    })?;
    if selector == PeriodSelector::Due && outcome.ran.is_empty() && outcome.waiting.is_empty() {
        say!("nothing is due: every period that is over has been run");
    }
    if let Some(msg) = outcome.waiting_message() {
        eprintln!("{msg}");
    }
    Ok(outcome.exit_code())
}

/// `--today`, or the clock's date.
fn parse_today(today: Option<&str>) -> Result<chrono::NaiveDate> {
    match today {
        Some(t) => chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
            .map_err(|e| Error::usage(format!("--today {t}: {e}"), "write the date as YYYY-MM-DD")),
        None => Ok(chrono::Local::now().date_naive()),
    }
}

fn print_evaluation(e: &Evaluation) {
    for (name, score) in e.pools() {
        match score {
            Some(s) => say!("   {name} {}: {}", e.split, s.short()),
            None => say!("   {name} {}: no labelled pixels", e.split),
        }
    }
}

fn samples(out: &Path, opts: SampleOptions) -> Result<u8> {
    let city = generate(out, &opts)?;
    say!(
        "sample city in {}: {} periods ({} to {}), {} planted changes; job config {}",
        city.dir.display(),
        city.periods.len(),
        city.periods[0],
        city.periods[city.periods.len() - 1],
        city.changes.len(),
        city.job_config.display()
    );
    Ok(0)
}

fn init(path: &Path) -> Result<u8> {
    if path.exists() {
        return Err(Error::input(
            path,
            "already exists",
            "choose another name or remove it first",
        ));
    }
    std::fs::write(path, EXAMPLE).map_err(|e| Error::io(path, e))?;
    say!("wrote {}", path.display());
    Ok(0)
}

fn schedule_command(config: &Path, today: Option<&str>, emit: Option<Emit>) -> Result<u8> {
    let cfg = JobConfig::load(config)?;
    let exe = std::env::current_exe().map_err(|e| Error::io("gengbao", e))?;
    match emit {
        Some(Emit::Cron) => say!("{}", schedule::cron_entry(&cfg, &exe).trim_end()),
        Some(Emit::Systemd) => say!("{}", schedule::systemd_units(&cfg, &exe).trim_end()),
        Some(Emit::Slurm) => say!("{}", schedule::slurm_script(&cfg, &exe).trim_end()),
        Some(Emit::K8s) => say!("{}", schedule::k8s_script(&cfg)?.trim_end()),
        None => {
            let today = parse_today(today)?;
            say!("{}", schedule::plan(&cfg, today)?.human(&cfg));
        }
    }
    Ok(0)
}

/// A height on Earth's land surface, in metres: the Dead Sea shore to above Everest.
fn ground_height(s: &str) -> std::result::Result<f64, String> {
    let h: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of metres"))?;
    if gengbao::geo::rpc::GROUND_HEIGHTS.contains(&h) {
        Ok(h)
    } else {
        Err(format!(
            "{s} m is not a ground height; give the scene's mean height in metres, -500 to 9000"
        ))
    }
}

fn demo(out: &Path, size: usize) -> Result<u8> {
    let city_dir = out.join("city");
    eprintln!(
        "generating the sample city ({size} x {size} px) in {}",
        city_dir.display()
    );
    let city = generate(
        &city_dir,
        &SampleOptions {
            size,
            ..Default::default()
        },
    )?;
    run(&city.job_config, PeriodSelector::All, Vec::new(), false)?;
    let cfg = JobConfig::load(&city.job_config)?;
    let last = *city.periods.last().expect("periods");
    say!("\ndispatch packages of the latest period ({last}):");
    let packages = export_packages(&cfg, last, &[], true)?;
    for s in &packages {
        say!(
            "   {} ({} patches, open report.html)",
            s.dir.display(),
            s.patches
        );
    }
    say!(
        "planted truth for comparison: {}",
        city_dir.join("truth").join("changes.gpkg").display()
    );
    // Demo accounts with fresh random passwords: one officer and one inspector per county.
    use gengbao::portal::{Accounts, Role};
    let accounts = Accounts::open(&cfg.layout().ledger_file())?;
    let mut demo_accounts = vec![("demo-admin".to_string(), Role::Admin, None)];
    for s in &packages {
        for (suffix, role) in [("officer", Role::County), ("inspector", Role::Inspector)] {
            let county = Some(s.county.clone());
            demo_accounts.push((format!("{}-{suffix}", s.county), role, county));
        }
    }
    say!(
        "\nthe inspectors' portal: gengbao serve --config {}\n  then open http://127.0.0.1:8080/ in a browser and log in as (name / password / role):",
        city.job_config.display()
    );
    for (name, role, county) in demo_accounts {
        let password = gengbao::portal::accounts::random_password();
        accounts.add(&name, role, county.as_deref(), &password)?;
        say!(
            "   {name} / {password} / {}{}",
            role.code(),
            county.map(|c| format!(" of {c}")).unwrap_or_default()
        );
    }
    Ok(0)
}

fn score(city: &Path, results: &Path, period: Period) -> Result<u8> {
    let report = score_period(city, results, period)?;
    say!(
        "{}",
        serde_json::to_string_pretty(&report).expect("serialisable")
    );
    Ok(0)
}

fn train_command(config: &Path, quiet: bool) -> Result<u8> {
    let cfg = TrainConfig::load(config)?;
    let r = train(&cfg, quiet)?;
    say!(
        "trained {} epochs (best {}{}), model {} version {}",
        r.state.epochs_done,
        r.state.best_epoch,
        if r.state.stopped_early {
            ", stopped early"
        } else {
            ""
        },
        r.model.display(),
        r.card.extra["version"].as_str().unwrap_or("?")
    );
    print_evaluation(&r.test);
    Ok(0)
}

fn eval(model: &str, data: &Path, split: Split, out: &Path) -> Result<u8> {
    let cfg = TrainConfig::load(data)?;
    let profile = cfg.profile();
    let classifier = if model == "builtin" {
        TorchClassifier::builtin(profile)?
    } else {
        TorchClassifier::load(Path::new(model), profile)?
    };
    let e = evaluate_classifier(&cfg, &classifier, &[split])?.remove(0);
    let name = format!("{} ({})", classifier.card().name, classifier.version());
    e.write_report(&name, data, out)?;
    print_evaluation(&e);
    say!("   report: {}", out.display());
    Ok(0)
}

fn export(config: &Path, period: Period, counties: &[String], zip: bool) -> Result<u8> {
    let cfg = JobConfig::load(config)?;
    for s in export_packages(&cfg, period, counties, zip)? {
        say!(
            "{} {period}: {} patches -> {}{}",
            s.county,
            s.patches,
            s.dir.display(),
            s.zip
                .map(|z| format!(" and {}", z.display()))
                .unwrap_or_default()
        );
    }
    Ok(0)
}

fn main_inner(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Samples {
            out,
            size,
            periods,
            seed,
            tile_size,
        } => samples(
            &out,
            SampleOptions {
                size,
                periods,
                seed,
                tile_size,
                ..Default::default()
            },
        ),
        Command::Init { path } => init(&path),
        Command::Run {
            config,
            period,
            counties,
            quiet,
            shard: Some(shard),
        } => {
            let PeriodSelector::One(period) = period else {
                return Err(Error::usage(
                    "a shard runs one period",
                    "give --period P (the period planned with `gengbao plan`)",
                ));
            };
            let cfg = JobConfig::load(&config)?;
            let opts = RunOptions { counties, quiet };
            let s = gengbao::job::shards::run_shard(&cfg, period, shard, &opts)?;
            say!(
                "{period} shard {}: {} tiles done ({} from an earlier attempt); merge when all shards are done: gengbao merge --config {} --period {period}",
                s.shard,
                s.tiles,
                s.tiles_resumed,
                config.display()
            );
            Ok(0)
        }
        Command::Run {
            config,
            period,
            counties,
            quiet,
            shard: None,
        } => run(&config, period, counties, quiet),
        Command::Plan {
            config,
            period,
            shards,
        } => {
            let cfg = JobConfig::load(&config)?;
            let plan = gengbao::job::shards::plan_shards(&cfg, period, shards)?;
            for (i, (tiles, watched)) in plan.tiles.iter().zip(&plan.watched).enumerate() {
                say!(
                    "shard {i}/{shards}: {} tiles, {watched} watched pixels",
                    tiles.len()
                );
            }
            say!(
                "run each: gengbao run --config {} --period {period} --shard i/{shards}; then gengbao merge --config {} --period {period}",
                config.display(),
                config.display()
            );
            Ok(0)
        }
        Command::Merge {
            config,
            period,
            quiet,
        } => {
            let cfg = JobConfig::load(&config)?;
            let summary = gengbao::job::shards::merge_shards(&cfg, period, quiet)?;
            say!("{}", summary.human());
            say!(
                "   results: {}",
                cfg.layout().period(period).dir().display()
            );
            Ok(0)
        }
        Command::Schedule {
            config,
            today,
            emit,
        } => schedule_command(&config, today.as_deref(), emit),
        Command::Demo { out, size } => demo(&out, size),
        Command::Detect {
            before,
            after,
            bands,
            farmland,
            sensor,
            add_offset,
            dem,
            height,
            calibration,
            out,
            min_area,
            model,
            samples_before,
            samples_after,
            sample_class_field,
            abandonment,
            min_confidence,
            min_parcel_share,
            classes_only,
            quiet,
        } => {
            let s = detect(&DetectOptions {
                before,
                after,
                band_order: bands,
                farmland,
                sensor,
                add_offset,
                elevation: match (dem, height) {
                    (Some(dem), _) => Elevation::Dem(dem),
                    (None, Some(h)) => Elevation::Height(h),
                    (None, None) => Elevation::Unknown,
                },
                calibration,
                out: out.clone(),
                min_area_m2: min_area,
                model,
                samples_before,
                samples_after,
                sample_class_field,
                abandonment,
                min_confidence,
                min_parcel_share: min_parcel_share.unwrap_or(DEFAULT_MIN_PARCEL_SHARE),
                classes_only,
                quiet,
            })?;
            say!("{}", s.human());
            say!("   results: {}", out.display());
            Ok(0)
        }
        Command::Score {
            city,
            results,
            period,
        } => score(&city, &results, period),
        Command::Train { config, quiet } => train_command(&config, quiet),
        Command::Eval {
            model,
            data,
            split,
            out,
        } => eval(&model, &data, split, &out),
        Command::Export {
            config,
            period,
            counties,
            zip,
        } => export(&config, period, &counties, zip),
        Command::Ledger { action } => ledger_command(action),
        Command::Serve {
            config,
            listen,
            evidence_distance_m,
            tls_cert,
            tls_key,
        } => {
            let cfg = JobConfig::load(&config)?;
            let tls = tls_cert
                .zip(tls_key)
                .map(|(cert, key)| gengbao::portal::tls::TlsFiles { cert, key });
            say!(
                "gengbao portal for job {} on {}://{listen}/",
                cfg.job.name,
                if tls.is_some() { "https" } else { "http" }
            );
            let options = gengbao::portal::server::ServeOptions {
                evidence_distance_m,
                tls,
            };
            gengbao::portal::server::serve(&cfg, listen, &options)?;
            Ok(0)
        }
        Command::Users { action } => users_command(action),
        Command::EvalReal {
            data,
            out,
            cities,
            change_only,
            regions,
        } => {
            let report = eval_real(&EvalRealOptions {
                data,
                out: out.clone(),
                cities: (!cities.is_empty()).then_some(cities),
                land_cover: !change_only,
                regions: (!regions.is_empty()).then_some(regions),
            })?;
            for m in &report.change_means {
                say!(
                    "{} ({} scenes): F1 gengbao {:.3}, classes alone {:.3}, CVA + Otsu {:.3}, IR-MAD {:.3}",
                    m.set, m.scenes, m.gengbao_f1, m.classes_only_f1, m.cva_otsu_f1, m.ir_mad_f1
                );
            }
            for l in &report.land_cover {
                say!(
                    "{} ({} held-out patches or regions): macro-F1 gengbao {:.3}, random forest {:.3}",
                    l.set, l.patches, l.gengbao.macro_f1, l.random_forest.macro_f1
                );
            }
            for a in &report.abandonment {
                say!(
                    "{} ({} series, cultivation_signs {}): PH recall {:.3}, annual crops flagged {:.3}",
                    a.set,
                    a.series,
                    a.cultivation_signs.name(),
                    a.score.recall,
                    a.crops_flagged
                );
            }
            say!("   report: {}", out.join("eval-real.md").display());
            Ok(0)
        }
        Command::Sensors => {
            for p in PROFILES {
                say!("{:18} {}", p.name, p.description);
            }
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    // GDAL's block cache defaults to 5 % of RAM and fills up over a pass (1.2 GiB of a
    // 24 GiB machine, most of the peak memory of an 8192 x 8192 detection). Each stage reads
    // a block once, so a bounded cache costs little time: on a 16384² detection 128 MiB ran
    // 2 % slower than 256 MiB and peaked 220 MiB lower (the patch stage refills the cache
    // from the main thread while the tile stage's freed blocks stay in the workers' malloc
    // arenas). GDAL_CACHEMAX in the environment wins.
    if std::env::var_os("GDAL_CACHEMAX").is_none() {
        let _ = gdal::config::set_config_option("GDAL_CACHEMAX", "128");
    }
    gengbao::progress::keep_library_messages();
    match main_inner(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            // First lines only: a libtorch trace's C++ frames are in the run log.
            let (details, more) = gengbao::progress::take_library_message_heads(6);
            if !details.is_empty() {
                eprintln!("  details from the libraries:");
                for d in &details {
                    eprintln!("    {d}");
                }
                if more > 0 {
                    eprintln!("    ({more} more)");
                }
            }
            ExitCode::from(exit_code_of(&e))
        }
    }
}
