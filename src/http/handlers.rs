//! Route handlers: parse, call the service, shape the response. No logic of their own.

use std::any::Any;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::Problem;
use super::extract::{Json, Path, Query};
use crate::service::dto::{AnswerIn, CreateModel, CreateSession, ScoreRequest, UpsertItems};
use crate::service::{Service, ServiceError};

type Result<T> = std::result::Result<T, Problem>;

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header")
}

pub async fn create_model(
    State(service): State<Service>,
    Json(req): Json<CreateModel>,
) -> Result<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        axum::Json(service.create_model(req).await?),
    ))
}

pub async fn list_models(State(service): State<Service>) -> Result<impl IntoResponse> {
    Ok(axum::Json(service.list_models().await?))
}

pub async fn get_model(
    State(service): State<Service>,
    Path(model): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(service.get_model(&model).await?))
}

pub async fn upsert_items(
    State(service): State<Service>,
    Path(model): Path<String>,
    Json(req): Json<UpsertItems>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(service.upsert_items(&model, req).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn list_items(
    State(service): State<Service>,
    Path(model): Path<String>,
    Query(page): Query<Page>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(
        service
            .list_items(&model, page.after.as_deref(), page.limit)
            .await?,
    ))
}

pub async fn delete_item(
    State(service): State<Service>,
    Path((model, item)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    service.delete_item(&model, &item).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_session(
    State(service): State<Service>,
    Json(req): Json<CreateSession>,
) -> Result<Response> {
    let created = service.create_session(req).await?;
    let tag = etag(created.session.version);
    let mut response = (StatusCode::CREATED, axum::Json(created)).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    Ok(response)
}

pub async fn get_session(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> Result<Response> {
    let view = service.get_session(&id).await?;
    let tag = etag(view.version);
    let mut response = axum::Json(view).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    Ok(response)
}

pub async fn get_question(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(service.current_question(&id).await?))
}

/// Reads `If-Match: "7"` (or `7`) as a session version.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ServiceError::invalid("If-Match", "must be a session version such as \"3\"").into()
        })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str().map(str::to_string).map_err(|_| {
                ServiceError::invalid("Idempotency-Key", "must be visible ASCII").into()
            })
        })
        .transpose()
}

pub async fn post_answer(
    State(service): State<Service>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<AnswerIn>,
) -> Result<Response> {
    let outcome = service
        .answer(&id, req, idempotency_key(&headers)?, if_match(&headers)?)
        .await?;
    let version = outcome
        .body
        .get("version")
        .and_then(|v| v.as_i64())
        .unwrap_or_default();
    let mut response = axum::Json(outcome.body).into_response();
    response.headers_mut().insert(header::ETAG, etag(version));
    if outcome.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

pub async fn finish_session(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(service.finish(&id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileQuery {
    model: String,
}

pub async fn get_profile(
    State(service): State<Service>,
    Path(user_id): Path<String>,
    Query(q): Query<ProfileQuery>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(service.profile(&user_id, &q.model).await?))
}

pub async fn score(
    State(service): State<Service>,
    Json(req): Json<ScoreRequest>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(service.score(req).await?))
}

pub async fn delete_user(
    State(service): State<Service>,
    Path(user_id): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(service.delete_user(&user_id).await?))
}

/// Ready when the database answers within a second.
pub async fn readyz(State(service): State<Service>) -> Response {
    match tokio::time::timeout(std::time::Duration::from_secs(1), service.store().ping()).await {
        Ok(Ok(())) => "ready".into_response(),
        _ => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Not ready",
            "the database is unreachable",
        )
        .into_response(),
    }
}

pub async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        "no such route",
    )
}

pub fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "an internal error occurred; it has been logged",
    )
    .into_response()
}
