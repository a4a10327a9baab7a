//! The API's routes by resource. Each module holds one resource's handlers (parse, call the
//! service, shape the response: no logic of their own) and its routes, grouped by the access
//! class that guards them; [`super::router`] merges them and puts the guards on.

pub mod audit;
pub mod keys;
pub mod models;
pub mod ops;
pub mod scoring;
pub mod sessions;
pub mod users;

use axum::http::StatusCode;

use super::error::Problem;

type Result<T> = std::result::Result<T, Problem>;

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
