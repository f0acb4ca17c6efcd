//! `GET /admin/backup`: a consistent copy of the whole store (API.md,
//! Backup and restore), in kv-replica's backup format (`backup.rs`).
//!
//! The driver answers a linearizable read (a ReadIndex round, through the
//! leader from a follower, then a wait until that index is applied) with
//! a capture of the state machine: an O(1) clone of its persistent maps.
//! The capture is serialized on a blocking thread into a bounded channel
//! that feeds the response body, so neither the driver thread nor the
//! async workers do work that grows with the data, and at most a few
//! chunks of the serialized copy are in memory at once.

use super::{ApiError, AppState};
use crate::driver::{ReadAnswer, ReadQuery};
use crate::settings::ReadPolicy;
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{Semaphore, mpsc};
use warp::http::{StatusCode, header};

/// Backups served at once by one node; more get 503 with Retry-After.
/// Each holds a capture alive (writes meanwhile copy the map nodes they
/// touch) and a blocking thread.
pub(crate) const MAX_CONCURRENT_BACKUPS: usize = 2;
/// Bytes per body chunk.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks queued between the serializing thread and the connection.
const CHUNKS_IN_FLIGHT: usize = 4;
/// The response header naming the revision the copy was taken at.
pub const REVISION_HEADER: &str = "x-kv-revision";

pub(crate) fn backup_slots() -> std::sync::Arc<Semaphore> {
    std::sync::Arc::new(Semaphore::new(MAX_CONCURRENT_BACKUPS))
}

/// Takes the capture, then streams it: `200`, `application/octet-stream`,
/// `X-Kv-Revision`.
pub(super) async fn backup(state: &AppState) -> Result<warp::reply::Response, ApiError> {
    let permit = state.backups.clone().try_acquire_owned().map_err(|_| {
        ApiError::Overloaded(format!(
            "{MAX_CONCURRENT_BACKUPS} backups are already being served by this node; retry later"
        ))
    })?;
    let answer = state
        .driver
        .read(ReadPolicy::Linearizable, ReadQuery::Backup)
        .await?;
    let ReadAnswer::Backup(capture) = answer else {
        return Err(ApiError::Unavailable(
            "the node answered a backup with something else; retry".into(),
        ));
    };
    let revision = capture.applied_index();
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut writer = ChannelWriter {
            tx,
            buffer: Vec::with_capacity(CHUNK_BYTES),
        };
        match kv_replica::backup::write_backup(&capture, &mut writer) {
            Ok(info) => {
                tracing::info!(revision, bytes = info.total_bytes, "backup served");
            }
            // The client went away (the channel closed), or a record could
            // not be written: the body breaks off, and a client that kept
            // what came sees no end marker.
            Err(error) => {
                tracing::warn!(revision, %error, "backup not completed");
                let _ = writer.tx.blocking_send(Err(error));
            }
        }
    });
    let mut response = warp::reply::Reply::into_response(warp::reply::stream(ChunkStream(rx)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(REVISION_HEADER, header::HeaderValue::from(revision));
    Ok(response)
}

/// Sends what is written, in chunks, to the response body; blocks while
/// the channel is full (the client reads slowly), so memory stays bounded.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

/// The body of a backup response: chunks as the serializer sends them.
struct ChunkStream(mpsc::Receiver<Result<Bytes, io::Error>>);

impl futures_util::Stream for ChunkStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
