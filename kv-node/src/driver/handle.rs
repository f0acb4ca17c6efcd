//! The client side of the driver: the requests handlers send, their
//! answers and errors, and [`DriverHandle`], which sends them.

use crate::directory::Directory;
use crate::settings::ReadPolicy;
use bytes::Bytes;
use kv_replica::command::{ClientSeq, ClusterCommand, Command, Op, OpResult, RequestId, TxnOp};
use raft_core::{ConfChange, Message, NodeId, Role};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A read of the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadQuery {
    Get {
        key: String,
    },
    Scan {
        prefix: String,
        limit: usize,
    },
    /// Leader only, after a ReadIndex round (see `driver/lease.rs`).
    Lease(super::lease::LeaseQuery),
    /// The whole state, captured (an O(1) clone) once a ReadIndex round's
    /// index is applied, for `GET /admin/backup`.
    Backup,
}

/// The answer to a [`ReadQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadAnswer {
    /// The value and revision, or None if the key is absent.
    Get(Option<(String, u64)>),
    /// Keys and values shared with the state machine (no copy on the
    /// driver thread); at most the scan budget of them.
    Scan {
        entries: Vec<kv_replica::state_machine::ScanEntry>,
        more: bool,
    },
    Lease(super::lease::LeaseAnswer),
    /// A capture of the state machine, serialized off the driver thread.
    Backup(Box<kv_replica::state_machine::KvStateMachine>),
}

/// Why the driver could not answer. The two variants are the two classes a
/// client must tell apart.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// Certainly not proposed (or a read that was not served): safe to retry.
    #[error("{0}")]
    Unavailable(String),
    /// The node's disk is below its free-space threshold: not proposed.
    #[error("{0}")]
    DiskFull(String),
    /// The write may or may not be applied.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// The store is over `--quota-bytes` and the write adds data: not
    /// proposed.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A membership change is already in flight; nothing was proposed.
    #[error("{0}")]
    ChangeInProgress(String),
    /// raft-core refused the membership change as invalid (it would leave
    /// no voters, names a non-member, ...); nothing was proposed.
    #[error("{0}")]
    BadChange(String),
    /// This node was removed from the cluster: it serves no writes.
    #[error("{0}")]
    Removed(String),
}

/// What `/status` shows, read from the core in one consistent moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub last_applied: u64,
    pub last_log_index: u64,
    pub snapshot_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub keys: usize,
    /// Bytes of live keys and values, and the quota they are held to (0:
    /// none).
    pub live_bytes: u64,
    pub quota_bytes: u64,
    /// Leader only: each follower's match index.
    pub match_index: BTreeMap<NodeId, u64>,
    /// True once this node has been removed from the membership.
    pub removed: bool,
    /// Some while the node waits to be repaired after its storage lost
    /// acknowledged records: it grants no votes until a leader of a term
    /// above this one has written into its log.
    pub damaged_up_to_term: Option<u64>,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, DriverError>>;

pub(crate) enum Request {
    Propose {
        request: u64,
        data: Bytes,
        /// The write may add keys or bytes: refused over the quota (deletes
        /// and CAS deletes are not, so that a full store can be emptied).
        adds_data: bool,
        reply: Reply<OpResult>,
    },
    Read {
        policy: ReadPolicy,
        query: ReadQuery,
        reply: Reply<ReadAnswer>,
    },
    Peer(Vec<Message>),
    Status(oneshot::Sender<NodeStatus>),
    TransferLeader {
        to: NodeId,
        reply: Reply<()>,
    },
    Snapshot(Reply<Option<u64>>),
    /// Leader only: proposes a cluster command (the address book) and
    /// answers with its log index once it is applied here.
    ProposeCluster {
        data: Bytes,
        reply: Reply<u64>,
    },
    /// Leader only: proposes a membership change and answers with its log
    /// index once it is applied here and, if it entered a joint
    /// configuration, once that is left (or leadership moved on).
    ConfChange {
        change: ConfChange,
        reply: Reply<u64>,
    },
}

impl Request {
    /// What kind of request this is, for the driver's stall warnings.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Request::Propose { .. } => "propose",
            Request::Read { .. } => "read",
            Request::Peer(_) => "peer",
            Request::Status(_) => "status",
            Request::TransferLeader { .. } => "transfer leader",
            Request::Snapshot(_) => "snapshot",
            Request::ProposeCluster { .. } => "propose cluster",
            Request::ConfChange { .. } => "conf change",
        }
    }
}

/// The cloneable way to talk to the driver.
#[derive(Clone)]
pub struct DriverHandle {
    tx: mpsc::Sender<Request>,
    node: NodeId,
    /// Numbers this node's proposals. It starts at the boot time in
    /// microseconds so that ids never repeat across restarts: an entry from
    /// before a restart, re-applied while catching up, must not wake a new
    /// request that happens to reuse its number.
    next_request: Arc<AtomicU64>,
    request_timeout: Duration,
    directory: Directory,
    /// The driver thread's runtime, for the connections whose frames are
    /// read on the driver's thread (`http::peer_stream`).
    runtime: tokio::runtime::Handle,
}

/// How long `POST /admin/snapshot` waits for the snapshot it started.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(600);
impl DriverHandle {
    pub(super) fn new(
        tx: mpsc::Sender<Request>,
        node: NodeId,
        request_timeout: Duration,
        directory: Directory,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        // Proposal numbers start at the boot time in microseconds, so that
        // they never repeat across restarts (see `next_request`).
        let boot_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(1));
        DriverHandle {
            tx,
            node,
            next_request: Arc::new(AtomicU64::new(boot_micros)),
            request_timeout,
            directory,
            runtime,
        }
    }

    /// The driver thread's runtime: tasks spawned on it run between the
    /// driver's turns, on its thread.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Proposes a write and waits until this node has applied it.
    pub async fn write(&self, client: Option<ClientSeq>, op: Op) -> Result<OpResult, DriverError> {
        let request = self.next_request.fetch_add(1, Relaxed);
        let adds_data = match &op {
            Op::Put { .. } | Op::MultiPut { .. } | Op::PutWithLease { .. } => true,
            Op::Cas { value, .. } => value.is_some(),
            Op::Delete { .. }
            | Op::LeaseGrant { .. }
            | Op::LeaseRevoke { .. }
            | Op::LeaseExpire { .. } => false,
            // A transaction adds data if either branch may put.
            Op::Txn(txn) => txn
                .success
                .iter()
                .chain(&txn.failure)
                .any(|op| matches!(op, TxnOp::Put { .. } | TxnOp::PutWithLease { .. })),
        };
        let command = Command {
            request: Some(RequestId {
                node: self.node.0,
                id: request,
            }),
            client,
            op,
        };
        let data = command.encode();
        let (reply, rx) = oneshot::channel();
        self.submit(Request::Propose {
            request,
            data,
            adds_data,
            reply,
        })?;
        self.wait(rx, true).await
    }

    pub async fn read(
        &self,
        policy: ReadPolicy,
        query: ReadQuery,
    ) -> Result<ReadAnswer, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Request::Read {
            policy,
            query,
            reply,
        })?;
        self.wait(rx, false).await
    }

    pub async fn status(&self) -> Result<NodeStatus, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Request::Status(reply))?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(DriverError::Unavailable(
                "the node is not responding".into(),
            )),
        }
    }

    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), DriverError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Request::TransferLeader { to, reply })?;
        self.wait(rx, false).await
    }

    /// Records `name` at `url` in the replicated address book (leader only);
    /// returns the index of the entry once applied.
    pub async fn record_address(&self, name: &str, url: &str) -> Result<u64, DriverError> {
        let data = ClusterCommand::SetAddress {
            name: name.to_string(),
            url: url.to_string(),
        }
        .encode();
        let (reply, rx) = oneshot::channel();
        self.submit(Request::ProposeCluster { data, reply })?;
        self.wait(rx, true).await
    }

    /// Proposes a membership change (leader only) and waits until it is in
    /// force (see [`Request::ConfChange`]).
    pub async fn change_membership(&self, change: ConfChange) -> Result<u64, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Request::ConfChange { change, reply })?;
        self.wait(rx, true).await
    }

    /// The address book as this node knows it.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Takes a snapshot now; returns its index, or None if nothing was
    /// applied since the last one.
    pub async fn snapshot(&self) -> Result<Option<u64>, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Request::Snapshot(reply))?;
        // Writing a snapshot takes time in proportion to the data (seconds
        // for gigabytes), not the request timeout's few seconds; the driver
        // answers when it is durable or refused.
        self.wait_up_to(rx, false, SNAPSHOT_WAIT).await
    }

    /// Hands messages from a peer to the core. Waits for room in the queue
    /// (backpressure on the peer's connection) rather than dropping them.
    pub async fn deliver(&self, messages: Vec<Message>) -> Result<(), DriverError> {
        self.tx
            .send(Request::Peer(messages))
            .await
            .map_err(|_| stopped())
    }

    fn submit(&self, request: Request) -> Result<(), DriverError> {
        self.tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                DriverError::Unavailable("the node is overloaded; retry later".into())
            }
            mpsc::error::TrySendError::Closed(_) => stopped(),
        })
    }

    async fn wait<T>(
        &self,
        rx: oneshot::Receiver<Result<T, DriverError>>,
        proposed: bool,
    ) -> Result<T, DriverError> {
        self.wait_up_to(rx, proposed, self.request_timeout).await
    }

    async fn wait_up_to<T>(
        &self,
        rx: oneshot::Receiver<Result<T, DriverError>>,
        proposed: bool,
        timeout: Duration,
    ) -> Result<T, DriverError> {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) if proposed => Err(DriverError::OutcomeUnknown(
                "the node stopped before the write was applied".into(),
            )),
            Ok(Err(_)) => Err(stopped()),
            Err(_) if proposed => Err(DriverError::OutcomeUnknown(format!(
                "the write was proposed but not applied within {} ms",
                timeout.as_millis()
            ))),
            Err(_) => Err(DriverError::OutcomeUnknown(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

impl DriverHandle {
    /// A handle whose requests go to `rx` and are never answered by a
    /// driver: for tests of timeouts and shutdown.
    #[cfg(test)]
    pub(crate) fn detached(
        request_timeout: Duration,
        capacity: usize,
    ) -> (DriverHandle, mpsc::Receiver<Request>) {
        let (tx, rx) = mpsc::channel::<Request>(capacity);
        let handle = DriverHandle {
            tx,
            node: NodeId(1),
            next_request: Arc::new(AtomicU64::new(1)),
            request_timeout,
            directory: Directory::new(
                crate::ids::Members::new(
                    crate::ids::Member {
                        name: "n1".into(),
                        id: NodeId(1),
                        url: "http://127.0.0.1:1".into(),
                    },
                    vec![],
                )
                .expect("a valid name"),
            ),
            // Called inside the test's runtime.
            runtime: tokio::runtime::Handle::current(),
        };
        (handle, rx)
    }
}

pub(crate) fn stopped() -> DriverError {
    DriverError::Unavailable("the node is shutting down".into())
}

/// The commit index as of `status`, for readiness: the node knows a leader
/// and has applied everything it knows is committed.
pub fn is_ready(status: &NodeStatus) -> bool {
    status.leader.is_some() && status.last_applied >= status.commit_index
}
