//! The OpenAPI 3.1 document, generated from the handlers' annotations and the DTOs.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::handlers;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "elicit",
        description = "Live adaptive preference elicitation: Gaussian user posteriors, informative questions, personalised scoring. Errors are RFC 9457 application/problem+json."
    ),
    paths(
        handlers::create_model, handlers::list_models, handlers::get_model, handlers::delete_model, handlers::upsert_items, handlers::list_items,
        handlers::delete_item, handlers::create_session, handlers::get_session, handlers::get_question, handlers::post_answer,
        handlers::finish_session, handlers::get_profile, handlers::score, handlers::delete_user, handlers::readyz,
        handlers::create_key, handlers::list_keys, handlers::revoke_key,
    ),
    components(schemas(super::error::Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "models", description = "Reward bases and item banks (admin)"),
        (name = "sessions", description = "Onboarding sessions (frontend key or the session's token)"),
        (name = "scoring", description = "Profiles and personalised scores (scorer)"),
        (name = "users", description = "Erasure (admin)"),
        (name = "keys", description = "API keys (admin)"),
        (name = "ops", description = "Probes"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document served at `/openapi.json` and checked in as `docs/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}
