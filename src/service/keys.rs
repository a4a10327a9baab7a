//! API keys and who a bearer token is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::audit::Actor;
use super::clock::{now_ms, parse_rfc3339, rfc3339};
use super::limits::MAX_ID_LEN;
use super::validate::check_id;
use super::{Service, ServiceError};
use crate::store::{ApiKeyRecord, AuditAction};

/// What a key may do. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Models, items, keys, erasure, and everything below.
    Admin,
    /// Creates and drives onboarding sessions.
    Frontend,
    /// Reads profiles and scores candidates.
    Scorer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Frontend => "frontend",
            Role::Scorer => "scorer",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "frontend" => Some(Self::Frontend),
            "scorer" => Some(Self::Scorer),
            _ => None,
        }
    }
}

/// A rate limit: a sustained rate and the burst allowed above it (GCRA: a bucket of `burst`
/// requests refilled at `per_s` a second).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub per_s: f64,
    pub burst: u32,
}

impl Rate {
    /// A limit from configuration: `None` (unlimited) for a rate of 0.
    pub fn configured(per_s: f64, burst: u32) -> Option<Self> {
        (per_s > 0.0).then(|| Self {
            per_s,
            burst: burst.max(1),
        })
    }
}

/// A key's own rate limit; each part it leaves out is its role's default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KeyLimit {
    pub per_s: Option<f64>,
    pub burst: Option<u32>,
}

impl KeyLimit {
    /// This limit over a role's default: `None` (unlimited) when neither gives a rate. Without
    /// a burst, one second's worth.
    pub fn over(self, default: Option<Rate>) -> Option<Rate> {
        let per_s = self.per_s.or(default.map(|d| d.per_s))?;
        let burst = self
            .burst
            .or(default.map(|d| d.burst))
            .unwrap_or(per_s.ceil().max(1.0) as u32);
        Some(Rate { per_s, burst })
    }
}

/// The models a caller may use. A model outside it is answered exactly as a missing one, so a
/// scoped key cannot learn which models exist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope(Option<Vec<String>>);

impl Scope {
    /// Every model.
    pub fn all() -> Self {
        Self(None)
    }

    pub fn is_restricted(&self) -> bool {
        self.0.is_some()
    }

    pub fn allows(&self, model: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }

    /// `Ok` if `model` is in scope, else the error a missing model gets.
    pub fn admit(&self, model: &str) -> Result<(), ServiceError> {
        if self.allows(model) {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!("model '{model}'")))
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// An API key with a role (`id` is "bootstrap" for the configured admin key), its own rate
    /// limit, if it has one, and the models it may use.
    Key {
        id: String,
        role: Role,
        limit: KeyLimit,
        scope: Scope,
    },
    /// A session token: may drive that one session.
    Session(String),
}

impl Principal {
    /// The models this caller may use (a session token's session is checked by its route).
    pub fn scope(&self) -> Scope {
        match self {
            Principal::Key { scope, .. } => scope.clone(),
            Principal::Session(_) => Scope::all(),
        }
    }

    /// The role's name, or `session` for a session token (metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Key { role, .. } => role.as_str(),
            Principal::Session(_) => "session",
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub name: String,
    pub role: Role,
    /// Sustained requests a second this key may make (default: its role's, from the
    /// configuration). Held per replica.
    #[schema(exclusive_minimum = 0.0, maximum = 1e6)]
    pub rate_per_s: Option<f64>,
    /// Requests it may make at once above that rate (default: its role's, or one second's worth
    /// of its own rate).
    #[schema(minimum = 1, maximum = 1000000)]
    pub burst: Option<u32>,
    /// When the key stops working, RFC 3339 (e.g. `2027-01-31T00:00:00Z`); default: never.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// The only models the key may use; on any other it gets the answer a missing model gets.
    /// Default: every model. A scoped key may not manage keys.
    #[schema(min_items = 1, max_items = 100, value_type = Option<Vec<String>>)]
    pub models: Option<Vec<String>>,
}

/// `POST /v1/keys/{id}/rotate`: how long the old key keeps working.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// Seconds the old key stays valid beside its successor (default 86400, at most a year; an
    /// earlier expiry of the old key is kept).
    #[schema(minimum = 0.0, maximum = 31536000.0)]
    pub grace_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    /// The key's own rate limit; null: its role's default.
    pub rate_per_s: Option<f64>,
    pub burst: Option<u32>,
    /// When the key stops (or stopped) working, RFC 3339; null: never.
    pub expires_at: Option<String>,
    /// The key this one replaced by rotation.
    pub rotated_from: Option<String>,
    /// The models the key may use; null: every model.
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyCreated {
    /// The secret; shown once, stored only hashed.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyView,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// How long a resolved bearer token is trusted without asking the database again (a revoked key
/// stops working on every replica within this time).
const PRINCIPAL_TTL: Duration = Duration::from_secs(5);

/// A resolved bearer token: who, when it was resolved, and when the key expires (ms).
type Resolved = (Principal, Instant, Option<i64>);

/// Resolved bearer tokens by hash.
#[derive(Default)]
pub struct PrincipalCache {
    entries: Mutex<HashMap<String, Resolved>>,
}

/// A new key's secret and its record (id and hash filled in).
fn new_key(template: ApiKeyRecord) -> (String, ApiKeyRecord) {
    let key = format!("ek_{}", hex::encode(rand::rng().random::<[u8; 24]>()));
    let record = ApiKeyRecord {
        id: uuid::Uuid::now_v7().simple().to_string(),
        key_hash: sha256_hex(&key),
        ..template
    };
    (key, record)
}

/// SHA-256 of a secret (an API key or a session token), hex-encoded, as stored.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn view(k: &ApiKeyRecord) -> Result<KeyView, ServiceError> {
    Ok(KeyView {
        id: k.id.clone(),
        name: k.name.clone(),
        role: Role::parse(&k.role).ok_or_else(|| {
            ServiceError::Internal(format!("key {} has unknown role {}", k.id, k.role))
        })?,
        created_ms: k.created_ms,
        revoked_ms: k.revoked_ms,
        rate_per_s: k.rate_per_s,
        burst: k.burst.map(|b| b.clamp(1, i64::from(u32::MAX)) as u32),
        expires_at: k.expires_ms.map(rfc3339),
        rotated_from: k.rotated_from.clone(),
        models: k.models.clone(),
    })
}

/// How the audit trail names a key.
fn key_target(id: &str) -> String {
    format!("keys/{id}")
}

/// Default grace period of a rotated key.
const DEFAULT_ROTATION_GRACE_S: f64 = 86_400.0;
/// Longest grace period of a rotated key.
const MAX_ROTATION_GRACE_S: f64 = 365.0 * 86_400.0;

/// A key's own rate limit as stored.
fn own_limit(k: &ApiKeyRecord) -> KeyLimit {
    KeyLimit {
        per_s: k.rate_per_s,
        burst: k.burst.map(|b| b.clamp(1, i64::from(u32::MAX)) as u32),
    }
}

impl Service {
    pub async fn create_key(
        &self,
        req: CreateKey,
        actor: &Actor,
    ) -> Result<KeyCreated, ServiceError> {
        check_id("name", &req.name, MAX_ID_LEN)?;
        if let Some(per_s) = req.rate_per_s
            && !(per_s.is_finite() && per_s > 0.0 && per_s <= 1e6)
        {
            return Err(ServiceError::invalid("rate_per_s", "must be in (0, 1e6]"));
        }
        if let Some(burst) = req.burst
            && !(1..=1_000_000).contains(&burst)
        {
            return Err(ServiceError::invalid("burst", "must be in [1, 1000000]"));
        }
        let expires_ms = req
            .expires_at
            .as_deref()
            .map(|t| parse_rfc3339("expires_at", t))
            .transpose()?;
        if expires_ms.is_some_and(|at| at <= now_ms()) {
            return Err(ServiceError::invalid("expires_at", "must be in the future"));
        }
        if let Some(models) = &req.models {
            if models.is_empty() || models.len() > 100 {
                return Err(ServiceError::invalid("models", "must name 1 to 100 models"));
            }
            for (i, model) in models.iter().enumerate() {
                check_id(&format!("models[{i}]"), model, MAX_ID_LEN)?;
            }
        }
        let (key, record) = new_key(ApiKeyRecord {
            id: String::new(),
            name: req.name,
            role: req.role.as_str().to_string(),
            key_hash: String::new(),
            created_ms: now_ms(),
            revoked_ms: None,
            rate_per_s: req.rate_per_s,
            burst: req.burst.map(i64::from),
            expires_ms,
            rotated_from: None,
            models: req.models,
        });
        let audit = actor.audit(AuditAction::KeyCreate, key_target(&record.id));
        self.store.create_key(&record, &audit).await?;
        Ok(KeyCreated {
            key,
            info: view(&record)?,
        })
    }

    /// On a store without any key and a service without a configured admin key, creates an
    /// admin key and returns its secret (to be shown once), so a first run can be used at once.
    /// `None` once any key exists. Two replicas starting at the same moment on an empty store
    /// may each create one.
    pub async fn first_run_admin_key(&self) -> Result<Option<String>, ServiceError> {
        if self.admin_key_hash.is_some() || !self.store.list_keys().await?.is_empty() {
            return Ok(None);
        }
        let created = self
            .create_key(
                CreateKey {
                    name: "first-run admin".into(),
                    role: Role::Admin,
                    rate_per_s: None,
                    burst: None,
                    expires_at: None,
                    models: None,
                },
                &Actor::first_run(),
            )
            .await?;
        Ok(Some(created.key))
    }

    /// A successor of key `id` with its name, role and limits; the old key keeps working for the
    /// grace period, then expires.
    pub async fn rotate_key(
        &self,
        id: &str,
        req: RotateKey,
        actor: &Actor,
    ) -> Result<KeyCreated, ServiceError> {
        let grace_s = req.grace_s.unwrap_or(DEFAULT_ROTATION_GRACE_S);
        if !(0.0..=MAX_ROTATION_GRACE_S).contains(&grace_s) {
            return Err(ServiceError::invalid(
                "grace_s",
                format!("must be between 0 and {MAX_ROTATION_GRACE_S} seconds"),
            ));
        }
        let old = self
            .store
            .key_by_id(id)
            .await?
            .filter(|k| k.revoked_ms.is_none())
            .filter(|k| k.expires_ms.is_none_or(|at| at > now_ms()))
            .ok_or_else(|| ServiceError::NotFound(format!("live key '{id}'")))?;
        let now = now_ms();
        let (key, successor) = new_key(ApiKeyRecord {
            created_ms: now,
            revoked_ms: None,
            expires_ms: None,
            rotated_from: Some(old.id.clone()),
            ..old.clone()
        });
        let old_expires_ms = now.saturating_add((grace_s * 1000.0).round() as i64);
        if !self
            .store
            .rotate_key(
                &old.id,
                &successor,
                old_expires_ms,
                &actor.audit(AuditAction::KeyRotate, key_target(&old.id)),
            )
            .await?
        {
            return Err(ServiceError::NotFound(format!("live key '{id}'")));
        }
        self.forget_key(&old.id);
        Ok(KeyCreated {
            key,
            info: view(&successor)?,
        })
    }

    /// `Ok` if the session's model is in `scope`; else the error a missing session gets. Costs a
    /// read only for a restricted scope.
    pub async fn admit_session(&self, scope: &Scope, id: &str) -> Result<(), ServiceError> {
        if !scope.is_restricted() {
            return Ok(());
        }
        match self.store.get_session(id).await? {
            Some(session) if scope.allows(&session.model) => Ok(()),
            _ => Err(ServiceError::NotFound(format!("session '{id}'"))),
        }
    }

    /// Drops a key's cached resolutions, so a change reaches this replica at once.
    fn forget_key(&self, id: &str) {
        self.principals
            .entries
            .lock()
            .expect("principal cache")
            .retain(|_, (p, _, _)| !matches!(p, Principal::Key { id: k, .. } if k == id));
    }

    pub async fn list_keys(&self) -> Result<KeyList, ServiceError> {
        let keys = self.store.list_keys().await?;
        Ok(KeyList {
            keys: keys.iter().map(view).collect::<Result<_, _>>()?,
        })
    }

    pub async fn revoke_key(&self, id: &str, actor: &Actor) -> Result<(), ServiceError> {
        let audit = actor.audit(AuditAction::KeyRevoke, key_target(id));
        if self.store.revoke_key(id, &audit).await? {
            self.forget_key(id);
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!("live key '{id}'")))
        }
    }

    /// Who holds this bearer token: the bootstrap admin key, a stored key, or a session token.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, ServiceError> {
        let hash = sha256_hex(token);
        // Compared in constant time, so response timing says nothing about how much matched.
        // Stored keys and session tokens are found by their hash (an index or map lookup on a
        // SHA-256, which reveals nothing usable about the secret).
        let is_admin = self.admin_key_hash.as_deref().is_some_and(|admin| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                admin.as_bytes(),
                hash.as_bytes(),
            ))
        });
        if is_admin {
            return Ok(Some(Principal::Key {
                id: "bootstrap".into(),
                role: Role::Admin,
                limit: KeyLimit::default(),
                scope: Scope::all(),
            }));
        }
        let live = |expires_ms: Option<i64>| expires_ms.is_none_or(|at| at > now_ms());
        if let Some((principal, at, expires_ms)) = self
            .principals
            .entries
            .lock()
            .expect("principal cache")
            .get(&hash)
            && at.elapsed() < PRINCIPAL_TTL
        {
            // An expiry is exact even within the cache's lifetime.
            return Ok(live(*expires_ms).then(|| principal.clone()));
        }
        let (principal, expires_ms) = match self.store.key_by_hash(&hash).await? {
            Some(key) => (
                Some(Principal::Key {
                    role: Role::parse(&key.role).ok_or_else(|| {
                        ServiceError::Internal(format!("unknown role {}", key.role))
                    })?,
                    limit: own_limit(&key),
                    scope: Scope(key.models.clone()),
                    id: key.id,
                }),
                key.expires_ms,
            ),
            None => (
                self.store
                    .session_by_token(&hash)
                    .await?
                    .map(Principal::Session),
                None,
            ),
        };
        if let Some(p) = &principal {
            self.principals
                .entries
                .lock()
                .expect("principal cache")
                .insert(hash, (p.clone(), Instant::now(), expires_ms));
        }
        Ok(principal.filter(|_| live(expires_ms)))
    }
}
