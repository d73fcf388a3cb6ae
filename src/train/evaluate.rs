//! Scoring a classifier on held-out pixels.
//!
//! Takes: a [`TrainConfig`], any [`Classifier`] and the splits to score. Gives: one
//! [`Evaluation`] per split, pooled separately over real and generated datasets, and the
//! report `gengbao eval` writes from one.

use super::config::TrainConfig;
use super::data::{visit_labelled, Split};
use crate::classify::{Classifier, ClassifierInput};
use crate::error::{Error, Result};
use crate::evaluate::{class_score_counts, confusion_png, ClassScore};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Held-out figures of a model, pooled separately over real and generated datasets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    pub split: Split,
    pub real_holdout: Option<ClassScore>,
    pub generated_holdout: Option<ClassScore>,
}

impl Evaluation {
    /// Writes `eval.json`, `eval.md` and one confusion-matrix PNG per pool with pixels into
    /// `out` (created if missing). `model` and `data` name what was scored in the report's
    /// title.
    pub fn write_report(&self, model: &str, data: &Path, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let mut md = format!(
            "# Model {model} on the {} split of {}\n\n",
            self.split,
            data.display()
        );
        for (name, score) in self.pools() {
            if let Some(s) = score {
                let title = format!("{name} data, {} split", self.split);
                md += &s.markdown(&title);
                md += "\n";
                confusion_png(s, &title, &out.join(format!("confusion_{name}.png")))?;
            }
        }
        let json = out.join("eval.json");
        let text = serde_json::to_string_pretty(self).expect("an evaluation serialises");
        std::fs::write(&json, text).map_err(|e| Error::io(&json, e))?;
        let md_path = out.join("eval.md");
        std::fs::write(&md_path, md).map_err(|e| Error::io(&md_path, e))
    }

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
            runner_up: false,
            wanted: None,
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
            split: *split,
            real_holdout: score(real),
            generated_holdout: score(generated),
        })
        .collect())
}
