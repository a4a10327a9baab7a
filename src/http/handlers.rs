//! Route handlers: parse, call the service, shape the response. No logic of their own.

use std::any::Any;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::Problem;
use super::extract::{IdempotencyKeyHeader, IfMatch, Json, Path, Query};
#[allow(unused_imports)]
use crate::service::audit::{Actor, AuditFilter, AuditPage};
#[allow(unused_imports)]
use crate::service::demo::SessionRanking;
#[allow(unused_imports)] // the response types are named only in the OpenAPI annotations
use crate::service::dto::{
    AnswerIn, AnswerView, CreateModel, CreateSession, CurrentQuestion, Erased, ItemsPage,
    ModelErased, ModelList, ModelView, ProfileView, ScoreRequest, ScoreResponse, SessionCreated,
    SessionView, StatementIn, UpsertItems, UpsertResult,
};
#[allow(unused_imports)]
use crate::service::keys::{CreateKey, KeyCreated, KeyList, RotateKey, Scope};
#[allow(unused_imports)]
use crate::service::priors::{PriorChanged, RefitPrior};
use crate::service::{Service, Submission, SubmitOptions};

type Result<T> = std::result::Result<T, Problem>;

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header")
}

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

/// An optional JSON body: none, `null` and `{}` all mean the defaults.
fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // As the JSON extractor answers: 400 for text that is not JSON, 422 for JSON of the wrong
    // shape or with a value out of range.
    Ok(serde_json::from_slice::<Option<T>>(body)
        .map_err(|e| {
            let detail = format!("the body is not {what}: {e}");
            if e.is_data() {
                Problem::validation(None, detail)
            } else {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "malformed-json",
                    "Malformed JSON",
                    detail,
                )
            }
        })?
        .unwrap_or_default())
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

#[utoipa::path(delete, path = "/v1/users/{user_id}", tag = "users", params(("user_id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")), security(("bearer" = [])),
    responses((status = 200, body = Erased)))]
pub async fn delete_user(
    State(service): State<Service>,
    actor: Actor,
    Path(user_id): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(service.delete_user(&user_id, &actor).await?))
}

/// Ready when not draining and the database answers within a second.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, description = "ready"), (status = 503, body = Problem)))]
pub async fn readyz(State(service): State<Service>) -> Response {
    if service.is_draining() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "Draining",
            "the server is shutting down",
        )
        .into_response();
    }
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
    Problem::internal().into_response()
}

/// The OpenAPI 3.1 document of this API.
pub async fn openapi() -> impl IntoResponse {
    axum::Json(super::openapi::document())
}

/// Swagger UI at `/docs`, its assets compiled into the binary (works offline).
pub fn swagger_ui() -> utoipa_swagger_ui::SwaggerUi {
    utoipa_swagger_ui::SwaggerUi::new("/docs").url("/docs/openapi.json", super::openapi::document())
}
