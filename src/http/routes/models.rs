//! Models, their item banks and their priors (admin).

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use serde::Deserialize;

use crate::http::error::Problem;
use crate::http::extract::{Json, Path, Query};
use crate::service::Service;
use crate::service::audit::Actor;
use crate::service::dto::{
    CreateModel, ItemsPage, ModelErased, ModelList, ModelView, UpsertItems, UpsertResult,
};
use crate::service::keys::Scope;
use crate::service::priors::{PriorChanged, RefitPrior};

use super::{Result, optional_body};

#[utoipa::path(post, path = "/v1/models", tag = "models", request_body = CreateModel, security(("bearer" = [])),
    responses((status = 201, body = ModelView), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_model(
    State(service): State<Service>,
    scope: Scope,
    actor: Actor,
    Json(req): Json<CreateModel>,
) -> Result<impl IntoResponse> {
    scope.admit(&req.name)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(service.create_model(req, &actor).await?),
    ))
}

#[utoipa::path(get, path = "/v1/models", tag = "models", security(("bearer" = [])), responses((status = 200, body = ModelList)))]
pub async fn list_models(
    State(service): State<Service>,
    scope: Scope,
) -> Result<impl IntoResponse> {
    let mut list = service.list_models().await?;
    list.models.retain(|m| scope.allows(&m.name));
    Ok(axum::Json(list))
}

#[utoipa::path(get, path = "/v1/models/{model}", tag = "models", params(("model" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ModelView), (status = 404, body = Problem)))]
pub async fn get_model(
    State(service): State<Service>,
    scope: Scope,
    Path(model): Path<String>,
) -> Result<impl IntoResponse> {
    scope.admit(&model)?;
    Ok(axum::Json(service.get_model(&model).await?))
}

#[utoipa::path(delete, path = "/v1/models/{model}", tag = "models", params(("model" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ModelErased), (status = 404, body = Problem)))]
pub async fn delete_model(
    State(service): State<Service>,
    scope: Scope,
    actor: Actor,
    Path(model): Path<String>,
) -> Result<impl IntoResponse> {
    scope.admit(&model)?;
    Ok(axum::Json(service.delete_model(&model, &actor).await?))
}

#[utoipa::path(put, path = "/v1/models/{model}/items", tag = "models", params(("model" = String, Path)), request_body = UpsertItems, security(("bearer" = [])),
    responses((status = 200, body = UpsertResult), (status = 404, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem)))]
pub async fn upsert_items(
    State(service): State<Service>,
    scope: Scope,
    actor: Actor,
    Path(model): Path<String>,
    Json(req): Json<UpsertItems>,
) -> Result<impl IntoResponse> {
    scope.admit(&model)?;
    Ok(axum::Json(service.upsert_items(&model, req, &actor).await?))
}

/// Refits the model's population prior by EM over its finished sessions (the latest of each
/// user), shrunk towards the current prior; the previous prior is kept and can be restored.
/// Sessions keep the prior they started with.
#[utoipa::path(post, path = "/v1/models/{model}/prior:refit", tag = "models", params(("model" = String, Path)),
    request_body(content = Option<RefitPrior>, description = "optional; `{}` or no body: the defaults"),
    security(("bearer" = [])),
    responses((status = 200, body = PriorChanged), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn refit_prior(
    State(service): State<Service>,
    scope: Scope,
    actor: Actor,
    Path(model): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    scope.admit(&model)?;
    let req: RefitPrior = optional_body(&body, "a refit request")?;
    Ok(axum::Json(service.refit_prior(&model, req, &actor).await?))
}

/// Puts back, exactly, the prior the current one replaced (as a new version).
#[utoipa::path(post, path = "/v1/models/{model}/prior:restore", tag = "models", params(("model" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = PriorChanged), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn restore_prior(
    State(service): State<Service>,
    scope: Scope,
    actor: Actor,
    Path(model): Path<String>,
) -> Result<impl IntoResponse> {
    scope.admit(&model)?;
    Ok(axum::Json(service.restore_prior(&model, &actor).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/models/{model}/items", tag = "models", params(("model" = String, Path), ("after" = Option<String>, Query), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000)), security(("bearer" = [])),
    responses((status = 200, body = ItemsPage), (status = 404, body = Problem)))]
pub async fn list_items(
    State(service): State<Service>,
    scope: Scope,
    Path(model): Path<String>,
    Query(page): Query<Page>,
) -> Result<impl IntoResponse> {
    scope.admit(&model)?;
    Ok(axum::Json(
        service
            .list_items(&model, page.after.as_deref(), page.limit)
            .await?,
    ))
}

#[utoipa::path(delete, path = "/v1/models/{model}/items/{item}", tag = "models", params(("model" = String, Path), ("item" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_item(
    State(service): State<Service>,
    scope: Scope,
    actor: Actor,
    Path((model, item)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    scope.admit(&model)?;
    service.delete_item(&model, &item, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of models, items and priors (admin); an item upload may be as large as
/// `items_body_bytes`.
pub fn routes(items_body_bytes: usize) -> Router<Service> {
    Router::new()
        .route("/v1/models", post(create_model).get(list_models))
        .route("/v1/models/{model}", get(get_model).delete(delete_model))
        .route("/v1/models/{model}/items/{item}", delete(delete_item))
        .route("/v1/models/{model}/prior:refit", post(refit_prior))
        .route("/v1/models/{model}/prior:restore", post(restore_prior))
        .merge(
            Router::new()
                .route(
                    "/v1/models/{model}/items",
                    put(upsert_items).get(list_items),
                )
                .layer(DefaultBodyLimit::max(items_body_bytes)),
        )
}
