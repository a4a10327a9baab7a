//! Configuration, telemetry and start-up: everything `elicit serve` wires together.

pub mod config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::Config;

use crate::http::connections::ConnectionLimits;
use crate::http::{self, Limits};
use crate::service::Service;
use crate::service::demo::DemoLimits;
use crate::store::SqlStore;
use crate::store::sql::PoolSettings;

/// A bound, migrated, ready-to-serve application.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    connection_limits: ConnectionLimits,
    service: Service,
    store: SqlStore,
    drain_delay: Duration,
    first_run_key: Option<String>,
}

impl Application {
    /// Connects to the store, runs migrations, binds the listener (port 0: any free port).
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let store = SqlStore::connect(
            &config.database_url,
            PoolSettings {
                max_connections: config.max_connections,
                acquire_timeout: Duration::from_millis(config.acquire_timeout_ms),
                synchronous_commit: config.synchronous_commit,
            },
        )
        .await?;
        store.migrate().await?;
        let service = Service::new(Arc::new(store.clone()), config.admin_key.as_deref())
            .with_run_cache_bytes(config.run_cache_bytes);
        let first_run_key = service.first_run_admin_key().await?;
        if first_run_key.is_none() && config.admin_key.as_deref().is_none_or(str::is_empty) {
            tracing::info!(
                "no admin key configured (ELICIT_ADMIN_KEY): the stored keys call the API"
            );
        }
        if config.demo && service.load_demo_model().await? {
            tracing::info!("loaded the demo model: open /demo in a browser");
        }
        let limits = Limits {
            body_bytes: config.body_limit_bytes,
            items_body_bytes: config.items_body_limit_bytes,
            score_body_bytes: config.score_body_limit_bytes,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            max_concurrent_requests: config.max_concurrent_requests,
            rates: config.rate_defaults(),
            cors_allowed_origins: config
                .cors_allowed_origins
                .iter()
                .map(|origin| {
                    axum::http::HeaderValue::from_str(origin).map_err(|_| {
                        anyhow::anyhow!("cors_allowed_origins: '{origin}' is not a valid origin")
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            demo: config.demo.then(|| DemoLimits {
                max_open_sessions: config.demo_max_open_sessions,
                session_ttl: Duration::from_secs(config.demo_session_ttl_s),
            }),
        };
        let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
        http::metrics::handle();
        Ok(Self {
            listener,
            router: http::router(service.clone(), limits),
            connection_limits: ConnectionLimits {
                header_timeout: Duration::from_millis(config.header_timeout_ms),
                idle_timeout: Duration::from_millis(config.idle_timeout_ms),
                max_open: config.max_open_connections,
            },
            service,
            store,
            drain_delay: Duration::from_millis(config.drain_delay_ms),
            first_run_key,
        })
    }

    /// The admin key created because this is the first run on an empty store without a
    /// configured admin key (see [`Service::first_run_admin_key`]); shown once.
    pub fn first_run_key(&self) -> Option<&str> {
        self.first_run_key.as_deref()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves; then readiness fails at once, new connections are still
    /// accepted for `drain_delay` (so a load balancer can notice), in-flight requests finish, and
    /// the pool closes. An answer is one transaction, so none is ever half-applied.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let service = self.service.clone();
        let drain_delay = self.drain_delay;
        let drained = async move {
            shutdown.await;
            service.start_draining();
            tokio::time::sleep(drain_delay).await;
        };
        http::connections::serve(self.listener, self.router, self.connection_limits, drained).await;
        self.store.close().await;
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; draining");
}

/// Logs: readable in development, JSON when `json` is set; `RUST_LOG` filters.
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
