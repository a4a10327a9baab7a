//! The JSON bodies of the API (requests are strict: unknown fields are rejected).

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::model::elicitation::{CheckRule, ProbeRule};
use crate::model::kway::AnswerFormat;
use crate::model::reliability::{LapsePrior, ReliabilityRule};
use crate::model::summary::{DimensionEnds, End, ProfileSummary};
use crate::model::{NoiseModel, StopReason, Strategy, Strength, UpdateMethod};
use crate::store::{GuardSpec, SessionStatus};

/// An identifier as the API accepts it: 1 to 256 characters, none of them a control character.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
pub struct Identifier(pub String);

/// Two item ids, as the API accepts a pair.
#[derive(utoipa::ToSchema)]
#[schema(value_type = Vec<Identifier>, min_items = 2, max_items = 2)]
pub struct ItemPair(pub [String; 2]);

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorSpec {
    pub mean: Vec<f64>,
    pub cov: Vec<Vec<f64>>,
}

impl PriorSpec {
    /// N(`mean`, `cov`) as the wire writes it (the covariance row by row).
    pub fn new(mean: &DVector<f64>, cov: &DMatrix<f64>) -> Self {
        Self {
            mean: mean.iter().copied().collect(),
            cov: cov
                .row_iter()
                .map(|r| r.iter().copied().collect())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub name: String,
    #[schema(min_items = 1, max_items = 64, value_type = Vec<Identifier>)]
    pub dimensions: Vec<String>,
    /// The labels of each dimension's low and high ends ("concise answers" … "detailed
    /// answers"), one entry per dimension, null for none: the profile's summary says which end a
    /// user prefers in those words.
    #[schema(max_items = 64)]
    pub ends: Option<Vec<Option<DimensionEnds>>>,
    pub prior: Option<PriorSpec>,
    pub noise: Option<NoiseModel>,
    pub update_method: Option<UpdateMethod>,
    pub strategy: Option<Strategy>,
    /// When a session's answers count as unreliable (default: leave-one-out log₂BF < 0 after
    /// 10 answers).
    pub reliability: Option<ReliabilityRule>,
    /// The over-personalisation guard of scoring (default: none).
    pub guard: Option<GuardSpec>,
    /// Consistency probes: every `every`-th question re-asks, sides swapped, an earlier question
    /// at least `min_gap` questions old (default: none). A probe's answer does not move the
    /// posterior; it counts towards the session's consistency and reliability figures.
    pub probes: Option<ProbeRule>,
    /// Attention checks: every `every`-th question (unless a probe is due) is the unasked pair
    /// whose answer the posterior predicts most surely (default: none). Random responders get
    /// these wrong half the time, attentive users almost never; the answer counts like any other.
    pub checks: Option<CheckRule>,
    /// Estimate each user's lapse rate ε from this Beta(a, b) prior and their answers, and use it
    /// in the likelihood instead of `noise.lapse` (default: the model's fixed rate).
    pub lapse_per_user: Option<LapsePrior>,
    /// Items a question shows (default 2): 2 asks pairs, 3 to 6 asks the user to pick one.
    #[schema(minimum = 2, maximum = 6)]
    pub choices: Option<usize>,
    /// What a question of three or more items asks for (default `pick`): `pick` (the best one),
    /// `rank` (all of them in order) or `{"top": m}` (the best m in order).
    pub answer: Option<AnswerFormat>,
    /// θ of graded answers (default 1): an answer "clearly" better means a utility margin beyond
    /// θ on the logit scale, "slightly" one within it (an ordered logit).
    #[schema(exclusive_minimum = 0.0, maximum = 20.0)]
    pub strength_threshold: Option<f64>,
    /// Items the `epig` strategy aims at unless a session names its own (e.g. the candidates a
    /// gateway will score).
    #[schema(max_items = 1000, value_type = Option<Vec<Identifier>>)]
    pub targets: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelView {
    pub name: String,
    pub dimensions: Vec<String>,
    /// The labels of each dimension's ends (null where it has none).
    pub ends: Vec<Option<DimensionEnds>>,
    pub prior: PriorSpec,
    pub noise: NoiseModel,
    pub update_method: UpdateMethod,
    pub strategy: Strategy,
    pub reliability: ReliabilityRule,
    pub guard: GuardSpec,
    pub probes: Option<ProbeRule>,
    pub checks: Option<CheckRule>,
    pub lapse_per_user: Option<LapsePrior>,
    /// Items a question shows by default.
    pub choices: usize,
    /// What a question of three or more items asks for by default.
    pub answer: AnswerFormat,
    pub strength_threshold: f64,
    pub targets: Vec<String>,
    pub bank_version: i64,
    pub created_ms: i64,
    /// The version of `prior` (1 when created; each refit or restore adds one).
    pub prior_version: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemIn {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub id: String,
    pub features: Vec<f64>,
    #[schema(value_type = Option<Identifier>)]
    pub group: Option<String>,
    pub payload: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertItems {
    pub items: Vec<ItemIn>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpsertResult {
    pub upserted: usize,
    pub bank_version: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemsPage {
    pub items: Vec<ItemIn>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub model: String,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub user_id: String,
    #[schema(minimum = 1, maximum = 200)]
    pub max_questions: Option<usize>,
    pub strategy: Option<Strategy>,
    /// The only items the session may ask about.
    #[schema(min_items = 2, value_type = Option<Vec<Identifier>>)]
    pub items: Option<Vec<String>>,
    /// Pairs of item ids the session must never ask (e.g. pairs held out for evaluation).
    #[schema(value_type = Option<Vec<ItemPair>>)]
    pub exclude_pairs: Option<Vec<[String; 2]>>,
    /// Consistency probes for this session, instead of the model's rule.
    pub probes: Option<ProbeRule>,
    /// Attention checks for this session, instead of the model's rule.
    pub checks: Option<CheckRule>,
    /// Items a question shows, instead of the model's: 2 asks pairs, 3 to 6 asks the user to
    /// pick one.
    #[schema(minimum = 2, maximum = 6)]
    pub choices: Option<usize>,
    /// What a question of three or more items asks for, instead of the model's: `pick`, `rank`
    /// or `{"top": m}`.
    pub answer: Option<AnswerFormat>,
    /// The items whose ranking the questions aim at (strategy `epig`), instead of the model's.
    #[schema(min_items = 2, max_items = 1000, value_type = Option<Vec<Identifier>>)]
    pub targets: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DimensionView {
    pub name: String,
    pub mean: f64,
    pub sd: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PosteriorView {
    pub dimensions: Vec<DimensionView>,
    pub mean: Vec<f64>,
    pub sd: Vec<f64>,
    /// The full covariance Σ (row by row); left out of answer responses unless asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cov: Option<Vec<Vec<f64>>>,
}

impl PosteriorView {
    /// Means, standard deviations and the covariance.
    pub fn new(names: &[String], mean: &DVector<f64>, cov: &DMatrix<f64>) -> Self {
        Self::summary(names, mean, cov).with_covariance(cov)
    }

    /// Adds the full covariance.
    pub fn with_covariance(mut self, cov: &DMatrix<f64>) -> Self {
        self.cov = Some(
            cov.row_iter()
                .map(|r| r.iter().copied().collect())
                .collect(),
        );
        self
    }

    /// Means and standard deviations only.
    pub fn summary(names: &[String], mean: &DVector<f64>, cov: &DMatrix<f64>) -> Self {
        let sd: Vec<f64> = cov.diagonal().iter().map(|v| v.max(0.0).sqrt()).collect();
        Self {
            dimensions: names
                .iter()
                .enumerate()
                .map(|(i, name)| DimensionView {
                    name: name.clone(),
                    mean: mean[i],
                    sd: sd[i],
                })
                .collect(),
            mean: mean.iter().copied().collect(),
            sd,
            cov: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiagnosticsView {
    /// Information acquired, ½log₂det(Σ₀Σ⁻¹).
    pub bits: f64,
    /// Evidence against random answering, Σ log₂(K·Zₜ); negative suggests random answers.
    pub log2_bayes_factor: f64,
    /// −log₂Zₜ per informative answer.
    pub surprise_bits: Vec<f64>,
    /// The same evidence with each answer judged by all the others, Σ log₂(K·p(yₜ | y₋ₜ)) (an EP
    /// fit's leave-one-out predictive): what the reliability rule compares with its threshold.
    pub leave_one_out_log2_bayes_factor: f64,
    /// This user's lapse rate (posterior mean from a Beta(1, 9) prior and the answers).
    pub lapse_rate: f64,
    /// Its posterior sd.
    pub lapse_sd: f64,
    /// Person-fit l_z over binary answers (strongly negative: less predictable than the model
    /// expects); null before two answers or with ties.
    pub person_fit_z: Option<f64>,
    /// Consistency probes answered, and how many contradicted the answer they repeat.
    pub probes: usize,
    pub probe_flips: usize,
    /// The model's reliability rule says these answers look random: scoring uses the population
    /// prior for this user unless the caller opts in.
    pub unreliable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemRef {
    pub id: String,
    pub payload: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuestionView {
    pub id: String,
    /// The items to choose from, in display order: two to compare ("a" first, "b" second), or
    /// three to six to pick one of.
    #[schema(min_items = 2, max_items = 6)]
    pub items: Vec<ItemRef>,
    /// What the user is asked for, and so what the answer carries.
    pub answer: QuestionAnswer,
    pub information_bits: f64,
}

/// What a question asks the user for.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuestionAnswer {
    pub kind: AnswerKind,
    /// For `rank`: how many items the answer's `ranking` lists, best first (all of them, or the
    /// top m; the rest stay unordered).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 6)]
    pub top: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnswerKind {
    /// Which of the two is better: `choice` a, b, tie or skip (optionally with a `strength`).
    Pair,
    /// Which one is best: `choice` an item id, or skip.
    Pick,
    /// Their order: `ranking`, item ids best first (or `choice` skip).
    Rank,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: String,
    pub model: String,
    pub user_id: String,
    pub status: SessionStatus,
    pub version: i64,
    pub answers: i64,
    pub max_questions: usize,
    pub strategy: Strategy,
    /// Items a question shows.
    pub choices: usize,
    /// What a question of three or more items asks for.
    pub answer: AnswerFormat,
    /// The session's own target items, if it named any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    pub stop_reason: Option<StopReason>,
    pub posterior: PosteriorView,
    /// What the posterior says about each dimension, in words.
    pub summary: ProfileSummary,
    /// The user's statements on dimensions, in the order made (part of the answer log).
    pub statements: Vec<StatementView>,
    pub diagnostics: DiagnosticsView,
    pub question: Option<QuestionView>,
    /// The version of the model's prior the session started from (it keeps it).
    pub prior_version: i64,
}

/// The response to an answer: what the frontend needs for the next step. The full session
/// (diagnostics, per-answer surprise) is `GET /v1/sessions/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AnswerView {
    /// The session id.
    pub id: String,
    pub status: SessionStatus,
    /// The session version after this answer (also the ETag).
    pub version: i64,
    /// Entries in the answer log so far: questions answered (skips included) and statements.
    pub answers: i64,
    pub max_questions: usize,
    /// Information acquired so far, ½log₂det(Σ₀Σ⁻¹) bits.
    pub bits: f64,
    pub stop_reason: Option<StopReason>,
    /// Per-dimension mean and sd (the covariance with `?covariance=true`).
    pub posterior: PosteriorView,
    /// The next question; absent once the session stops asking.
    pub question: Option<QuestionView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionCreated {
    /// Lets a browser drive this one session.
    pub token: String,
    #[serde(flatten)]
    pub session: SessionView,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CurrentQuestion {
    pub session_id: String,
    pub status: SessionStatus,
    pub question: Option<QuestionView>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerIn {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub question_id: String,
    /// For a pair question: a, b, tie (models with ties), skip, or the id of one of its two
    /// items. For a question of three or more items: the id of the one picked, or skip. A
    /// question that asks for a ranking takes `ranking` instead (or `choice` skip).
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub choice: Option<String>,
    /// For a question that asks for a ranking (`answer.kind` rank): the ids of its items in
    /// order of preference, best first, as many as `answer.top` says.
    #[schema(min_items = 1, max_items = 6, value_type = Option<Vec<Identifier>>)]
    pub ranking: Option<Vec<String>>,
    /// How strongly a pair answer for a or b prefers its item (graded answers; none: plain).
    pub strength: Option<Strength>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProfileView {
    pub user_id: String,
    pub model: String,
    pub session_id: String,
    pub status: SessionStatus,
    pub version: i64,
    pub answers: i64,
    pub updated_ms: i64,
    /// The session's answers look random (see the session's diagnostics).
    pub unreliable: bool,
    /// The version of the model's prior the profile's session started from.
    pub prior_version: i64,
    pub posterior: PosteriorView,
    /// What the posterior says about each dimension, in words.
    pub summary: ProfileSummary,
}

/// The user's own word on one dimension ("that's not me"): taken as evidence with the model's
/// noise, like a graded answer to a comparison of two items one feature unit apart along that
/// dimension alone.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatementIn {
    /// The dimension's name.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub dimension: String,
    /// The end the user prefers.
    pub prefer: End,
    /// How strongly (graded like a pair answer; none: plain).
    pub strength: Option<Strength>,
}

/// A statement in a session's log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementView {
    pub dimension: String,
    pub prefer: End,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strength: Option<Strength>,
}

/// A candidate to score as the wire carries it; [`CandidateIn`] is its documented shape (decoding
/// into this struct keeps the error messages precise: which field of which candidate is wrong).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    pub id: Option<String>,
    pub features: Option<Vec<f64>>,
    pub item_id: Option<String>,
}

/// A candidate to score: an item of the model's bank by its id, or any response by its features.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum CandidateIn {
    Bank(BankCandidate),
    Features(FeatureCandidate),
}

/// A candidate from the model's bank.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BankCandidate {
    #[schema(value_type = Identifier)]
    pub item_id: String,
}

/// A candidate given by its features φ(y), one per dimension of the model.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureCandidate {
    #[schema(value_type = Identifier)]
    pub id: String,
    #[schema(min_items = 1, max_items = 64)]
    pub features: Vec<f64>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub model: String,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub user_id: String,
    #[schema(min_items = 1, max_items = 10000, value_type = Vec<CandidateIn>)]
    pub candidates: Vec<Candidate>,
    /// Also return P(i ≻ j) for every pair (at most 100 candidates).
    #[serde(default)]
    pub pairwise: bool,
    /// Score with the user's profile even when its answers look random.
    #[serde(default)]
    pub allow_unreliable: bool,
    /// A divergence budget τ (bits) for this request; the model's own budget, if smaller, wins.
    #[schema(minimum = 0.0, maximum = 1e6)]
    pub max_divergence_bits: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScoreView {
    pub id: String,
    pub mean: f64,
    pub sd: f64,
    pub rank: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProfileSource {
    /// The user's own posterior.
    User,
    /// The user has no profile: the model's population prior.
    Population,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProfileRef {
    /// Whose belief the scores used: the user's own, or the population prior (the user has no
    /// profile, or it is unreliable and the request did not opt in).
    pub source: ProfileSource,
    pub version: i64,
    pub answers: i64,
    pub status: Option<SessionStatus>,
    /// The user's profile exists and its answers look random.
    pub unreliable: bool,
}

/// What the over-personalisation guard did to a user's belief before scoring.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GuardView {
    /// The budget τ that applied, in bits (the smaller of the model's and the request's).
    pub max_divergence_bits: Option<f64>,
    /// Blend weight of the user's posterior: q_α ∝ p₀^(1−α)·q_u^α (1 = the user's own).
    pub alpha: f64,
    /// KL(q_α ‖ p₀) over the personalised dimensions, in bits.
    pub divergence_bits: f64,
    /// Dimensions scored with the population's coefficient.
    pub fixed_dimensions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScoreResponse {
    pub model: String,
    pub user_id: String,
    pub scores: Vec<ScoreView>,
    pub profile: ProfileRef,
    /// Present when the user's own belief was used and the model or request set a guard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardView>,
    /// With `"pairwise": true`: row i, column j is P(candidate i ≻ candidate j) under the user's
    /// answer model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairwise: Option<Vec<Vec<f64>>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelErased {
    pub model: String,
    /// Rows removed: the model, its items, sessions, answers and profiles.
    pub rows_removed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Erased {
    pub user_id: String,
    pub rows_removed: u64,
}
