//! One user's elicitation run: the posterior, the bank statistics, the questions asked, the
//! stopping rule and the diagnostics, tied together. Storage and transport live elsewhere; this
//! is what they load, drive and save.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::ep::{self, EpOptions};
use super::likelihood::{Choice, NoiseModel, PairLikelihood};
use super::posterior::Posterior;
use super::posterior::RankOne;
use super::reliability::{
    self, AnsweredWith, Consistency, LapsePrior, Reliability, ReliabilityRule,
};
use super::select::{
    self, Bank, BankStats, CandidateSpace, Pair, Selected, SelectionOptions, Strategy,
};
use super::update::{UpdateMethod, UpdateOutcome, log_predictive};

/// When to stop asking.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StoppingRule {
    /// The question budget (skips count: they cost the user time too).
    pub max_questions: usize,
    /// Stop when the best question is expected to yield fewer bits than this.
    pub min_information_bits: f64,
    /// Stop when every coefficient's posterior sd is at most this.
    pub target_sd: Option<f64>,
}

impl Default for StoppingRule {
    fn default() -> Self {
        Self {
            max_questions: 15,
            min_information_bits: 0.02,
            target_sd: None,
        }
    }
}

/// Why a run stopped asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The question budget is spent.
    Budget,
    /// The best question carries less information than the threshold.
    Information,
    /// The target posterior uncertainty is reached.
    Uncertainty,
    /// Every allowed pair has been asked.
    Exhausted,
    /// The session was finished on request.
    Finished,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Budget => "budget",
            StopReason::Information => "information",
            StopReason::Uncertainty => "uncertainty",
            StopReason::Exhausted => "exhausted",
            StopReason::Finished => "finished",
        }
    }
}

/// Everything that parameterises a run besides the bank and the prior.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ElicitationConfig {
    /// The answer model; its lapse rate is the one assumed unless `adaptive_lapse` is set.
    pub noise: NoiseModel,
    pub method: UpdateMethod,
    pub strategy: Strategy,
    pub stopping: StoppingRule,
    pub selection: SelectionOptions,
    /// Estimate this user's lapse rate from their answers (from this prior) and use the estimate
    /// in the likelihood, instead of the model's fixed rate.
    pub adaptive_lapse: Option<LapsePrior>,
    /// The prior of the lapse rate reported in the diagnostics (and used when adaptive).
    pub lapse_prior: LapsePrior,
    /// When the diagnostics flag a run as unreliable.
    pub reliability: ReliabilityRule,
    /// Consistency probes: re-ask earlier pairs with the sides swapped (none by default).
    pub probes: Option<ProbeRule>,
}

/// When to re-ask an earlier question as a consistency probe (GUIDE §6).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeRule {
    /// Every `every`-th question is a probe (when an earlier answer is eligible).
    #[schema(minimum = 2, maximum = 1000)]
    pub every: usize,
    /// A probe repeats an answer given at least this many questions earlier.
    #[schema(minimum = 1, maximum = 1000)]
    pub min_gap: usize,
}

impl Default for ProbeRule {
    fn default() -> Self {
        Self {
            every: 5,
            min_gap: 5,
        }
    }
}

/// One answered question.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnswerRecord {
    pub pair: Pair,
    pub choice: Choice,
    /// log p(answer | earlier answers) for informative answers.
    pub log_evidence: Option<f64>,
    /// The lapse rate of the likelihood that this answer updated with.
    pub lapse: f64,
    /// For a consistency probe, the index in the history of the answer it repeats. A probe does
    /// not update the posterior (a repeat is not independent evidence: people remember what they
    /// said); its `log_evidence` is its predictive probability, and its agreement with the
    /// answer it repeats is counted. Set by the run, whatever a caller puts here.
    pub repeats: Option<usize>,
}

/// Index of the earlier answer that an answer to `pair` would repeat (see
/// [`reliability::repeat_of`]).
fn repeated(history: &[AnswerRecord], pair: Pair) -> Option<usize> {
    reliability::repeat_of(
        history
            .iter()
            .map(|r| (r.pair.a, r.pair.b, r.choice, r.repeats)),
        &pair.a,
        &pair.b,
    )
}

impl AnswerRecord {
    /// The answer as the quality figures need it; `None` for a skip.
    pub fn answered_with(&self) -> Option<AnsweredWith> {
        Some(AnsweredWith {
            log_evidence: self.log_evidence?,
            lapse: self.lapse,
        })
    }
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    Ask(Selected),
    Stop(StopReason),
}

/// Session-level answer-quality and progress figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostics {
    /// Information acquired, ½log₂det(Σ₀Σ⁻¹) bits.
    pub bits: f64,
    /// Evidence against random answering from the sequential predictive, log₂BF = Σₜ log₂(K·Zₜ)
    /// with K outcomes (2, or 3 with ties): positive means the answers were more predictable
    /// than coin flips as they came.
    pub log2_bayes_factor: f64,
    /// Surprise of each informative answer, −log₂Zₜ bits.
    pub surprise_bits: Vec<f64>,
    /// The user's lapse rate, person fit and the verdict, each answer judged by all the others.
    pub reliability: Reliability,
}

impl Diagnostics {
    /// The diagnostics of a posterior reached from `prior` through informative answers with
    /// sequential predictive probabilities `sequential` and leave-one-out ones `leave_one_out`,
    /// under a model with `outcomes` possible answers.
    pub fn compute(
        (prior, posterior): (&Posterior, &Posterior),
        outcomes: usize,
        (sequential, leave_one_out): (&[AnsweredWith], &[AnsweredWith]),
        consistency: Consistency,
        lapse_prior: LapsePrior,
        rule: &ReliabilityRule,
    ) -> Self {
        let surprise_bits: Vec<f64> = sequential
            .iter()
            .map(|a| -a.log_evidence / std::f64::consts::LN_2)
            .collect();
        let k = (outcomes as f64).log2();
        Self {
            bits: posterior.bits_since(prior),
            log2_bayes_factor: surprise_bits.iter().map(|s| k - s).sum(),
            surprise_bits,
            reliability: reliability::assess(
                leave_one_out,
                consistency,
                outcomes,
                lapse_prior,
                rule,
            ),
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

/// What a run learned from its answers so far, apart from the bank, prior and configuration: the
/// posterior, the bank statistics that follow it, the pairs asked and the history. A service keeps
/// it between requests ([`Elicitation::into_state`] / [`Elicitation::from_state`]) so that an
/// answer costs O(NJ) instead of a rebuild.
#[derive(Debug, Clone)]
pub struct RunState {
    posterior: Posterior,
    stats: BankStats,
    space: CandidateSpace,
    history: Vec<AnswerRecord>,
}

impl RunState {
    pub fn posterior(&self) -> &Posterior {
        &self.posterior
    }

    pub fn history(&self) -> &[AnswerRecord] {
        &self.history
    }

    /// Approximate heap size in bytes (the bank statistics dominate: N(J + 2) floats).
    pub fn size_bytes(&self) -> usize {
        let floats = self.stats.len_floats() + self.posterior.dim() * (self.posterior.dim() + 1);
        floats * std::mem::size_of::<f64>()
            + self.space.size_bytes()
            + self.history.len() * std::mem::size_of::<AnswerRecord>()
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

    /// A run continued from a stored posterior and its answer history (no replay: O(NJ²)).
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
            history[i].repeats = repeated(&history[..i], history[i].pair);
            space.mark_asked(history[i].pair);
        }
        let stats = BankStats::new(bank, &posterior);
        Ok(Self {
            bank,
            config,
            prior,
            state: RunState {
                posterior,
                stats,
                space,
                history,
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
        if state.stats.items() != bank.len() || state.posterior.dim() != prior.dim() {
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
        answers: &[(Pair, Choice)],
    ) -> Result<Self, ModelError> {
        let mut run = Self::new(bank, prior, config, allowed)?;
        for &(pair, choice) in answers {
            run.answer(pair, choice)?;
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

    /// The answer model in force now: the model's, with this user's estimated lapse rate when the
    /// run adapts it.
    pub fn noise(&self) -> NoiseModel {
        let mut noise = self.config.noise;
        if let Some(prior) = self.config.adaptive_lapse {
            noise.lapse =
                reliability::lapse_estimate(&self.answered(), noise.outcomes().len(), prior);
        }
        noise
    }

    /// The informative answers so far, each with its sequential predictive probability.
    fn answered(&self) -> Vec<AnsweredWith> {
        self.state
            .history
            .iter()
            .filter_map(AnswerRecord::answered_with)
            .collect()
    }

    /// The informative answers so far, each judged by all the others: a question's answer by
    /// its leave-one-out predictive under an EP fit of the run's other answers
    /// ([`ep::leave_one_out`]), a probe's by its predictive given everything before it.
    fn answered_leave_one_out(&self) -> Vec<AnsweredWith> {
        let (records, observations): (Vec<&AnswerRecord>, Vec<_>) = self
            .state
            .history
            .iter()
            .filter_map(|r| Some((r, self.observation(r)?)))
            .unzip();
        let (posterior, sites) = ep::refine(&self.prior, &observations, RELIABILITY_EP);
        let probes = self
            .state
            .history
            .iter()
            .filter(|r| r.repeats.is_some())
            .filter_map(AnswerRecord::answered_with);
        ep::leave_one_out(&posterior, &observations, &sites)
            .into_iter()
            .zip(records)
            .map(|(log_evidence, r)| AnsweredWith {
                log_evidence,
                lapse: r.lapse,
            })
            .chain(probes)
            .collect()
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
        if self.state.history.len() >= rule.max_questions {
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
        let chosen = select::select(
            self.bank,
            &self.state.stats,
            &self.state.space,
            &self.noise(),
            self.config.strategy,
            &self.config.selection,
            rng,
        );
        match chosen {
            None => Next::Stop(StopReason::Exhausted),
            Some(s)
                if self.config.strategy != Strategy::Random
                    && s.score_bits < rule.min_information_bits =>
            {
                Next::Stop(StopReason::Information)
            }
            Some(s) => Next::Ask(s),
        }
    }

    /// The earlier question to re-ask now, sides swapped, if the probe rule says this question is
    /// a probe. Among the informative answers not yet probed and at least `min_gap` questions old,
    /// the one the current posterior most expects to be repeated: a consistent user then repeats
    /// it almost surely, while a random one flips half the time, so each probe says as much as a
    /// question can about which of the two the user is.
    fn probe_due(&self) -> Option<Pair> {
        let rule = self.config.probes?;
        let history = &self.state.history;
        let number = history.len() + 1;
        if rule.every < 2 || !number.is_multiple_of(rule.every) {
            return None;
        }
        let probed: Vec<usize> = history.iter().filter_map(|r| r.repeats).collect();
        let noise = self.noise();
        let expected_repeat = |r: &AnswerRecord| -> Option<f64> {
            let lik = noise.likelihood(r.choice.outcome()?).ok()?;
            let predictive = self
                .state
                .posterior
                .predictive(&self.bank.direction(r.pair, noise.beta));
            Some(log_predictive(
                predictive.mean,
                predictive.variance.max(0.0),
                &lik,
            ))
        };
        history
            .iter()
            .enumerate()
            .take(history.len().saturating_sub(rule.min_gap))
            .filter(|(i, r)| {
                r.repeats.is_none()
                    && matches!(r.choice, Choice::A | Choice::B)
                    && !probed.contains(i)
            })
            .filter_map(|(_, r)| Some((expected_repeat(r)?, r)))
            .max_by(|x, y| x.0.total_cmp(&y.0))
            .map(|(_, r)| Pair {
                a: r.pair.b,
                b: r.pair.a,
            })
    }

    /// Consistency probes answered so far and how many of them contradicted the answer they
    /// repeat.
    pub fn consistency(&self) -> Consistency {
        let history = &self.state.history;
        let shown = |r: &AnswerRecord| (r.pair.a, r.pair.b, r.choice);
        history
            .iter()
            .filter_map(|probe| {
                let (a, b, c) = shown(&history[probe.repeats?]);
                let (pa, pb, pc) = shown(probe);
                reliability::flipped((&a, &b, c), (&pa, &pb, pc))
            })
            .fold(Consistency::default(), |acc, flip| Consistency {
                probes: acc.probes + 1,
                flips: acc.flips + usize::from(flip),
            })
    }

    /// Applies an answer to `pair` (a skip only marks the pair as asked). Returns the update for
    /// informative answers.
    pub fn answer(
        &mut self,
        pair: Pair,
        choice: Choice,
    ) -> Result<Option<UpdateOutcome>, ModelError> {
        if pair.a >= self.bank.len() || pair.b >= self.bank.len() || pair.a == pair.b {
            return Err(ModelError::invalid(
                "question",
                "the pair must name two different bank items",
            ));
        }
        let noise = self.noise();
        let repeats = repeated(&self.state.history, pair);
        let outcome = match choice.outcome() {
            None => None,
            Some(outcome) => {
                let lik = noise.likelihood(outcome)?;
                let x = self.bank.direction(pair, noise.beta);
                let state = &mut self.state;
                let predictive = state.posterior.predictive(&x);
                if repeats.is_some() {
                    // A probe: its predictive probability is evidence about the user, not λ.
                    Some(UpdateOutcome {
                        step: RankOne { c1: 0.0, c2: 0.0 },
                        log_evidence: log_predictive(
                            predictive.mean,
                            predictive.variance.max(0.0),
                            &lik,
                        ),
                        det_ratio: 1.0,
                    })
                } else {
                    let update =
                        state
                            .posterior
                            .update_along(&predictive, &lik, self.config.method);
                    state.stats.update(self.bank, &predictive.u, update.step);
                    Some(update)
                }
            }
        };
        self.state.space.mark_asked(pair);
        self.state.history.push(AnswerRecord {
            pair,
            choice,
            log_evidence: outcome.map(|o| o.log_evidence),
            lapse: noise.lapse,
            repeats,
        });
        Ok(outcome)
    }

    /// The reliability rule's verdict. Before the rule's minimum number of answers it is always
    /// `false`, so the EP fit behind it is skipped there (this runs on every answer).
    pub fn is_unreliable(&self) -> bool {
        let informative = self
            .state
            .history
            .iter()
            .filter(|r| r.log_evidence.is_some())
            .count();
        informative >= self.config.reliability.min_answers && self.reliability().unreliable
    }

    /// The answer-quality figures alone, from the answers' leave-one-out predictive
    /// probabilities (an EP fit: O(answers·J²) a sweep).
    pub fn reliability(&self) -> Reliability {
        reliability::assess(
            &self.answered_leave_one_out(),
            self.consistency(),
            self.config.noise.outcomes().len(),
            self.config
                .adaptive_lapse
                .unwrap_or(self.config.lapse_prior),
            &self.config.reliability,
        )
    }

    /// Bits acquired, the evidence against random answering, per-answer surprise and the
    /// answer-quality figures.
    pub fn diagnostics(&self) -> Diagnostics {
        Diagnostics::compute(
            (&self.prior, &self.state.posterior),
            self.config.noise.outcomes().len(),
            (&self.answered(), &self.answered_leave_one_out()),
            self.consistency(),
            self.config
                .adaptive_lapse
                .unwrap_or(self.config.lapse_prior),
            &self.config.reliability,
        )
    }

    /// The EP-refined posterior over this run's informative answers (order-independent, closer to
    /// the exact posterior than the streaming one).
    pub fn refined(&self, options: EpOptions) -> Posterior {
        let observations: Vec<_> = self
            .state
            .history
            .iter()
            .filter_map(|r| self.observation(r))
            .collect();
        ep::refine(&self.prior, &observations, options).0
    }

    /// An answer as evidence about λ: its direction and its likelihood with the lapse rate it
    /// was applied with; `None` for skips and consistency probes.
    fn observation(&self, r: &AnswerRecord) -> Option<(nalgebra::DVector<f64>, PairLikelihood)> {
        if r.repeats.is_some() {
            return None;
        }
        let noise = NoiseModel {
            lapse: r.lapse,
            ..self.config.noise
        };
        let lik = noise.likelihood(r.choice.outcome()?).ok()?;
        Some((self.bank.direction(r.pair, noise.beta), lik))
    }
}
