//! Accepting connections: a cap on the open connections of a replica, and two timeouts that keep
//! a slow or silent client from holding a socket for more than seconds.
//!
//! Each connection is served by hyper's HTTP/1 server in a task of its own, beside a watchdog
//! that reads the connection's [`Clock`] (its reads and its requests move it):
//! - **idle**: a connection that sent no byte of a request for [`ConnectionLimits::idle_timeout`]
//!   — since it opened, or since its last response — is closed (the keep-alive timeout);
//! - **headers**: once the first byte of a request arrived, its headers must be complete within
//!   [`ConnectionLimits::header_timeout`], or the connection is closed (a client that sends half
//!   a request and then nothing, or a byte a second);
//! - **cap**: beyond [`ConnectionLimits::max_open`] open connections a new one is closed at once,
//!   counted and logged.
//!
//! A request being handled is never cut by these (its `request_timeout` bounds it). hyper's own
//! header timeout is not used: it runs from the moment hyper waits for a request's head, so it
//! would close every kept-alive connection idle for the header timeout, and the two could not
//! differ. Closed and refused connections are counted in `elicit_connections_closed_total`
//! (label `reason`), the open ones in the `elicit_connections_open` gauge.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tower::Service;

/// The limits on each replica's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// From a request's first byte to its complete headers.
    pub header_timeout: Duration,
    /// Between requests on a kept-alive connection (and before the first).
    pub idle_timeout: Duration,
    /// Connections open at once; more are closed on arrival.
    pub max_open: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets each
/// connection finish its request in flight, and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_open));
    let graceful = GracefulShutdown::new();
    let refusals = RateLimitedLog::default();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait for some to close.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!("elicit_connections_closed_total", "reason" => "over_limit")
                .increment(1);
            refusals.warn(limits.max_open);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let clock = Arc::new(Clock::new());
        let connection = hyper::server::conn::http1::Builder::new().serve_connection(
            TokioIo::new(Watched {
                io: stream,
                clock: Arc::clone(&clock),
            }),
            hyper::service::service_fn(handler(router.clone(), peer, Arc::clone(&clock))),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            metrics::gauge!("elicit_connections_open").increment(1.0);
            if let Some(reason) = watch(connection, &clock, limits).await {
                metrics::counter!("elicit_connections_closed_total", "reason" => reason)
                    .increment(1);
            }
            metrics::gauge!("elicit_connections_open").decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A request's response, as hyper's service function returns it.
type Handled = Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

/// The per-request service of a connection: the router, with the peer's address and the clock
/// told when a request starts (its headers are complete) and ends (its response is ready).
fn handler(
    router: Router,
    peer: SocketAddr,
    clock: Arc<Clock>,
) -> impl Fn(hyper::Request<Incoming>) -> Handled + Clone {
    move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let busy = Busy::start(Arc::clone(&clock));
        let mut router = router.clone();
        Box::pin(async move {
            let response = router.call(request).await;
            drop(busy);
            response
        })
    }
}

/// Runs `connection` until it ends, or until its clock runs out: then it is dropped (closing the
/// socket) and the reason returned. It wakes at the next deadline, when a request begins, or,
/// while one is handled, after the shorter timeout.
async fn watch(
    connection: impl Future<Output = Result<(), hyper::Error>>,
    clock: &Clock,
    limits: ConnectionLimits,
) -> Option<&'static str> {
    let mut connection = pin!(connection);
    loop {
        // While a request is handled no deadline runs; look again after the shorter timeout.
        let wake = clock
            .deadline(limits)
            .map(|(at, _)| at)
            .unwrap_or_else(|| Instant::now() + limits.header_timeout.min(limits.idle_timeout));
        tokio::select! {
            _ = &mut connection => return None,
            () = clock.begun.notified() => {}
            () = tokio::time::sleep_until(wake) => {
                if let Some((at, reason)) = clock.deadline(limits)
                    && at <= Instant::now()
                {
                    return Some(reason);
                }
            }
        }
    }
}

/// Where a connection is between its requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No byte of a request since `since` (the connection's start or its last response).
    Idle { since: Instant },
    /// The first byte of a request arrived at `since`; its headers are not complete yet.
    Head { since: Instant },
    /// Requests being handled (hyper handles one at a time; pipelining can overlap two briefly).
    Busy { requests: usize },
}

/// A connection's [`Phase`], moved by its reads ([`Watched`]) and its requests ([`Busy`]).
#[derive(Debug)]
struct Clock {
    phase: Mutex<Phase>,
    /// Told when a request begins: the header deadline may come before the idle one the
    /// watchdog sleeps until.
    begun: Notify,
}

impl Clock {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Idle {
                since: Instant::now(),
            }),
            begun: Notify::new(),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().expect("connection clock lock")
    }

    /// Bytes arrived: a request has begun, if none was under way.
    fn read(&self) {
        let mut phase = self.phase();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Head {
                since: Instant::now(),
            };
            drop(phase);
            self.begun.notify_one();
        }
    }

    /// When the connection is to be closed, and why (`None` while a request is handled).
    fn deadline(&self, limits: ConnectionLimits) -> Option<(Instant, &'static str)> {
        match *self.phase() {
            Phase::Idle { since } => Some((since + limits.idle_timeout, "idle_timeout")),
            Phase::Head { since } => Some((since + limits.header_timeout, "header_timeout")),
            Phase::Busy { .. } => None,
        }
    }
}

/// A request being handled on a connection, from its complete headers until its response is
/// ready (or its handler is dropped).
struct Busy(Arc<Clock>);

impl Busy {
    fn start(clock: Arc<Clock>) -> Self {
        {
            let mut phase = clock.phase();
            *phase = match *phase {
                Phase::Busy { requests } => Phase::Busy {
                    requests: requests + 1,
                },
                _ => Phase::Busy { requests: 1 },
            };
        }
        Self(clock)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        *phase = match *phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        };
    }
}

/// A connection's socket, telling its clock when bytes arrive.
struct Watched {
    io: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A warning about refused connections at most once a second (an attack would otherwise fill
/// the log at its own rate; the counter has every one).
#[derive(Default)]
struct RateLimitedLog {
    last_second: AtomicU64,
}

impl RateLimitedLog {
    fn warn(&self, max_open: usize) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_second.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(
                max_open,
                "refusing connections: the replica has its maximum open \
                 (elicit_connections_closed_total{{reason=\"over_limit\"}} counts them)"
            );
        }
    }
}
