//! The audit trail of admin changes (admin).

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::http::error::Problem;
use crate::http::extract::Query;
use crate::service::Service;
use crate::service::audit::{AuditFilter, AuditPage};

use super::Result;

/// The audit trail, newest first: every change made with an admin key (models, items, keys,
/// erased users), by whom and through which request.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditFilter), security(("bearer" = [])),
    responses((status = 200, body = AuditPage), (status = 422, body = Problem)))]
pub async fn audit_trail(
    State(service): State<Service>,
    Query(filter): Query<AuditFilter>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(service.audit_trail(filter).await?))
}

/// The route of the audit trail (admin).
pub fn routes() -> Router<Service> {
    Router::new().route("/v1/audit", get(audit_trail))
}
