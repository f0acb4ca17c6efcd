//! The accept loop: serves the warp routes over plain HTTP or TLS with the
//! same connection limits (SECURITY.md, "Limits").
//!
//! - At most `max_connections` connections are open at once; one accepted
//!   over the limit is closed at once (the client sees a reset and may
//!   retry), so a flood of idle sockets cannot exhaust file descriptors.
//! - A TLS handshake must finish within [`HANDSHAKE_TIMEOUT`].
//! - Request headers must arrive within `--header-timeout-ms` of the
//!   connection waiting for them, which also closes idle kept-alive
//!   connections (hyper starts the timer whenever it waits for a head).
//! - The body deadline (`--body-timeout-ms`) is per request, in
//!   `http::handle`.
//!
//! warp's own `serve` has no header timeout and no connection limit, so
//! plain HTTP goes through hyper here exactly as TLS does.

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use warp::Filter;

/// A client that opens a connection and never finishes the TLS handshake
/// is cut off after this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning about refused connections per this long.
const REFUSAL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// How connections are served.
pub struct AcceptOptions {
    /// `None`: plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// Counts connections closed at once for want of a slot
    /// (`connections_refused`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Serves `routes` on `listener` until `stop` turns true, then waits for
/// open connections to finish their requests.
pub async fn serve<F>(
    listener: TcpListener,
    options: AcceptOptions,
    routes: F,
    mut stop: watch::Receiver<bool>,
) where
    F: Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let acceptor = options.tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let service = warp::service(routes);
    let graceful = GracefulShutdown::new();
    let header_timeout = options.header_timeout;
    let mut warned_at: Option<Instant> = None;
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: back off.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // The watch guard must not live across an await (not Send).
            _ = async { stop.wait_for(|stopping| *stopping).await.is_ok() } => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Dropping the stream closes it: the limit holds, and the
            // refused client learns at once instead of hanging.
            drop(tcp);
            options.metrics.connections_refused.inc();
            if warned_at.is_none_or(|t| t.elapsed() >= REFUSAL_WARNING_INTERVAL) {
                tracing::warn!(
                    %remote,
                    limit = options.max_connections,
                    "connection refused: --max-connections reached"
                );
                warned_at = Some(Instant::now());
            }
            continue;
        };
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(service.clone());
        let watcher = graceful.watcher();
        // One connection served by hyper with the header timeout, under
        // the graceful-shutdown watcher.
        macro_rules! serve_connection {
            ($io:expr) => {{
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new($io), service);
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
            }};
        }
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => serve_connection!(tcp),
                Some(acceptor) => {
                    let tls =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%remote, error = %e, "TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return;
                            }
                        };
                    serve_connection!(tls)
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
