//! Fitting a per-pixel MLP.
//!
//! Takes: a [`SampleSet`] and [`FitOptions`], optionally a checkpoint folder. Gives: the
//! trained network ([`Fitted`]) with its normalisation and the state of the run, and writes
//! weights in a byte-stable order ([`save_weights`]).

use super::config::ModelSection;
use super::data::{normalisation_of, SampleSet, Split};
use crate::classify::{build_mlp, ModelCard, ModelFormat, Normalisation};
use crate::domain::land_cover::LandCover;
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Training hyper-parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FitOptions {
    pub hidden: Vec<i64>,
    pub seed: u64,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// Adam's L2 penalty on the weights (0: none).
    #[serde(default)]
    pub weight_decay: f64,
    pub patience: usize,
    /// From this epoch on (1-based), the weights kept are the mean of the weights at the end
    /// of each epoch (stochastic weight averaging) and the run goes on to `epochs` without
    /// stopping early. Absent: the last epoch's weights (the best epoch's with checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_from: Option<usize>,
}

/// What a bad `average_from` should be instead.
pub(crate) const AVERAGE_FROM_FIX: &str =
    "give an epoch from 1 to `epochs` (half of `epochs` is the usual choice), or leave it out";

impl FitOptions {
    /// What is wrong with `average_from`, if anything: it names an epoch the run has.
    pub(crate) fn averaging_problem(&self) -> Option<String> {
        let from = self.average_from?;
        (!(1..=self.epochs).contains(&from)).then(|| {
            format!(
                "average_from = {from} is not an epoch of the {} the run has",
                self.epochs
            )
        })
    }
}

impl From<&ModelSection> for FitOptions {
    fn from(m: &ModelSection) -> Self {
        FitOptions {
            hidden: m.hidden.clone(),
            seed: m.seed,
            epochs: m.epochs,
            batch: m.batch,
            learning_rate: m.learning_rate,
            weight_decay: m.weight_decay,
            patience: m.patience,
            average_from: m.average_from,
        }
    }
}

/// Where a training run stands; saved beside the checkpoints after every epoch.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct FitState {
    /// Hash of the options, samples and normalisation: a checkpoint resumes only the same run.
    pub run: String,
    pub epochs_done: usize,
    pub best_epoch: usize,
    pub best_validation_loss: f64,
    pub train_loss: Vec<f64>,
    pub validation_loss: Vec<f64>,
    pub stopped_early: bool,
    /// How many epochs' weights the running mean holds (weight averaging only).
    #[serde(default)]
    pub averaged_epochs: usize,
}

/// A trained per-pixel MLP.
pub struct Fitted {
    pub vs: tch::nn::VarStore,
    pub net: tch::nn::Sequential,
    pub normalisation: Normalisation,
    pub state: FitState,
}

impl Fitted {
    /// Weighted cross-entropy of the model on some pixels.
    pub fn loss(&self, set: &SampleSet, which: &[usize]) -> f64 {
        let _g = tch::no_grad_guard();
        let (x, y, w) = tensors(set, &set.weight, which, &self.normalisation);
        f64::from(&weighted_loss(&self.net, &x, &y, &w))
    }

    /// The card of the model as saved by [`save_weights`]: inputs, normalisation, the six
    /// classes in output order; `extra` starts empty for the caller's provenance.
    pub fn card(
        &self,
        name: &str,
        input_bands: Vec<String>,
        periods: usize,
        hidden: &[i64],
    ) -> ModelCard {
        ModelCard {
            name: name.into(),
            format: ModelFormat::VarstoreMlp,
            input_bands,
            normalisation: self.normalisation.clone(),
            classes: LandCover::ALL.iter().map(|c| c.code()).collect(),
            periods,
            hidden: hidden.to_vec(),
            extra: serde_json::Map::new(),
        }
    }

    /// Output index per pixel.
    pub fn predict(&self, set: &SampleSet, which: &[usize]) -> Vec<i64> {
        use tch::nn::Module;
        let _g = tch::no_grad_guard();
        let (x, _, _) = tensors(set, &set.weight, which, &self.normalisation);
        Vec::<i64>::from(&self.net.forward(&x).argmax(-1, false))
    }
}

fn tensors(
    set: &SampleSet,
    weights: &[f32],
    which: &[usize],
    norm: &Normalisation,
) -> (tch::Tensor, tch::Tensor, tch::Tensor) {
    let f = set.inputs;
    let mut x = Vec::with_capacity(which.len() * f);
    for &i in which {
        for k in 0..f {
            x.push((set.x[i * f + k] - norm.mean[k]) / norm.std[k]);
        }
    }
    let y: Vec<i64> = which.iter().map(|&i| set.y[i]).collect();
    let w: Vec<f32> = which.iter().map(|&i| weights[i]).collect();
    (
        tch::Tensor::of_slice(&x).view([which.len() as i64, f as i64]),
        tch::Tensor::of_slice(&y),
        tch::Tensor::of_slice(&w),
    )
}

fn weighted_loss(
    net: &tch::nn::Sequential,
    x: &tch::Tensor,
    y: &tch::Tensor,
    w: &tch::Tensor,
) -> tch::Tensor {
    use tch::nn::Module;
    let logp = net.forward(x).log_softmax(-1, tch::Kind::Float);
    let picked = logp.gather(1, &y.unsqueeze(1), false).squeeze_dim(1);
    -(picked * w).sum(tch::Kind::Float) / w.sum(tch::Kind::Float)
}

/// Balances the classes: each pixel's weight is divided by the square root of its class's
/// share of the training pixels, so that rare classes count without dominating.
fn balanced_weights(set: &SampleSet) -> Vec<f32> {
    let mut count = [0f64; 6];
    for (i, &y) in set.y.iter().enumerate() {
        if set.split[i] == Split::Train {
            count[y as usize] += 1.0;
        }
    }
    let total: f64 = count.iter().sum();
    let present = count.iter().filter(|&&c| c > 0.0).count() as f64;
    set.y
        .iter()
        .zip(&set.weight)
        .map(|(&y, &w)| {
            let share = count[y as usize].max(1.0) / total.max(1.0);
            w * (1.0 / (share * present)).sqrt() as f32
        })
        .collect()
}

/// Trains an MLP on the train split with early stopping on the validation split. With a
/// checkpoint folder, the state and weights are saved after every epoch and a run of the same
/// options and samples resumes where it stopped (Adam's moments restart from zero then).
pub fn fit(
    set: &SampleSet,
    opts: &FitOptions,
    checkpoints: Option<&Path>,
    quiet: bool,
) -> Result<Fitted> {
    let normalisation = normalisation_of(set);
    let weights = balanced_weights(set);
    let train = set.indices(Split::Train);
    let validation = set.indices(Split::Validation);
    if train.is_empty() || validation.is_empty() {
        return Err(Error::usage(
            format!(
                "{} training and {} validation pixels",
                train.len(),
                validation.len()
            ),
            "add labelled data or smaller split blocks so that every split has pixels",
        ));
    }
    if let Some(problem) = opts.averaging_problem() {
        return Err(Error::usage(problem, AVERAGE_FROM_FIX));
    }
    let run = run_id(set, opts, &normalisation);
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = build_mlp(
        &vs.root(),
        set.inputs as i64,
        &opts.hidden,
        6,
        Some(opts.seed),
    );
    let paths = checkpoints.map(EpochCheckpoints::in_folder);
    let resumed = match &paths {
        Some(paths) => paths.resume(&run, &mut vs, quiet)?,
        None => None,
    };
    let mut average = match (&paths, &resumed) {
        (Some(paths), Some(state)) if state.averaged_epochs > 0 => {
            WeightAverage::load(&paths.average, state.averaged_epochs)?
        }
        _ => WeightAverage::default(),
    };
    let mut state = resumed.unwrap_or_else(|| FitState {
        run,
        best_validation_loss: f64::INFINITY,
        ..Default::default()
    });
    use tch::nn::OptimizerConfig;
    let mut opt = tch::nn::Adam {
        wd: opts.weight_decay,
        ..Default::default()
    }
    .build(&vs, opts.learning_rate)?;
    let (vx, vy, vw) = tensors(set, &weights, &validation, &normalisation);
    let pb = crate::progress::progress(opts.epochs as u64, "epochs", quiet);
    pb.set_position(state.epochs_done as u64);
    let finished = |s: &FitState| s.stopped_early || s.epochs_done >= opts.epochs;
    // An averaged run goes on to `epochs`.
    let patience = match opts.average_from {
        Some(_) => usize::MAX,
        None => opts.patience,
    };
    while !finished(&state) {
        let mut order = train.clone();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(
            opts.seed.wrapping_add(state.epochs_done as u64),
        ));
        let batches = Batches {
            set,
            weights: &weights,
            normalisation: &normalisation,
        };
        let train_loss = train_epoch(&net, &mut opt, &batches, &order, opts.batch);
        let val_loss = {
            let _g = tch::no_grad_guard();
            f64::from(&weighted_loss(&net, &vx, &vy, &vw))
        };
        let averaging = opts
            .average_from
            .is_some_and(|from| state.epochs_done + 1 >= from);
        let improved = state.record_epoch(train_loss, val_loss, patience);
        if averaging {
            average.add(&vs);
            state.averaged_epochs = average.count;
        }
        if let Some(paths) = &paths {
            paths.save(&vs, &state, improved, averaging.then_some(&average))?;
        }
        pb.set_position(state.epochs_done as u64);
        pb.set_message(format!("loss {train_loss:.3} / validation {val_loss:.3}"));
    }
    pb.finish_and_clear();
    if average.count > 0 {
        average.copy_into(&mut vs);
    } else if let Some(paths) = &paths {
        if paths.best.exists() {
            vs.load(&paths.best)?;
        }
    }
    Ok(Fitted {
        vs,
        net,
        normalisation,
        state,
    })
}

/// Takes the options, samples and normalisation of a run; gives the short hash that names it.
fn run_id(set: &SampleSet, opts: &FitOptions, normalisation: &Normalisation) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(opts).expect("serialisable"));
    for v in set.x.iter().chain(&normalisation.mean) {
        h.update(v.to_le_bytes());
    }
    for (y, s) in set.y.iter().zip(&set.split) {
        h.update(y.to_le_bytes());
        h.update([*s as u8]);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

/// The samples an epoch draws its batches from, with their balanced weights and normalisation.
struct Batches<'a> {
    set: &'a SampleSet,
    weights: &'a [f32],
    normalisation: &'a Normalisation,
}

/// Takes the network, its optimiser and the shuffled training pixels; takes one step per
/// batch and gives the epoch's mean training loss.
fn train_epoch(
    net: &tch::nn::Sequential,
    opt: &mut tch::nn::Optimizer,
    batches: &Batches,
    order: &[usize],
    batch_size: usize,
) -> f64 {
    let mut sum = 0.0;
    for batch in order.chunks(batch_size) {
        let (x, y, w) = tensors(batches.set, batches.weights, batch, batches.normalisation);
        let loss = weighted_loss(net, &x, &y, &w);
        opt.backward_step(&loss);
        sum += f64::from(&loss) * batch.len() as f64;
    }
    sum / order.len() as f64
}

impl FitState {
    /// Takes an epoch's training and validation loss; gives whether the validation loss
    /// improved, and stops the run once it has not for `patience` epochs.
    fn record_epoch(&mut self, train_loss: f64, val_loss: f64, patience: usize) -> bool {
        self.epochs_done += 1;
        self.train_loss.push(train_loss);
        self.validation_loss.push(val_loss);
        let improved = val_loss < self.best_validation_loss;
        if improved {
            self.best_validation_loss = val_loss;
            self.best_epoch = self.epochs_done;
        } else if self.epochs_done - self.best_epoch >= patience {
            self.stopped_early = true;
        }
        improved
    }
}

/// The name under which a checkpoint's mean keeps its count of epochs.
const AVERAGED_EPOCHS: &str = "averaged_epochs";

/// The running mean of the weights at the end of the epochs averaged so far, by name.
#[derive(Default)]
struct WeightAverage {
    mean: Vec<(String, tch::Tensor)>,
    count: usize,
}

impl WeightAverage {
    /// Takes the network's weights after an epoch into the mean.
    fn add(&mut self, vs: &tch::nn::VarStore) {
        let _g = tch::no_grad_guard();
        let now = variables_by_name(vs);
        self.count += 1;
        if self.mean.is_empty() {
            self.mean = now.into_iter().map(|(n, t)| (n, t.copy())).collect();
            return;
        }
        let k = self.count as f64;
        for ((_, mean), (_, w)) in self.mean.iter_mut().zip(&now) {
            *mean += (w - &*mean) / k;
        }
    }

    /// Writes the mean into the network's weights.
    fn copy_into(&self, vs: &mut tch::nn::VarStore) {
        let _g = tch::no_grad_guard();
        let mut vars = vs.variables();
        for (name, mean) in &self.mean {
            vars.get_mut(name).expect("the same network").copy_(mean);
        }
    }

    /// The mean with its count, as a checkpoint saves them.
    fn to_saved(&self) -> Vec<(String, tch::Tensor)> {
        let mut saved: Vec<(String, tch::Tensor)> = self
            .mean
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        saved.push((
            AVERAGED_EPOCHS.into(),
            tch::Tensor::of_slice(&[self.count as i64]),
        ));
        saved
    }

    /// Reads a checkpoint's mean, which must hold the `count` epochs its state says: the
    /// files are replaced one after the other, and a crash between them would weigh an
    /// epoch twice.
    fn load(path: &Path, count: usize) -> Result<Self> {
        let mut mean = tch::Tensor::load_multi(path)?;
        let saved = mean
            .iter()
            .position(|(n, _)| n == AVERAGED_EPOCHS)
            .map(|k| i64::from(&mean.remove(k).1));
        if saved != Some(count as i64) {
            return Err(Error::input(
                path,
                format!(
                    "holds the mean of {} epochs where the run's state says {count} (it was stopped while saving)",
                    saved.map_or("an unknown number of".into(), |n| n.to_string())
                ),
                "delete the checkpoint folder and train again",
            ));
        }
        mean.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(WeightAverage { mean, count })
    }
}

/// The files of a checkpoint folder: the run's state, the last and the best weights, and the
/// running mean of the weights when they are averaged.
struct EpochCheckpoints {
    state: PathBuf,
    last: PathBuf,
    best: PathBuf,
    average: PathBuf,
}

impl EpochCheckpoints {
    /// Takes a checkpoint folder; gives the paths of its files.
    fn in_folder(dir: &Path) -> Self {
        EpochCheckpoints {
            state: dir.join("state.json"),
            last: dir.join("last.ot"),
            best: dir.join("best.ot"),
            average: dir.join("average.ot"),
        }
    }

    /// Takes the run's id and its fresh weights; gives the saved state, with the last
    /// weights loaded into `vs`, when the folder holds the same run.
    fn resume(
        &self,
        run: &str,
        vs: &mut tch::nn::VarStore,
        quiet: bool,
    ) -> Result<Option<FitState>> {
        if !self.state.exists() {
            return Ok(None);
        }
        let saved: FitState = serde_json::from_slice(
            &std::fs::read(&self.state).map_err(|e| Error::io(&self.state, e))?,
        )
        .map_err(|e| Error::input(&self.state, e.to_string(), "delete the checkpoint folder"))?;
        if saved.run == run {
            vs.load(&self.last)?;
            if !quiet {
                eprintln!(
                    "resuming from the checkpoint after epoch {}",
                    saved.epochs_done
                );
            }
            return Ok(Some(saved));
        }
        if !quiet {
            eprintln!("the checkpoint belongs to other options or data: starting afresh");
        }
        Ok(None)
    }

    /// Takes the weights and state after an epoch; writes the last weights, the best when
    /// they `improved`, the running mean when given, then the state, each replacing its file
    /// only when complete.
    fn save(
        &self,
        vs: &tch::nn::VarStore,
        state: &FitState,
        improved: bool,
        average: Option<&WeightAverage>,
    ) -> Result<()> {
        let dir = self.state.parent().expect("a file in a folder");
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let weights = variables_by_name(vs);
        save_atomic(&weights, &self.last)?;
        if improved {
            save_atomic(&weights, &self.best)?;
        }
        if let Some(average) = average {
            save_atomic(&average.to_saved(), &self.average)?;
        }
        let tmp = self.state.with_extension("json.partial");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(state).expect("serialisable"),
        )
        .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.state).map_err(|e| Error::io(&self.state, e))
    }
}

/// Takes named weights and a path; writes them beside it first, so that a crash leaves the
/// old file whole.
fn save_atomic(named: &[(String, tch::Tensor)], path: &Path) -> Result<()> {
    let tmp = path.with_extension("partial.ot");
    tch::Tensor::save_multi(named, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes the weights in name order. `VarStore::save` writes them in its hash map's order,
/// which changes from process to process, so the same weights gave different files and a
/// different model version (MXBB) on every run.
pub(crate) fn save_weights(vs: &tch::nn::VarStore, path: &Path) -> Result<()> {
    Ok(tch::Tensor::save_multi(&variables_by_name(vs), path)?)
}

/// The network's weights (shallow handles, not copies) in name order.
fn variables_by_name(vs: &tch::nn::VarStore) -> Vec<(String, tch::Tensor)> {
    let mut named: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}
