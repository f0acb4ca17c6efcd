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
//!
//! A route may take a connection over (`101 Switching Protocols`, the peer
//! message stream): its reply carries an [`OnUpgraded`] handler, which
//! gets the connection once hyper hands it over.

use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use std::future::Future;
use std::pin::Pin;
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

/// A connection a route took over.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// What serves a connection after a `101` reply: put in the reply's
/// extensions by the route that switched protocols.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct OnUpgraded(
    Arc<dyn Fn(Upgraded) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>,
);

impl OnUpgraded {
    pub fn new(
        serve: impl Fn(Upgraded) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static,
    ) -> OnUpgraded {
        OnUpgraded(Arc::new(serve))
    }
}

/// Serves a request with warp's `service`; a `101` reply that carries an
/// [`OnUpgraded`] gets the connection once hyper lets it go.
async fn serve_request<S>(
    mut service: S,
    mut request: hyper::Request<hyper::body::Incoming>,
) -> Result<S::Response, S::Error>
where
    S: tower_service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
        >,
{
    let upgrade = request
        .headers()
        .contains_key(hyper::header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut request));
    std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
    let mut response = service.call(request).await?;
    if response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS
        && let Some(on_upgraded) = response.extensions_mut().remove::<OnUpgraded>()
    {
        match upgrade {
            Some(upgrade) => {
                tokio::spawn(async move {
                    match upgrade.await {
                        Ok(io) => (on_upgraded.0)(TokioIo::new(io)).await,
                        Err(e) => tracing::debug!(error = %e, "a connection upgrade failed"),
                    }
                });
            }
            None => tracing::warn!("a 101 reply to a request that asked for no upgrade"),
        }
    }
    Ok(response)
}

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
        let warp_service = service.clone();
        let service =
            hyper::service::service_fn(move |request| serve_request(warp_service.clone(), request));
        let mut stopping = stop.clone();
        // One connection served by hyper with the header timeout (which
        // also closes a connection that never sends a byte), ended
        // gracefully when the node stops. Not hyper-util's `auto` builder:
        // it waits for the first bytes before any timer runs.
        // `GracefulShutdown` takes no upgradeable connection, so the stop
        // is watched here and the slots count what is still open.
        macro_rules! serve_connection {
            ($io:expr) => {{
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new($io), service)
                    .with_upgrades();
                let mut connection = std::pin::pin!(connection);
                let stop = async { stopping.wait_for(|stopping| *stopping).await.is_ok() };
                let served = tokio::select! {
                    served = connection.as_mut() => served,
                    _ = stop => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(e) = served {
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
    // Every connection holds a slot until it ends: all slots back means
    // every open connection finished its request.
    let all = u32::try_from(options.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}
