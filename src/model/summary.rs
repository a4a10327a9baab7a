//! A profile in words: what the posterior over λ says about each dimension, as short English
//! sentences a user can read and correct. A template, no language model.
//!
//! For dimension d, with posterior N(μ, Σ) and population (the model's prior) N(μ₀, Σ₀):
//! - the end preferred is the sign of μ_d (λ_d > 0 rewards the dimension's high end);
//! - how sure: P(sign) = Φ(|μ_d| / √Σ_dd), the posterior probability that λ_d has that sign; a
//!   statement is made only when P(sign) ≥ [`SURE_OF_SIGN`];
//! - how strongly: |μ_d| / √(Σ₀)_dd, the preference's size measured in the population's spread
//!   of λ_d (how far from indifference, against how much people differ on it).

use serde::{Deserialize, Serialize};

use super::Posterior;
use super::numeric::normal_cdf;

/// The posterior probability of a dimension's sign at which the summary states it.
pub const SURE_OF_SIGN: f64 = 0.8;

/// The labels of a dimension's two ends, e.g. "concise answers" (low) and "detailed answers"
/// (high); the summary's sentences are built from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DimensionEnds {
    #[schema(min_length = 1, max_length = 64)]
    pub low: String,
    #[schema(min_length = 1, max_length = 64)]
    pub high: String,
}

/// A named dimension, with the labels of its ends when the model has them.
#[derive(Debug, Clone, Copy)]
pub struct Dimension<'a> {
    pub name: &'a str,
    pub ends: Option<&'a DimensionEnds>,
}

/// One end of a dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum End {
    Low,
    High,
}

/// How strongly a user leans to one end, in the population's spread of that coefficient:
/// slightly below ½, strongly from 1½.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Leaning {
    Slightly,
    Moderately,
    Strongly,
}

impl Leaning {
    fn of(relative: f64) -> Self {
        match relative {
            r if r < 0.5 => Leaning::Slightly,
            r if r < 1.5 => Leaning::Moderately,
            _ => Leaning::Strongly,
        }
    }

    /// The adverb before "prefers" (none for a moderate leaning).
    fn adverb(self) -> &'static str {
        match self {
            Leaning::Slightly => "slightly ",
            Leaning::Moderately => "",
            Leaning::Strongly => "strongly ",
        }
    }
}

/// What the summary says of one dimension whose sign the posterior is sure of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PreferenceStatement {
    pub dimension: String,
    /// The end the user prefers.
    pub prefers: End,
    pub leaning: Leaning,
    /// The posterior probability that the preference has this direction (≥ 0.8).
    pub certainty: f64,
    /// e.g. "prefers concise answers to detailed answers — fairly sure".
    pub sentence: String,
}

/// A profile in words: a statement for each dimension whose sign is known, in the model's order,
/// then the dimensions not known yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProfileSummary {
    pub statements: Vec<PreferenceStatement>,
    /// The dimensions whose sign the posterior is not yet sure of.
    pub unknown: Vec<String>,
    /// "Not known yet: …", when any are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_sentence: Option<String>,
}

/// The words for a certainty P(sign) ≥ [`SURE_OF_SIGN`].
fn certainty_words(p: f64) -> &'static str {
    match p {
        p if p >= 0.95 => "very sure",
        p if p >= 0.9 => "sure",
        _ => "fairly sure",
    }
}

/// The sentence for a preference for `end` of `dimension`.
fn sentence(dimension: Dimension, end: End, leaning: Leaning, certainty: f64) -> String {
    let preference = match (dimension.ends, end) {
        (Some(ends), End::High) => format!("{} to {}", ends.high, ends.low),
        (Some(ends), End::Low) => format!("{} to {}", ends.low, ends.high),
        (None, End::High) => format!("more {}", dimension.name),
        (None, End::Low) => format!("less {}", dimension.name),
    };
    format!(
        "{}prefers {preference} — {}",
        leaning.adverb(),
        certainty_words(certainty)
    )
}

/// Summarises `posterior` over `dimensions` against the `population` (see the module docs).
pub fn summarise(
    posterior: &Posterior,
    population: &Posterior,
    dimensions: &[Dimension],
) -> ProfileSummary {
    let mut statements = Vec::new();
    let mut unknown = Vec::new();
    for (d, &dimension) in dimensions.iter().enumerate() {
        let mean = posterior.mean()[d];
        let sd = posterior.cov()[(d, d)].max(0.0).sqrt();
        let certainty = if sd > 0.0 {
            normal_cdf(mean.abs() / sd)
        } else {
            1.0
        };
        if certainty < SURE_OF_SIGN || mean == 0.0 {
            unknown.push(dimension.name.to_string());
            continue;
        }
        let spread = population.cov()[(d, d)].max(f64::MIN_POSITIVE).sqrt();
        let leaning = Leaning::of(mean.abs() / spread);
        let prefers = if mean > 0.0 { End::High } else { End::Low };
        statements.push(PreferenceStatement {
            dimension: dimension.name.to_string(),
            prefers,
            leaning,
            certainty,
            sentence: sentence(dimension, prefers, leaning, certainty),
        });
    }
    let unknown_sentence =
        (!unknown.is_empty()).then(|| format!("Not known yet: {}.", unknown.join(", ")));
    ProfileSummary {
        statements,
        unknown,
        unknown_sentence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{DMatrix, DVector};

    fn posterior(mean: &[f64], sd: &[f64]) -> Posterior {
        let cov =
            DMatrix::from_diagonal(&DVector::from_iterator(sd.len(), sd.iter().map(|s| s * s)));
        Posterior::new(DVector::from_column_slice(mean), cov).unwrap()
    }

    #[test]
    fn states_the_known_dimensions_and_lists_the_rest() {
        let ends = DimensionEnds {
            low: "concise answers".into(),
            high: "detailed answers".into(),
        };
        let dimensions = [
            Dimension {
                name: "detailed",
                ends: Some(&ends),
            },
            Dimension {
                name: "casual",
                ends: None,
            },
            Dimension {
                name: "bold",
                ends: None,
            },
            Dimension {
                name: "examples",
                ends: None,
            },
        ];
        // P(sign) = Φ(|μ|/σ): Φ(2) = 0.977, Φ(1.5) = 0.933, Φ(0.5) = 0.69, Φ(1) = 0.841.
        let user = posterior(&[-0.4, 1.8, 0.2, 0.5], &[0.2, 1.2, 0.4, 0.5]);
        let population = Posterior::isotropic(4, 1.0).unwrap();
        let summary = summarise(&user, &population, &dimensions);
        let sentences: Vec<&str> = summary
            .statements
            .iter()
            .map(|s| s.sentence.as_str())
            .collect();
        assert_eq!(
            sentences,
            [
                "slightly prefers concise answers to detailed answers — very sure",
                "strongly prefers more casual — sure",
                "prefers more examples — fairly sure",
            ]
        );
        assert_eq!(summary.statements[0].prefers, End::Low);
        assert_eq!(summary.statements[1].leaning, Leaning::Strongly);
        assert!((summary.statements[2].certainty - normal_cdf(1.0)).abs() < 1e-12);
        assert_eq!(summary.unknown, ["bold"]);
        assert_eq!(
            summary.unknown_sentence.as_deref(),
            Some("Not known yet: bold.")
        );
    }

    #[test]
    fn the_prior_knows_nothing_and_strength_is_measured_in_the_population_spread() {
        let dimensions = [Dimension {
            name: "d0",
            ends: None,
        }];
        let prior = Posterior::isotropic(1, 1.0).unwrap();
        let summary = summarise(&prior, &prior, &dimensions);
        assert!(summary.statements.is_empty());
        assert_eq!(summary.unknown, ["d0"]);
        // The same mean reads as strong in a population that barely varies, slight in one that
        // varies a lot.
        let user = posterior(&[1.0], &[0.1]);
        let narrow = posterior(&[0.0], &[0.5]);
        let wide = posterior(&[0.0], &[3.0]);
        assert_eq!(
            summarise(&user, &narrow, &dimensions).statements[0].leaning,
            Leaning::Strongly
        );
        assert_eq!(
            summarise(&user, &wide, &dimensions).statements[0].leaning,
            Leaning::Slightly
        );
    }
}
