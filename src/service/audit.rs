//! The audit trail: which key changed what, through which request, and when.
//!
//! Every admin change passes an [`AuditEntry`] to the store, which writes it in the same
//! transaction as the change (`crate::store::Store`). The trail keeps no personal data: an
//! erased user appears only as `users/HASH`, an HMAC-SHA256 of the user id under a secret the
//! database drew for itself, so the entry survives the erase while the id does not. Whoever
//! knows a user id can still find its erase (`GET /v1/audit?user=…` hashes it the same way).

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::clock::{now_ms, rfc3339};
use super::limits::{MAX_ID_LEN, MAX_PAGE};
use super::validate::check_id;
use super::{Service, ServiceError};
use crate::store::{AuditAction, AuditEntry, AuditQuery, AuditRecord};

/// Longest `target` filter: `models/NAME/items/ID` with the longest name and id.
const MAX_TARGET_LEN: usize = 600;

/// Whether `target` is `under` or lies beneath it (`models/m/items/x` lies under `models/m`).
fn lies_under(target: &str, under: &str) -> bool {
    target
        .strip_prefix(under)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Name of the database-drawn secret that keys user-id hashes.
const USER_HASH_SECRET: &str = "audit_user_hash";

/// Who makes a change: the key's id and the request's `x-request-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub key_id: String,
    pub request_id: Option<String>,
}

impl Actor {
    /// The service acting on its own behalf (the first-run admin key).
    pub fn first_run() -> Self {
        Self {
            key_id: "first-run".into(),
            request_id: None,
        }
    }

    /// The entry recording this actor's `action` on `target`, stamped now.
    pub(crate) fn audit(&self, action: AuditAction, target: String) -> AuditEntry {
        AuditEntry {
            at_ms: now_ms(),
            actor: self.key_id.clone(),
            action,
            target,
            request_id: self.request_id.clone(),
        }
    }
}

/// One audit entry as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntryView {
    /// Position in the trail (grows with time); pass it as `before` to read older entries.
    pub id: i64,
    /// When the change was committed (RFC 3339).
    pub at: String,
    /// Id of the key that made the change (`bootstrap`: the configured admin key; `first-run`:
    /// the service on a first start).
    pub actor_key_id: String,
    pub action: AuditAction,
    /// What changed: `models/NAME`, `models/NAME/items/ID`, `keys/ID` or `users/HASH`.
    pub target: String,
    /// The `x-request-id` of the request.
    pub request_id: Option<String>,
}

/// A page of the audit trail, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntryView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

/// Which entries `GET /v1/audit` returns.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    /// Only entries of this action.
    pub action: Option<AuditAction>,
    /// Only entries about this target or anything under it (`models/m` also matches
    /// `models/m/items/x`).
    #[param(
        min_length = 1,
        max_length = 600,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub target: Option<String>,
    /// Only entries about this user id (hashed as the trail stores it).
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub user: Option<String>,
    /// Only entries older than this id (the previous page's `next_before`).
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// Entries per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

impl AuditRecord {
    fn view(self) -> AuditEntryView {
        AuditEntryView {
            id: self.id,
            at: rfc3339(self.entry.at_ms),
            actor_key_id: self.entry.actor,
            action: self.entry.action,
            target: self.entry.target,
            request_id: self.entry.request_id,
        }
    }
}

/// The user-id hash key, read from the database once per process.
#[derive(Default)]
pub struct AuditSecret(OnceCell<Vec<u8>>);

impl Service {
    /// `users/HASH`: how the trail names a user, HASH = hex(HMAC-SHA256(secret, user id)).
    pub(crate) async fn user_target(&self, user_id: &str) -> Result<String, ServiceError> {
        let secret = self
            .audit_secret
            .0
            .get_or_try_init(|| async {
                let hex_secret = self.store.service_secret(USER_HASH_SECRET).await?;
                Ok::<_, ServiceError>(hex_secret.into_bytes())
            })
            .await?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
            .expect("HMAC takes a key of any length");
        mac.update(user_id.as_bytes());
        Ok(format!(
            "users/{}",
            hex::encode(mac.finalize().into_bytes())
        ))
    }

    /// A page of the audit trail, newest first.
    pub async fn audit_trail(&self, filter: AuditFilter) -> Result<AuditPage, ServiceError> {
        let limit = filter.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ServiceError::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        if filter.before.is_some_and(|b| b < 1) {
            return Err(ServiceError::invalid("before", "must be at least 1"));
        }
        if let Some(target) = &filter.target {
            check_id("target", target, MAX_TARGET_LEN)?;
        }
        let user = match &filter.user {
            Some(user) => {
                check_id("user", user, MAX_ID_LEN)?;
                Some(self.user_target(user).await?)
            }
            None => None,
        };
        // Both filters hold at once: the user's target, if it lies under `target`.
        let target = match (filter.target, user) {
            (Some(target), Some(user)) if !lies_under(&user, &target) => {
                return Ok(AuditPage {
                    entries: vec![],
                    next_before: None,
                });
            }
            (target, user) => user.or(target),
        };
        let records = self
            .store
            .audit_trail(&AuditQuery {
                action: filter.action,
                target,
                before: filter.before,
                limit,
            })
            .await?;
        let next_before = (records.len() == limit)
            .then(|| records.last().map(|r| r.id))
            .flatten();
        Ok(AuditPage {
            entries: records.into_iter().map(AuditRecord::view).collect(),
            next_before,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::lies_under;

    #[test]
    fn a_target_lies_under_itself_and_its_parents_only() {
        assert!(lies_under("models/m", "models/m"));
        assert!(lies_under("models/m/items/x", "models/m"));
        assert!(lies_under("users/ab", "users"));
        assert!(!lies_under("models/mm", "models/m"));
        assert!(!lies_under("models/m", "models/m/items"));
    }
}
