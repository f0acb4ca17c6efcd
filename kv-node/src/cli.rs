//! Command-line flags (each also an environment variable, `KV_NODE_*`),
//! validated once into a [`NodeConfig`].

use crate::auth::{Auth, TokenFileError};
use crate::ids::{IdError, Member, Members, node_id_of};
pub use crate::settings::ReadPolicy;
use crate::settings::{
    BODY_READ_TIMEOUT_MS, HEADER_READ_TIMEOUT_MS, MAX_CONCURRENT_REQUESTS, MAX_CONNECTIONS,
    MAX_PEER_BATCH_BYTES,
};
use crate::tls::{TlsError, TlsSetup};
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A replicated key-value node.
#[derive(Clone, Debug, Parser)]
#[command(name = "kv-node", version, about)]
pub struct Cli {
    /// This node's name, e.g. node1. Its raft id is the FNV-1a hash of the name.
    #[arg(long, env = "KV_NODE_ID")]
    pub id: String,
    /// Address to serve HTTP on (clients and peers).
    #[arg(long, env = "KV_NODE_LISTEN", conflicts_with = "port")]
    pub listen: Option<SocketAddr>,
    /// Shorthand for --listen 127.0.0.1:N.
    #[arg(long, env = "KV_NODE_PORT")]
    pub port: Option<u16>,
    /// The other members: name=url,name=url. An entry naming this node is
    /// ignored. Without peers the node is a single-node cluster.
    #[arg(long, env = "KV_NODE_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Data directory [default: ./data/<id>].
    #[arg(long, env = "KV_NODE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Length of one raft-core tick.
    #[arg(long, env = "KV_NODE_TICK_MS", default_value_t = 15)]
    pub tick_ms: u64,
    /// Minimum election timeout; the maximum is twice this.
    #[arg(long, env = "KV_NODE_ELECTION_TIMEOUT_MS", default_value_t = 150)]
    pub election_timeout_ms: u64,
    /// Leader heartbeat interval.
    #[arg(long, env = "KV_NODE_HEARTBEAT_MS", default_value_t = 30)]
    pub heartbeat_ms: u64,
    /// Default read consistency; per request with ?consistency=.
    #[arg(long, env = "KV_NODE_READ_POLICY", value_enum, default_value_t = ReadPolicy::Linearizable)]
    pub read_policy: ReadPolicy,
    /// Largest value accepted, in bytes.
    #[arg(long, env = "KV_NODE_MAX_VALUE_BYTES", default_value_t = kv_replica::state_machine::MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,
    /// Take a snapshot about every this many applied entries (0: no entry
    /// bound). The points are aligned on the log and shifted per member,
    /// so that the members of a cluster snapshot in turn; a node snapshots
    /// between half and one and a half times this many entries after its
    /// last snapshot. Usually the byte rule (`--snapshot-min-log-mb`)
    /// fires first; this bounds the log when entries are tiny. A node also
    /// snapshots once one and a half times this many keys were written
    /// since its last snapshot (each key of an mput or transaction
    /// counted), which bounds what a restart replays for batched writes.
    #[arg(long, env = "KV_NODE_SNAPSHOT_ENTRIES", default_value_t = 1_000_000)]
    pub snapshot_entries: u64,
    /// Take a snapshot once the log applied since the last one is larger
    /// than that snapshot, or than this many MiB if that is more: the
    /// snapshot bytes written stay at most about the log bytes written,
    /// whatever the data size. The threshold is raised per member by its
    /// rank in id order (0, 33 and 66 % in a cluster of three), so that the
    /// members snapshot in turn. 0 turns the byte rule off.
    #[arg(long, env = "KV_NODE_SNAPSHOT_MIN_LOG_MB", default_value_t = 64)]
    pub snapshot_min_log_mb: u64,
    /// Refuse writes that add data (507 quota_exceeded) once the live keys
    /// and values exceed this many bytes; deletes and reads go on. 0: no
    /// quota.
    #[arg(long, env = "KV_NODE_QUOTA_BYTES", default_value_t = 2 << 30)]
    pub quota_bytes: u64,
    /// Refuse new writes (503 disk_full) while the data directory's file
    /// system has less than this many MiB free, keeping the rest for hard
    /// state, snapshots and compaction. 0 turns the check off.
    #[arg(long, env = "KV_NODE_MIN_FREE_DISK_MB", default_value_t = 256)]
    pub min_free_disk_mb: u64,
    /// How long a request waits for its write or read before 504 timeout.
    #[arg(long, env = "KV_NODE_REQUEST_TIMEOUT_MS", default_value_t = 5_000)]
    pub request_timeout_ms: u64,
    /// After a light turn (one request or acknowledgement, nothing queued)
    /// the driver polls for its next input this long before it sleeps,
    /// yielding the CPU to any thread that wants it; cuts a lone write's
    /// latency where waking a sleeping thread is slow (VMs). 0: sleep at
    /// once. At most 5000.
    #[arg(long, env = "KV_NODE_SPIN_WAIT_US", default_value_t = 200)]
    pub spin_wait_us: u64,
    /// Log lines as text or JSON; filter with RUST_LOG.
    #[arg(long, env = "KV_NODE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Client bearer tokens, one `ROLE TOKEN` a line (ROLE: read, write,
    /// admin). Without it client requests need no token.
    #[arg(long, env = "KV_NODE_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// The cluster token (one line) sent and required on peer traffic.
    #[arg(long, env = "KV_NODE_PEER_TOKEN_FILE")]
    pub peer_token_file: Option<PathBuf>,
    /// This node's certificate chain (PEM). With --tls-key and --tls-ca,
    /// clients and peers talk HTTPS, and --peers URLs are https://.
    #[arg(long, env = "KV_NODE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "KV_NODE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM): peers' certificates must chain to it.
    #[arg(long, env = "KV_NODE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Require client certificates signed by --tls-ca on every connection;
    /// the node presents its own certificate to its peers.
    #[arg(long, env = "KV_NODE_TLS_CLIENT_AUTH")]
    pub tls_client_auth: bool,
    /// Client requests served at once; more get 503 with Retry-After.
    #[arg(long, env = "KV_NODE_MAX_CONCURRENT_REQUESTS", default_value_t = MAX_CONCURRENT_REQUESTS)]
    pub max_concurrent_requests: usize,
    /// Largest batch of raft messages accepted from a peer, and the size
    /// this node's own batches stay under, in bytes. A snapshot travels in
    /// 1 MiB chunks, one per message, so this need not grow with the data
    /// [default: 4 MiB, or the largest write body plus 64 KiB if larger].
    #[arg(long, env = "KV_NODE_MAX_PEER_BATCH_BYTES")]
    pub max_peer_batch_bytes: Option<usize>,
    /// Open connections (clients and peers together); a connection over
    /// the limit is closed at once.
    #[arg(long, env = "KV_NODE_MAX_CONNECTIONS", default_value_t = MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// A request's headers must arrive within this long (an idle
    /// kept-alive connection is closed after it too), plain HTTP or TLS.
    #[arg(long, env = "KV_NODE_HEADER_TIMEOUT_MS", default_value_t = HEADER_READ_TIMEOUT_MS)]
    pub header_timeout_ms: u64,
    /// A request's body must arrive within this long after its headers;
    /// a slower one gets 408.
    #[arg(long, env = "KV_NODE_BODY_TIMEOUT_MS", default_value_t = BODY_READ_TIMEOUT_MS)]
    pub body_timeout_ms: u64,
    /// Revisions of events kept for watches (`from_revision` older than
    /// that answers 410 compacted).
    #[arg(long, env = "KV_NODE_WATCH_HISTORY", default_value_t = kv_replica::watch::DEFAULT_WATCH_HISTORY)]
    pub watch_history: u64,
    /// Bytes of events kept for watches, at most, in MiB (keys, values and
    /// 64 bytes each); older revisions are dropped first.
    #[arg(long, env = "KV_NODE_WATCH_HISTORY_MB", default_value_t = 256)]
    pub watch_history_mb: usize,
    /// Open watches on this node; more get 503 with Retry-After.
    #[arg(long, env = "KV_NODE_MAX_WATCHES", default_value_t = kv_replica::watch::DEFAULT_MAX_WATCHES)]
    pub max_watches: usize,
    /// Join a running cluster through this member's URL: start empty, ask
    /// it to add this node as a learner, catch up. Keep it on restarts (a
    /// member already is not added again).
    #[arg(long, env = "KV_NODE_JOIN", conflicts_with = "peers")]
    pub join: Option<String>,
    /// With --join: once caught up as a learner, ask to become a voter.
    #[arg(long, env = "KV_NODE_AUTO_PROMOTE", requires = "join")]
    pub auto_promote: bool,
    /// Threads serving HTTP clients and peer streams [default: one per
    /// CPU]. On the idle 2-CPU machine running three local nodes, 1 and 2
    /// served the same writes at 1 and 16 connections and 2 served 5-13 %
    /// more at 64 (BENCHMARKS.md, stop 26); fewer leaves the driver thread
    /// more room on a machine shared with other work.
    #[arg(long, env = "KV_NODE_HTTP_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub http_threads: Option<u16>,
    /// Shut down when standard input closes (used by the local-cluster
    /// example so that nodes never outlive it).
    #[arg(long, env = "KV_NODE_EXIT_ON_STDIN_EOF", hide = true)]
    pub exit_on_stdin_eof: bool,
}

/// One per CPU, as tokio's default.
fn default_http_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A configuration rule that the flags break.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Ids(#[from] IdError),
    #[error("--peers entry {0:?} is not name=url")]
    BadPeer(String),
    #[error("peer URL {url:?} must start with {scheme} (https:// exactly when TLS is on)")]
    PeerUrlScheme { url: String, scheme: &'static str },
    #[error("--tick-ms must be at least 1")]
    ZeroTick,
    #[error(
        "--election-timeout-ms ({election_ms}) must be at least 3 ticks of --tick-ms ({tick_ms})"
    )]
    ElectionTooShort { election_ms: u64, tick_ms: u64 },
    #[error(
        "--heartbeat-ms ({heartbeat_ms}) must be at least --tick-ms ({tick_ms}) and below --election-timeout-ms ({election_ms})"
    )]
    BadHeartbeat {
        heartbeat_ms: u64,
        tick_ms: u64,
        election_ms: u64,
    },
    #[error("--max-value-bytes must be between 1 and {max}, got {got}")]
    BadMaxValue { got: usize, max: usize },
    #[error("--spin-wait-us is {got}; at most {MAX_SPIN_WAIT_US} (a longer poll only burns CPU)")]
    SpinWaitTooLong { got: u64 },
    #[error("--request-timeout-ms must be at least 1")]
    ZeroRequestTimeout,
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("--max-concurrent-requests must be at least 1")]
    ZeroConcurrentRequests,
    #[error(
        "--max-peer-batch-bytes must be at least {min} (the largest write body plus 64 KiB, so that one entry always fits), got {got}"
    )]
    PeerBatchTooSmall { got: usize, min: usize },
    #[error("--max-connections must be at least 1")]
    ZeroConnections,
    #[error("--header-timeout-ms and --body-timeout-ms must be at least 1")]
    ZeroReadTimeout,
}

/// Everything a node needs to start, checked.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub members: Members,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tick: Duration,
    pub election_ticks_min: u32,
    pub heartbeat_ticks: u32,
    pub read_policy: ReadPolicy,
    pub max_value_bytes: usize,
    /// Largest client request body: room for one value escaped as JSON.
    pub max_body_bytes: usize,
    pub snapshot_entries: u64,
    /// `--snapshot-min-log-mb` in bytes (None: the byte rule is off).
    pub snapshot_min_log_bytes: Option<u64>,
    /// `--quota-bytes` (0: no quota).
    pub quota_bytes: u64,
    /// `--min-free-disk-mb` in bytes (0: no threshold).
    pub min_free_disk_bytes: u64,
    pub request_timeout: Duration,
    /// `--spin-wait-us` (zero: off).
    pub spin_wait: Duration,
    pub exit_on_stdin_eof: bool,
    /// `--http-threads`, resolved.
    pub http_threads: usize,
    /// `--join`: the base URL of a member to join through.
    pub join: Option<String>,
    pub auto_promote: bool,
    /// TLS for clients and peers (`tls.rs`); `None`: plain HTTP.
    pub tls: Option<TlsSetup>,
    /// Token checks (`auth.rs`); `None`: no token file given.
    pub auth: Option<Arc<Auth>>,
    pub max_concurrent_requests: usize,
    pub max_peer_batch_bytes: usize,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// `--watch-history`, `--watch-history-mb`, `--max-watches`.
    pub watch: kv_replica::watch::WatchConfig,
}

/// The value limit must leave room inside one snapshot record and one WAL
/// record; 64 MiB is far below both.
const MAX_VALUE_LIMIT: usize = 64 << 20;
/// `--spin-wait-us` at most: a poll longer than a few fsyncs only burns CPU.
const MAX_SPIN_WAIT_US: u64 = 5_000;

impl Cli {
    /// Checks every rule once; the node is built only from a valid config.
    pub fn validate(&self) -> Result<NodeConfig, CliError> {
        let listen = match (self.listen, self.port) {
            (Some(addr), _) => addr,
            (None, Some(port)) => SocketAddr::from(([127, 0, 0, 1], port)),
            (None, None) => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let tls = TlsSetup::from_flags(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
            self.tls_client_auth,
        )?;
        let scheme = if tls.is_some() { "https://" } else { "http://" };
        let this = Member {
            name: self.id.clone(),
            id: node_id_of(&self.id),
            url: format!("{scheme}{listen}"),
        };
        let mut peers = Vec::new();
        for entry in self.peers.iter().filter(|e| !e.trim().is_empty()) {
            let (name, url) = entry
                .trim()
                .split_once('=')
                .ok_or_else(|| CliError::BadPeer(entry.clone()))?;
            if !url.starts_with(scheme) {
                return Err(CliError::PeerUrlScheme {
                    url: url.to_string(),
                    scheme,
                });
            }
            peers.push(Member {
                name: name.to_string(),
                id: node_id_of(name),
                url: url.trim_end_matches('/').to_string(),
            });
        }
        let members = Members::new(this, peers)?;
        if self.tick_ms == 0 {
            return Err(CliError::ZeroTick);
        }
        let election_ticks_min = self.election_timeout_ms.div_ceil(self.tick_ms);
        if election_ticks_min < 3 {
            return Err(CliError::ElectionTooShort {
                election_ms: self.election_timeout_ms,
                tick_ms: self.tick_ms,
            });
        }
        let heartbeat_ticks = self.heartbeat_ms / self.tick_ms;
        if heartbeat_ticks == 0 || heartbeat_ticks >= election_ticks_min {
            return Err(CliError::BadHeartbeat {
                heartbeat_ms: self.heartbeat_ms,
                tick_ms: self.tick_ms,
                election_ms: self.election_timeout_ms,
            });
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > MAX_VALUE_LIMIT {
            return Err(CliError::BadMaxValue {
                got: self.max_value_bytes,
                max: MAX_VALUE_LIMIT,
            });
        }
        if self.request_timeout_ms == 0 {
            return Err(CliError::ZeroRequestTimeout);
        }
        if self.spin_wait_us > MAX_SPIN_WAIT_US {
            return Err(CliError::SpinWaitTooLong {
                got: self.spin_wait_us,
            });
        }
        let join = match &self.join {
            // The joiner reaches the cluster with its peer client: the
            // same scheme as its peer traffic.
            Some(url) if !url.starts_with(scheme) => {
                return Err(CliError::PeerUrlScheme {
                    url: url.clone(),
                    scheme,
                });
            }
            Some(url) => Some(url.trim_end_matches('/').to_string()),
            None => None,
        };
        if self.max_concurrent_requests == 0 {
            return Err(CliError::ZeroConcurrentRequests);
        }
        // A peer batch must hold one message with the largest entry (at
        // most one write body) or one snapshot chunk (1 MiB), with room
        // for the framing.
        let max_body_bytes = (self.max_value_bytes * 2).max(1 << 20) + (64 << 10);
        let min_peer_batch = max_body_bytes + (64 << 10);
        let max_peer_batch_bytes = self
            .max_peer_batch_bytes
            .unwrap_or(MAX_PEER_BATCH_BYTES.max(min_peer_batch));
        if max_peer_batch_bytes < min_peer_batch {
            return Err(CliError::PeerBatchTooSmall {
                got: max_peer_batch_bytes,
                min: min_peer_batch,
            });
        }
        if self.max_connections == 0 {
            return Err(CliError::ZeroConnections);
        }
        if self.header_timeout_ms == 0 || self.body_timeout_ms == 0 {
            return Err(CliError::ZeroReadTimeout);
        }
        let auth = Auth::load(
            self.auth_token_file.as_deref(),
            self.peer_token_file.as_deref(),
            tls.as_ref().is_some_and(|t| t.client_auth),
            &members.this.name,
        )?
        .map(Arc::new);
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("data").join(&self.id));
        Ok(NodeConfig {
            members,
            listen,
            data_dir,
            tick: Duration::from_millis(self.tick_ms),
            election_ticks_min: u32::try_from(election_ticks_min).unwrap_or(u32::MAX / 4),
            heartbeat_ticks: u32::try_from(heartbeat_ticks).unwrap_or(u32::MAX / 4),
            read_policy: self.read_policy,
            max_value_bytes: self.max_value_bytes,
            max_body_bytes,
            snapshot_entries: self.snapshot_entries,
            snapshot_min_log_bytes: (self.snapshot_min_log_mb > 0)
                .then(|| self.snapshot_min_log_mb.saturating_mul(1024 * 1024)),
            quota_bytes: self.quota_bytes,
            min_free_disk_bytes: self.min_free_disk_mb.saturating_mul(1024 * 1024),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            spin_wait: Duration::from_micros(self.spin_wait_us),
            exit_on_stdin_eof: self.exit_on_stdin_eof,
            http_threads: self
                .http_threads
                .map_or_else(default_http_threads, usize::from),
            join,
            auto_promote: self.auto_promote,
            tls,
            auth,
            max_concurrent_requests: self.max_concurrent_requests,
            max_peer_batch_bytes,
            max_connections: self.max_connections,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            watch: kv_replica::watch::WatchConfig {
                history_revisions: self.watch_history,
                history_bytes: self.watch_history_mb.saturating_mul(1024 * 1024),
                max_watches: self.max_watches,
                ..kv_replica::watch::WatchConfig::default()
            },
        })
    }
}

/// Parses a command line, or prints clap's message and says how to exit:
/// 2 for bad flags, 0 for `--help` and `--version`.
pub fn parse_flags<P: clap::Parser>(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<P, std::process::ExitCode> {
    P::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            std::process::ExitCode::from(2)
        } else {
            std::process::ExitCode::SUCCESS
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("kv-node").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_give_a_single_node_on_8080_with_data_in_data_id() {
        let config = parse(&["--id", "node1"]).validate().unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("data/node1"));
        assert!(config.members.peers.is_empty());
        assert_eq!((config.election_ticks_min, config.heartbeat_ticks), (10, 2));
        assert_eq!(config.spin_wait, Duration::from_micros(200));
    }

    #[test]
    fn port_and_peers_are_parsed() {
        let config = parse(&[
            "--id",
            "node2",
            "--port",
            "8081",
            "--peers",
            "node1=http://127.0.0.1:8080,node2=http://127.0.0.1:8081,node3=http://127.0.0.1:8082/",
        ])
        .validate()
        .unwrap();
        assert_eq!(config.listen.port(), 8081);
        assert_eq!(config.members.peers.len(), 2);
        assert_eq!(
            config.members.by_name("node3").unwrap().url,
            "http://127.0.0.1:8082"
        );
    }

    #[test]
    fn bad_flags_give_typed_errors() {
        assert!(matches!(
            parse(&["--id", "n", "--peers", "nope"]).validate(),
            Err(CliError::BadPeer(_))
        ));
        assert!(matches!(
            parse(&["--id", "n", "--heartbeat-ms", "500"]).validate(),
            Err(CliError::BadHeartbeat { .. })
        ));
        assert!(matches!(
            parse(&["--id", "n", "--election-timeout-ms", "20"]).validate(),
            Err(CliError::ElectionTooShort { .. })
        ));
        assert!(matches!(
            parse(&["--id", "n", "--spin-wait-us", "5001"]).validate(),
            Err(CliError::SpinWaitTooLong { got: 5001 })
        ));
        let off = parse(&["--id", "n", "--spin-wait-us", "0"])
            .validate()
            .unwrap();
        assert_eq!(off.spin_wait, Duration::ZERO);
        assert!(
            Cli::try_parse_from([
                "kv-node",
                "--id",
                "n",
                "--port",
                "1",
                "--listen",
                "127.0.0.1:2"
            ])
            .is_err()
        );
    }
}
