//! Settings types that the flags (`cli`), the HTTP layer and the driver
//! all use: the read policy and the node-wide limits. It imports none of
//! them, so none of them needs another to name a setting.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// How a read is served (API.md, "Reads").
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadPolicy {
    /// ReadIndex: the leader confirms leadership with a quorum.
    Linearizable,
    /// The leader answers from its lease, without a quorum round trip.
    Lease,
    /// The local state machine answers at once; may be behind.
    Stale,
}

impl ReadPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadPolicy::Linearizable => "linearizable",
            ReadPolicy::Lease => "lease",
            ReadPolicy::Stale => "stale",
        }
    }

    pub fn parse(text: &str) -> Option<ReadPolicy> {
        match text {
            "linearizable" => Some(ReadPolicy::Linearizable),
            "lease" => Some(ReadPolicy::Lease),
            "stale" => Some(ReadPolicy::Stale),
            _ => None,
        }
    }
}

/// Default of `--max-concurrent-requests`.
pub const MAX_CONCURRENT_REQUESTS: usize = 1024;
/// Peer batches received at once; senders keep at most
/// `KV_NODE_PEER_INFLIGHT` (4) in flight each.
pub const MAX_CONCURRENT_PEER_BATCHES: usize = 256;

/// The largest peer batch a node accepts (`--max-peer-batch-bytes`).
/// Snapshots travel in 1 MiB chunks, so this only needs room for the
/// largest entries of one batch.
pub const MAX_PEER_BATCH_BYTES: usize = 512 << 20;

/// The timing a leader's lease rests on. A leader serves lease reads for
/// `election_ticks_min - lease_drift_ticks` of its ticks after a quorum
/// answered; each follower refuses votes for its own `election_ticks_min`
/// ticks after hearing from it. That is safe only if every member counts
/// the same ticks of the same length, so every peer batch carries the
/// sender's timing and a node refuses batches whose timing differs from
/// its own (raft-core `Config::lease_drift_ticks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTiming {
    pub tick_ms: u64,
    pub election_ticks_min: u32,
    pub lease_drift_ticks: u32,
    pub check_quorum: bool,
}
