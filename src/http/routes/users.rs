//! Users: their profiles (scorer) and their erasure (admin).

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use serde::Deserialize;

use crate::http::error::Problem;
use crate::http::extract::{Path, Query};
use crate::service::Service;
use crate::service::audit::Actor;
use crate::service::dto::{Erased, ProfileView};
use crate::service::keys::Scope;

use super::Result;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileQuery {
    model: String,
}

#[utoipa::path(get, path = "/v1/users/{user_id}/profile", tag = "scoring", params(("user_id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"), ("model" = String, Query)), security(("bearer" = [])),
    responses((status = 200, body = ProfileView), (status = 404, body = Problem)))]
pub async fn get_profile(
    State(service): State<Service>,
    scope: Scope,
    Path(user_id): Path<String>,
    Query(q): Query<ProfileQuery>,
) -> Result<impl IntoResponse> {
    scope.admit(&q.model)?;
    Ok(axum::Json(service.profile(&user_id, &q.model).await?))
}

#[utoipa::path(delete, path = "/v1/users/{user_id}", tag = "users", params(("user_id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")), security(("bearer" = [])),
    responses((status = 200, body = Erased)))]
pub async fn delete_user(
    State(service): State<Service>,
    actor: Actor,
    Path(user_id): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(service.delete_user(&user_id, &actor).await?))
}

/// The route that erases a user (admin).
pub fn admin_routes() -> Router<Service> {
    Router::new().route("/v1/users/{user_id}", delete(delete_user))
}

/// The route of a user's profile (scorer).
pub fn scorer_routes() -> Router<Service> {
    Router::new().route("/v1/users/{user_id}/profile", get(get_profile))
}
