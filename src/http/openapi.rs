//! The OpenAPI 3.1 document, generated from the handlers' annotations and the DTOs.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use axum::response::IntoResponse;

use super::demo;
use super::routes::{audit, keys, models, ops, scoring, sessions, users};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "elicit",
        description = "Live adaptive preference elicitation: Gaussian user posteriors, informative questions, personalised scoring. Errors are RFC 9457 application/problem+json."
    ),
    paths(
        models::create_model, models::list_models, models::get_model, models::delete_model, models::upsert_items, models::list_items,
        models::delete_item, sessions::create_session, sessions::get_session, sessions::get_question, sessions::post_answer, sessions::post_statement,
        sessions::finish_session, users::get_profile, scoring::score, users::delete_user, ops::readyz,
        keys::create_key, keys::list_keys, keys::revoke_key, keys::rotate_key, audit::audit_trail,
        sessions::session_ranking, demo::start_session, models::refit_prior, models::restore_prior,
    ),
    components(schemas(super::error::Problem)),
    modifiers(&BearerAuth, &ProblemResponses),
    tags(
        (name = "models", description = "Reward bases and item banks (admin)"),
        (name = "sessions", description = "Onboarding sessions (frontend key or the session's token)"),
        (name = "scoring", description = "Profiles and personalised scores (scorer)"),
        (name = "users", description = "Erasure (admin)"),
        (name = "keys", description = "API keys (admin)"),
        (name = "audit", description = "The audit trail of admin changes (admin)"),
        (name = "demo", description = "The public demo (no key; limited per client address)"),
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

/// Documents every error an operation can answer, each as `application/problem+json`: those its
/// annotation names, and those every route of its kind can give (400/413/415 for a JSON body, 401
/// and 403 under `/v1`, 429 and 503 under load, 500). A client generated from the document then
/// expects every status the server sends.
struct ProblemResponses;

impl ProblemResponses {
    fn problem(description: &str) -> utoipa::openapi::Response {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    }

    fn document(operation: &mut utoipa::openapi::path::Operation, path: &str) {
        use utoipa::openapi::RefOr;
        let mut statuses = vec![
            ("500", "internal error"),
            (
                "503",
                "overloaded, draining, or the database is unavailable; retry",
            ),
        ];
        if path.starts_with("/v1/") {
            statuses.push(("401", "missing or unknown key or token"));
            statuses.push(("403", "the key or token may not use this route"));
            statuses.push(("404", "not found"));
            statuses.push((
                "429",
                "the key's (or address's) rate limit is reached; see Retry-After",
            ));
        }
        if operation.request_body.is_some() {
            statuses.push(("400", "malformed JSON"));
            statuses.push(("413", "body too large"));
            statuses.push(("415", "not application/json"));
            statuses.push(("422", "a field's value is not acceptable"));
        }
        if !operation.parameters.as_ref().is_none_or(Vec::is_empty) {
            statuses.push(("400", "a path or query parameter does not parse"));
            statuses.push(("422", "a parameter's value is not acceptable"));
        }
        Self::headers_are_strings(operation);
        let responses = &mut operation.responses.responses;
        for (status, description) in statuses {
            responses
                .entry(status.to_string())
                .or_insert_with(|| RefOr::T(Self::problem(description)));
        }
        // Error responses named in the annotations carry the problem schema as JSON: relabel them.
        for (status, response) in responses.iter_mut() {
            if let (false, RefOr::T(response)) = (status.starts_with('2'), response)
                && let Some(content) = response.content.shift_remove("application/json")
            {
                response
                    .content
                    .insert("application/problem+json".to_string(), content);
            }
        }
    }
}

impl ProblemResponses {
    /// An optional header is absent, never `null`: utoipa types an `Option<String>` header as
    /// `["string", "null"]`, which lets a client send the text `null`, which the server rejects.
    fn headers_are_strings(operation: &mut utoipa::openapi::path::Operation) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{Schema, SchemaType, Type};
        let headers = operation
            .parameters
            .iter_mut()
            .flatten()
            .filter_map(|parameter| match parameter {
                RefOr::T(parameter) if parameter.parameter_in == ParameterIn::Header => {
                    Some(parameter)
                }
                _ => None,
            });
        for header in headers {
            if let Some(RefOr::T(Schema::Object(schema))) = &mut header.schema
                && let SchemaType::Array(types) = &schema.schema_type
                && types.contains(&Type::Null)
            {
                let types: Vec<Type> = types
                    .iter()
                    .filter(|t| **t != Type::Null)
                    .cloned()
                    .collect();
                schema.schema_type = match types.as_slice() {
                    [only] => SchemaType::Type(only.clone()),
                    _ => SchemaType::Array(types),
                };
            }
        }
    }
}

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                Self::document(operation, path);
            }
        }
    }
}

/// The document served at `/openapi.json` and checked in as `docs/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// The OpenAPI 3.1 document of this API.
pub async fn openapi() -> impl IntoResponse {
    axum::Json(document())
}

/// Swagger UI at `/docs`, its assets compiled into the binary (works offline).
pub fn swagger_ui() -> utoipa_swagger_ui::SwaggerUi {
    utoipa_swagger_ui::SwaggerUi::new("/docs").url("/docs/openapi.json", document())
}
