//! Receiving peer batches: checks, then delivery to the driver in the
//! order the sender built them.
//!
//! A sender keeps a few batches in flight over separate connections, so two
//! of them can reach us out of order; an AppendEntries that overtakes its
//! predecessor is rejected by the core and costs the leader a probe round.
//! So each batch carries `(epoch, seq)` and waits, briefly, until every
//! earlier batch of the same sender is delivered. A batch that never comes
//! (its send failed) holds the later ones back for at most
//! [`REORDER_WAIT`]; Raft tolerates the loss.

use super::transport::PeerBatch;
use crate::driver::{DriverError, DriverHandle};
use crate::ids::Members;
use raft_core::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

/// How long a batch waits for a missing predecessor.
pub const REORDER_WAIT: Duration = Duration::from_millis(10);

/// Why a received batch was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch does not parse: {0}")]
    Malformed(String),
    #[error("batch from unknown node id {0}")]
    UnknownSender(u64),
    #[error("message from {from} inside a batch from {batch_from}")]
    MixedSender { from: NodeId, batch_from: NodeId },
    #[error("message addressed to {to}, but this node is {this}")]
    WrongRecipient { to: NodeId, this: NodeId },
}

/// Parses and checks a batch: known sender, every message from it and to us.
pub fn decode_batch(bytes: &[u8], members: &Members) -> Result<PeerBatch, BatchError> {
    let batch: PeerBatch =
        postcard::from_bytes(bytes).map_err(|e| BatchError::Malformed(e.to_string()))?;
    if !members.peers.contains_key(&batch.from) {
        return Err(BatchError::UnknownSender(batch.from.0));
    }
    for m in &batch.messages {
        if m.from != batch.from {
            return Err(BatchError::MixedSender {
                from: m.from,
                batch_from: batch.from,
            });
        }
        if m.to != members.this.id {
            return Err(BatchError::WrongRecipient {
                to: m.to,
                this: members.this.id,
            });
        }
    }
    Ok(batch)
}

/// Where delivery from one sender stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Position {
    epoch: u64,
    /// The next seq to deliver in `epoch`.
    next: u64,
}

/// The ordering state of every known sender.
pub struct Inbound {
    positions: BTreeMap<NodeId, watch::Sender<Position>>,
}

impl Inbound {
    pub fn new(members: &Members) -> Inbound {
        Inbound {
            positions: members
                .peers
                .keys()
                .map(|id| (*id, watch::Sender::new(Position::default())))
                .collect(),
        }
    }

    /// Hands `batch` to the driver once the sender's earlier batches are
    /// delivered, or after [`REORDER_WAIT`].
    pub async fn deliver(
        &self,
        batch: PeerBatch,
        driver: &DriverHandle,
    ) -> Result<(), DriverError> {
        let PeerBatch {
            from,
            epoch,
            seq,
            messages,
            ..
        } = batch;
        let Some(position) = self.positions.get(&from) else {
            return driver.deliver(messages).await;
        };
        // A newer epoch (the sender restarted) starts the count again at
        // whatever arrives first; batches of an older epoch are not ordered.
        position.send_if_modified(|p| {
            if epoch > p.epoch {
                *p = Position { epoch, next: seq };
                true
            } else {
                false
            }
        });
        let mut watcher = position.subscribe();
        let my_turn = |p: &Position| p.epoch != epoch || p.next >= seq;
        if !my_turn(&watcher.borrow()) {
            let _ = tokio::time::timeout(REORDER_WAIT, watcher.wait_for(my_turn)).await;
        }
        let result = driver.deliver(messages).await;
        position.send_if_modified(|p| {
            if p.epoch == epoch && p.next <= seq {
                p.next = seq + 1;
                true
            } else {
                false
            }
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Member, node_id_of};
    use raft_core::{Message, MessageBody, Term};

    fn members() -> Members {
        let member = |name: &str| Member {
            name: name.into(),
            id: node_id_of(name),
            url: String::new(),
        };
        Members::new(member("n1"), vec![member("n2")]).unwrap()
    }

    fn heartbeat(from: &str, to: &str) -> Message {
        Message {
            from: node_id_of(from),
            to: node_id_of(to),
            term: Term(3),
            body: MessageBody::HeartbeatResponse { read_round: 1 },
        }
    }

    fn encode(from: &str, messages: Vec<Message>) -> Vec<u8> {
        postcard::to_allocvec(&PeerBatch {
            from: node_id_of(from),
            epoch: 1,
            seq: 1,
            timing: Default::default(),
            messages,
        })
        .unwrap()
    }

    #[test]
    fn a_batch_from_a_known_peer_decodes() {
        let bytes = encode("n2", vec![heartbeat("n2", "n1")]);
        let batch = decode_batch(&bytes, &members()).unwrap();
        assert_eq!(batch.messages, vec![heartbeat("n2", "n1")]);
    }

    #[test]
    fn garbage_unknown_senders_and_misaddressed_messages_are_refused() {
        let m = members();
        assert!(matches!(
            decode_batch(b"\xff\xff\xff", &m),
            Err(BatchError::Malformed(_))
        ));
        assert!(matches!(
            decode_batch(&encode("n9", vec![]), &m),
            Err(BatchError::UnknownSender(_))
        ));
        assert!(matches!(
            decode_batch(&encode("n2", vec![heartbeat("n9", "n1")]), &m),
            Err(BatchError::MixedSender { .. })
        ));
        assert!(matches!(
            decode_batch(&encode("n2", vec![heartbeat("n2", "n3")]), &m),
            Err(BatchError::WrongRecipient { .. })
        ));
    }

    #[tokio::test]
    async fn a_batch_that_overtakes_its_predecessor_waits_for_it() {
        let (driver, mut rx) = DriverHandle::detached(Duration::from_secs(1), 16);
        let inbound = std::sync::Arc::new(Inbound::new(&members()));
        let batch = |seq, read_round| PeerBatch {
            from: node_id_of("n2"),
            epoch: 7,
            seq,
            timing: Default::default(),
            messages: vec![Message {
                body: MessageBody::HeartbeatResponse { read_round },
                ..heartbeat("n2", "n1")
            }],
        };
        // Seq 1 sets the position; seq 3 arrives before seq 2.
        inbound.deliver(batch(1, 1), &driver).await.unwrap();
        let late = {
            let (inbound, driver) = (inbound.clone(), driver.clone());
            tokio::spawn(async move { inbound.deliver(batch(3, 3), &driver).await })
        };
        tokio::time::sleep(Duration::from_millis(2)).await;
        inbound.deliver(batch(2, 2), &driver).await.unwrap();
        late.await.unwrap().unwrap();
        let mut rounds = Vec::new();
        while let Ok(crate::driver::Request::Peer(messages)) = rx.try_recv() {
            for m in messages {
                if let MessageBody::HeartbeatResponse { read_round } = m.body {
                    rounds.push(read_round);
                }
            }
        }
        assert_eq!(rounds, vec![1, 2, 3]);
    }
}
