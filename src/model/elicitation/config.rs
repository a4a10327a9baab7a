//! How a run is configured: its answer model, strategy, stopping rule, probes and checks.

use super::*;

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

/// The strength threshold θ of graded answers when none is configured: "clearly" then means a
/// utility margin beyond θ = 1 on the logit scale.
pub const DEFAULT_STRENGTH_THRESHOLD: f64 = 1.0;

/// Everything that parameterises a run besides the bank and the prior.
#[derive(Debug, Clone, Copy, PartialEq)]
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
    /// Attention checks: ask the pair whose answer the posterior is surest of (none by default).
    pub checks: Option<CheckRule>,
    /// Items a question shows: 2 asks pairs; 3 to [`MAX_CHOICES`] asks "pick one of k" sets
    /// ([`kway::select_set`]); probes are always pairs.
    pub choices: usize,
    /// θ of graded pair answers ([`NoiseModel::graded_likelihood`]).
    pub strength_threshold: f64,
}

impl Default for ElicitationConfig {
    fn default() -> Self {
        Self {
            noise: NoiseModel::default(),
            method: UpdateMethod::default(),
            strategy: Strategy::default(),
            stopping: StoppingRule::default(),
            selection: SelectionOptions::default(),
            adaptive_lapse: None,
            lapse_prior: LapsePrior::default(),
            reliability: ReliabilityRule::default(),
            probes: None,
            checks: None,
            choices: 2,
            strength_threshold: DEFAULT_STRENGTH_THRESHOLD,
        }
    }
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

/// When to ask an attention check (GUIDE §6): every `every`-th question (unless a consistency
/// probe is due) is the unasked pair whose answer the posterior predicts most surely. An attentive
/// user answers it as predicted almost always, a random responder half the time, so each check
/// says much about which of the two the user is, and, unlike a probe, it is independent evidence:
/// it updates the posterior like any answer. Adaptive questions are close calls by design, which
/// is why random answers to them hardly stand out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRule {
    #[schema(minimum = 2, maximum = 1000)]
    pub every: usize,
}
