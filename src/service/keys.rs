//! API keys and who a bearer token is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::limits::MAX_ID_LEN;
use super::{Service, ServiceError, check_id};
use crate::store::{ApiKeyRecord, now_ms};

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

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// An API key with a role (`id` is "bootstrap" for the configured admin key) and its own
    /// rate limit, if it has one (else its role's default applies).
    Key {
        id: String,
        role: Role,
        rate: Option<Rate>,
    },
    /// A session token: may drive that one session.
    Session(String),
}

impl Principal {
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
    /// Requests it may make at once above that rate (default: its role's).
    #[schema(minimum = 1, maximum = 1000000)]
    pub burst: Option<u32>,
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

/// Resolved bearer tokens by hash.
#[derive(Default)]
pub struct PrincipalCache {
    entries: Mutex<HashMap<String, (Principal, Instant)>>,
}

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
    })
}

/// A key's own rate limit as stored: both parts, or neither (the role's default). A rate alone
/// takes a burst of one second's worth; a burst alone, its role's rate is not known here, so it
/// is refused.
fn own_rate(k: &ApiKeyRecord) -> Option<Rate> {
    let per_s = k.rate_per_s?;
    let burst = k.burst.map_or(per_s.ceil().max(1.0) as u32, |b| {
        b.clamp(1, i64::from(u32::MAX)) as u32
    });
    Some(Rate { per_s, burst })
}

impl Service {
    pub async fn create_key(&self, req: CreateKey) -> Result<KeyCreated, ServiceError> {
        check_id("name", &req.name, MAX_ID_LEN)?;
        if let Some(per_s) = req.rate_per_s
            && !(per_s.is_finite() && per_s > 0.0 && per_s <= 1e6)
        {
            return Err(ServiceError::invalid("rate_per_s", "must be in (0, 1e6]"));
        }
        if let Some(burst) = req.burst {
            if !(1..=1_000_000).contains(&burst) {
                return Err(ServiceError::invalid("burst", "must be in [1, 1000000]"));
            }
            if req.rate_per_s.is_none() {
                return Err(ServiceError::invalid("burst", "give rate_per_s with it"));
            }
        }
        let id = uuid::Uuid::now_v7().simple().to_string();
        let key = format!("ek_{}", hex::encode(rand::rng().random::<[u8; 24]>()));
        let record = ApiKeyRecord {
            id,
            name: req.name,
            role: req.role.as_str().to_string(),
            key_hash: sha256_hex(&key),
            created_ms: now_ms(),
            revoked_ms: None,
            rate_per_s: req.rate_per_s,
            burst: req.burst.map(i64::from),
        };
        self.store.create_key(&record).await?;
        Ok(KeyCreated {
            key,
            info: view(&record)?,
        })
    }

    pub async fn list_keys(&self) -> Result<KeyList, ServiceError> {
        let keys = self.store.list_keys().await?;
        Ok(KeyList {
            keys: keys.iter().map(view).collect::<Result<_, _>>()?,
        })
    }

    pub async fn revoke_key(&self, id: &str) -> Result<(), ServiceError> {
        if self.store.revoke_key(id, now_ms()).await? {
            self.principals
                .entries
                .lock()
                .expect("principal cache")
                .retain(|_, (p, _)| !matches!(p, Principal::Key { id: k, .. } if k == id));
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
                rate: None,
            }));
        }
        if let Some((principal, at)) = self
            .principals
            .entries
            .lock()
            .expect("principal cache")
            .get(&hash)
            && at.elapsed() < PRINCIPAL_TTL
        {
            return Ok(Some(principal.clone()));
        }
        let principal = match self.store.key_by_hash(&hash).await? {
            Some(key) => Some(Principal::Key {
                role: Role::parse(&key.role)
                    .ok_or_else(|| ServiceError::Internal(format!("unknown role {}", key.role)))?,
                rate: own_rate(&key),
                id: key.id,
            }),
            None => self
                .store
                .session_by_token(&hash)
                .await?
                .map(Principal::Session),
        };
        if let Some(p) = &principal {
            self.principals
                .entries
                .lock()
                .expect("principal cache")
                .insert(hash, (p.clone(), Instant::now()));
        }
        Ok(principal)
    }
}
