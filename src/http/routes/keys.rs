//! API keys (admin).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, post};

use crate::http::error::Problem;
use crate::http::extract::{Json, Path};
use crate::service::Service;
use crate::service::audit::Actor;
use crate::service::keys::{CreateKey, KeyCreated, KeyList, RotateKey};

use super::{Result, optional_body};

#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey, security(("bearer" = [])),
    responses((status = 201, body = KeyCreated), (status = 422, body = Problem)))]
pub async fn create_key(
    State(service): State<Service>,
    actor: Actor,
    Json(req): Json<CreateKey>,
) -> Result<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        axum::Json(service.create_key(req, &actor).await?),
    ))
}

#[utoipa::path(post, path = "/v1/keys/{id}/rotate", tag = "keys", params(("id" = String, Path)),
    request_body(content = Option<RotateKey>, description = "optional; `{}` or no body: a 24 h grace period"),
    security(("bearer" = [])),
    responses((status = 201, body = KeyCreated), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn rotate_key(
    State(service): State<Service>,
    actor: Actor,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let req: RotateKey = optional_body(&body, "a rotation request")?;
    Ok((
        StatusCode::CREATED,
        axum::Json(service.rotate_key(&id, req, &actor).await?),
    ))
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("bearer" = [])), responses((status = 200, body = KeyList)))]
pub async fn list_keys(State(service): State<Service>) -> Result<impl IntoResponse> {
    Ok(axum::Json(service.list_keys().await?))
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn revoke_key(
    State(service): State<Service>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    service.revoke_key(&id, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of API keys (admin).
pub fn routes() -> Router<Service> {
    Router::new()
        .route("/v1/keys", post(create_key).get(list_keys))
        .route("/v1/keys/{id}", delete(revoke_key))
        .route("/v1/keys/{id}/rotate", post(rotate_key))
}
