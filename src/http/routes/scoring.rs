//! Personalised scores of candidates (scorer).

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;

use crate::http::error::Problem;
use crate::http::extract::Json;
use crate::service::Service;
use crate::service::dto::{ScoreRequest, ScoreResponse};
use crate::service::keys::Scope;

use super::Result;

#[utoipa::path(post, path = "/v1/score", tag = "scoring", request_body = ScoreRequest, security(("bearer" = [])),
    responses((status = 200, body = ScoreResponse), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn score(
    State(service): State<Service>,
    scope: Scope,
    Json(req): Json<ScoreRequest>,
) -> Result<impl IntoResponse> {
    scope.admit(&req.model)?;
    Ok(axum::Json(service.score(req).await?))
}

/// The route of personalised scores (scorer); a request may be as large as `score_body_bytes`.
pub fn routes(score_body_bytes: usize) -> Router<Service> {
    Router::new()
        .route("/v1/score", post(score))
        .layer(DefaultBodyLimit::max(score_body_bytes))
}
