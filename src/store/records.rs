//! The records the store keeps: models and their banks and priors, sessions and their answer
//! logs, profiles, API keys and the audit trail.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::model::elicitation::{CheckRule, ProbeRule};
use crate::model::kway::AnswerFormat;
use crate::model::reliability::{LapsePrior, ReliabilityRule};
use crate::model::summary::{DimensionEnds, End};
use crate::model::{Choice, NoiseModel, StopReason, Strategy, Strength, UpdateMethod};

/// A model: a named, versioned reward basis with its prior and answer-noise parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRecord {
    pub name: String,
    pub spec: ModelSpec,
    pub prior_mean: DVector<f64>,
    pub prior_cov: DMatrix<f64>,
    /// Bumped by every change to the model's items or prior (cache key of the in-memory bank).
    pub bank_version: i64,
    pub created_ms: i64,
    /// The version of `prior_mean`/`prior_cov` (1 when created; each refit or restore adds one).
    pub prior_version: i64,
}

/// One version of a model's population prior.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorRecord {
    pub version: i64,
    pub mean: DVector<f64>,
    pub cov: DMatrix<f64>,
    /// Finished sessions it was fitted to (0: given by the model's creator, or restored).
    pub users: i64,
    pub created_ms: i64,
}

/// A finished session's answer log, as a refit of the population prior reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedLog {
    pub user_id: String,
    pub session_id: String,
    pub answers: Vec<AnswerRow>,
}

/// The JSON-stored part of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub dimensions: Vec<String>,
    /// The labels of each dimension's low and high ends, one entry per dimension (`None`: plain
    /// name); empty for models without labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ends: Vec<Option<DimensionEnds>>,
    pub noise: NoiseModel,
    pub update_method: UpdateMethod,
    pub strategy: Strategy,
    /// When a session's answers count as unreliable (models stored before it have the default).
    #[serde(default)]
    pub reliability: ReliabilityRule,
    /// How far personalised scores may move from the population.
    #[serde(default)]
    pub guard: GuardSpec,
    /// Consistency probes: re-ask earlier questions with the sides swapped (none by default).
    #[serde(default)]
    pub probes: Option<ProbeRule>,
    /// Attention checks: ask the pair the posterior is surest of (none by default).
    #[serde(default)]
    pub checks: Option<CheckRule>,
    /// Estimate each user's lapse rate from this prior and use it in the likelihood instead of
    /// `noise.lapse` (none by default: the model's fixed rate).
    #[serde(default)]
    pub lapse_per_user: Option<LapsePrior>,
    /// Items a question shows by default (2: pairs; up to six: pick one).
    #[serde(default = "pairs")]
    pub choices: usize,
    /// What a question of three or more items asks for by default (stored only when not a pick).
    #[serde(default, skip_serializing_if = "is_pick")]
    pub answer: AnswerFormat,
    /// θ of graded answers: "clearly" means a utility margin beyond θ on the logit scale.
    #[serde(default = "default_strength_threshold")]
    pub strength_threshold: f64,
    /// The items the `epig` strategy aims at by default (e.g. the candidates a gateway scores).
    #[serde(default)]
    pub targets: Vec<String>,
}

fn default_strength_threshold() -> f64 {
    crate::model::elicitation::DEFAULT_STRENGTH_THRESHOLD
}

/// The over-personalisation guard of a model, by dimension name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GuardSpec {
    /// τ: the largest divergence KL(q ‖ p₀) of a scoring distribution from the population prior,
    /// in bits; none means no budget.
    #[schema(minimum = 0.0)]
    pub max_divergence_bits: Option<f64>,
    /// Dimensions that are never personalised (e.g. safety, factuality): scoring always uses the
    /// population's coefficient for them.
    #[schema(max_items = 64)]
    pub fixed_dimensions: Vec<String>,
}

/// A bank item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRecord {
    pub id: String,
    pub features: DVector<f64>,
    pub group: Option<String>,
    pub payload: Option<serde_json::Value>,
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Asking questions.
    Active,
    /// The stopping rule ended the questions; the session can still be finished.
    Completed,
    /// Finished: its refined posterior is the user's profile.
    Finished,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Completed => "completed",
            SessionStatus::Finished => "finished",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "completed" => Some(Self::Completed),
            "finished" => Some(Self::Finished),
            _ => None,
        }
    }
}

/// Per-session settings fixed at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSettings {
    pub max_questions: usize,
    pub strategy: Strategy,
    /// Item ids the session may ask about (`None`: the whole bank).
    pub items: Option<Vec<String>>,
    /// Pairs of item ids never to ask.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_pairs: Vec<[String; 2]>,
    /// Consistency probes for this session, instead of the model's rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<ProbeRule>,
    /// Attention checks for this session, instead of the model's rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<CheckRule>,
    /// Items a question shows (2: pairs; up to six: pick one).
    #[serde(default = "pairs", skip_serializing_if = "is_pairs")]
    pub choices: usize,
    /// What a question of three or more items asks for (one pick, a ranking, the top m).
    #[serde(default, skip_serializing_if = "is_pick")]
    pub answer: AnswerFormat,
    /// The items whose ranking the session's questions aim at (the `epig` strategy); `None`:
    /// the model's targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
}

fn pairs() -> usize {
    2
}

fn is_pairs(choices: &usize) -> bool {
    *choices == 2
}

impl ModelSpec {
    /// The index of the dimension named `name`.
    pub fn dimension_index(&self, name: &str) -> Option<usize> {
        self.dimensions.iter().position(|d| d == name)
    }

    /// The dimensions with their ends' labels, as the profile's summary names them.
    pub fn labelled_dimensions(&self) -> Vec<crate::model::summary::Dimension<'_>> {
        self.dimensions
            .iter()
            .enumerate()
            .map(|(d, name)| crate::model::summary::Dimension {
                name,
                ends: self.ends.get(d).and_then(Option::as_ref),
            })
            .collect()
    }
}

fn is_pick(answer: &AnswerFormat) -> bool {
    *answer == AnswerFormat::Pick
}

impl QuestionRecord {
    /// Every item shown, in display order.
    pub fn items(&self) -> impl Iterator<Item = &String> {
        [&self.item_a, &self.item_b]
            .into_iter()
            .chain(&self.more_items)
    }
}

/// The question currently put to the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionRecord {
    /// The sequence number the answer will get, as a string (the natural idempotency key).
    pub id: String,
    pub item_a: String,
    pub item_b: String,
    /// The items shown after the first two, for a question of three or more ("pick one").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_items: Vec<String>,
    /// Expected information gain of this question when chosen (bits).
    pub information_bits: f64,
}

/// A session row.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: String,
    pub model: String,
    pub token_hash: String,
    pub status: SessionStatus,
    pub stop_reason: Option<StopReason>,
    pub settings: SessionSettings,
    pub mean: DVector<f64>,
    pub cov: DMatrix<f64>,
    pub version: i64,
    pub answers: i64,
    pub question: Option<QuestionRecord>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The version of the model's prior the session started from (and replays under).
    pub prior_version: i64,
}

/// What an answer said, as the log keeps it.
#[derive(Debug, Clone, PartialEq)]
pub enum LoggedAnswer {
    /// To a pair question (`item_a`, `item_b`): a, b, tie or skip, optionally how strongly.
    Pair {
        choice: Choice,
        strength: Option<Strength>,
    },
    /// To a question of three or more items: all of them in display order (the first two are
    /// also `item_a` and `item_b`) and the indices of those the user ordered, best first (one
    /// for a pick, several for a ranking, none for a skip).
    Pick {
        items: Vec<String>,
        ranking: Vec<usize>,
    },
    /// A statement on one dimension (`item_a` holds its name, `item_b` is empty): the end
    /// preferred, optionally how strongly.
    Statement {
        prefer: End,
        strength: Option<Strength>,
    },
}

/// One row of the answer log.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRow {
    pub seq: i64,
    /// The first two items shown.
    pub item_a: String,
    pub item_b: String,
    pub answer: LoggedAnswer,
    pub log_evidence: Option<f64>,
    /// At the time of the answer: x = β(φa − φb) for a pair, β·φ of every shown item stacked
    /// (kJ numbers) for a pick of k.
    pub direction: DVector<f64>,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub created_ms: i64,
    /// The lapse rate of the likelihood the answer was applied with; `None` for answers stored
    /// before it was recorded (the model's rate).
    pub lapse: Option<f64>,
}

/// Identifies a model's bank at one moment: the model (by creation time, so a model deleted and
/// created again under the same name is another model) and its bank version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BankStamp {
    pub model_created_ms: i64,
    pub version: i64,
}

impl ModelRecord {
    pub fn bank_stamp(&self) -> BankStamp {
        BankStamp {
            model_created_ms: self.created_ms,
            version: self.bank_version,
        }
    }
}

/// The response first sent for an answer, kept to replay it byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    /// Fingerprint of the request that produced it (a retry must match it).
    pub request_hash: String,
    /// The exact JSON body sent.
    pub body: String,
}

/// A user's current reward model for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRecord {
    pub user_id: String,
    pub model: String,
    pub session_id: String,
    pub status: SessionStatus,
    pub mean: DVector<f64>,
    pub cov: DMatrix<f64>,
    pub version: i64,
    pub answers: i64,
    pub updated_ms: i64,
    /// The session's answers look random (see [`crate::model::reliability`]).
    pub unreliable: bool,
    /// The version of the model's prior its session started from.
    pub prior_version: i64,
}

/// An API key as stored (the secret itself is never stored, only its SHA-256).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    /// `admin`, `frontend` or `scorer`.
    pub role: String,
    pub key_hash: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    /// The key's own rate limit (requests a second, burst); `None`: its role's default.
    pub rate_per_s: Option<f64>,
    pub burst: Option<i64>,
    /// When the key stops working (ms since the epoch); `None`: never.
    pub expires_ms: Option<i64>,
    /// The key this one replaced by rotation.
    pub rotated_from: Option<String>,
    /// The models the key may use; `None`: every model.
    pub models: Option<Vec<String>>,
}

/// What an admin did, as the audit trail names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum AuditAction {
    #[serde(rename = "model.create")]
    ModelCreate,
    #[serde(rename = "model.delete")]
    ModelDelete,
    #[serde(rename = "items.upsert")]
    ItemsUpsert,
    #[serde(rename = "item.delete")]
    ItemDelete,
    #[serde(rename = "key.create")]
    KeyCreate,
    #[serde(rename = "key.rotate")]
    KeyRotate,
    #[serde(rename = "key.revoke")]
    KeyRevoke,
    #[serde(rename = "user.erase")]
    UserErase,
    #[serde(rename = "prior.refit")]
    PriorRefit,
    #[serde(rename = "prior.restore")]
    PriorRestore,
}

impl AuditAction {
    pub const ALL: [AuditAction; 10] = [
        Self::ModelCreate,
        Self::ModelDelete,
        Self::ItemsUpsert,
        Self::ItemDelete,
        Self::KeyCreate,
        Self::KeyRotate,
        Self::KeyRevoke,
        Self::UserErase,
        Self::PriorRefit,
        Self::PriorRestore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModelCreate => "model.create",
            Self::ModelDelete => "model.delete",
            Self::ItemsUpsert => "items.upsert",
            Self::ItemDelete => "item.delete",
            Self::KeyCreate => "key.create",
            Self::KeyRotate => "key.rotate",
            Self::KeyRevoke => "key.revoke",
            Self::UserErase => "user.erase",
            Self::PriorRefit => "prior.refit",
            Self::PriorRestore => "prior.restore",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One entry of the audit trail, written in the same transaction as the change it records.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub at_ms: i64,
    /// Id of the key that acted (`bootstrap`: the configured admin key; `first-run`: the
    /// service itself on a first start).
    pub actor: String,
    pub action: AuditAction,
    /// What was changed, as a path: `models/NAME`, `models/NAME/items/ID`, `keys/ID`, or
    /// `users/HASH` (a keyed hash: the trail keeps no user id in clear).
    pub target: String,
    /// The `x-request-id` of the request that made the change.
    pub request_id: Option<String>,
}

/// A stored audit entry with its place in the trail (ids grow with time).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub entry: AuditEntry,
}

/// Which audit entries to read: newest first, those with an id below `before`, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    pub action: Option<AuditAction>,
    /// A target, which also matches everything under it (`models/m` matches `models/m/items/x`).
    pub target: Option<String>,
    pub before: Option<i64>,
    pub limit: usize,
}

/// An answer to append to the log, with the body sent for it.
#[derive(Debug, Clone)]
pub struct AnswerCommit {
    pub row: AnswerRow,
    pub response: String,
}

/// What a locked session writes on commit: the new session row (its `version` must be the locked
/// one plus one), optionally one new answer and the user's profile.
#[derive(Debug, Clone)]
pub struct SessionCommit {
    pub session: SessionRecord,
    pub answer: Option<AnswerCommit>,
    pub profile: Option<ProfileRecord>,
}
