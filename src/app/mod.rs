//! Configuration, telemetry and start-up: everything `elicit serve` wires together.

pub mod config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::Config;

use crate::http::{self, Limits};
use crate::service::Service;
use crate::store::SqlStore;
use crate::store::sql::PoolSettings;

/// A bound, migrated, ready-to-serve application.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    store: SqlStore,
}

impl Application {
    /// Connects to the store, runs migrations, binds the listener (port 0: any free port).
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let store = SqlStore::connect(
            &config.database_url,
            PoolSettings {
                max_connections: config.max_connections,
                acquire_timeout: Duration::from_millis(config.acquire_timeout_ms),
            },
        )
        .await?;
        store.migrate().await?;
        let service = Service::new(Arc::new(store.clone()));
        let limits = Limits {
            body_bytes: config.body_limit_bytes,
            items_body_bytes: config.items_body_limit_bytes,
            score_body_bytes: config.score_body_limit_bytes,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
        };
        let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
        Ok(Self {
            listener,
            router: http::router(service, limits),
            store,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, lets in-flight requests finish, then closes the pool.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await?;
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
