//! Commands replicated through the Raft log and their results.
//!
//! A [`Command`] is what the HTTP layer proposes; its postcard encoding is the
//! payload of a `Normal` log entry. An [`OpResult`] is what the state machine
//! answers when it applies one, and is what the HTTP layer maps onto a reply.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Identifies one proposal, so that the node that proposed it can wake the
/// waiting HTTP request when the entry is applied. `node` is the proposing
/// node's id, `id` a number unique among that node's proposals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub node: u64,
    pub id: u64,
}

/// A client's identity and the sequence number of one of its writes, used to
/// apply a retried write at most once (see `KvStateMachine`'s dedup table).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientSeq {
    pub client_id: String,
    pub seq: u64,
}

/// A write to the key-value store. Each `Op` is one log entry, applied
/// atomically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        value: String,
    },
    /// Deleting a missing key succeeds and changes nothing.
    Delete {
        key: String,
    },
    /// Compare-and-swap. `expected: None` means "the key must be absent";
    /// `value: None` means "delete the key if the comparison holds".
    Cas {
        key: String,
        expected: Option<String>,
        value: Option<String>,
    },
    /// Several puts applied atomically at one revision. If a key appears more
    /// than once, the last value wins.
    MultiPut {
        entries: Vec<(String, String)>,
    },
    /// A transaction: if every comparison holds, the `success` ops run, else
    /// the `failure` ops, in order, atomically at one revision.
    Txn(Txn),
    // New variants go last: the position is the tag in the log on disk.
    /// A put that attaches the key to lease `lease` (a plain `Put`
    /// detaches it). An unknown lease applies nothing
    /// ([`OpResult::LeaseNotFound`]).
    PutWithLease {
        key: String,
        value: String,
        lease: u64,
    },
    /// Grants a lease; its id is the index of this entry (see
    /// `state_machine::lease`).
    LeaseGrant {
        ttl_ms: u64,
    },
    /// Revokes a lease and deletes its keys, all at this entry's revision.
    LeaseRevoke {
        id: u64,
    },
    /// Proposed by the leader when a lease's countdown ran out: as a revoke;
    /// a lease already gone is a no-op (the leader may propose it twice).
    LeaseExpire {
        id: u64,
    },
}

/// Limits of one transaction (the HTTP layer refuses more with 400).
pub const MAX_TXN_COMPARES: usize = 128;
pub const MAX_TXN_OPS: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// One comparison of a transaction against a key's current state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: String,
    pub test: CompareTest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTest {
    /// The key's value against `value` (`Equal` or `NotEqual` only). A
    /// missing key has no value: `Equal` fails and `NotEqual` holds.
    Value { op: CompareOp, value: String },
    /// The key's revision (0 when the key is absent) against `revision`.
    Revision { op: CompareOp, revision: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// Reads the key as the ops before it in the same branch left it.
    Get {
        key: String,
    },
    // New variants go last: the position is the tag in the log on disk.
    /// A put that attaches the key to `lease`.
    PutWithLease {
        key: String,
        value: String,
        lease: u64,
    },
}

/// What one op of a transaction's branch answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResult {
    /// A put or delete: the value before it.
    Prev(Option<String>),
    /// A get: the key's value and revision, if present.
    Get(Option<(String, String, u64)>),
}

/// The payload of a `Normal` log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Who is waiting for the result; `None` when nobody is.
    pub request: Option<RequestId>,
    /// Set when the client asked for deduplication (both `client_id` and `seq`).
    pub client: Option<ClientSeq>,
    pub op: Op,
}

/// Why bytes from the log are not a [`Command`].
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("malformed command: {0}")]
    Malformed(#[source] postcard::Error),
    #[error("command followed by {count} unexpected trailing bytes")]
    TrailingBytes { count: usize },
}

impl Command {
    /// The compact binary form (postcard) that goes into a log entry.
    pub fn encode(&self) -> Bytes {
        // Serializing into a growable Vec fails only for types serde cannot
        // describe up front (e.g. iterators of unknown length); a Command has
        // none, so a failure here is a bug.
        let bytes = postcard::to_allocvec(self).expect("a Command always serializes");
        Bytes::from(bytes)
    }

    /// Parses bytes produced by [`Command::encode`]. Any other input gives an
    /// error, never a panic: lengths inside the input are checked against the
    /// bytes actually present before anything is allocated.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        let (command, rest) =
            postcard::take_from_bytes::<Command>(bytes).map_err(CommandError::Malformed)?;
        if !rest.is_empty() {
            return Err(CommandError::TrailingBytes { count: rest.len() });
        }
        Ok(command)
    }
}

/// The first byte of a [`ClusterCommand`] payload. A [`Command`] starts with
/// postcard's `Option` tag (0 or 1), so the two can never be confused.
pub const CLUSTER_COMMAND_TAG: u8 = 0xC1;

/// A cluster-level write carried in a `Normal` entry: the address book that
/// membership changes need (raft-core's `ConfChange` knows node ids only).
/// Nobody waits for its result through a [`RequestId`]: the leader that
/// proposes it waits for its log index instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterCommand {
    /// Node `name` is reachable at `url` (replaces an earlier address).
    SetAddress { name: String, url: String },
}

impl ClusterCommand {
    pub fn encode(&self) -> Bytes {
        let mut bytes = vec![CLUSTER_COMMAND_TAG];
        bytes = postcard::to_extend(self, bytes).expect("a ClusterCommand always serializes");
        Bytes::from(bytes)
    }

    /// `None` if `bytes` is not a cluster command at all (no tag);
    /// `Some(Err)` if it has the tag but does not parse.
    pub fn decode(bytes: &[u8]) -> Option<Result<ClusterCommand, CommandError>> {
        let rest = bytes.strip_prefix(&[CLUSTER_COMMAND_TAG])?;
        Some(match postcard::take_from_bytes::<ClusterCommand>(rest) {
            Ok((command, [])) => Ok(command),
            Ok((_, trailing)) => Err(CommandError::TrailingBytes {
                count: trailing.len(),
            }),
            Err(e) => Err(CommandError::Malformed(e)),
        })
    }
}

/// What applying a [`Command`] produced. `revision` is always the Raft log
/// index of the entry that applied the write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Put {
        revision: u64,
        prev: Option<String>,
    },
    /// `prev` is `None` when the key was already absent (still a success).
    Delete {
        revision: u64,
        prev: Option<String>,
    },
    /// On success `current` is the new value (`None` if the CAS deleted the
    /// key); on failure it is the actual value, which was left unchanged. In
    /// both cases `revision` is the index of the entry that ran the CAS.
    Cas {
        succeeded: bool,
        revision: u64,
        current: Option<String>,
    },
    MultiPut {
        revision: u64,
    },
    /// `revision` is the index of the entry that ran the transaction
    /// (whether or not it wrote); one result per op of the branch that ran.
    Txn {
        succeeded: bool,
        revision: u64,
        results: Vec<TxnOpResult>,
    },
    /// `seq` is lower than `newest`, the newest seq already applied for this
    /// client: nothing was applied.
    StaleSeq {
        client_id: String,
        seq: u64,
        newest: u64,
    },
    // New variants go last: results are stored in the dedup table of
    // snapshots, where the position is the tag.
    /// A write named a lease that does not exist (never granted, revoked or
    /// expired): nothing was applied.
    LeaseNotFound {
        lease: u64,
    },
    /// A lease was granted; `id` is also the revision of the grant.
    LeaseGranted {
        id: u64,
        ttl_ms: u64,
    },
    /// A lease was revoked or expired and `deleted` keys went with it, at
    /// `revision`.
    LeaseRevoked {
        revision: u64,
        deleted: u64,
    },
}

impl OpResult {
    /// The revision of the write, or `None` for a rejected (stale) write.
    pub fn revision(&self) -> Option<u64> {
        match self {
            OpResult::Put { revision, .. }
            | OpResult::Delete { revision, .. }
            | OpResult::Cas { revision, .. }
            | OpResult::MultiPut { revision }
            | OpResult::Txn { revision, .. }
            | OpResult::LeaseRevoked { revision, .. } => Some(*revision),
            OpResult::LeaseGranted { id, .. } => Some(*id),
            OpResult::StaleSeq { .. } | OpResult::LeaseNotFound { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_commands() -> Vec<Command> {
        vec![
            Command {
                request: Some(RequestId { node: 3, id: 99 }),
                client: Some(ClientSeq {
                    client_id: "c1".into(),
                    seq: 7,
                }),
                op: Op::Put {
                    key: "k".into(),
                    value: "v".into(),
                },
            },
            Command {
                request: None,
                client: None,
                op: Op::Delete { key: "k".into() },
            },
            Command {
                request: Some(RequestId {
                    node: u64::MAX,
                    id: 0,
                }),
                client: None,
                op: Op::Cas {
                    key: "ключ".into(),
                    expected: None,
                    value: Some("new".into()),
                },
            },
            Command {
                request: None,
                client: Some(ClientSeq {
                    client_id: String::new(),
                    seq: u64::MAX,
                }),
                op: Op::MultiPut {
                    entries: vec![("a".into(), "1".into()), ("b".into(), "".into())],
                },
            },
        ]
    }

    #[test]
    fn encode_then_decode_gives_back_the_same_command() {
        for command in sample_commands() {
            let bytes = command.encode();
            assert_eq!(Command::decode(&bytes).unwrap(), command);
        }
    }

    #[test]
    fn decode_of_garbage_returns_an_error_without_panicking() {
        assert!(Command::decode(&[]).is_err());
        assert!(Command::decode(&[0xff; 32]).is_err());
        // A huge length prefix for the key must not allocate or panic.
        assert!(Command::decode(&[0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn decode_rejects_trailing_bytes_and_every_truncation() {
        for command in sample_commands() {
            let bytes = command.encode();
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert!(matches!(
                Command::decode(&longer),
                Err(CommandError::TrailingBytes { count: 1 })
            ));
            for cut in 0..bytes.len() {
                assert!(Command::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn cluster_commands_round_trip_and_are_never_taken_for_commands() {
        let command = ClusterCommand::SetAddress {
            name: "node4".into(),
            url: "http://127.0.0.1:8083".into(),
        };
        let bytes = command.encode();
        assert_eq!(ClusterCommand::decode(&bytes).unwrap().unwrap(), command);
        assert!(Command::decode(&bytes).is_err());
        for sample in sample_commands() {
            assert!(ClusterCommand::decode(&sample.encode()).is_none());
        }
        assert!(
            ClusterCommand::decode(&[CLUSTER_COMMAND_TAG, 0xff])
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn revision_of_a_stale_seq_result_is_none() {
        let stale = OpResult::StaleSeq {
            client_id: "c".into(),
            seq: 1,
            newest: 2,
        };
        assert_eq!(stale.revision(), None);
        assert_eq!(OpResult::MultiPut { revision: 45 }.revision(), Some(45));
    }
}
