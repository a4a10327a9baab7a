//! An answer log as evidence: the one implementation of what a log of answers says about λ and
//! about the user who gave them. Replay (the streaming steps), refinement (EP over the log's
//! comparisons), leave-one-out evidence, the consistency of probes and the diagnostics built
//! from them, for every caller: a run's own history ([`Elicitation`](super::Elicitation), and so
//! the simulator and the evaluator), a service's stored log and a prior refit over many logs.
//!
//! Callers describe each answer as a [`Step`] (its direction(s), likelihood, lapse rate and
//! predictive probability); nothing here knows how the answers were stored or which bank their
//! items came from.

use nalgebra::DVector;
use serde::Serialize;

use super::ep::{self, EpOptions};
use super::kway;
use super::likelihood::{Choice, NoiseModel, Outcome, PairLikelihood, Strength};
use super::posterior::Posterior;
use super::reliability::{
    self, AnsweredWith, Consistency, LapsePrior, Reliability, ReliabilityRule,
};
use super::update::UpdateMethod;

/// Session-level answer-quality and progress figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostics {
    /// Information acquired, ½log₂det(Σ₀Σ⁻¹) bits.
    pub bits: f64,
    /// Evidence against random answering from the sequential predictive, log₂BF = Σₜ log₂(Kₜ·Zₜ)
    /// with Kₜ the outcomes answer t allowed (2, 3 with ties, 4 or 5 graded, k for a pick of k):
    /// positive means the answers were more predictable than random clicks as they came.
    pub log2_bayes_factor: f64,
    /// Surprise of each informative answer, −log₂Zₜ bits.
    pub surprise_bits: Vec<f64>,
    /// The user's lapse rate, person fit and the verdict, each answer judged by all the others.
    pub reliability: Reliability,
}

impl Diagnostics {
    /// The diagnostics of a posterior reached from `prior` through informative answers with
    /// sequential predictive probabilities `sequential` and leave-one-out ones `leave_one_out`.
    pub fn compute(
        (prior, posterior): (&Posterior, &Posterior),
        (sequential, leave_one_out): (&[AnsweredWith], &[AnsweredWith]),
        consistency: Consistency,
        lapse_prior: LapsePrior,
        rule: &ReliabilityRule,
    ) -> Self {
        let surprise_bits: Vec<f64> = sequential
            .iter()
            .map(|a| -a.log_evidence / std::f64::consts::LN_2)
            .collect();
        Self {
            bits: posterior.bits_since(prior),
            log2_bayes_factor: sequential
                .iter()
                .zip(&surprise_bits)
                .map(|(a, s)| (a.outcomes as f64).log2() - s)
                .sum(),
            surprise_bits,
            reliability: reliability::assess(leave_one_out, consistency, lapse_prior, rule),
        }
    }
}

/// EP for the leave-one-out figures: a few damped sweeps settle the sites well enough to judge
/// answers by (the session's final posterior uses [`EpOptions::default`]).
pub const RELIABILITY_EP: EpOptions = EpOptions {
    sweeps: 4,
    damping: 0.7,
    tolerance: 1e-6,
};

/// What one answer says about λ.
#[derive(Debug, Clone)]
pub enum Evidence {
    /// A comparison along x (x = β(φa − φb) for a pair question, β·e_d for a statement) with the
    /// likelihood of the answer given.
    Comparison {
        x: DVector<f64>,
        likelihood: PairLikelihood,
    },
    /// A pick or ranking of the items shown: β·φ of each (so `noise.beta` is 1) and the positions
    /// ordered, best first; under Plackett–Luce, one pick after another on the items left.
    Ranking {
        shown: Vec<DVector<f64>>,
        ranking: Vec<usize>,
        noise: NoiseModel,
    },
}

/// One answer of a log, as the log's maths needs it.
#[derive(Debug, Clone)]
pub struct Step {
    /// What it says about λ; `None` for a skip.
    pub evidence: Option<Evidence>,
    /// For an answer to a pair question: its two items, as keys the caller chooses (bank
    /// indices, or any numbering of item ids), and the choice; what consistency probes compare.
    pub pair: Option<(usize, usize, Choice)>,
    /// Kₜ, the answers the question allowed: a lapse picks each with probability 1/Kₜ.
    pub outcomes: usize,
    /// The lapse rate of the likelihood the answer was applied with.
    pub lapse: f64,
    /// ln Zₜ = ln p(answer | earlier answers) as the run computed it, for informative answers.
    pub log_evidence: Option<f64>,
}

impl Step {
    /// An answer to a comparison along `x` (a pair question's, with its `pair`, or a statement):
    /// `outcome` (`None`: skipped), optionally graded, under `noise` (with the lapse rate it was
    /// applied with) and the model's strength threshold.
    pub fn comparison(
        x: DVector<f64>,
        pair: Option<(usize, usize, Choice)>,
        (outcome, strength): (Option<Outcome>, Option<Strength>),
        noise: &NoiseModel,
        strength_threshold: f64,
        log_evidence: Option<f64>,
    ) -> Self {
        let evidence = outcome
            .and_then(|o| {
                noise
                    .answer_likelihood(o, strength, strength_threshold)
                    .ok()
            })
            .map(|likelihood| Evidence::Comparison { x, likelihood });
        Self {
            evidence,
            pair,
            outcomes: noise.answer_outcomes(strength.is_some()),
            lapse: noise.lapse,
            log_evidence,
        }
    }

    /// A pick or ranking (`ranking`: positions in `scaled`, best first; empty for a skip) of
    /// items with β·φ `scaled`, under `noise`.
    pub fn ranking(
        scaled: Vec<DVector<f64>>,
        ranking: Vec<usize>,
        noise: &NoiseModel,
        log_evidence: Option<f64>,
    ) -> Self {
        let outcomes = kway::ranking_outcomes(scaled.len(), ranking.len());
        let answered = !ranking.is_empty();
        let evidence = answered.then_some(Evidence::Ranking {
            shown: scaled,
            ranking,
            noise: NoiseModel {
                beta: 1.0,
                ..*noise
            },
        });
        Self {
            evidence,
            pair: None,
            outcomes,
            lapse: noise.lapse,
            log_evidence,
        }
    }

    fn answered_with(&self, log_evidence: f64) -> AnsweredWith {
        AnsweredWith {
            log_evidence,
            lapse: self.lapse,
            outcomes: self.outcomes,
        }
    }
}

/// An EP fit of a log's comparisons (not its probes) and its sites.
pub type ReliabilityFit = (Posterior, Vec<ep::Site>);

/// What a log's answers are judged by ([`AnswerLog::leave_one_out`]), as far as it is at hand.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// The EP fit of the log's comparisons they are judged under.
    Fit(ReliabilityFit),
    /// That fit's leave-one-out log-probabilities, one a comparison, as the reliability verdict
    /// took them.
    LeaveOneOut(Vec<f64>),
}

/// A log's final posterior ([`AnswerLog::final_posterior`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FinalPosterior {
    pub posterior: Posterior,
    /// What the answers' reliability is judged by (`None` for a log with rankings): the verdict's
    /// leave-one-out figures when its run was continued (the same fit's), else the fit.
    pub judgement: Option<Judgement>,
    /// Whether EP continued an earlier [`ReliabilityRun`] rather than starting afresh.
    pub continued: bool,
}

/// The EP run behind a log's reliability figures ([`AnswerLog::reliability`]: [`RELIABILITY_EP`]
/// sweeps over its comparisons), kept so that the same log's final posterior
/// ([`AnswerLog::final_posterior`]) continues it instead of sweeping those again. It carries what
/// it ran over and is continued only over exactly that, so the result is to the bit what a fresh
/// run gives.
#[derive(Debug, Clone)]
pub struct ReliabilityRun {
    prior: Posterior,
    observations: Vec<(DVector<f64>, PairLikelihood)>,
    state: ep::EpState,
    /// The leave-one-out log-probability of each observation under the run's fit, which the
    /// verdict judged by (and the finish's diagnostics, over the same fit, judge by again).
    leave_one_out: Vec<f64>,
}

impl ReliabilityRun {
    /// The run taken up again, with its leave-one-out figures, if it ran from `prior` over
    /// exactly `observations`.
    fn continued<'a>(
        self,
        prior: &'a Posterior,
        observations: &'a [(DVector<f64>, PairLikelihood)],
    ) -> Option<(ep::EpRun<'a, PairLikelihood>, Vec<f64>)> {
        if self.prior != *prior || self.observations != observations {
            return None;
        }
        let run = ep::EpRun::resume(prior, observations, self.state)?;
        Some((run, self.leave_one_out))
    }

    /// Approximate heap size in bytes.
    pub fn size_bytes(&self) -> usize {
        let j = self.prior.dim();
        let observation = (j + 8) * std::mem::size_of::<f64>();
        j * (j + 1) * std::mem::size_of::<f64>()
            + self.observations.len() * (observation + std::mem::size_of::<f64>())
            + self.state.size_bytes()
    }
}

/// The EP run the answers' reliability is judged by: [`RELIABILITY_EP`] sweeps from `prior`.
fn reliability_ep<'a>(
    prior: &'a Posterior,
    observations: &'a [(DVector<f64>, PairLikelihood)],
) -> ep::EpRun<'a, PairLikelihood> {
    let mut run = ep::EpRun::new(prior, observations);
    run.sweep_until(RELIABILITY_EP);
    run
}

/// A log of answers in the order they came, with the probes among them found.
#[derive(Debug, Clone)]
pub struct AnswerLog {
    steps: Vec<Step>,
    /// For each step, the earlier step it repeats as a consistency probe
    /// ([`reliability::repeat_of`]): a probe is evidence about the user, not about λ (people
    /// remember what they said).
    repeats: Vec<Option<usize>>,
}

impl AnswerLog {
    pub fn new(steps: Vec<Step>) -> Self {
        let mut repeats: Vec<Option<usize>> = Vec::with_capacity(steps.len());
        for step in &steps {
            let repeat = step.pair.and_then(|(a, b, _)| {
                let earlier = steps.iter().zip(&repeats).map(|(e, r)| {
                    let (x, y, choice) = e.pair.unwrap_or((usize::MAX, usize::MAX, Choice::Skip));
                    (x, y, choice, *r)
                });
                reliability::repeat_of(earlier, &a, &b)
            });
            repeats.push(repeat);
        }
        Self { steps, repeats }
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The evidence about λ, in order: every informative answer but the probes.
    fn evidence(&self) -> impl Iterator<Item = &Evidence> {
        self.steps
            .iter()
            .zip(&self.repeats)
            .filter(|(_, repeats)| repeats.is_none())
            .filter_map(|(step, _)| step.evidence.as_ref())
    }

    /// The posterior after the log's streaming steps from `prior`: one rank-one step per
    /// comparison (by `method`), one ADF step per pick of a ranking.
    pub fn replay(&self, prior: &Posterior, method: UpdateMethod) -> Posterior {
        let mut posterior = prior.clone();
        for evidence in self.evidence() {
            match evidence {
                Evidence::Comparison { x, likelihood } => {
                    posterior.update(x, likelihood, method);
                }
                Evidence::Ranking {
                    shown,
                    ranking,
                    noise,
                } => {
                    for (left, chosen) in kway::picks_of(shown, ranking) {
                        if let Ok(step) = kway::choice_step(&posterior, &left, chosen, noise) {
                            step.apply(&mut posterior);
                        }
                    }
                }
            }
        }
        posterior
    }

    /// The log's comparisons as EP observations, probes left out.
    fn comparisons(&self) -> Vec<(DVector<f64>, PairLikelihood)> {
        self.evidence()
            .filter_map(|e| match e {
                Evidence::Comparison { x, likelihood } => Some((x.clone(), *likelihood)),
                Evidence::Ranking { .. } => None,
            })
            .collect()
    }

    fn has_rankings(&self) -> bool {
        self.evidence()
            .any(|e| matches!(e, Evidence::Ranking { .. }))
    }

    /// The log's final posterior from `prior`: EP over its comparisons (order-independent,
    /// closer to the exact posterior than the streaming one), or, for a log with picks or
    /// rankings (EP's sites here are one-dimensional), the streaming [`AnswerLog::replay`].
    /// With it, the EP fit [`AnswerLog::diagnostics`] judges the answers by when that comes from
    /// the same run: the reliability fit ([`RELIABILITY_EP`]) is that run stopped early, so the
    /// close fit continues it instead of starting again (both exactly what separate runs give;
    /// [`ep::EpRun`]).
    /// `earlier`: this log's [`ReliabilityRun`], if one was taken over all of it (continued when
    /// it ran from `prior` over these very comparisons, else ignored).
    pub fn final_posterior(
        &self,
        prior: &Posterior,
        method: UpdateMethod,
        earlier: Option<ReliabilityRun>,
    ) -> FinalPosterior {
        if self.has_rankings() {
            return FinalPosterior {
                posterior: self.replay(prior, method),
                judgement: None,
                continued: false,
            };
        }
        let observations = self.comparisons();
        let (mut run, judgement) = match earlier.and_then(|run| run.continued(prior, &observations))
        {
            Some((run, leave_one_out)) => (run, Judgement::LeaveOneOut(leave_one_out)),
            None => {
                let run = reliability_ep(prior, &observations);
                let fit = run.fit();
                (run, Judgement::Fit(fit))
            }
        };
        let continued = matches!(judgement, Judgement::LeaveOneOut(_));
        run.sweep_until(EpOptions::default());
        FinalPosterior {
            posterior: run.fit().0,
            judgement: Some(judgement),
            continued,
        }
    }

    /// The informative answers, each with its sequential predictive probability (as it came).
    pub fn sequential(&self) -> Vec<AnsweredWith> {
        self.steps
            .iter()
            .filter_map(|s| Some(s.answered_with(s.log_evidence?)))
            .collect()
    }

    /// The informative answers, each judged by all the others: a comparison by its
    /// leave-one-out predictive under an EP fit of the log's other comparisons from `prior`
    /// ([`ep::leave_one_out`]; `judgement`: that fit, or its figures, if already at hand); a
    /// probe, and a pick or ranking, by its predictive given everything before it.
    pub fn leave_one_out(
        &self,
        prior: &Posterior,
        judgement: Option<Judgement>,
    ) -> Vec<AnsweredWith> {
        let leave_one_out = match judgement {
            Some(Judgement::LeaveOneOut(figures)) => figures,
            fit => {
                let observations = self.comparisons();
                // No comparison to judge (a new session's view): no fit to make.
                if observations.is_empty() {
                    return self.judged_by_the_others(Vec::new());
                }
                let (posterior, sites) = match fit {
                    Some(Judgement::Fit(fit)) => fit,
                    _ => reliability_ep(prior, &observations).fit(),
                };
                ep::leave_one_out(&posterior, &observations, &sites)
            }
        };
        self.judged_by_the_others(leave_one_out)
    }

    /// [`AnswerLog::leave_one_out`] with each comparison's leave-one-out log-probability known.
    fn judged_by_the_others(&self, leave_one_out: Vec<f64>) -> Vec<AnsweredWith> {
        let mut judged = Vec::new();
        let mut as_they_came = Vec::new();
        for (step, repeats) in self.steps.iter().zip(&self.repeats) {
            match (repeats, &step.evidence) {
                (None, Some(Evidence::Comparison { .. })) => judged.push(step),
                _ => as_they_came.extend(step.log_evidence.map(|z| step.answered_with(z))),
            }
        }
        leave_one_out
            .into_iter()
            .zip(judged)
            .map(|(log_evidence, step)| step.answered_with(log_evidence))
            .chain(as_they_came)
            .collect()
    }

    /// The consistency probes and how many contradicted the answer they repeat.
    pub fn consistency(&self) -> Consistency {
        self.steps
            .iter()
            .zip(&self.repeats)
            .filter_map(|(probe, repeats)| {
                let (a, b, choice) = self.steps[(*repeats)?].pair?;
                let (pa, pb, probe_choice) = probe.pair?;
                reliability::flipped((&a, &b, choice), (&pa, &pb, probe_choice))
            })
            .fold(Consistency::default(), |acc, flip| Consistency {
                probes: acc.probes + 1,
                flips: acc.flips + usize::from(flip),
            })
    }

    /// Bits acquired from `prior` to `posterior`, the evidence against random answering,
    /// per-answer surprise and the answer-quality figures (each answer judged by the others;
    /// `judgement` as in [`AnswerLog::leave_one_out`]).
    pub fn diagnostics(
        &self,
        (prior, posterior): (&Posterior, &Posterior),
        judgement: Option<Judgement>,
        lapse_prior: LapsePrior,
        rule: &ReliabilityRule,
    ) -> Diagnostics {
        Diagnostics::compute(
            (prior, posterior),
            (&self.sequential(), &self.leave_one_out(prior, judgement)),
            self.consistency(),
            lapse_prior,
            rule,
        )
    }

    /// The answer-quality figures alone ([`AnswerLog::diagnostics`]' `reliability`), with the EP
    /// run they came from.
    pub fn reliability(
        &self,
        prior: &Posterior,
        lapse_prior: LapsePrior,
        rule: &ReliabilityRule,
    ) -> (Reliability, ReliabilityRun) {
        let observations = self.comparisons();
        let (leave_one_out, state) = {
            let run = reliability_ep(prior, &observations);
            let (posterior, sites) = run.fit();
            let figures = ep::leave_one_out(&posterior, &observations, &sites);
            (figures, run.state())
        };
        let reliability = reliability::assess(
            &self.judged_by_the_others(leave_one_out.clone()),
            self.consistency(),
            lapse_prior,
            rule,
        );
        let run = ReliabilityRun {
            prior: prior.clone(),
            observations,
            state,
            leave_one_out,
        };
        (reliability, run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::reliability::{LapsePrior, ReliabilityRule};

    /// A verdict's run is taken up again over its own log only.
    #[test]
    fn a_reliability_run_continues_over_its_own_log_only() {
        let noise = NoiseModel {
            beta: 1.0,
            lapse: 0.05,
            tie_threshold: 0.0,
        };
        let x = |i: usize| DVector::from_fn(3, |r, _| ((i * 3 + r) as f64).sin());
        let log_of = |n: usize| {
            AnswerLog::new(
                (0..n)
                    .map(|i| {
                        let choice = if i % 3 == 0 { Choice::B } else { Choice::A };
                        let answer = (choice.outcome(), None);
                        Step::comparison(
                            x(i),
                            Some((2 * i, 2 * i + 1, choice)),
                            answer,
                            &noise,
                            0.0,
                            None,
                        )
                    })
                    .collect(),
            )
        };
        let prior = Posterior::isotropic(3, 1.0).unwrap();
        let log = log_of(6);
        let (_, run) = log.reliability(&prior, LapsePrior::default(), &ReliabilityRule::default());
        let own = log.comparisons();
        assert!(run.clone().continued(&prior, &own).is_some());
        let other = Posterior::isotropic(3, 2.0).unwrap();
        assert!(run.clone().continued(&other, &own).is_none());
        assert!(run.continued(&prior, &log_of(5).comparisons()).is_none());
    }
}
