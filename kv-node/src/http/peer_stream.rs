//! `POST /raft/stream`: the receiving end of a peer's message stream
//! (`peer/stream.rs`). Admitted like `POST /raft/messages` (TLS, the peer
//! credential), then answered `101` and served on the taken-over
//! connection; it holds no request slot while it lasts (as a watch).
//! Every batch on it gets the checks of `POST /raft/messages`
//! (`ops::check_batch`) and reaches the driver in the order it was sent.

use super::{ApiError, AppState, ops, watch};
use crate::accept::OnUpgraded;
use crate::peer::rewind::Rewind;
use crate::peer::stream::{self, PROTOCOL, STREAM_PATH, StreamReply};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use warp::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

/// Answers a stream request: `101` with the connection's handler, or the
/// error.
pub(super) fn serve(
    state: &Arc<AppState>,
    method: &Method,
    headers: &HeaderMap,
    authorization: Option<&str>,
) -> warp::reply::Response {
    let started = Instant::now();
    let response = accept(state, method, headers, authorization)
        .unwrap_or_else(|e| watch::plain(e.into_response()));
    state
        .metrics
        .observe_request("raft_stream", response.status().as_u16(), started.elapsed());
    response
}

fn accept(
    state: &Arc<AppState>,
    method: &Method,
    headers: &HeaderMap,
    authorization: Option<&str>,
) -> Result<warp::reply::Response, ApiError> {
    if *method != Method::POST {
        return Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            allow: "POST",
        });
    }
    // The slot is only for the check: the stream holds none.
    let _slot = state.admit(method, STREAM_PATH, authorization)?;
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok());
    if upgrade != Some(PROTOCOL) {
        return Err(ApiError::BadRequest(format!(
            "POST {STREAM_PATH} takes a connection upgrade: send `Connection: upgrade` and `Upgrade: {PROTOCOL}`"
        )));
    }
    let state = state.clone();
    let handler = OnUpgraded::new(move |io| {
        let state = state.clone();
        Box::pin(async move {
            // A plain connection moves to the driver's thread: a batch then
            // reaches the driver without a thread hand-off (on a follower,
            // the leader's appends; on the leader, the acknowledgements).
            // A TLS connection stays here.
            match io.into_inner().downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    if let Err(e) = receive_on_driver(state, parts).await {
                        tracing::debug!(error = %e, "a peer stream could not be taken over");
                    }
                }
                Err(io) => receive(state, TokioIo::new(io)).await,
            }
        })
    });
    let mut response = Response::new(Vec::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    let mut response = watch::plain(response);
    response.extensions_mut().insert(handler);
    Ok(response)
}

/// Moves a plain connection's socket to the driver's runtime, with what
/// hyper had read past the request put back in front, and serves it there.
async fn receive_on_driver(
    state: Arc<AppState>,
    parts: hyper::upgrade::Parts<TokioIo<TcpStream>>,
) -> std::io::Result<()> {
    let tcp = parts.io.into_inner().into_std()?;
    let unread = parts.read_buf;
    let runtime = state.driver.runtime().clone();
    // Registered with the driver's reactor: `from_std` inside its runtime.
    let served = runtime.spawn(async move {
        let tcp = TcpStream::from_std(tcp)?;
        receive(state, Rewind::new(unread, tcp)).await;
        Ok(())
    });
    // A join error: the driver's runtime shut down (the node is stopping).
    served.await.unwrap_or(Ok(()))
}

/// Serves the frames of one stream: each batch is checked as a `POST
/// /raft/messages` body and handed to the driver in order.
async fn receive<IO>(state: Arc<AppState>, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let limit = state.max_peer_batch_bytes;
    let deadline = state.body_timeout;
    stream::receive(io, limit, deadline, |frame| {
        let state = state.clone();
        async move {
            let batch = ops::check_batch(&state, &frame).map_err(refusal)?;
            state
                .driver
                .deliver(batch.messages)
                .await
                .map_err(|e| refusal(e.into()))
        }
    })
    .await;
}

/// The last frame of a stream whose batch was refused.
fn refusal(e: ApiError) -> StreamReply {
    let commit_index = match &e {
        ApiError::NotAMember { commit_index, .. } => Some(*commit_index),
        _ => None,
    };
    StreamReply::Refused {
        code: e.status_and_code().1.to_string(),
        message: e.to_string(),
        commit_index,
    }
}
