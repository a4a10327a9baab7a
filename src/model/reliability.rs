//! Is this user answering, or clicking? Per-session answer-quality figures (GUIDE §6).
//!
//! Each informative answer t carries a predictive probability Zₜ under a model whose lapse rate
//! was εₜ (with Kₜ outcomes a lapse picks each with probability 1/Kₜ; Kₜ is 2 for a or b, 3 with
//! ties, 4 or 5 for graded answers and k for a pick of k, so K below is each answer's own). A
//! session judges each answer
//! by all the others: Zₜ = p(yₜ | y₋ₜ), the leave-one-out predictive of an EP fit
//! ([`crate::model::ep::leave_one_out`]). The sequential predictive p(yₜ | y₍<ₜ₎) is a poor judge
//! under adaptive questions: each question was chosen to be a coin flip for the model when asked,
//! so a random answer to it is hardly surprising.
//!
//! With
//!
//!   Zₜ = εₜ/K + (1 − εₜ)·pₜ,   pₜ the probability of the answer for an attentive user.
//!
//! From these the session gets
//! - **the lapse rate ε** of this user: a Beta(a₀, b₀) prior and mean-field EM over which answers
//!   were lapses (responsibility rₜ = (ε/K)/(ε/K + (1 − ε)pₜ); posterior Beta(a₀ + Σr, b₀ + Σ(1 − r)));
//! - **a person-fit z score** (l_z, Drasgow, Levine & Williams 1985) when every answer is binary:
//!   z = (ℓ − E ℓ)/√Var ℓ with ℓ = Σ ln Zₜ, E ℓ = Σ [Z ln Z + (1 − Z) ln(1 − Z)] and
//!   Var ℓ = Σ Z(1 − Z) ln²(Z/(1 − Z)), moments under the model's own predictive: strongly
//!   negative when the answers are less predictable than the model expects;
//! - **the evidence against random answering**, log₂BF = Σ log₂(K·Zₜ), and the flag
//!   `unreliable` when, after enough answers, it is below the model's threshold.

use serde::{Deserialize, Serialize};

use super::likelihood::Choice;

/// Beta prior on a user's lapse rate; the default, Beta(1, 9), has mean 0.1 and the weight of ten
/// answers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LapsePrior {
    pub a: f64,
    pub b: f64,
}

impl Default for LapsePrior {
    fn default() -> Self {
        Self { a: 1.0, b: 9.0 }
    }
}

/// When a session counts as unreliable.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReliabilityRule {
    /// Flag a session whose log₂ Bayes factor against random answering is below this many bits.
    pub min_log2_bayes_factor: f64,
    /// … once it has at least this many informative answers (before that, evidence is too thin
    /// to tell either way and nothing is flagged).
    pub min_answers: usize,
}

impl Default for ReliabilityRule {
    fn default() -> Self {
        Self {
            min_log2_bayes_factor: 0.0,
            min_answers: 10,
        }
    }
}

/// One informative answer as the quality figures need it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnsweredWith {
    /// ln Zₜ, the answer's predictive log-probability under the model that updated on it.
    pub log_evidence: f64,
    /// εₜ, that model's lapse rate.
    pub lapse: f64,
    /// Kₜ, the answers the question allowed (2 for a or b, 3 with ties, 4 or 5 graded, k for a
    /// pick of k): a lapse picks each with probability 1/Kₜ.
    pub outcomes: usize,
}

impl AnsweredWith {
    /// pₜ = (Zₜ − εₜ/Kₜ)/(1 − εₜ), the probability of the answer for an attentive user.
    fn attentive(&self) -> f64 {
        let z = self.log_evidence.exp();
        ((z - self.lapse / self.outcomes as f64) / (1.0 - self.lapse)).clamp(1e-12, 1.0)
    }

    /// log₂(Kₜ·Zₜ): the answer's evidence against random answering.
    fn log2_bayes_factor(&self) -> f64 {
        self.log_evidence / std::f64::consts::LN_2 + (self.outcomes as f64).log2()
    }
}

/// The session's answer-quality figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reliability {
    /// Posterior mean of the user's lapse rate.
    pub lapse_rate: f64,
    /// Posterior sd of the user's lapse rate.
    pub lapse_sd: f64,
    /// Person-fit l_z over binary answers; `None` before two of them.
    pub person_fit_z: Option<f64>,
    /// log₂BF = Σ log₂(K·Zₜ) over the answers as given (leave-one-out predictive probabilities
    /// in a session's diagnostics).
    pub log2_bayes_factor: f64,
    /// Informative answers counted.
    pub answers: usize,
    /// Consistency probes answered, and how many contradicted the answer they repeat.
    pub consistency: Consistency,
    /// The rule's verdict.
    pub unreliable: bool,
}

/// Which earlier answer an answer to items (a, b) repeats, if any: the first informative answer
/// that is not itself a repeat and showed the same two items, in either order. `earlier` yields
/// (first item shown, second item shown, choice, the answer it repeated) in the order given.
pub fn repeat_of<K: PartialEq>(
    earlier: impl IntoIterator<Item = (K, K, Choice, Option<usize>)>,
    a: &K,
    b: &K,
) -> Option<usize> {
    earlier.into_iter().position(|(x, y, choice, repeats)| {
        repeats.is_none()
            && matches!(choice, Choice::A | Choice::B)
            && ((x == *a && y == *b) || (x == *b && y == *a))
    })
}

/// Whether a probe's answer contradicts the answer it repeats: they prefer different items.
/// `None` when either is a tie or a skip.
pub fn flipped<K: PartialEq>(earlier: (&K, &K, Choice), probe: (&K, &K, Choice)) -> Option<bool> {
    fn preferred<'a, K>((a, b, choice): (&'a K, &'a K, Choice)) -> Option<&'a K> {
        match choice {
            Choice::A => Some(a),
            Choice::B => Some(b),
            Choice::Tie | Choice::Skip => None,
        }
    }
    Some(preferred(earlier)? != preferred(probe)?)
}

/// Consistency probes: how many were answered and how many contradicted the answer they repeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Consistency {
    pub probes: usize,
    pub flips: usize,
}

/// EM iterations for the lapse rate: the fixed point moves by < 1e-6 long before this.
const LAPSE_EM_STEPS: usize = 50;

/// The posterior Beta(a, b) of a user's lapse rate given the answers.
pub fn lapse_posterior(answers: &[AnsweredWith], prior: LapsePrior) -> (f64, f64) {
    let attentive: Vec<(f64, f64)> = answers
        .iter()
        .map(|a| (a.attentive(), a.outcomes as f64))
        .collect();
    let n = attentive.len() as f64;
    let mut eps = prior.a / (prior.a + prior.b);
    let mut lapses = 0.0;
    for _ in 0..LAPSE_EM_STEPS {
        lapses = attentive
            .iter()
            .map(|&(p, k)| {
                let random = eps / k;
                random / (random + (1.0 - eps) * p)
            })
            .sum::<f64>();
        let next = (prior.a + lapses) / (prior.a + prior.b + n);
        let moved = (next - eps).abs();
        eps = next;
        if moved < 1e-9 {
            break;
        }
    }
    (prior.a + lapses, prior.b + n - lapses)
}

/// The posterior mean of the lapse rate, for a likelihood that adapts to the user.
pub fn lapse_estimate(answers: &[AnsweredWith], prior: LapsePrior) -> f64 {
    let (a, b) = lapse_posterior(answers, prior);
    a / (a + b)
}

/// Person-fit l_z over the binary answers (see the module docs).
pub fn person_fit_z(predictive: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut observed, mut expected, mut variance, mut n) = (0.0, 0.0, 0.0, 0);
    for z in predictive {
        let z = z.clamp(1e-12, 1.0 - 1e-12);
        let (ln_z, ln_not) = (z.ln(), (1.0 - z).ln());
        observed += ln_z;
        expected += z * ln_z + (1.0 - z) * ln_not;
        variance += z * (1.0 - z) * (ln_z - ln_not).powi(2);
        n += 1;
    }
    (n >= 2 && variance > 1e-12).then(|| (observed - expected) / variance.sqrt())
}

/// The quality figures of a session whose informative answers are `answers`.
pub fn assess(
    answers: &[AnsweredWith],
    consistency: Consistency,
    prior: LapsePrior,
    rule: &ReliabilityRule,
) -> Reliability {
    let (a, b) = lapse_posterior(answers, prior);
    let log2_bayes_factor = answers
        .iter()
        .map(AnsweredWith::log2_bayes_factor)
        .sum::<f64>();
    let binary = answers.iter().all(|a| a.outcomes == 2);
    let person_fit_z = if binary {
        person_fit_z(answers.iter().map(|x| x.log_evidence.exp()))
    } else {
        None
    };
    Reliability {
        lapse_rate: a / (a + b),
        lapse_sd: (a * b / ((a + b).powi(2) * (a + b + 1.0))).sqrt(),
        person_fit_z,
        log2_bayes_factor,
        answers: answers.len(),
        consistency,
        unreliable: answers.len() >= rule.min_answers
            && log2_bayes_factor < rule.min_log2_bayes_factor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(z: f64, lapse: f64) -> AnsweredWith {
        AnsweredWith {
            log_evidence: z.ln(),
            lapse,
            outcomes: 2,
        }
    }

    #[test]
    fn predictable_answers_have_a_small_lapse_rate_and_fit() {
        let answers: Vec<_> = (0..30).map(|_| answered(0.9, 0.0)).collect();
        let r = assess(
            &answers,
            Consistency::default(),
            LapsePrior::default(),
            &ReliabilityRule::default(),
        );
        assert!(r.lapse_rate < 0.06, "{r:?}");
        assert!(r.log2_bayes_factor > 10.0 && !r.unreliable);
        // Every answer exactly as likely as predicted: ℓ sits below its mean only by the spread.
        assert!(r.person_fit_z.unwrap().abs() < 6.0);
    }

    #[test]
    fn surprising_answers_raise_the_lapse_rate_and_are_flagged() {
        let mut answers: Vec<_> = (0..10).map(|_| answered(0.9, 0.1)).collect();
        answers.extend((0..10).map(|_| answered(0.1, 0.1)));
        let r = assess(
            &answers,
            Consistency::default(),
            LapsePrior::default(),
            &ReliabilityRule::default(),
        );
        assert!(r.lapse_rate > 0.3, "{r:?}");
        assert!(r.person_fit_z.unwrap() < -2.0, "{r:?}");
        assert!(r.log2_bayes_factor < 0.0 && r.unreliable);
    }

    #[test]
    fn few_answers_are_never_flagged() {
        let answers: Vec<_> = (0..5).map(|_| answered(0.2, 0.0)).collect();
        let r = assess(
            &answers,
            Consistency::default(),
            LapsePrior::default(),
            &ReliabilityRule::default(),
        );
        assert!(r.log2_bayes_factor < 0.0 && !r.unreliable);
    }

    #[test]
    fn attentive_probability_inverts_the_lapse_mixture() {
        // Z = ε/2 + (1 − ε)p with ε = 0.2, p = 0.7.
        let z = 0.1 + 0.8 * 0.7;
        assert!((answered(z, 0.2).attentive() - 0.7).abs() < 1e-12);
    }

    #[test]
    fn repeats_and_flips_are_found_in_either_order() {
        use Choice::{A, B, Skip};
        let log = [
            ("x", "y", A),
            ("y", "z", Skip),
            ("y", "x", B),
            ("z", "y", A),
            ("x", "y", B),
        ];
        let mut repeats: Vec<Option<usize>> = vec![];
        for (a, b, _) in &log {
            let earlier = log.iter().zip(&repeats).map(|(e, r)| (e.0, e.1, e.2, *r));
            repeats.push(repeat_of(earlier, a, b));
        }
        // The skip is not repeated; the swapped x/y repeats answer 0; the last repeats it too.
        assert_eq!(repeats, vec![None, None, Some(0), None, Some(0)]);
        let flip = |i: usize, j: usize| {
            flipped(
                (&log[i].0, &log[i].1, log[i].2),
                (&log[j].0, &log[j].1, log[j].2),
            )
        };
        assert_eq!(
            flip(0, 2),
            Some(false),
            "x over y, then (y, x) answered b: still x"
        );
        assert_eq!(
            flip(0, 4),
            Some(true),
            "x over y, then (x, y) answered b: y"
        );
        assert_eq!(flip(1, 3), None, "a skip has no preference");
    }

    #[test]
    fn no_answers_give_the_prior() {
        let (a, b) = lapse_posterior(&[], LapsePrior::default());
        assert_eq!((a, b), (1.0, 9.0));
    }
}
