//! RFC 9457 problem details: every error is `application/problem+json` with a stable `type`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::service::ServiceError;

/// A problem to report to the client.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = String)]
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The request field at fault, for validation problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: format!("https://elicit.dev/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
        }
    }

    /// 422 for a request value the service cannot use, naming the field when known.
    pub fn validation(field: Option<String>, detail: impl Into<String>) -> Self {
        Self {
            field,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid field",
                detail,
            )
        }
    }

    /// 500; the cause is logged by the caller, never sent.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "an internal error occurred; it has been logged",
        )
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(&self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<ServiceError> for Problem {
    fn from(e: ServiceError) -> Self {
        let detail = e.to_string();
        let conflict = match &e {
            ServiceError::AlreadyExists(_) => Some("already-exists"),
            ServiceError::StaleQuestion(_) => Some("stale-question"),
            ServiceError::SessionClosed(_) => Some("session-closed"),
            ServiceError::NotNow(_) => Some("not-now"),
            ServiceError::IdempotencyKeyReused => Some("idempotency-key-reused"),
            ServiceError::VersionMismatch { .. } => Some("version-mismatch"),
            _ => None,
        };
        if let Some(kind) = conflict {
            metrics::counter!("elicit_conflicts_total", "kind" => kind).increment(1);
        }
        match e {
            ServiceError::Invalid { field, .. } => Problem::validation(Some(field), detail),
            ServiceError::NotFound(_) => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
            }
            ServiceError::AlreadyExists(_) => Problem::new(
                StatusCode::CONFLICT,
                "already-exists",
                "Already exists",
                detail,
            ),
            ServiceError::NotNow(_) => Problem::new(
                StatusCode::CONFLICT,
                "not-now",
                "Not possible in the current state",
                detail,
            ),
            ServiceError::StaleQuestion(_) => Problem::new(
                StatusCode::CONFLICT,
                "stale-question",
                "Not the current question",
                detail,
            ),
            ServiceError::SessionClosed(_) => Problem::new(
                StatusCode::CONFLICT,
                "session-closed",
                "Session closed",
                detail,
            ),
            ServiceError::IdempotencyKeyReused => Problem::new(
                StatusCode::CONFLICT,
                "idempotency-key-reused",
                "Idempotency key reused",
                detail,
            ),
            ServiceError::VersionMismatch { .. } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "version-mismatch",
                "Version mismatch",
                detail,
            ),
            ServiceError::AtCapacity(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "at-capacity",
                "At capacity",
                detail,
            ),
            ServiceError::Unavailable(cause) => {
                tracing::warn!(%cause, "store unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Temporarily unavailable",
                    "the database is busy or unreachable; retry shortly",
                )
            }
            ServiceError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Problem::internal()
            }
        }
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                Problem::validation(field_of(&e.body_text()), e.body_text())
            }
            // serde_json reports numbers beyond f64 (1e999) while parsing; they are bad values.
            JsonRejection::JsonSyntaxError(e) if e.body_text().contains("number out of range") => {
                Problem::validation(field_of(&e.body_text()), e.body_text())
            }
            JsonRejection::JsonSyntaxError(e) => Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                e.body_text(),
            ),
            JsonRejection::MissingJsonContentType(e) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                e.body_text(),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "Payload too large",
                    "the request body exceeds this route's limit",
                )
            }
            other => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "Bad request",
                other.body_text(),
            ),
        }
    }
}

impl From<QueryRejection> for Problem {
    fn from(r: QueryRejection) -> Self {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid query",
            r.body_text(),
        )
    }
}

impl From<PathRejection> for Problem {
    fn from(r: PathRejection) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad path",
            r.body_text(),
        )
    }
}

/// serde's data errors read "…: <message> at line L column C"; serde_path_to_error (used by
/// axum's Json) prefixes the path, e.g. "items[3].features: invalid type…". Keep that path.
fn field_of(text: &str) -> Option<String> {
    let body = text
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .or_else(|| text.strip_prefix("Failed to parse the request body as JSON: "))?;
    let (path, _) = body.split_once(": ")?;
    (!path.contains(' ')).then(|| path.to_string())
}
