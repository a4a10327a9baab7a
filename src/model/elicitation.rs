//! One user's elicitation run: the posterior, the bank statistics, the questions asked, the
//! stopping rule and the diagnostics, tied together. Storage and transport live elsewhere; this
//! is what they load, drive and save.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::ep::{self, EpOptions};
use super::likelihood::{Choice, NoiseModel, PairLikelihood};
use super::posterior::Posterior;
use super::reliability::{self, AnsweredWith, LapsePrior, Reliability, ReliabilityRule};
use super::select::{
    self, Bank, BankStats, CandidateSpace, Pair, Selected, SelectionOptions, Strategy,
};
use super::update::{UpdateMethod, UpdateOutcome};

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
        sequential: &[AnsweredWith],
        leave_one_out: &[AnsweredWith],
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
            reliability: reliability::assess(leave_one_out, outcomes, lapse_prior, rule),
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
        for record in &history {
            space.mark_asked(record.pair);
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

    /// The informative answers so far, each judged by all the others: its leave-one-out
    /// predictive probability under an EP fit of the whole run ([`ep::leave_one_out`]).
    fn answered_leave_one_out(&self) -> Vec<AnsweredWith> {
        let noise = self.noise();
        let (records, observations): (Vec<&AnswerRecord>, Vec<_>) = self
            .state
            .history
            .iter()
            .filter_map(|r| {
                let lik = noise.likelihood(r.choice.outcome()?).ok()?;
                Some((r, (self.bank.direction(r.pair, noise.beta), lik)))
            })
            .unzip();
        let (posterior, sites) = ep::refine(&self.prior, &observations, RELIABILITY_EP);
        ep::leave_one_out(&posterior, &observations, &sites)
            .into_iter()
            .zip(records)
            .map(|(log_evidence, r)| AnsweredWith {
                log_evidence,
                lapse: r.lapse,
            })
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
        let outcome = match choice.outcome() {
            None => None,
            Some(outcome) => {
                let lik = noise.likelihood(outcome)?;
                let x = self.bank.direction(pair, noise.beta);
                let state = &mut self.state;
                let predictive = state.posterior.predictive(&x);
                let update = state
                    .posterior
                    .update_along(&predictive, &lik, self.config.method);
                state.stats.update(self.bank, &predictive.u, update.step);
                Some(update)
            }
        };
        self.state.space.mark_asked(pair);
        self.state.history.push(AnswerRecord {
            pair,
            choice,
            log_evidence: outcome.map(|o| o.log_evidence),
            lapse: noise.lapse,
        });
        Ok(outcome)
    }

    /// The answer-quality figures alone, from the answers' leave-one-out predictive
    /// probabilities (an EP fit: O(answers·J²) a sweep).
    pub fn reliability(&self) -> Reliability {
        reliability::assess(
            &self.answered_leave_one_out(),
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
            &self.answered(),
            &self.answered_leave_one_out(),
            self.config
                .adaptive_lapse
                .unwrap_or(self.config.lapse_prior),
            &self.config.reliability,
        )
    }

    /// The EP-refined posterior over this run's informative answers (order-independent, closer to
    /// the exact posterior than the streaming one).
    pub fn refined(&self, options: EpOptions) -> Posterior {
        let noise = self.noise();
        let observations: Vec<(nalgebra::DVector<f64>, PairLikelihood)> = self
            .state
            .history
            .iter()
            .filter_map(|r| {
                let outcome = r.choice.outcome()?;
                let lik = noise.likelihood(outcome).ok()?;
                Some((self.bank.direction(r.pair, noise.beta), lik))
            })
            .collect();
        ep::refine(&self.prior, &observations, options).0
    }
}
