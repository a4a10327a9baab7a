//! Onboarding sessions: started with a frontend key, then driven with the frontend key or the
//! session's own token.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::http::error::Problem;
use crate::http::extract::{IdempotencyKeyHeader, IfMatch, Json, Path, Query};
use crate::service::demo::SessionRanking;
use crate::service::dto::{
    AnswerIn, AnswerView, CreateSession, CurrentQuestion, SessionCreated, SessionView, StatementIn,
};
use crate::service::keys::Scope;
use crate::service::{Service, Submission, SubmitOptions};

use super::Result;

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header")
}

#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSession, security(("bearer" = [])),
    responses((status = 201, body = SessionCreated), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn create_session(
    State(service): State<Service>,
    scope: Scope,
    Json(req): Json<CreateSession>,
) -> Result<Response> {
    scope.admit(&req.model)?;
    let created = service.create_session(req).await?;
    let tag = etag(created.session.version);
    let mut response = (StatusCode::CREATED, axum::Json(created)).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    Ok(response)
}

#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = SessionView), (status = 404, body = Problem)))]
pub async fn get_session(
    State(service): State<Service>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response> {
    service.admit_session(&scope, &id).await?;
    let view = service.get_session(&id).await?;
    let tag = etag(view.version);
    let mut response = axum::Json(view).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    Ok(response)
}

#[utoipa::path(get, path = "/v1/sessions/{id}/question", tag = "sessions", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = CurrentQuestion), (status = 404, body = Problem)))]
pub async fn get_question(
    State(service): State<Service>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    service.admit_session(&scope, &id).await?;
    Ok(axum::Json(service.current_question(&id).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RankingQuery {
    /// Items at most (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The items the session has not shown, ranked by its posterior beside the population's ranking
/// (what an onboarding page shows at the end: "what we learned about you").
#[utoipa::path(get, path = "/v1/sessions/{id}/ranking", tag = "sessions", params(("id" = String, Path), RankingQuery), security(("bearer" = [])),
    responses((status = 200, body = SessionRanking), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn session_ranking(
    State(service): State<Service>,
    scope: Scope,
    Path(id): Path<String>,
    Query(query): Query<RankingQuery>,
) -> Result<impl IntoResponse> {
    service.admit_session(&scope, &id).await?;
    Ok(axum::Json(service.session_ranking(&id, query.limit).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerQuery {
    /// Include the full posterior covariance in the response.
    #[serde(default)]
    covariance: bool,
}

#[utoipa::path(post, path = "/v1/sessions/{id}/answers", tag = "sessions", request_body = AnswerIn, security(("bearer" = [])),
    params(("id" = String, Path), ("covariance" = Option<bool>, Query, description = "include the posterior covariance"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 256, pattern = "^[!-~]+$", description = "replays the first response, byte for byte, for a retried answer"),
        ("If-Match" = Option<String>, Header, pattern = r#"^(W/)?"?[0-9]{1,18}"?$"#, description = "the session version (ETag) the answer is for")),
    responses((status = 200, body = AnswerView), (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)))]
pub async fn post_answer(
    State(service): State<Service>,
    scope: Scope,
    Path(id): Path<String>,
    Query(query): Query<AnswerQuery>,
    key: std::result::Result<IdempotencyKeyHeader, Problem>,
    if_match: std::result::Result<IfMatch, Problem>,
    Json(req): Json<AnswerIn>,
) -> Result<Response> {
    let submission = Submission::Answer(req);
    let headers = SubmitHeaders { key, if_match };
    submitted(&service, &scope, &id, &query, headers, submission).await
}

#[utoipa::path(post, path = "/v1/sessions/{id}/statements", tag = "sessions", request_body = StatementIn, security(("bearer" = [])),
    params(("id" = String, Path), ("covariance" = Option<bool>, Query, description = "include the posterior covariance"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 256, pattern = "^[!-~]+$", description = "replays the first response, byte for byte, for a retried statement"),
        ("If-Match" = Option<String>, Header, pattern = r#"^(W/)?"?[0-9]{1,18}"?$"#, description = "the session version (ETag) the statement is for")),
    responses((status = 200, body = AnswerView), (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)))]
pub async fn post_statement(
    State(service): State<Service>,
    scope: Scope,
    Path(id): Path<String>,
    Query(query): Query<AnswerQuery>,
    key: std::result::Result<IdempotencyKeyHeader, Problem>,
    if_match: std::result::Result<IfMatch, Problem>,
    Json(req): Json<StatementIn>,
) -> Result<Response> {
    let submission = Submission::Statement(req);
    let headers = SubmitHeaders { key, if_match };
    submitted(&service, &scope, &id, &query, headers, submission).await
}

/// A submission's headers as extracted, checked only once the caller may use the session (so a
/// caller outside it learns nothing from them).
struct SubmitHeaders {
    key: std::result::Result<IdempotencyKeyHeader, Problem>,
    if_match: std::result::Result<IfMatch, Problem>,
}

/// An answer or a statement, submitted: the response is its body as first sent, its version as
/// the ETag, and a replay marked as one.
async fn submitted(
    service: &Service,
    scope: &Scope,
    id: &str,
    query: &AnswerQuery,
    headers: SubmitHeaders,
    submission: Submission,
) -> Result<Response> {
    service.admit_session(scope, id).await?;
    let options = SubmitOptions {
        idempotency_key: headers.key?.0,
        expected_version: headers.if_match?.0,
        covariance: query.covariance,
    };
    let ack = service.submit(id, submission, options).await?;
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        ack.body,
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(ack.version));
    if ack.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[utoipa::path(post, path = "/v1/sessions/{id}/finish", tag = "sessions", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = SessionView), (status = 404, body = Problem)))]
pub async fn finish_session(
    State(service): State<Service>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    service.admit_session(&scope, &id).await?;
    Ok(axum::Json(service.finish(&id).await?))
}

/// The route that starts a session (a frontend key).
pub fn frontend_routes() -> Router<Service> {
    Router::new().route("/v1/sessions", post(create_session))
}

/// The routes of one session (a frontend key or the session's token).
pub fn session_routes() -> Router<Service> {
    Router::new()
        .route("/v1/sessions/{id}", get(get_session))
        .route("/v1/sessions/{id}/question", get(get_question))
        .route("/v1/sessions/{id}/answers", post(post_answer))
        .route("/v1/sessions/{id}/statements", post(post_statement))
        .route("/v1/sessions/{id}/finish", post(finish_session))
        .route("/v1/sessions/{id}/ranking", get(session_ranking))
}
