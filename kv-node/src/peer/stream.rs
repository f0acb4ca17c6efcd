//! One long-lived, ordered stream of raft messages per peer.
//!
//! The sender asks `POST /raft/stream` with `Upgrade: kv-raft-stream/1`;
//! the request is checked like every peer request (TLS, the peer
//! credential) and answered `101 Switching Protocols`. From then on the
//! connection carries frames, each a 4-byte big-endian length and that
//! many bytes:
//!
//! - sender to receiver: postcard-encoded [`PeerBatch`]es, in the order the
//!   sender built them. One connection keeps them in order, so nothing waits
//!   for a missing predecessor, and no batch waits for a reply.
//! - receiver to sender: postcard-encoded [`StreamReply`]s. `Alive` every
//!   [`ALIVE_INTERVAL`]: a sender that hears nothing for [`SILENCE_LIMIT`]
//!   drops the connection and opens another, so a connection into a
//!   black hole (a partition that drops packets) is left within seconds,
//!   not after TCP's retransmission timeouts. `Refused` says why a batch
//!   was refused, just before the receiver closes the stream.
//!
//! A frame longer than the batch limit (`--max-peer-batch-bytes`) is
//! refused, and a frame whose length arrived must arrive whole within the
//! body deadline (`--body-timeout-ms`), as a `POST /raft/messages` body.

use super::transport::PeerBatch;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

/// Path of the stream endpoint.
pub const STREAM_PATH: &str = "/raft/stream";
/// The `Upgrade` protocol name.
pub const PROTOCOL: &str = "kv-raft-stream/1";
/// How often the receiver says it is alive.
pub const ALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// A sender that hears nothing for this long opens a new connection.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(2);
/// Largest frame a sender accepts from the receiver.
const MAX_REPLY_BYTES: usize = 64 << 10;
/// The receiver's read buffer.
const READ_BUFFER: usize = 64 << 10;

/// What the receiver writes back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamReply {
    Alive,
    /// The last frame before the receiver closes: why a batch was refused,
    /// with the error code of the HTTP API (`not_a_member` carries the
    /// receiver's commit index, as in `transport::NotAMemberReport`).
    Refused {
        code: String,
        message: String,
        commit_index: Option<u64>,
    },
}

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes over the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("a frame did not arrive whole within {0:?}")]
    Timeout(Duration),
    #[error("reply does not parse: {0}")]
    Malformed(String),
}

/// Writes one frame (not flushed). A frame built by [`frame`] goes out in
/// one write: two (length, then body) cost a second system call and, with
/// `TCP_NODELAY`, a second packet that wakes the receiver again.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&frame(payload)?).await
}

/// `payload` with its 4-byte length in front.
pub fn frame(payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    let mut framed = Vec::with_capacity(4 + payload.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(payload);
    Ok(framed)
}

/// Reads one frame: `None` at a clean end of stream between frames. The
/// wait for a frame to start is unbounded (an idle peer sends nothing);
/// once its length is in, the rest must come within `deadline`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
    deadline: Duration,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let rest = async {
        r.read_exact(&mut header[1..]).await?;
        let len = u32::from_be_bytes(header) as usize;
        if len > limit {
            return Err(FrameError::TooLarge { len, limit });
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        Ok(payload)
    };
    match tokio::time::timeout(deadline, rest).await {
        Ok(frame) => frame.map(Some),
        Err(_) => Err(FrameError::Timeout(deadline)),
    }
}

/// Serves one accepted stream until the sender closes it, a frame is
/// refused, or the connection fails. `on_batch` checks and delivers one
/// frame's bytes, in order; an `Err` is sent back as the last frame.
pub async fn receive<IO, F, Fut>(io: IO, limit: usize, deadline: Duration, mut on_batch: F)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    F: FnMut(Vec<u8>) -> Fut,
    Fut: Future<Output = Result<(), StreamReply>>,
{
    let (reader, mut writer) = tokio::io::split(io);
    // Buffered: a frame's length and body (and often the next frames) come
    // in with one read instead of three.
    let mut reader = tokio::io::BufReader::with_capacity(READ_BUFFER, reader);
    let (last_tx, mut last_rx) = oneshot::channel::<Option<StreamReply>>();
    let replies = tokio::spawn(async move {
        let mut alive = tokio::time::interval(ALIVE_INTERVAL);
        loop {
            let reply = tokio::select! {
                _ = alive.tick() => StreamReply::Alive,
                last = &mut last_rx => {
                    if let Ok(Some(reply)) = last {
                        let _ = send_reply(&mut writer, &reply).await;
                    }
                    let _ = writer.shutdown().await;
                    return;
                }
            };
            if send_reply(&mut writer, &reply).await.is_err() {
                return;
            }
        }
    });
    let last = loop {
        match read_frame(&mut reader, limit, deadline).await {
            Ok(Some(frame)) => {
                if let Err(reply) = on_batch(frame).await {
                    break Some(reply);
                }
            }
            Ok(None) => break None,
            Err(FrameError::Io(e)) => {
                tracing::debug!(error = %e, "peer stream ended");
                break None;
            }
            Err(e) => {
                break Some(StreamReply::Refused {
                    code: "bad_request".into(),
                    message: e.to_string(),
                    commit_index: None,
                });
            }
        }
    };
    let _ = last_tx.send(last);
    let _ = replies.await;
}

async fn send_reply<W: AsyncWrite + Unpin>(w: &mut W, reply: &StreamReply) -> std::io::Result<()> {
    let bytes = postcard::to_allocvec(reply)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    write_frame(w, &bytes).await?;
    w.flush().await
}

/// Reads the receiver's replies on the sender's side.
pub async fn read_reply<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<StreamReply>, FrameError> {
    match read_frame(r, MAX_REPLY_BYTES, SILENCE_LIMIT).await? {
        None => Ok(None),
        Some(bytes) => postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| FrameError::Malformed(e.to_string())),
    }
}

/// Encodes a batch as one whole frame (length included), for one write.
pub fn encode_batch_frame(batch: &PeerBatch) -> Result<Vec<u8>, postcard::Error> {
    let mut framed = postcard::to_extend(batch, vec![0u8; 4])?;
    let len = u32::try_from(framed.len() - 4).map_err(|_| postcard::Error::SerializeBufferFull)?;
    framed[..4].copy_from_slice(&len.to_be_bytes());
    Ok(framed)
}

/// Encodes a batch as one frame's payload.
#[cfg(test)]
pub fn encode_batch(batch: &PeerBatch) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::NodeId;

    #[tokio::test]
    async fn frames_round_trip_and_a_clean_end_reads_as_none() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, b"hello").await.unwrap();
        write_frame(&mut a, b"").await.unwrap();
        drop(a);
        let d = Duration::from_secs(1);
        assert_eq!(
            read_frame(&mut b, 16, d).await.unwrap(),
            Some(b"hello".to_vec())
        );
        assert_eq!(read_frame(&mut b, 16, d).await.unwrap(), Some(Vec::new()));
        assert_eq!(read_frame(&mut b, 16, d).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_batch_frame_reads_back_as_the_batch() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let framed = encode_batch_frame(&PeerBatch {
            from: NodeId(7),
            epoch: 3,
            seq: 11,
            timing: Default::default(),
            messages: Vec::new(),
        })
        .unwrap();
        a.write_all(&framed).await.unwrap();
        a.write_all(&framed).await.unwrap();
        drop(a);
        let d = Duration::from_secs(1);
        for _ in 0..2 {
            let payload = read_frame(&mut b, 1024, d).await.unwrap().unwrap();
            assert_eq!(payload.len() + 4, framed.len());
            let batch: PeerBatch = postcard::from_bytes(&payload).unwrap();
            assert_eq!((batch.from, batch.epoch, batch.seq), (NodeId(7), 3, 11));
        }
        assert_eq!(read_frame(&mut b, 1024, d).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_oversized_a_truncated_and_a_stalled_frame_are_errors() {
        let d = Duration::from_millis(50);
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &[0u8; 17]).await.unwrap();
        assert!(matches!(
            read_frame(&mut b, 16, d).await,
            Err(FrameError::TooLarge { len: 17, limit: 16 })
        ));
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0, 0, 9, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(
            read_frame(&mut b, 16, d).await,
            Err(FrameError::Io(_))
        ));
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0, 0, 9, 1, 2]).await.unwrap();
        assert!(matches!(
            read_frame(&mut b, 16, d).await,
            Err(FrameError::Timeout(_))
        ));
        drop(a);
    }

    fn batch(seq: u64) -> Vec<u8> {
        encode_batch(&PeerBatch {
            from: NodeId(2),
            epoch: 1,
            seq,
            timing: Default::default(),
            messages: Vec::new(),
        })
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_receiver_delivers_in_order_says_it_is_alive_and_explains_a_refusal() {
        let (mut sender, receiver) = tokio::io::duplex(1 << 16);
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let served = tokio::spawn(receive(
            receiver,
            1024,
            Duration::from_secs(1),
            move |frame| {
                let seen_tx = seen_tx.clone();
                async move {
                    let batch: PeerBatch = postcard::from_bytes(&frame).unwrap();
                    if batch.seq == 3 {
                        return Err(StreamReply::Refused {
                            code: "not_a_member".into(),
                            message: "removed".into(),
                            commit_index: Some(9),
                        });
                    }
                    seen_tx.send(batch.seq).unwrap();
                    Ok(())
                }
            },
        ));
        for seq in 1..=4 {
            write_frame(&mut sender, &batch(seq)).await.unwrap();
        }
        let mut replies = Vec::new();
        while let Some(reply) = read_reply(&mut sender).await.unwrap() {
            replies.push(reply);
            assert!(replies.len() < 100, "the receiver never closed");
        }
        served.await.unwrap();
        let mut seen = Vec::new();
        while let Ok(seq) = seen_rx.try_recv() {
            seen.push(seq);
        }
        assert_eq!(
            seen,
            vec![1, 2],
            "delivered in order, nothing after the refusal"
        );
        assert_eq!(
            replies.last(),
            Some(&StreamReply::Refused {
                code: "not_a_member".into(),
                message: "removed".into(),
                commit_index: Some(9),
            })
        );
        assert!(
            replies[..replies.len() - 1]
                .iter()
                .all(|r| *r == StreamReply::Alive)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_hears_alive_frames_while_nothing_is_sent() {
        let (mut sender, receiver) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(receive(receiver, 1024, Duration::from_secs(1), |_| async {
            Ok(())
        }));
        for _ in 0..3 {
            let reply = tokio::time::timeout(SILENCE_LIMIT, read_reply(&mut sender))
                .await
                .expect("an Alive within the silence limit");
            assert_eq!(reply.unwrap(), Some(StreamReply::Alive));
        }
        drop(sender);
        served.await.unwrap();
    }
}
