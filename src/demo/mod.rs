//! The bundled demo: a model of an assistant's answer style, written and scored by hand for this
//! project (`model.json`), and the onboarding page served at `/demo` (`page/`). Both are compiled
//! into the binary, so the demo works offline and needs no files beside it.
//!
//! Six dimensions, each scored in [−1, 1] from its first pole to its second: concise↔detailed,
//! formal↔casual, cautious↔bold, plain↔technical, serious↔playful, without↔with examples. Each
//! prompt has four to six responses; items are grouped by prompt, so a question always shows
//! answers to the same prompt (four of them, for the user to rank, in a demo session).

use serde::Deserialize;

use crate::model::summary::DimensionEnds;

/// The model's name in the store.
pub const MODEL: &str = "demo";

const MODEL_JSON: &str = include_str!("model.json");

/// The page and its assets, served as they are.
pub const PAGE_HTML: &str = include_str!("page/index.html");
pub const PAGE_JS: &str = include_str!("page/demo.js");
pub const PAGE_CSS: &str = include_str!("page/demo.css");

/// The demo model as written in `model.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoModel {
    pub name: String,
    /// What the dimensions mean and how responses were scored.
    pub about: String,
    pub dimensions: Vec<String>,
    /// The labels of each dimension's low and high ends, for the profile in words.
    pub ends: Vec<DimensionEnds>,
    /// The population's mean coefficients (the prior covariance is the identity).
    pub prior_mean: Vec<f64>,
    pub prompts: Vec<Prompt>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    pub id: String,
    pub prompt: String,
    pub responses: Vec<Response>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub text: String,
    /// φ: one score per dimension, in [−1, 1].
    pub scores: Vec<f64>,
}

/// One bank item of the demo: `{prompt id}-r{n}`, grouped by prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoItem {
    pub id: String,
    pub group: String,
    pub features: Vec<f64>,
    pub prompt: String,
    pub text: String,
}

impl DemoModel {
    /// The bundled model (checked by this module's tests, so it always parses).
    pub fn bundled() -> Self {
        serde_json::from_str(MODEL_JSON).expect("the bundled demo model parses")
    }

    pub fn items(&self) -> Vec<DemoItem> {
        self.prompts
            .iter()
            .flat_map(|p| {
                p.responses.iter().enumerate().map(|(n, r)| DemoItem {
                    id: format!("{}-r{}", p.id, n + 1),
                    group: p.id.clone(),
                    features: r.scores.clone(),
                    prompt: p.prompt.clone(),
                    text: r.text.clone(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_bundled_model_is_well_formed() {
        let model = DemoModel::bundled();
        assert_eq!(model.name, MODEL);
        let j = model.dimensions.len();
        assert_eq!(j, 6);
        assert_eq!(model.prior_mean.len(), j);
        assert!(model.prompts.len() >= 24, "a few dozen prompts");
        let items = model.items();
        let ids: HashSet<_> = items.iter().map(|i| &i.id).collect();
        assert_eq!(ids.len(), items.len(), "item ids are unique");
        for prompt in &model.prompts {
            assert!((4..=6).contains(&prompt.responses.len()), "{}", prompt.id);
        }
        for item in &items {
            assert_eq!(item.features.len(), j, "{}", item.id);
            assert!(item.features.iter().all(|x| (-1.0..=1.0).contains(x)));
        }
        // Every dimension separates responses within some prompt, so every one can be learned.
        for d in 0..j {
            assert!(
                model.prompts.iter().any(|p| {
                    let scores: Vec<f64> = p.responses.iter().map(|r| r.scores[d]).collect();
                    scores.iter().cloned().fold(f64::MIN, f64::max)
                        - scores.iter().cloned().fold(f64::MAX, f64::min)
                        >= 1.5
                }),
                "{}",
                model.dimensions[d]
            );
        }
    }
}
