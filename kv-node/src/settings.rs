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
/// `KV_NODE_PEER_INFLIGHT` (4) in flight each, so 16 peers fit. With the
/// batch limit this bounds buffered peer bodies: 64 x 4 MiB = 256 MiB.
pub const MAX_CONCURRENT_PEER_BATCHES: usize = 64;

/// The default of `--max-peer-batch-bytes`: the largest peer batch a node
/// accepts, and the size its own batches stay under. Snapshots travel in
/// 1 MiB chunks (raft-core's `snapshot_chunk_bytes`) and AppendEntries
/// carry at most 1 MiB of entries (`max_message_bytes`) or one larger
/// entry, so a few MiB suffice whatever the size of the data.
pub const MAX_PEER_BATCH_BYTES: usize = 4 << 20;

/// The default of `--max-connections`: open connections, clients and
/// peers together.
pub const MAX_CONNECTIONS: usize = 4096;

/// Default of `--header-timeout-ms`: a request's headers must arrive
/// within this long of the connection waiting for them (so an idle
/// kept-alive connection is closed after it too), over plain HTTP as over
/// TLS: slow headers (slowloris) cannot hold a connection.
pub const HEADER_READ_TIMEOUT_MS: u64 = 30_000;

/// Default of `--body-timeout-ms`: a request's whole body must arrive
/// within this long once its headers did; a slower one gets `408
/// request_timeout` and frees its request slot.
pub const BODY_READ_TIMEOUT_MS: u64 = 30_000;

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
