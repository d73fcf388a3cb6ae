//! A model fitted on the user's labelled points of one image, for `detect --samples-*`.
//!
//! Takes: labelled pixels of a grid and a reader of the composite of a grid window. Gives: a
//! single-date MLP written with its card, loaded as a [`TorchClassifier`].

use super::data::{SampleSet, Split};
use super::fit::{fit, save_weights, FitOptions, Fitted};
use crate::classify::{FeatureLayout, ModelCard, Normalisation, TorchClassifier};
use crate::error::{Error, Result};
use crate::geo::composite::Composite;
use crate::geo::grid::{JobGrid, Window};
use crate::geo::layers::LabelledPixel;
use crate::geo::sensor::SensorProfile;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A model learned from labelled pixels of one image: what `detect --samples-*` trains, the
/// way the peer tools train a random forest per date on the user's points.
pub(crate) struct PointModel<'a> {
    pub profile: &'a SensorProfile,
    pub grid: &'a JobGrid,
    /// Name written into the card, e.g. `detect-before`.
    pub name: String,
    /// Where the points came from, for the card.
    pub points: PathBuf,
}

impl PointModel<'_> {
    /// Extracts the inputs of `pixels` from `read` (the composite of a grid window exactly as
    /// the classifier will see it), fits a single-date MLP with a fifth of the points held
    /// back for early stopping, and writes it with its card to `output` (a VarStore `.ot`:
    /// `detect --model` reuses it). Gives the loaded classifier.
    pub fn fit(
        &self,
        pixels: &[LabelledPixel],
        read: impl Fn(Window) -> Result<Composite> + Sync,
        output: &Path,
        quiet: bool,
    ) -> Result<TorchClassifier> {
        let names = FeatureLayout::default_names(self.profile.bands, 1, &[]);
        let layout =
            FeatureLayout::parse(&names, self.profile).expect("the profile provides its own bands");
        let mut set = self.inputs_of(pixels, read, &layout)?;
        hold_back_validation(&mut set);
        // Small data: more epochs and smaller batches than the archive-trained model.
        let opts = FitOptions {
            hidden: vec![32, 32],
            seed: 1,
            epochs: 300,
            batch: 64,
            learning_rate: 0.003,
            weight_decay: 0.0,
            patience: 30,
            average_from: None,
        };
        let fitted = fit(&set, &opts, None, quiet).map_err(|e| match e {
            Error::Usage { problem, .. } => Error::input(
                &self.points,
                problem,
                "give at least a few labelled points of each class on the image",
            ),
            other => other,
        })?;
        save_weights(&fitted.vs, output)?;
        self.card(names, &set, &opts, &fitted).save(output)?;
        TorchClassifier::load(output, self.profile)
    }

    /// Takes the labelled points, the composite reader and the input layout; gives the
    /// unnormalised inputs of every point observed in its composite, all weighing 1.
    fn inputs_of(
        &self,
        pixels: &[LabelledPixel],
        read: impl Fn(Window) -> Result<Composite> + Sync,
        layout: &FeatureLayout,
    ) -> Result<SampleSet> {
        use rayon::prelude::*;
        let identity = Normalisation::identity(layout.len());
        // One read per tile that has points: the tile's blocks are decoded once.
        let ts = self.grid.tile_size;
        let mut by_tile: BTreeMap<(usize, usize), Vec<LabelledPixel>> = BTreeMap::new();
        for &(c, r, class) in pixels {
            by_tile
                .entry((r / ts, c / ts))
                .or_default()
                .push((c, r, class));
        }
        let groups: Vec<_> = by_tile.into_values().collect();
        let parts: Vec<(Vec<f32>, Vec<i64>)> = groups
            .par_iter()
            .map(|points| {
                let (x0, y0) = points.iter().fold((usize::MAX, usize::MAX), |a, p| {
                    (a.0.min(p.0), a.1.min(p.1))
                });
                let (x1, y1) = points
                    .iter()
                    .fold((0, 0), |a, p| (a.0.max(p.0), a.1.max(p.1)));
                let window = Window {
                    x: x0 as isize,
                    y: y0 as isize,
                    width: x1 - x0 + 1,
                    height: y1 - y0 + 1,
                };
                let composite = read(window)?;
                let observed = layout.observed_pixels(&composite);
                let (pixels, y): (Vec<usize>, Vec<i64>) = points
                    .iter()
                    .map(|&(c, r, class)| {
                        ((r - y0) * window.width + (c - x0), i64::from(class) - 1)
                    })
                    .filter(|(i, _)| observed.binary_search(i).is_ok())
                    .unzip();
                let mut x = Vec::new();
                layout.push_pixels(
                    &layout.tile_inputs(&composite, &[]),
                    &pixels,
                    &identity,
                    &mut x,
                );
                Ok((x, y))
            })
            .collect::<Result<_>>()?;
        let mut set = SampleSet {
            inputs: layout.len(),
            ..Default::default()
        };
        for (x, y) in parts {
            set.x.extend(x);
            set.y.extend(y);
        }
        set.weight = vec![1.0; set.y.len()];
        Ok(set)
    }

    /// Takes the fitted model with its options and points; gives its card, with the share of
    /// held-back points it classifies right.
    fn card(
        &self,
        names: Vec<String>,
        set: &SampleSet,
        opts: &FitOptions,
        fitted: &Fitted,
    ) -> ModelCard {
        let validation = set.indices(Split::Validation);
        let predicted = fitted.predict(set, &validation);
        let correct = validation
            .iter()
            .zip(&predicted)
            .filter(|(&i, &p)| set.y[i] == p)
            .count();
        let extra = serde_json::json!({
            "trained_on": self.points.display().to_string(),
            "pixels": set.len(),
            "validation_accuracy": correct as f64 / validation.len().max(1) as f64,
            "fit": opts,
            "epochs_run": fitted.state.epochs_done,
        });
        let mut card = fitted.card(&self.name, names, 1, &opts.hidden);
        card.extra = match extra {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("a JSON object"),
        };
        card
    }
}

/// Takes the extracted points; gives each its split: a seeded fifth Validation, the rest Train.
fn hold_back_validation(set: &mut SampleSet) {
    let n = set.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(1));
    set.split = vec![Split::Train; n];
    for &i in &order[..n / 5] {
        set.split[i] = Split::Validation;
    }
}
