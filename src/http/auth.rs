//! Bearer-key authentication and role checks, as a layer per group of routes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::Problem;
use super::rate::RateLimiters;
use crate::service::Service;
use crate::service::audit::Actor;
use crate::service::keys::{Principal, Role};

/// What a group of routes requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Admin,
    Frontend,
    Scorer,
    /// A frontend key, or the token of the session named in the path.
    Session,
}

fn allows(principal: &Principal, access: Access, path: &str) -> bool {
    match principal {
        Principal::Key {
            role: Role::Admin, ..
        } => true,
        Principal::Key {
            role: Role::Frontend,
            ..
        } => matches!(access, Access::Frontend | Access::Session),
        Principal::Key {
            role: Role::Scorer, ..
        } => access == Access::Scorer,
        Principal::Session(id) => {
            access == Access::Session && session_in_path(path) == Some(id.as_str())
        }
    }
}

/// The `{id}` of `/v1/sessions/{id}[/…]`.
fn session_in_path(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/sessions/")?.split('/').next()
}

fn unauthorized(detail: &str) -> Response {
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        detail,
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Lets the request through if its bearer token grants `access` and its rate limit has room:
/// 401 without a valid token, 403 with one that does not grant it, 429 with `Retry-After` over
/// the limit (before the handler does any work).
pub async fn require(
    service: Service,
    limiters: Arc<RateLimiters>,
    access: Access,
    request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return unauthorized("send an API key or session token as 'Authorization: Bearer …'");
    };
    let principal = match service.authenticate(token).await {
        Ok(Some(p)) => p,
        Ok(None) => return unauthorized("the key or token is not valid"),
        Err(e) => return Problem::from(e).into_response(),
    };
    if !allows(&principal, access, request.uri().path()) {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "this key or token may not use this route",
        )
        .into_response();
    }
    let scope = principal.scope();
    if scope.is_restricted() && reaches_beyond_models(&request) {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "a key scoped to models may not manage keys, read the audit trail or erase users",
        )
        .into_response();
    }
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Err(wait) = limiters.check(&principal, client) {
        metrics::counter!("elicit_rate_limited_total", "role" => principal.kind()).increment(1);
        return too_many_requests(wait);
    }
    let actor = Actor {
        key_id: match &principal {
            Principal::Key { id, .. } => id.clone(),
            Principal::Session(_) => "session-token".into(),
        },
        request_id: request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let mut request = request;
    request.extensions_mut().insert(scope);
    request.extensions_mut().insert(actor);
    next.run(request).await
}

/// Routes whose effect is not confined to named models: key management, the audit trail (which
/// names every model) and user erasure.
fn reaches_beyond_models(request: &Request) -> bool {
    let path = request.uri().path();
    path.starts_with("/v1/keys")
        || path.starts_with("/v1/audit")
        || (request.method() == axum::http::Method::DELETE && path.starts_with("/v1/users/"))
}

pub(super) fn too_many_requests(wait: Duration) -> Response {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        format!("this key or address has reached its rate limit; retry in {seconds} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}
