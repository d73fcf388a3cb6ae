//! `gengbao eval-real`: the product's own code paths on every labelled real set in a data
//! folder (`../shared/data` by default), beside the classical yardsticks on the same pixels.
//!
//! Takes: the data folder (the layout of `../shared/data/README.md`) and an output folder.
//! Gives: `eval-real.json` and `eval-real.md` in the output folder (per scene precision,
//! recall and F1 of "changed" for gengbao and each yardstick, set means, the model version
//! and the date), and detect's outputs of every scene under `work/` there.
//!
//! Change pairs ([`change`]): Taizhou (Landsat) and the 14 OSCD cities (Sentinel-2 L1C),
//! scored on labelled pixels only; OSCD's figure is the mean over cities. Land cover
//! ([`land_cover`]): the EuroSAT patches, gengbao's single-date classes beside a random forest
//! on the raw bands; ([`worldcereal`]) the Flanders series, gengbao's multi-period classes
//! beside a forest on the period's raw bands; ([`deafrica`]) Digital Earth Africa's crop
//! points, crop against not crop, leaving one region out. 撂荒 ([`abandonment`]): the job's
//! PH rule on the UCR Crop NDVI series. eo-learn Slovenia is not run: its NDVI alone cannot
//! feed gengbao's models, and without a snow mask its winters read as bare soil.

mod abandonment;
mod change;
mod deafrica;
mod land_cover;
mod worldcereal;

pub use abandonment::AbandonmentSet;

use crate::error::{Error, Result};
use crate::evaluate::{BinaryScore, ClassScore};
use crate::geo::grid::JobGrid;
use crate::geo::raster::{warp_onto, Resample};
use crate::geo::rpc::Elevation;
use crate::geo::sensor::SensorProfile;
use crate::geo::user_image;
use ndarray::Array2;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct EvalRealOptions {
    /// The data folder (`../shared/data`).
    pub data: PathBuf,
    /// Where the report and the scenes' outputs go.
    pub out: PathBuf,
    /// Only these OSCD cities (all when `None`).
    pub cities: Option<Vec<String>>,
    /// Also the land-cover sets (EuroSAT, WorldCereal Flanders, Digital Earth Africa).
    pub land_cover: bool,
    /// Only these Digital Earth Africa regions held out (all when `None`).
    pub regions: Option<Vec<String>>,
}

/// One real change pair, scored.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeScene {
    pub set: String,
    pub scene: String,
    pub labelled_pixels: usize,
    /// Share of the labelled pixels that changed.
    pub changed_share: f64,
    /// gengbao detect, the better of its flags and its class changes (the protocol's figure).
    pub gengbao: BinaryScore,
    pub gengbao_flags: BinaryScore,
    pub gengbao_classes: BinaryScore,
    /// gengbao detect deciding change from the two classifications alone (`--classes-only`).
    pub classes_only: BinaryScore,
    /// Change vector analysis of per-image standardised bands with Otsu's threshold.
    pub cva_otsu: BinaryScore,
    /// IR-MAD with Otsu's threshold ([`crate::evaluate::ir_mad`]).
    pub ir_mad: BinaryScore,
    /// The scene's change-magnitude threshold gengbao used.
    pub threshold: Option<f32>,
    /// The classifier (version) detect used on the scene.
    pub classifier: String,
}

/// Mean F1 of one set's scenes, per method.
#[derive(Debug, Clone, Serialize)]
pub struct SetMean {
    pub set: String,
    pub scenes: usize,
    pub gengbao_f1: f64,
    pub classes_only_f1: f64,
    pub cva_otsu_f1: f64,
    pub ir_mad_f1: f64,
}

/// One real land-cover set, scored per pixel over gengbao's classes 1..6.
#[derive(Debug, Clone, Serialize)]
pub struct LandCoverSet {
    pub set: String,
    pub patches: usize,
    /// How gengbao's classifier was made for the held-out patches.
    pub classifier: String,
    /// How the set's labels map to gengbao's classes.
    pub labels: String,
    /// gengbao's single-date land cover (detect's `class_before.tif`).
    pub gengbao: ClassScore,
    /// A random forest on the raw bands, on held-out patches.
    pub random_forest: ClassScore,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalRealReport {
    pub date: String,
    pub gengbao_version: String,
    pub data: String,
    pub change: Vec<ChangeScene>,
    pub change_means: Vec<SetMean>,
    pub land_cover: Vec<LandCoverSet>,
    /// The job's 撂荒 rule on real NDVI series.
    pub abandonment: Vec<AbandonmentSet>,
}

/// Runs every labelled change pair found in `opts.data` and writes the report.
pub fn eval_real(opts: &EvalRealOptions) -> Result<EvalRealReport> {
    let scenes = change::scenes(&opts.data, opts.cities.as_deref())?;
    if scenes.is_empty() {
        return Err(Error::input(
            &opts.data,
            "holds no labelled real change pair (landsat-taizhou, oscd-train)",
            "point --data at the shared data folder (../shared/data)",
        ));
    }
    let work = opts.out.join("work");
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let mut change = Vec::with_capacity(scenes.len());
    for scene in &scenes {
        change.push(change::run_scene(scene, &work.join(scene.set))?);
    }
    let land_cover = if opts.land_cover {
        land_cover_sets(&opts.data, &work, opts.regions.as_deref())?
    } else {
        Vec::new()
    };
    let report = EvalRealReport {
        date: chrono::Local::now().format("%Y-%m-%d").to_string(),
        gengbao_version: env!("CARGO_PKG_VERSION").into(),
        data: opts.data.display().to_string(),
        change_means: set_means(&change),
        change,
        land_cover,
        abandonment: abandonment_sets(&opts.data)?,
    };
    write_report(&report, &opts.out)?;
    Ok(report)
}

/// The sets of real NDVI series with abandoned land found in `data`, through the job's PH rule.
pub fn abandonment_sets(data: &Path) -> Result<Vec<AbandonmentSet>> {
    abandonment::ucr_crop(data)
}

/// The land-cover sets eval-real knows, by their folder name under the data folder.
/// (`eurosat-s2-four-bands` is EuroSAT again, with the four-band model.)
pub const LAND_COVER_SETS: [&str; 4] = [
    "eurosat-s2",
    "eurosat-s2-four-bands",
    "worldcereal-s2",
    "deafrica-cropmask",
];

/// The land-cover sets found in `data`, each scored on held-out patches (detect's outputs
/// and the models of each fold under `work`); `regions` as in [`land_cover_set`].
pub fn land_cover_sets(
    data: &Path,
    work: &Path,
    regions: Option<&[String]>,
) -> Result<Vec<LandCoverSet>> {
    let mut sets = Vec::new();
    for name in LAND_COVER_SETS {
        sets.extend(land_cover_set(name, data, work, regions)?);
    }
    Ok(sets)
}

/// One of [`LAND_COVER_SETS`] scored on its held-out folds, its work under `work/<name>`;
/// `None` when its folder is not in `data`. `regions` holds out only these regions of
/// Digital Earth Africa's points, one by one (all by default; its forests take minutes each).
pub fn land_cover_set(
    name: &str,
    data: &Path,
    work: &Path,
    regions: Option<&[String]>,
) -> Result<Option<LandCoverSet>> {
    let work = work.join(name);
    match name {
        "eurosat-s2" => land_cover::eurosat(data, &work, &land_cover::EVERY_BAND),
        "eurosat-s2-four-bands" => land_cover::eurosat(data, &work, &land_cover::FOUR_BANDS),
        "worldcereal-s2" => worldcereal::worldcereal(data, &work),
        "deafrica-cropmask" => deafrica::deafrica(data, &work, regions),
        other => Err(Error::usage(
            format!("no land-cover set `{other}`"),
            format!("use one of {}", LAND_COVER_SETS.join(", ")),
        )),
    }
}

/// The land-cover yardstick: a random forest on raw bands (100 trees, seeded).
type Forest = smartcore::ensemble::random_forest_classifier::RandomForestClassifier<
    f64,
    u8,
    smartcore::linalg::basic::matrix::DenseMatrix<f64>,
    Vec<u8>,
>;

/// A forest grown on `rows` (one pixel's raw bands each) labelled with gengbao codes.
fn grow_forest(rows: Vec<Vec<f64>>, labels: Vec<u8>) -> Result<Forest> {
    use smartcore::ensemble::random_forest_classifier::RandomForestClassifierParameters;
    let x =
        smartcore::linalg::basic::matrix::DenseMatrix::from_2d_vec(&rows).map_err(forest_error)?;
    let parameters = RandomForestClassifierParameters::default()
        .with_n_trees(100)
        .with_seed(2026);
    Forest::fit(&x, &labels, parameters).map_err(forest_error)
}

/// The forest's class of each row.
fn forest_classes(forest: &Forest, rows: Vec<Vec<f64>>) -> Result<Vec<u8>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let x =
        smartcore::linalg::basic::matrix::DenseMatrix::from_2d_vec(&rows).map_err(forest_error)?;
    forest.predict(&x).map_err(forest_error)
}

fn forest_error(e: smartcore::error::Failed) -> Error {
    Error::usage(
        format!("the random-forest yardstick failed: {e}"),
        "report it with the data folder's land-cover sets",
    )
}

fn set_means(scenes: &[ChangeScene]) -> Vec<SetMean> {
    let mut sets: Vec<&str> = scenes.iter().map(|s| s.set.as_str()).collect();
    sets.dedup();
    sets.into_iter()
        .map(|set| {
            let of: Vec<&ChangeScene> = scenes.iter().filter(|s| s.set == set).collect();
            // A scene where a method found nothing has F1 0, not a gap in the mean.
            let mean = |f: fn(&ChangeScene) -> f64| {
                of.iter().map(|s| zero_if_nan(f(s))).sum::<f64>() / of.len() as f64
            };
            SetMean {
                set: set.into(),
                scenes: of.len(),
                gengbao_f1: mean(|s| s.gengbao.f1),
                classes_only_f1: mean(|s| s.classes_only.f1),
                cva_otsu_f1: mean(|s| s.cva_otsu.f1),
                ir_mad_f1: mean(|s| s.ir_mad.f1),
            }
        })
        .collect()
}

fn zero_if_nan(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v
    }
}

impl EvalRealReport {
    /// The report as Markdown: the set means, then every scene.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# gengbao on real labelled imagery\n\n{} · gengbao {} · data `{}`\n\n",
            self.date, self.gengbao_version, self.data
        );
        md += "## Change pairs: mean F1 of \"changed\" per set\n\n";
        md += "| set | scenes | gengbao detect | classes alone | CVA + Otsu | IR-MAD |\n|---|---|---|---|---|---|\n";
        for m in &self.change_means {
            md += &format!(
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                m.set, m.scenes, m.gengbao_f1, m.classes_only_f1, m.cva_otsu_f1, m.ir_mad_f1
            );
        }
        md += "\n## Change pairs: every scene (precision / recall / F1)\n\n";
        md += "| set | scene | labelled px | changed | gengbao detect | classes alone | CVA + Otsu | IR-MAD | classifier |\n|---|---|---|---|---|---|---|---|---|\n";
        let prf = |s: &BinaryScore| {
            format!(
                "{:.3} / {:.3} / {:.3}",
                zero_if_nan(s.precision),
                zero_if_nan(s.recall),
                zero_if_nan(s.f1)
            )
        };
        for s in &self.change {
            md += &format!(
                "| {} | {} | {} | {:.1} % | {} | {} | {} | {} | {} |\n",
                s.set,
                s.scene,
                s.labelled_pixels,
                100.0 * s.changed_share,
                prf(&s.gengbao),
                prf(&s.classes_only),
                prf(&s.cva_otsu),
                prf(&s.ir_mad),
                s.classifier
            );
        }
        if !self.land_cover.is_empty() {
            md += "\n## Land cover: per-pixel macro-F1 over classes 1..6\n\n";
            md += "gengbao / random forest on the raw bands (held-out patches):\n\n";
            md += "| set | patches | macro-F1 | 1 grain | 2 non-grain | 3 built-up | 4 water | 5 grass | 6 forest |\n|---|---|---|---|---|---|---|---|---|\n";
            for l in &self.land_cover {
                let f = |c: u8| match (l.gengbao.f1.get(&c), l.random_forest.f1.get(&c)) {
                    (None, None) => "–".to_string(),
                    (g, r) => format!(
                        "{:.2} / {:.2}",
                        zero_if_nan(g.copied().unwrap_or(0.0)),
                        zero_if_nan(r.copied().unwrap_or(0.0))
                    ),
                };
                md += &format!(
                    "| {} | {} | {:.3} / {:.3} | {} | {} | {} | {} | {} | {} |\n",
                    l.set,
                    l.patches,
                    l.gengbao.macro_f1,
                    l.random_forest.macro_f1,
                    f(1),
                    f(2),
                    f(3),
                    f(4),
                    f(5),
                    f(6)
                );
            }
            md += "\n";
            for l in &self.land_cover {
                md += &format!("- {}: {}; labels: {}\n", l.set, l.classifier, l.labels);
            }
        }
        if !self.abandonment.is_empty() {
            md += "\n## 撂荒 (PH): the job's rule on real NDVI series, a year each\n\n";
            md += "| set | cultivation_signs | series | abandoned flagged (recall) | precision | F1 | annual crops flagged |\n|---|---|---|---|---|---|---|\n";
            for a in &self.abandonment {
                md += &format!(
                    "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                    a.set,
                    a.cultivation_signs.name(),
                    a.series,
                    zero_if_nan(a.score.recall),
                    zero_if_nan(a.score.precision),
                    zero_if_nan(a.score.f1),
                    a.crops_flagged
                );
            }
            md += "\nShare flagged per class (series):\n\n";
            for a in &self.abandonment {
                let parts: Vec<String> = a
                    .by_class
                    .iter()
                    .map(|(name, (n, share))| format!("{name} {share:.2} ({n})"))
                    .collect();
                md += &format!(
                    "- {}, {}: {}\n",
                    a.set,
                    a.cultivation_signs.name(),
                    parts.join(", ")
                );
            }
        }
        md
    }
}

/// An image's digital numbers on `grid`, read as detect reads them (its bands stacked in the
/// profile's order, bilinear onto the grid), band × pixel, NaN where nodata: what the
/// yardsticks take.
fn digital_numbers(
    path: &Path,
    profile: &SensorProfile,
    band_order: Option<&[String]>,
    grid: &JobGrid,
    name: &str,
) -> Result<Array2<f32>> {
    let stack = user_image::band_stack(path, profile, band_order, &Elevation::Unknown, name)?;
    let bands = warp_onto(
        &stack.path,
        grid,
        grid.full_window(),
        Resample::Bilinear,
        Some(profile.nodata),
    )?;
    let (b, h, w) = bands.dim();
    let mut bands = bands
        .into_shape((b, h * w))
        .expect("a read stack is in standard layout");
    bands.mapv_inplace(|v| {
        if profile.is_nodata(f64::from(v)) {
            f32::NAN
        } else {
            v
        }
    });
    Ok(bands)
}

fn write_report(report: &EvalRealReport, out: &Path) -> Result<()> {
    let json = out.join("eval-real.json");
    let text = serde_json::to_string_pretty(report).expect("a report serialises");
    std::fs::write(&json, text).map_err(|e| Error::io(&json, e))?;
    let md = out.join("eval-real.md");
    std::fs::write(&md, report.markdown()).map_err(|e| Error::io(&md, e))
}
