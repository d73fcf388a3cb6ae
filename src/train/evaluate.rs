//! Scoring a classifier on held-out pixels.
//!
//! Takes: a [`TrainConfig`], any [`Classifier`] and the splits to score. Gives: one
//! [`Evaluation`] per split, pooled separately over real and generated datasets.

use super::config::TrainConfig;
use super::data::{visit_labelled, Split};
use crate::classify::{Classifier, ClassifierInput};
use crate::error::Result;
use crate::evaluate::{class_score_counts, ClassScore};
use serde::{Deserialize, Serialize};

/// Held-out figures of a model, pooled separately over real and generated datasets.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Evaluation {
    pub split: String,
    pub real_holdout: Option<ClassScore>,
    pub generated_holdout: Option<ClassScore>,
}

impl Evaluation {
    /// The scores of the real and the generated pixels, named.
    pub fn pools(&self) -> [(&'static str, Option<&ClassScore>); 2] {
        [
            ("real", self.real_holdout.as_ref()),
            ("generated", self.generated_holdout.as_ref()),
        ]
    }
}

/// Runs a classifier exactly as the pipeline does (whole tiles with their history) and scores
/// the pixels of each split asked for, in one pass over the data.
pub fn evaluate_classifier(
    cfg: &TrainConfig,
    classifier: &dyn Classifier,
    splits: &[Split],
) -> Result<Vec<Evaluation>> {
    let profile = cfg.profile();
    // [split asked][real, generated][reference][predicted]
    let mut confusion = vec![[[[0u64; 6]; 6]; 2]; splits.len()];
    visit_labelled(cfg, false, |t| {
        let out = classifier.classify(&ClassifierInput {
            profile,
            composite: t.composite,
            history: t.history,
        })?;
        let pool = usize::from(!cfg.datasets[t.dataset].real);
        for (i, &label) in t.labels.iter().enumerate() {
            let predicted = out.classes[i];
            let Some(k) = splits.iter().position(|s| Some(*s) == t.split[i]) else {
                continue;
            };
            if label != 0 && (1..=6).contains(&predicted) {
                confusion[k][pool][label as usize - 1][predicted as usize - 1] += 1;
            }
        }
        Ok(())
    })?;
    let score = |c: [[u64; 6]; 6]| {
        let s = class_score_counts(c);
        (s.pixels > 0).then_some(s)
    };
    Ok(splits
        .iter()
        .zip(confusion)
        .map(|(split, [real, generated])| Evaluation {
            split: format!("{split:?}").to_lowercase(),
            real_holdout: score(real),
            generated_holdout: score(generated),
        })
        .collect())
}
