//! An HTTP client of the API, for the commands that drive a running server (`elicit eval
//! --target`, `elicit bench`) and for the tests.

use std::time::Duration;

use anyhow::Context;

/// A client that sends `Authorization: Bearer <key>` on every request, with an optional
/// whole-request timeout.
pub fn with_key(key: &str, timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}")
            .parse()
            .context("the API key is not a valid header value")?,
    );
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(1024);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    Ok(builder.build()?)
}
