//! The HTTP surface (API.md): routing, body limits and replies.
//!
//! One catch-all warp filter hands every request to [`handle`], which
//! checks its bearer token (`auth.rs`), takes one of the bounded request
//! slots, resolves the route (404 and 405 included), reads the body under
//! the route's size limit and calls the handler. Handlers talk to the node only
//! through [`DriverHandle`]; errors become replies in `error.rs`.
//!
//! - `error`: [`ApiError`] and its mapping to status codes and API codes.
//! - `kv`: the key-value routes; `txn`: `POST /txn`, transactions;
//!   `lease`: `/lease`, leases.
//!   `watch`: `GET /watch`, a streaming reply; `backup`: `GET
//!   /admin/backup`, the other one.
//! - `ops`: health, status, metrics, admin and the peer endpoint.
//! - `members`: membership changes and leader transfer; `forward`: sending
//!   those from a follower to the leader.

mod backup;
mod error;
mod kv;
mod lease;
mod members;
mod ops;
mod peer_stream;
mod txn;
mod watch;

pub use backup::REVISION_HEADER;
pub use error::ApiError;

use crate::auth::{Access, Auth, Denied};
use crate::driver::DriverHandle;
use crate::ids::Members;
use crate::metrics::Metrics;
use crate::peer::PeerClient;
use crate::peer::inbound::Inbound;
use crate::settings::{
    BODY_READ_TIMEOUT_MS, LeaseTiming, MAX_CONCURRENT_PEER_BATCHES, MAX_CONCURRENT_REQUESTS,
    ReadPolicy,
};
use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warp::Filter;
use warp::http::{Method, Response, StatusCode, header};

/// What a handler answers: a response, or an error mapped to one.
pub(super) type Reply = Result<Response<Vec<u8>>, ApiError>;

/// What every handler may use.
pub struct AppState {
    pub driver: DriverHandle,
    pub members: Members,
    /// Puts peer batches back in their sending order.
    pub inbound: Inbound,
    pub metrics: Arc<Metrics>,
    /// Peer refusals are logged at most once per interval (a sender can
    /// repeat them at will); every one is counted in `metrics`.
    pub refusal_log: crate::log_limit::LogLimit,
    /// The server-wide default read consistency (`PUT /admin/read-policy`).
    read_policy: AtomicU8,
    pub max_value_bytes: usize,
    pub max_body_bytes: usize,
    /// Bearer-token checks; `None` when no token file is configured.
    pub auth: Option<Arc<Auth>>,
    /// Client requests being served at once (`--max-concurrent-requests`);
    /// a request that finds none free gets 503 with `Retry-After`.
    client_slots: Arc<Semaphore>,
    /// Peer batches being received at once: kept apart from client slots
    /// so that a flood of clients cannot starve heartbeats into elections.
    peer_slots: Arc<Semaphore>,
    /// Largest `POST /raft/messages` body (`--max-peer-batch-bytes`).
    pub max_peer_batch_bytes: usize,
    /// The node's one client to its peers, for forwarded operations.
    pub peer_client: PeerClient,
    /// A request body must arrive within this long (`--body-timeout-ms`).
    pub body_timeout: Duration,
    /// This node's lease timing: peer batches with another are refused.
    /// `None` (tests that build batches by hand) checks nothing.
    pub timing: Option<LeaseTiming>,
    /// The node's watches; `None` (tests without a driver feed) answers
    /// `GET /watch` with 503.
    pub watches: Option<Arc<crate::watch::Watches>>,
    /// Backups being served at once (`backup::MAX_CONCURRENT_BACKUPS`).
    backups: Arc<Semaphore>,
}

impl AppState {
    pub fn new(
        driver: DriverHandle,
        members: Members,
        metrics: Arc<Metrics>,
        read_policy: ReadPolicy,
        max_value_bytes: usize,
        max_body_bytes: usize,
    ) -> AppState {
        let state = AppState {
            driver,
            inbound: Inbound::new(&members),
            members,
            metrics,
            refusal_log: crate::log_limit::LogLimit::default(),
            read_policy: AtomicU8::new(0),
            max_value_bytes,
            max_body_bytes,
            auth: None,
            client_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)),
            peer_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_PEER_BATCHES)),
            max_peer_batch_bytes: crate::settings::MAX_PEER_BATCH_BYTES,
            peer_client: PeerClient::plain_default(),
            body_timeout: Duration::from_millis(BODY_READ_TIMEOUT_MS),
            timing: None,
            watches: None,
            backups: backup::backup_slots(),
        };
        state.set_read_policy(read_policy);
        state
    }

    /// Sets the lease timing peer batches must match.
    pub fn with_timing(mut self, timing: LeaseTiming) -> AppState {
        self.timing = Some(timing);
        self
    }

    /// Serves `GET /watch` from these watches.
    pub fn with_watches(mut self, watches: Arc<crate::watch::Watches>) -> AppState {
        self.watches = Some(watches);
        self
    }

    /// Sets the body deadline.
    pub fn with_body_timeout(mut self, timeout: Duration) -> AppState {
        self.body_timeout = timeout;
        self
    }

    /// Sets the client to peers (the one the transport uses).
    pub fn with_peer_client(mut self, client: PeerClient) -> AppState {
        self.peer_client = client;
        self
    }

    /// Sets the token checks and the concurrency and peer batch limits.
    pub fn with_limits(
        mut self,
        auth: Option<Arc<Auth>>,
        max_concurrent_requests: usize,
        max_peer_batch_bytes: usize,
    ) -> AppState {
        self.auth = auth;
        self.client_slots = Arc::new(Semaphore::new(max_concurrent_requests));
        self.max_peer_batch_bytes = max_peer_batch_bytes;
        self
    }

    /// Checks the token, then takes a request slot (none for the open
    /// health probes, so that an overloaded node still answers them).
    fn admit(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        let access = Access::of(method, path);
        if let Some(auth) = &self.auth {
            auth.check(access, authorization).map_err(|e| match e {
                Denied::Unauthorized(message) => ApiError::Unauthorized(message.to_string()),
                Denied::Forbidden(message) => ApiError::Forbidden(message),
            })?;
        }
        let slots = match access {
            Access::Open => return Ok(None),
            Access::Peer => &self.peer_slots,
            Access::Client(_) => &self.client_slots,
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => Err(ApiError::Overloaded(
                "too many requests in flight on this node; retry shortly".into(),
            )),
        }
    }

    pub fn read_policy(&self) -> ReadPolicy {
        match self.read_policy.load(Relaxed) {
            1 => ReadPolicy::Lease,
            2 => ReadPolicy::Stale,
            _ => ReadPolicy::Linearizable,
        }
    }

    pub fn set_read_policy(&self, policy: ReadPolicy) {
        let code = match policy {
            ReadPolicy::Linearizable => 0,
            ReadPolicy::Lease => 1,
            ReadPolicy::Stale => 2,
        };
        self.read_policy.store(code, Relaxed);
    }
}

/// The whole HTTP surface as one warp filter.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: header::HeaderMap,
                  body| {
                let state = state.clone();
                async move {
                    let authorization = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    if method == Method::GET && path.as_str() == "/watch" {
                        return serve_watch(&state, &query, authorization);
                    }
                    if path.as_str() == crate::peer::stream::STREAM_PATH {
                        return peer_stream::serve(&state, &method, &headers, authorization);
                    }
                    if method == Method::GET && path.as_str() == "/admin/backup" {
                        return serve_backup(&state, authorization).await;
                    }
                    let response =
                        handle(&state, method, path.as_str(), &query, authorization, body).await;
                    watch::plain(response)
                }
            },
        )
}

/// `GET /watch`: checked like every request, but it holds no request
/// slot while it streams (`--max-watches` bounds watches instead).
fn serve_watch(
    state: &AppState,
    query: &str,
    authorization: Option<&str>,
) -> warp::reply::Response {
    let started = Instant::now();
    let response = state
        .admit(&Method::GET, "/watch", authorization)
        .and_then(|_slot| watch::watch(state, query));
    let response = response.unwrap_or_else(|e| watch::plain(e.into_response()));
    state
        .metrics
        .observe_request("watch", response.status().as_u16(), started.elapsed());
    response
}

/// `GET /admin/backup`: checked like every request; it holds its request
/// slot until the capture is taken, not while the copy streams
/// (`backup::MAX_CONCURRENT_BACKUPS` bounds those).
async fn serve_backup(state: &AppState, authorization: Option<&str>) -> warp::reply::Response {
    let started = Instant::now();
    let response = match state.admit(&Method::GET, "/admin/backup", authorization) {
        Ok(_slot) => backup::backup(state).await,
        Err(e) => Err(e),
    };
    let response = response.unwrap_or_else(|e| watch::plain(e.into_response()));
    state
        .metrics
        .observe_request("backup", response.status().as_u16(), started.elapsed());
    response
}

/// One request, from route resolution to reply, with its latency recorded.
pub async fn handle<S, B>(
    state: &AppState,
    method: Method,
    path: &str,
    query: &str,
    authorization: Option<&str>,
    body: S,
) -> Response<Vec<u8>>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let started = Instant::now();
    // Refused before the route is resolved or the body read: without a
    // token nothing is learnt about routes, and no body is buffered.
    let _slot = match state.admit(&method, path, authorization) {
        Ok(slot) => slot,
        Err(e) => {
            let name = Route::resolve(&method, path).map_or("unmatched", |r| r.name());
            let response = e.into_response();
            state
                .metrics
                .observe_request(name, response.status().as_u16(), started.elapsed());
            return response;
        }
    };
    let (name, response) = match Route::resolve(&method, path) {
        Ok(route) => {
            let name = route.name();
            let limit = route.body_limit(state);
            // A body that trickles in would hold its slot (and a peer or
            // client slot is all a flood needs): it gets a deadline.
            let deadline = state.body_timeout;
            let body = tokio::time::timeout(deadline, read_body(body, limit)).await;
            let response = match body {
                Ok(Ok(body)) => route.dispatch(state, query, authorization, body).await,
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ApiError::RequestTimeout(format!(
                    "the request body did not arrive within {} ms",
                    deadline.as_millis()
                ))),
            };
            (name, response.unwrap_or_else(ApiError::into_response))
        }
        Err(e) => ("unmatched", e.into_response()),
    };
    state
        .metrics
        .observe_request(name, response.status().as_u16(), started.elapsed());
    response
}

/// Reads a body, refusing it with 413 as soon as it passes `limit`.
async fn read_body<S, B>(body: S, limit: usize) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("reading the body failed: {e}")))?;
        if bytes.len() + chunk.remaining() > limit {
            return Err(ApiError::TooLarge(format!(
                "request body over the limit of {limit} bytes"
            )));
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            bytes.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
    }
    Ok(Bytes::from(bytes))
}

/// Every route of API.md, resolved from the method and path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    KvGet(String),
    KvPut(String),
    KvDelete(String),
    KvCas(String),
    KvMultiPut,
    Txn,
    KvList,
    LeaseGrant,
    LeaseList,
    LeaseGet(String),
    LeaseRevoke(String),
    LeaseKeepalive(String),
    Healthz,
    Readyz,
    Status,
    Metrics,
    MembersList,
    MembersAdd,
    MembersRemove(String),
    TransferLeader,
    Snapshot,
    ReadPolicyGet,
    ReadPolicySet,
    RaftMessages,
    /// Served by [`serve_watch`] before routing; here only for 405.
    Watch,
    /// Served by [`serve_backup`] before routing; here only for 405.
    Backup,
}

impl Route {
    fn resolve(method: &Method, path: &str) -> Result<Route, ApiError> {
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        let not_allowed = |allow: &'static str| ApiError::MethodNotAllowed {
            method: method.to_string(),
            allow,
        };
        let m = method;
        let route = match segments.as_slice() {
            ["kv"] => match *m {
                Method::GET => Route::KvList,
                _ => return Err(not_allowed("GET")),
            },
            ["kv", "mput"] if m == Method::POST => Route::KvMultiPut,
            // A key may span several segments (`/kv/services/web/1`); a
            // last segment `cas` names the operation, so a key ending in
            // `/cas` is reached percent-encoded (`/kv/a%2Fcas`).
            ["kv", key @ .., "cas"] if !key.is_empty() => match *m {
                Method::POST => Route::KvCas(kv::decode_key(key)?),
                _ => return Err(not_allowed("POST")),
            },
            ["kv", key @ ..] => {
                let key = kv::decode_key(key);
                match *m {
                    Method::GET => Route::KvGet(key?),
                    Method::PUT => Route::KvPut(key?),
                    Method::DELETE => Route::KvDelete(key?),
                    _ => return Err(not_allowed("GET, PUT, DELETE")),
                }
            }
            ["txn"] => only_post(m, Route::Txn)?,
            ["lease"] => match *m {
                Method::GET => Route::LeaseList,
                Method::POST => Route::LeaseGrant,
                _ => return Err(not_allowed("GET, POST")),
            },
            ["lease", id] => match *m {
                Method::GET => Route::LeaseGet(id.to_string()),
                Method::DELETE => Route::LeaseRevoke(id.to_string()),
                _ => return Err(not_allowed("GET, DELETE")),
            },
            ["lease", id, "keepalive"] => only_post(m, Route::LeaseKeepalive(id.to_string()))?,
            ["watch"] => only_get(m, Route::Watch)?,
            ["healthz"] => only_get(m, Route::Healthz)?,
            ["readyz"] => only_get(m, Route::Readyz)?,
            ["status"] => only_get(m, Route::Status)?,
            ["metrics"] => only_get(m, Route::Metrics)?,
            ["cluster", "members"] => match *m {
                Method::GET => Route::MembersList,
                Method::POST => Route::MembersAdd,
                _ => return Err(not_allowed("GET, POST")),
            },
            ["cluster", "members", id] => match *m {
                Method::DELETE => Route::MembersRemove(id.to_string()),
                _ => return Err(not_allowed("DELETE")),
            },
            ["cluster", "transfer-leader"] => only_post(m, Route::TransferLeader)?,
            ["admin", "snapshot"] => only_post(m, Route::Snapshot)?,
            ["admin", "backup"] => only_get(m, Route::Backup)?,
            ["admin", "read-policy"] => match *m {
                Method::GET => Route::ReadPolicyGet,
                Method::PUT => Route::ReadPolicySet,
                _ => return Err(not_allowed("GET, PUT")),
            },
            ["raft", "messages"] => only_post(m, Route::RaftMessages)?,
            _ => return Err(ApiError::NotFound(format!("no route for {path}"))),
        };
        Ok(route)
    }

    /// The route's label in metrics: a fixed set, never a key.
    fn name(&self) -> &'static str {
        match self {
            Route::KvGet(_) => "kv_get",
            Route::KvPut(_) => "kv_put",
            Route::KvDelete(_) => "kv_delete",
            Route::KvCas(_) => "kv_cas",
            Route::KvMultiPut => "kv_mput",
            Route::Txn => "txn",
            Route::KvList => "kv_list",
            Route::LeaseGrant => "lease_grant",
            Route::LeaseList => "lease_list",
            Route::LeaseGet(_) => "lease_get",
            Route::LeaseRevoke(_) => "lease_revoke",
            Route::LeaseKeepalive(_) => "lease_keepalive",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Status => "status",
            Route::Metrics => "metrics",
            Route::MembersList => "members_list",
            Route::MembersAdd => "members_add",
            Route::MembersRemove(_) => "members_remove",
            Route::TransferLeader => "transfer_leader",
            Route::Snapshot => "snapshot",
            Route::ReadPolicyGet | Route::ReadPolicySet => "read_policy",
            Route::RaftMessages => "raft_messages",
            Route::Watch => "watch",
            Route::Backup => "backup",
        }
    }

    fn body_limit(&self, state: &AppState) -> usize {
        match self {
            Route::RaftMessages => state.max_peer_batch_bytes,
            Route::KvPut(_) | Route::KvCas(_) | Route::KvMultiPut | Route::Txn => {
                state.max_body_bytes
            }
            _ => 64 << 10,
        }
    }

    async fn dispatch(
        self,
        state: &AppState,
        query: &str,
        authorization: Option<&str>,
        body: Bytes,
    ) -> Reply {
        match self {
            Route::KvGet(key) => kv::get(state, key, query).await,
            Route::KvPut(key) => kv::put(state, key, &body).await,
            Route::KvDelete(key) => kv::delete(state, key, &body).await,
            Route::KvCas(key) => kv::cas(state, key, &body).await,
            Route::KvMultiPut => kv::multi_put(state, &body).await,
            Route::Txn => txn::txn(state, &body).await,
            Route::KvList => kv::list(state, query).await,
            Route::LeaseGrant => lease::grant(state, &body).await,
            Route::LeaseRevoke(id) => lease::revoke(state, &id, &body).await,
            Route::LeaseList => lease::list(state, query, authorization).await,
            Route::LeaseGet(id) => lease::get(state, &id, query, authorization).await,
            Route::LeaseKeepalive(id) => lease::keepalive(state, &id, query, authorization).await,
            Route::Healthz => Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"ok": true}),
            )),
            Route::Readyz => ops::readyz(state).await,
            Route::Status => ops::status(state).await,
            Route::Metrics => Ok(ops::metrics(state)),
            Route::MembersList => members::list(state).await,
            Route::MembersAdd => members::add(state, query, &body, authorization).await,
            Route::MembersRemove(id) => members::remove(state, &id, query, authorization).await,
            Route::TransferLeader => {
                members::transfer_leader(state, query, &body, authorization).await
            }
            Route::Snapshot => ops::snapshot(state).await,
            Route::ReadPolicyGet => Ok(ops::read_policy(state)),
            Route::ReadPolicySet => ops::set_read_policy(state, &body),
            Route::RaftMessages => ops::raft_messages(state, &body).await,
            Route::Watch => Err(ApiError::BadRequest(
                "GET /watch streams and is served by the routes filter".into(),
            )),
            Route::Backup => Err(ApiError::BadRequest(
                "GET /admin/backup streams and is served by the routes filter".into(),
            )),
        }
    }
}

fn only_get(method: &Method, route: Route) -> Result<Route, ApiError> {
    only((Method::GET, "GET"), method, route)
}

fn only_post(method: &Method, route: Route) -> Result<Route, ApiError> {
    only((Method::POST, "POST"), method, route)
}

/// `route` if `method` is the one it takes, else 405 naming that one.
fn only(
    (allowed, allow): (Method, &'static str),
    method: &Method,
    route: Route,
) -> Result<Route, ApiError> {
    if *method == allowed {
        return Ok(route);
    }
    Err(ApiError::MethodNotAllowed {
        method: method.to_string(),
        allow,
    })
}

/// A JSON reply.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Vec<u8>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(bytes);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Parses a JSON body into `T`, as a 400 on failure.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
}

#[cfg(test)]
mod tests;
