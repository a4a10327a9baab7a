//! One user's elicitation run: the posterior, the coreset's statistics, the questions asked, the
//! stopping rule and the diagnostics, tied together. Storage and transport live elsewhere; this
//! is what they load, drive and save.

use nalgebra::DVector;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::bank::Bank;
use super::candidates::CandidateSpace;
use super::epig::{self, Targets};
use super::history::{AnswerLog, Diagnostics, ReliabilityRun, Step};
use super::kway::{self, ChosenSet, MAX_CHOICES};
use super::likelihood::{Choice, NoiseModel, Outcome, PairLikelihood, Strength};
use super::pair::Pair;
use super::pool::{Pool, SelectionOptions};
use super::posterior::{Posterior, RankOne};
use super::reliability::{
    self, AnsweredWith, Consistency, LapsePrior, Reliability, ReliabilityRule,
};
use super::select::{self, Candidates, Selected, Strategy};
use super::space::CoreStats;
use super::summary::End;
use super::update::{UpdateMethod, log_predictive, step_for};

mod config;
mod quality;
mod response;

pub use config::{
    CheckRule, DEFAULT_STRENGTH_THRESHOLD, ElicitationConfig, ProbeRule, StopReason, StoppingRule,
};
use quality::Verdict;
pub use response::{AnswerRecord, Response, statement_direction, statement_outcome};
use response::{check_ranking, repeated};

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Ask a pair.
    Ask(Selected),
    /// Ask the user to pick one of three or more items.
    AskSet(ChosenSet),
    Stop(StopReason),
}

/// What a run learned from its answers so far, apart from the bank, prior and configuration: the
/// posterior, the pairs asked and the history. A service keeps it between requests
/// ([`Elicitation::into_state`] / [`Elicitation::from_state`]) so that an answer costs O(J²)
/// plus a question instead of a rebuild. Its size is O(J² + answers) whatever the bank's (plus
/// the items of a session restricted to some): nothing in it is per bank item.
#[derive(Debug, Clone)]
pub struct RunState {
    posterior: Posterior,
    space: CandidateSpace,
    /// The coreset's statistics under the posterior, for a space too large to be its own pool.
    core: Option<CoreStats>,
    history: Vec<AnswerRecord>,
    /// The target pairs of the `epig` strategy ([`Elicitation::aim_at`]), kept with the run so
    /// that a resumed run need not draw them again.
    targets: Option<Targets>,
    /// The last reliability verdict taken ([`Elicitation::is_unreliable`]).
    verdict: Option<Verdict>,
}

impl RunState {
    pub fn posterior(&self) -> &Posterior {
        &self.posterior
    }

    pub fn history(&self) -> &[AnswerRecord] {
        &self.history
    }

    /// Approximate heap size in bytes: the posterior's J(J + 1) floats, the asked pairs, the
    /// history (and a restricted session's own item space).
    pub fn size_bytes(&self) -> usize {
        let floats = self.posterior.dim() * (self.posterior.dim() + 1);
        floats * std::mem::size_of::<f64>()
            + self.space.size_bytes()
            + self.core.as_ref().map_or(0, CoreStats::size_bytes)
            + self.history.len() * std::mem::size_of::<AnswerRecord>()
            + self.verdict.as_ref().map_or(0, Verdict::size_bytes)
    }

    /// The EP run of the reliability verdict, when it was taken over every answer so far: the
    /// log's final posterior continues it ([`AnswerLog::final_posterior`]).
    pub fn into_reliability_run(self) -> Option<ReliabilityRun> {
        let answers = self.history.len();
        self.verdict?.run_over(answers).cloned()
    }
}

/// A user's elicitation run over a bank.
#[derive(Debug, Clone)]
pub struct Elicitation<'a> {
    bank: &'a Bank,
    config: ElicitationConfig,
    prior: Posterior,
    state: RunState,
}

impl<'a> Elicitation<'a> {
    /// A fresh run from the prior. `allowed` restricts the items that may be asked about.
    pub fn new(
        bank: &'a Bank,
        prior: Posterior,
        config: ElicitationConfig,
        allowed: Option<&[usize]>,
    ) -> Result<Self, ModelError> {
        Self::resume(bank, prior.clone(), prior, Vec::new(), config, allowed)
    }

    /// A run continued from a stored posterior and its answer history (no replay: O(J² + answers),
    /// plus O(n log n) for a session restricted to n items).
    pub fn resume(
        bank: &'a Bank,
        prior: Posterior,
        posterior: Posterior,
        history: Vec<AnswerRecord>,
        config: ElicitationConfig,
        allowed: Option<&[usize]>,
    ) -> Result<Self, ModelError> {
        config.noise.validate()?;
        if bank.dim() != prior.dim() || posterior.dim() != prior.dim() {
            return Err(ModelError::invalid(
                "features",
                format!(
                    "the bank has {} dimensions, the prior {}",
                    bank.dim(),
                    prior.dim()
                ),
            ));
        }
        if let Some(items) = allowed
            && let Some(&bad) = items.iter().find(|&&i| i >= bank.len())
        {
            return Err(ModelError::invalid(
                "items",
                format!("item index {bad} is not in the bank"),
            ));
        }
        let mut space = CandidateSpace::new(bank, allowed);
        let mut history = history;
        for i in 0..history.len() {
            history[i].repeats = match &history[i].response {
                Response::Pair { pair, .. } => {
                    space.mark_asked(*pair);
                    repeated(&history[..i], *pair)
                }
                Response::Pick { shown, .. } => {
                    space.mark_set_asked(shown);
                    None
                }
                Response::Statement { .. } => None,
            };
        }
        let core = (space.items().pair_count() > config.selection.exhaustive_limit).then(|| {
            let coreset = space.items().coreset(bank.feature_matrix());
            if history.is_empty() {
                CoreStats::at_start(coreset, &posterior)
            } else {
                CoreStats::new(coreset, &posterior)
            }
        });
        Ok(Self {
            bank,
            config,
            prior,
            state: RunState {
                posterior,
                space,
                core,
                history,
                targets: None,
                verdict: None,
            },
        })
    }

    /// A run continued from a state that an earlier run over the same bank and configuration
    /// left ([`Elicitation::into_state`]): O(1).
    pub fn from_state(
        bank: &'a Bank,
        prior: Posterior,
        state: RunState,
        config: ElicitationConfig,
    ) -> Result<Self, ModelError> {
        config.noise.validate()?;
        if !state.space.fits(bank) || state.posterior.dim() != prior.dim() {
            return Err(ModelError::invalid(
                "state",
                "the run state was made for another bank or prior",
            ));
        }
        Ok(Self {
            bank,
            config,
            prior,
            state,
        })
    }

    /// Aims the `epig` strategy at these target pairs (other strategies ignore them).
    pub fn aim_at(mut self, targets: Targets) -> Self {
        self.state.targets = Some(targets);
        self
    }

    /// Whether the run has target pairs ([`Elicitation::aim_at`]).
    pub fn is_aimed(&self) -> bool {
        self.state.targets.is_some()
    }

    /// What the run has learned, to continue it later with [`Elicitation::from_state`].
    pub fn into_state(self) -> RunState {
        self.state
    }

    /// A run rebuilt from the prior by replaying an answer log in order (the log is the truth).
    pub fn replay(
        bank: &'a Bank,
        prior: Posterior,
        config: ElicitationConfig,
        allowed: Option<&[usize]>,
        answers: &[Response],
    ) -> Result<Self, ModelError> {
        let mut run = Self::new(bank, prior, config, allowed)?;
        for response in answers {
            run.respond(response.clone())?;
        }
        Ok(run)
    }

    pub fn posterior(&self) -> &Posterior {
        &self.state.posterior
    }

    pub fn prior(&self) -> &Posterior {
        &self.prior
    }

    pub fn config(&self) -> &ElicitationConfig {
        &self.config
    }

    pub fn history(&self) -> &[AnswerRecord] {
        &self.state.history
    }

    /// Never asks `pair` (without recording an answer): pairs held out for evaluation, or known
    /// already from elsewhere.
    pub fn exclude(&mut self, pair: Pair) {
        self.state.space.mark_asked(pair);
    }

    /// Candidate pairs not asked yet.
    pub fn remaining_pairs(&self) -> usize {
        self.state.space.remaining()
    }

    /// The next question under the stopping rule and strategy.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> Next {
        let rule = &self.config.stopping;
        let asked = self
            .state
            .history
            .iter()
            .filter(|r| !matches!(r.response, Response::Statement { .. }))
            .count();
        if asked >= rule.max_questions {
            return Next::Stop(StopReason::Budget);
        }
        if let Some(target) = rule.target_sd
            && self.state.posterior.sd().amax() <= target
        {
            return Next::Stop(StopReason::Uncertainty);
        }
        if let Some(pair) = self.probe_due() {
            return Next::Ask(Selected {
                pair,
                score_bits: 0.0,
            });
        }
        let noise = self.noise();
        let pool = Pool::draw(
            self.bank,
            &self.state.space,
            self.state.core.as_ref(),
            &self.state.posterior,
            &self.config.selection,
            rng,
        );
        let candidates = Candidates {
            bank: self.bank,
            pool: &pool,
            space: &self.state.space,
            noise: &noise,
            options: &self.config.selection,
        };
        if let Some(pair) = self.check_due(&candidates, rng) {
            return Next::Ask(Selected {
                pair,
                score_bits: 0.0,
            });
        }
        let (state, strategy) = (&self.state, self.config.strategy);
        let chosen = if self.config.choices > 2 {
            kway::select_set(&candidates, strategy, self.config.choices, rng)
        } else {
            let pair = match (strategy, &state.targets) {
                (Strategy::Epig, Some(targets)) => {
                    epig::select_for_targets(&candidates, &state.posterior, targets, rng)
                }
                _ => select::select(&candidates, strategy, rng),
            };
            pair.map(|s| ChosenSet {
                items: vec![s.pair.a, s.pair.b],
                score_bits: s.score_bits,
            })
        };
        match chosen {
            None => Next::Stop(StopReason::Exhausted),
            Some(s) if strategy != Strategy::Random && s.score_bits < rule.min_information_bits => {
                Next::Stop(StopReason::Information)
            }
            Some(s) if s.items.len() == 2 => Next::Ask(Selected {
                pair: Pair {
                    a: s.items[0],
                    b: s.items[1],
                },
                score_bits: s.score_bits,
            }),
            Some(s) => Next::AskSet(s),
        }
    }

    /// Applies a plain answer to `pair` ([`Elicitation::respond`]).
    pub fn answer(&mut self, pair: Pair, choice: Choice) -> Result<Option<f64>, ModelError> {
        self.respond(Response::pair(pair, choice))
    }

    /// Applies an answer: a pair answer by the exact 1-D step (graded ones through the
    /// ordered-logit likelihood), a pick of k by the ADF step on its (k − 1)-dimensional tilted
    /// density ([`kway::choice_step`]); a skip only marks the question as asked. A pair asked
    /// before is a consistency probe and leaves the posterior alone. Returns the answer's
    /// predictive log-probability ln Z for informative answers.
    pub fn respond(&mut self, response: Response) -> Result<Option<f64>, ModelError> {
        let noise = self.noise();
        let (log_evidence, repeats) = match &response {
            Response::Pair {
                pair,
                choice,
                strength,
            } => {
                self.check_items(&[pair.a, pair.b])?;
                let repeats = repeated(&self.state.history, *pair);
                let log_evidence = match choice.outcome() {
                    None if strength.is_some() => {
                        return Err(ModelError::invalid("strength", "a skip has no strength"));
                    }
                    None => None,
                    Some(outcome) => {
                        let lik = noise.answer_likelihood(
                            outcome,
                            *strength,
                            self.config.strength_threshold,
                        )?;
                        Some(self.update_on_pair(*pair, &lik, &noise, repeats.is_some()))
                    }
                };
                self.state.space.mark_asked(*pair);
                (log_evidence, repeats)
            }
            Response::Pick { shown, ranking } => {
                if !(3..=MAX_CHOICES).contains(&shown.len()) {
                    return Err(ModelError::invalid(
                        "question",
                        format!("a pick-one question shows 3 to {MAX_CHOICES} items"),
                    ));
                }
                self.check_items(shown)?;
                check_ranking(ranking, shown.len())?;
                let log_evidence = self.update_on_ranking(shown, ranking, &noise)?;
                self.state.space.mark_set_asked(shown);
                (log_evidence, None)
            }
            Response::Statement {
                dimension,
                prefer,
                strength,
            } => {
                if *dimension >= self.prior.dim() {
                    return Err(ModelError::invalid(
                        "dimension",
                        format!("the model has {} dimensions", self.prior.dim()),
                    ));
                }
                let lik = noise.answer_likelihood(
                    statement_outcome(*prefer),
                    *strength,
                    self.config.strength_threshold,
                )?;
                let x = statement_direction(self.prior.dim(), *dimension, noise.beta);
                (Some(self.update_along(&x, &lik, false)), None)
            }
        };
        self.state.history.push(AnswerRecord {
            response,
            log_evidence,
            lapse: noise.lapse,
            repeats,
        });
        Ok(log_evidence)
    }

    /// Updates the posterior on a pick or ranking of `shown`: one ADF step per pick on the items
    /// not yet placed (the last place of a full ranking follows and adds nothing). Returns the
    /// answer's ln Z, the sum of its picks' (`None` for a skip).
    fn update_on_ranking(
        &mut self,
        shown: &[usize],
        ranking: &[usize],
        noise: &NoiseModel,
    ) -> Result<Option<f64>, ModelError> {
        if ranking.is_empty() {
            return Ok(None);
        }
        let features: Vec<_> = shown.iter().map(|&i| self.bank.features(i)).collect();
        let mut log_evidence = 0.0;
        for (left, chosen) in kway::picks_of(&features, ranking) {
            let step = kway::choice_step(&self.state.posterior, &left, chosen, noise)?;
            for (u, piece) in &step.pieces {
                self.apply_step(u, *piece);
            }
            log_evidence += step.log_evidence;
        }
        Ok(Some(log_evidence))
    }

    /// The items of a question must be different items of the bank.
    fn check_items(&self, items: &[usize]) -> Result<(), ModelError> {
        let distinct = items
            .iter()
            .enumerate()
            .all(|(x, i)| !items[x + 1..].contains(i));
        if !distinct || items.iter().any(|&i| i >= self.bank.len()) {
            return Err(ModelError::invalid(
                "question",
                "a question must show different bank items",
            ));
        }
        Ok(())
    }

    /// Updates the posterior on an informative pair answer, or for a
    /// consistency probe only evaluates its predictive probability (evidence about the user, not
    /// λ). Returns ln Z.
    fn update_on_pair(
        &mut self,
        pair: Pair,
        lik: &PairLikelihood,
        noise: &NoiseModel,
        probe: bool,
    ) -> f64 {
        self.update_along(&self.bank.direction(pair, noise.beta), lik, probe)
    }

    /// [`Self::update_on_pair`] along the answer's direction x.
    fn update_along(&mut self, x: &DVector<f64>, lik: &PairLikelihood, probe: bool) -> f64 {
        let predictive = self.state.posterior.predictive(x);
        if probe {
            return log_predictive(predictive.mean, predictive.variance.max(0.0), lik);
        }
        let update = step_for(&predictive, lik, self.config.method);
        self.apply_step(&predictive.u, update.step);
        update.log_evidence
    }

    /// Applies a rank-one step μ += c₁u, Σ −= c₂uuᵀ to the posterior and the coreset's
    /// statistics that follow it.
    fn apply_step(&mut self, u: &nalgebra::DVector<f64>, step: RankOne) {
        self.state.posterior.apply_along(u, step);
        if let Some(core) = &mut self.state.core {
            core.update(
                self.state.space.items().coreset(self.bank.feature_matrix()),
                u,
                step,
            );
        }
    }
}
