//! The service's clock: now, and instants as RFC 3339 text on the wire.

use std::time::Duration;

use super::ServiceError;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
pub(crate) fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// An RFC 3339 instant (`field` names where the client sent it) as milliseconds since the epoch.
pub(crate) fn parse_rfc3339(field: &str, text: &str) -> Result<i64, ServiceError> {
    let at = humantime::parse_rfc3339_weak(text).map_err(|_| {
        ServiceError::invalid(
            field,
            "must be an RFC 3339 time such as 2027-01-31T00:00:00Z",
        )
    })?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ServiceError::invalid(field, "must be after 1970"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| ServiceError::invalid(field, "is too far in the future"))
}
