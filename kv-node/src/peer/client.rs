//! The HTTP client peers use: reqwest for plain HTTP, a hyper client over
//! rustls for HTTPS.
//!
//! Why not reqwest for both: its rustls features either build aws-lc (a C
//! library) or, without a provider, make every reqwest client in the
//! workspace panic until a provider is installed (Cargo unifies features
//! across the workspace, so kvctl and the tests would be hit too).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};
use rustls::ClientConfig;
use std::net::IpAddr;
use std::time::Duration;

/// Idle pooled connections are dropped after this long: below the
/// server's header timeout (30 s, `settings::HEADER_READ_TIMEOUT`), which
/// closes idle connections, so the client does not reuse one the server is
/// closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// One client for all peers of a node; connections are kept alive.
#[derive(Clone)]
pub enum PeerClient {
    Plain(reqwest::Client),
    /// Boxed: the hyper client is much larger than reqwest's handle.
    Tls(Box<Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>>),
}

/// A connection taken over from HTTP (`101 Switching Protocols`).
pub trait UpgradedIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> UpgradedIo for T {}

/// What asking for an upgrade got.
pub enum Upgrade {
    /// The peer switched protocols: the connection is ours.
    Switched(Box<dyn UpgradedIo>),
    /// The peer answered with another status (and this body).
    Refused(StatusCode, Bytes),
}

/// Settings shared by both kinds.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    /// Connections leave from this IP (the node's listen IP).
    pub local_address: Option<IpAddr>,
    pub connect_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerClientError {
    #[error("{0}")]
    Plain(#[from] reqwest::Error),
    #[error("bad URL {0:?}")]
    Url(String),
    #[error("{0}")]
    Http(#[from] hyper_util::client::legacy::Error),
    #[error("reading the reply: {0}")]
    Body(#[from] hyper::Error),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
}

impl PeerClientError {
    /// True if the request never reached the server (nothing was sent).
    pub fn is_connect(&self) -> bool {
        match self {
            PeerClientError::Plain(e) => e.is_connect(),
            PeerClientError::Http(e) => e.is_connect(),
            PeerClientError::Url(_) | PeerClientError::Request(_) => true,
            PeerClientError::Body(_) | PeerClientError::Timeout(_) => false,
        }
    }
}

/// Connection settings of the node's one peer client.
pub fn node_client_options(listen: IpAddr) -> ClientOptions {
    ClientOptions {
        local_address: (!listen.is_unspecified()).then_some(listen),
        connect_timeout: Duration::from_millis(500),
        pool_max_idle_per_host: 8,
    }
}

impl PeerClient {
    /// The scheme every peer URL must use with this client.
    pub fn scheme(&self) -> &'static str {
        match self {
            PeerClient::Plain(_) => "http",
            PeerClient::Tls(_) => "https",
        }
    }

    /// A plain HTTP client with default options (tests, and a node whose
    /// client was not set).
    pub fn plain_default() -> PeerClient {
        PeerClient::Plain(
            reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_millis(500))
                .build()
                .unwrap_or_default(),
        )
    }

    /// A plain HTTP client, or an HTTPS one with `tls`.
    pub fn new(tls: Option<ClientConfig>, options: ClientOptions) -> Result<Self, reqwest::Error> {
        match tls {
            None => {
                let mut builder = reqwest::Client::builder()
                    .no_proxy()
                    .tcp_nodelay(true)
                    .connect_timeout(options.connect_timeout)
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_max_idle_per_host(options.pool_max_idle_per_host);
                if let Some(ip) = options.local_address {
                    builder = builder.local_address(ip);
                }
                Ok(PeerClient::Plain(builder.build()?))
            }
            Some(tls) => {
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_nodelay(true);
                http.set_connect_timeout(Some(options.connect_timeout));
                http.set_local_address(options.local_address);
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_only()
                    .enable_http1()
                    .wrap_connector(http);
                let client = Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_max_idle_per_host(options.pool_max_idle_per_host)
                    .build(https);
                Ok(PeerClient::Tls(Box::new(client)))
            }
        }
    }

    /// Asks `url` (a POST, with `authorization`) to switch the connection to
    /// `protocol`; waits at most `timeout` for the answer.
    pub async fn upgrade(
        &self,
        url: &str,
        authorization: Option<&HeaderValue>,
        protocol: &'static str,
        timeout: Duration,
    ) -> Result<Upgrade, PeerClientError> {
        let exchange = async {
            match self {
                PeerClient::Plain(client) => {
                    let mut request = client
                        .post(url)
                        .header(header::CONNECTION, "upgrade")
                        .header(header::UPGRADE, protocol);
                    if let Some(authorization) = authorization {
                        request = request.header(header::AUTHORIZATION, authorization.clone());
                    }
                    let response = request.send().await?;
                    let status = response.status();
                    if status != StatusCode::SWITCHING_PROTOCOLS {
                        return Ok(Upgrade::Refused(status, response.bytes().await?));
                    }
                    Ok(Upgrade::Switched(Box::new(response.upgrade().await?)))
                }
                PeerClient::Tls(client) => {
                    let uri: hyper::Uri = url
                        .parse()
                        .map_err(|_| PeerClientError::Url(url.to_string()))?;
                    let mut request = hyper::Request::builder()
                        .method(Method::POST)
                        .uri(uri)
                        .header(header::CONNECTION, "upgrade")
                        .header(header::UPGRADE, protocol);
                    if let Some(authorization) = authorization {
                        request = request.header(header::AUTHORIZATION, authorization.clone());
                    }
                    let response = client
                        .request(request.body(Full::new(Bytes::new()))?)
                        .await?;
                    let status = response.status();
                    if status != StatusCode::SWITCHING_PROTOCOLS {
                        let body = response.into_body().collect().await?.to_bytes();
                        return Ok(Upgrade::Refused(status, body));
                    }
                    let io = hyper::upgrade::on(response).await?;
                    Ok(Upgrade::Switched(Box::new(TokioIo::new(io))))
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| PeerClientError::Timeout(timeout))?
    }

    /// Sends one request and returns the status and body of the reply.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        authorization: Option<&HeaderValue>,
        content_type: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), PeerClientError> {
        match self {
            PeerClient::Plain(client) => {
                let mut request = client
                    .request(method, url)
                    .header(header::CONTENT_TYPE, content_type)
                    .timeout(timeout)
                    .body(body);
                if let Some(authorization) = authorization {
                    request = request.header(header::AUTHORIZATION, authorization.clone());
                }
                let response = request.send().await?;
                let status = response.status();
                Ok((status, response.bytes().await?))
            }
            PeerClient::Tls(client) => {
                let uri: hyper::Uri = url
                    .parse()
                    .map_err(|_| PeerClientError::Url(url.to_string()))?;
                let mut request = hyper::Request::builder()
                    .method(method)
                    .uri(uri)
                    .header(header::CONTENT_TYPE, content_type);
                if let Some(authorization) = authorization {
                    request = request.header(header::AUTHORIZATION, authorization.clone());
                }
                let request = request.body(Full::new(Bytes::from(body)))?;
                let exchange = async {
                    let response = client.request(request).await?;
                    let status = response.status();
                    let body = response.into_body().collect().await?.to_bytes();
                    Ok::<_, PeerClientError>((status, body))
                };
                tokio::time::timeout(timeout, exchange)
                    .await
                    .map_err(|_| PeerClientError::Timeout(timeout))?
            }
        }
    }
}
