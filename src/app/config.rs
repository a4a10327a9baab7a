//! Configuration: `config/default.toml`, then `config/$ELICIT_ENV.toml` if present, then
//! `ELICIT_*` environment variables (e.g. `ELICIT_DATABASE_URL`, `ELICIT_PORT`).

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// `sqlite://path/to/file.db` (embedded) or `postgres://user@host/db`.
    pub database_url: String,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before failing with 503.
    pub acquire_timeout_ms: u64,
    /// Whole-request timeout (503 when exceeded).
    pub request_timeout_ms: u64,
    /// Body limit of every route but the two below.
    pub body_limit_bytes: usize,
    /// Body limit of `PUT /v1/models/{model}/items`.
    pub items_body_limit_bytes: usize,
    /// Body limit of `POST /v1/score`.
    pub score_body_limit_bytes: usize,
    /// JSON logs (production) instead of readable ones.
    pub log_json: bool,
    /// The bootstrap admin key (prefer the environment: ELICIT_ADMIN_KEY).
    pub admin_key: Option<String>,
    /// Requests in flight at once; more get 503 with Retry-After at once.
    pub max_concurrent_requests: usize,
    /// From a request's first byte to its complete headers, at most; a slower client's
    /// connection is closed.
    pub header_timeout_ms: u64,
    /// How long a connection may wait without starting a request (kept alive between requests,
    /// or new) before it is closed.
    pub idle_timeout_ms: u64,
    /// Connections open at once per replica; more are closed on arrival and counted.
    pub max_open_connections: usize,
    /// After SIGTERM: how long readiness reports 503 before the listener stops accepting.
    pub drain_delay_ms: u64,
    /// Memory budget of the per-replica cache of sessions' engine state (an answer on a cached
    /// session costs O(J²) plus a question, whatever the bank's size; a miss rebuilds the state
    /// from the answer log).
    pub run_cache_bytes: usize,
    /// Browser origins allowed to call the API (CORS), e.g. `["https://app.example"]`; none by
    /// default, so browsers on other origins cannot read it.
    pub cors_allowed_origins: Vec<String>,
    /// PostgreSQL `synchronous_commit` of the service's connections (README, "Durability").
    pub synchronous_commit: crate::store::sql::SynchronousCommit,
    /// Rate limits of keys without their own, per role (requests a second and burst, per
    /// replica; a rate of 0 is unlimited), and of session tokens per client address.
    pub admin_rate_per_s: f64,
    pub admin_burst: u32,
    pub frontend_rate_per_s: f64,
    pub frontend_burst: u32,
    pub scorer_rate_per_s: f64,
    pub scorer_burst: u32,
    pub session_rate_per_s: f64,
    pub session_burst: u32,
    /// Load the bundled demo model (`/demo`) on the first start of a store (none if an admin
    /// deleted it since).
    pub demo: bool,
    /// Demo sessions a client address may start (requests a second and burst, per replica).
    pub demo_rate_per_s: f64,
    pub demo_burst: u32,
    /// Open demo sessions (active, started within `demo_session_ttl_s`) at most; more get 503.
    pub demo_max_open_sessions: u32,
    pub demo_session_ttl_s: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            database_url: "sqlite://data/elicit.db".into(),
            max_connections: 10,
            acquire_timeout_ms: 3_000,
            request_timeout_ms: 30_000,
            body_limit_bytes: 1 << 20,
            items_body_limit_bytes: 256 << 20,
            score_body_limit_bytes: 32 << 20,
            log_json: false,
            admin_key: None,
            max_concurrent_requests: 512,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_open_connections: 10_000,
            drain_delay_ms: 0,
            run_cache_bytes: crate::service::DEFAULT_RUN_CACHE_BYTES,
            cors_allowed_origins: Vec::new(),
            synchronous_commit: crate::store::sql::SynchronousCommit::On,
            admin_rate_per_s: 0.0,
            admin_burst: 0,
            frontend_rate_per_s: 1000.0,
            frontend_burst: 2000,
            scorer_rate_per_s: 5000.0,
            scorer_burst: 10000,
            session_rate_per_s: 20.0,
            session_burst: 40,
            demo: true,
            demo_rate_per_s: 0.2,
            demo_burst: 5,
            demo_max_open_sessions: 1000,
            demo_session_ttl_s: 3600,
        }
    }
}

impl Config {
    /// The rate limits of callers without their own.
    pub fn rate_defaults(&self) -> crate::http::rate::RateDefaults {
        use crate::service::keys::Rate;
        crate::http::rate::RateDefaults {
            admin: Rate::configured(self.admin_rate_per_s, self.admin_burst),
            frontend: Rate::configured(self.frontend_rate_per_s, self.frontend_burst),
            scorer: Rate::configured(self.scorer_rate_per_s, self.scorer_burst),
            session: Rate::configured(self.session_rate_per_s, self.session_burst),
            demo: Rate::configured(self.demo_rate_per_s, self.demo_burst),
        }
    }

    /// Defaults, then the files under `dir`, then the environment.
    pub fn load_from(dir: &std::path::Path) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(dir.join("default.toml")));
        if let Ok(env) = std::env::var("ELICIT_ENV") {
            figment = figment.merge(Toml::file(dir.join(format!("{env}.toml"))));
        }
        figment
            .merge(Env::prefixed("ELICIT_").ignore(&["ENV"]))
            .extract()
            .map_err(Box::new)
    }

    /// [`Config::load_from`] the `config/` directory of the working directory.
    pub fn load() -> Result<Self, Box<figment::Error>> {
        Self::load_from(std::path::Path::new("config"))
    }
}
