//! Starting and stopping a node: storage, replica, driver thread, peer
//! transport and the HTTP server, wired together; and the binary's entry.

use crate::cli::{Cli, LogFormat, NodeConfig};
use crate::directory::Directory;
use crate::driver::{self, DriverFailed, DriverHandle};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::peer::client::node_client_options;
use crate::peer::{PeerClient, transport};
use crate::settings::LeaseTiming;
use crate::storage::StorageError;
use crate::wal_disk::WalDisk;
use kv_replica::replica::{Replica, ReplicaError, SnapshotPolicy};
use raft_core::{Config, Membership};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// How long a graceful shutdown waits for open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the data directory {dir}: {source}")]
    Storage {
        dir: String,
        #[source]
        source: StorageError,
    },
    #[error("cannot rebuild the replica: {0}")]
    Replica(#[from] ReplicaError<StorageError>),
    #[error("cannot build the peer HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot join the cluster: {0}")]
    Join(#[from] crate::peer::join::JoinError),
    #[error("cannot start the driver thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A node that is serving.
pub struct RunningNode {
    pub local_addr: SocketAddr,
    pub driver: DriverHandle,
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    driver_done: oneshot::Receiver<Result<(), DriverFailed>>,
}

/// Opens storage, rebuilds the replica and starts serving. Must be called
/// inside a multi-threaded tokio runtime.
pub async fn start(config: NodeConfig) -> Result<RunningNode, StartError> {
    let listener = bind(config.listen).map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    // The node's one client to its peers: the transport, forwarded
    // cluster operations and `--join` all go through it (and its TLS).
    let tls = config.tls.as_ref().map(|t| (*t.client).clone());
    let peer_client = PeerClient::new(tls, node_client_options(local_addr.ip()))?;
    // This node's URL as others reach it: the real port when started on 0.
    let mut members = config.members.clone();
    if config.listen.port() == 0 {
        members.this.url = format!("{}://{local_addr}", peer_client.scheme());
    }
    if let Some(via) = &config.join {
        members = crate::peer::join::discover(&peer_client, via, &members).await?;
    }
    let members = &members;
    let metrics = Arc::new(Metrics::new(
        members.peers.values().map(|m| m.name.as_str()),
    ));

    let (disk, recovered) =
        WalDisk::open(&config.data_dir, metrics.clone()).map_err(|source| StartError::Storage {
            dir: config.data_dir.display().to_string(),
            source,
        })?;
    tracing::info!(
        dir = %config.data_dir.display(),
        term = %recovered.hard_state.term,
        commit = %recovered.hard_state.commit,
        entries = recovered.entries.len(),
        snapshot = ?recovered.snapshot.as_ref().map(|(m, _)| m.index),
        "storage recovered"
    );
    let mut raft = Config::new(members.this.id);
    raft.election_ticks_min = config.election_ticks_min;
    raft.election_ticks_max = config.election_ticks_min * 2;
    raft.heartbeat_ticks = config.heartbeat_ticks;
    raft.lease_drift_ticks = (config.election_ticks_min / 5).max(1);
    raft.max_committed_bytes_per_ready = crate::driver::COMMITTED_BYTES_PER_READY;
    let timing = LeaseTiming {
        tick_ms: u64::try_from(config.tick.as_millis()).unwrap_or(u64::MAX),
        election_ticks_min: raft.election_ticks_min,
        lease_drift_ticks: raft.lease_drift_ticks,
        check_quorum: raft.check_quorum,
    };
    // The seed only spreads election timeouts; mixing in the boot time keeps
    // two restarts of the same node from repeating the same timeouts.
    raft.seed = members.this.id.0 ^ boot_nanos();
    // A joiner starts with no configuration: it learns one from the log
    // (or a snapshot) once the cluster adds it.
    let bootstrap = if config.join.is_some() {
        Membership::default()
    } else {
        Membership::new(members.all().map(|m| m.id))
    };
    let mut replica = Replica::open(
        raft,
        recovered,
        bootstrap,
        disk,
        kv_replica::state_machine::DEFAULT_DEDUP_LIMIT,
    )?;
    replica.set_lease_tick_ms(
        u64::try_from(config.tick.as_millis())
            .unwrap_or(u64::MAX)
            .max(1),
    );
    // Watches: the history starts at what the state holds now (the
    // snapshot) and fills as the log is replayed, before any client asks.
    replica.record_watch_events(true);
    let (watches, watch_feed) =
        crate::watch::Watches::start(config.watch, replica.state.applied_index());
    // Both rules spread the members evenly by their rank in id order
    // (every node derives the same order from its peers): the entry
    // bound's points are shifted by the rank's share of the bound, and
    // the byte rule's threshold is raised by it (0, 33 and 66 % with three
    // members). The members apply the same log; snapshots written on all
    // of them at once starve the drivers of a shared machine of CPU and
    // disk (at 10M keys, three 1.3 GB snapshots at once slowed every fsync
    // for about 10 s; bench/scale.sh). During a bulk load the byte rule
    // keeps every member snapshotting back to back whatever the spread.
    let rank_percent = spread_percent(
        members.peers.range(..members.this.id).count(),
        members.peers.len() + 1,
    );
    replica.snapshot_policy = SnapshotPolicy {
        max_entries: config.snapshot_entries,
        max_key_writes: SnapshotPolicy::key_writes_for(config.snapshot_entries),
        after_replay: true,
        entry_phase_percent: Some(rank_percent),
        log_bytes_floor: config.snapshot_min_log_bytes,
        stagger_percent: rank_percent,
    };

    // Started even without peers: members added later get a sender task.
    let peer_secret = config.auth.as_ref().and_then(|a| a.peer_secret());
    let driver_runtime = driver::runtime().map_err(StartError::Thread)?;
    let peers = transport::start(
        driver_runtime.handle().clone(),
        members,
        peer_client.clone(),
        metrics.clone(),
        peer_secret,
        timing,
        config.max_peer_batch_bytes,
    );
    let (shutdown, shutdown_rx) = watch::channel(false);
    let snapshots = replica
        .disk
        .take_snapshot_completions()
        .expect("a freshly opened disk has its completion channel");
    let persisted = replica
        .disk
        .take_persist_completions()
        .expect("a freshly opened disk has its persist channel");
    let (driver, driver_done) = driver::spawn(
        driver_runtime,
        replica,
        snapshots,
        persisted,
        config.quota_bytes,
        peers,
        Directory::new(members.clone()),
        config.join.is_some(),
        metrics.clone(),
        config.tick,
        config.request_timeout,
        config.spin_wait,
        shutdown_rx.clone(),
        crate::disk_space::DiskSpace::for_dir(config.data_dir.clone(), config.min_free_disk_bytes),
        Some(watch_feed),
    )
    .map_err(StartError::Thread)?;

    let state = Arc::new(
        AppState::new(
            driver.clone(),
            members.clone(),
            metrics.clone(),
            config.read_policy,
            config.max_value_bytes,
            config.max_body_bytes,
        )
        .with_limits(
            config.auth.clone(),
            config.max_concurrent_requests,
            config.max_peer_batch_bytes,
        )
        .with_body_timeout(config.body_timeout)
        .with_peer_client(peer_client.clone())
        .with_timing(timing)
        .with_watches(watches),
    );
    let stop_join = shutdown_rx.clone();
    let stop = shutdown_rx;
    let routes = http::routes(state);
    let server = tokio::spawn(crate::accept::serve(
        listener,
        crate::accept::AcceptOptions {
            tls: config.tls.as_ref().map(|tls| tls.server.clone()),
            max_connections: config.max_connections,
            header_timeout: config.header_timeout,
            metrics: metrics.clone(),
        },
        routes,
        stop,
    ));
    tracing::info!(
        id = %members.this.name,
        raft_id = members.this.id.0,
        addr = %local_addr,
        peers = members.peers.len(),
        "serving"
    );
    if let Some(via) = config.join.clone() {
        tokio::spawn(crate::peer::join::run(
            peer_client,
            via,
            members.this.clone(),
            config.auto_promote,
            driver.clone(),
            stop_join,
        ));
    }
    Ok(RunningNode {
        local_addr,
        driver,
        metrics,
        shutdown,
        server,
        driver_done,
    })
}

impl RunningNode {
    /// Runs until SIGINT or SIGTERM (or `extra_stop` resolves), then shuts
    /// down gracefully. An error means the replica failed.
    pub async fn run_until_signal(
        mut self,
        extra_stop: impl Future<Output = ()>,
    ) -> Result<(), DriverFailed> {
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("signal received: shutting down"),
            _ = extra_stop => tracing::info!("stop requested: shutting down"),
            result = &mut self.driver_done => {
                let result = result.unwrap_or_else(|_| Err(DriverFailed("driver thread vanished".into())));
                let _ = self.shutdown.send(true);
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.server).await;
                return result;
            }
        }
        self.shutdown().await
    }

    /// Stops accepting, fails requests in flight, flushes storage and
    /// waits for the driver to finish.
    pub async fn shutdown(self) -> Result<(), DriverFailed> {
        let _ = self.shutdown.send(true);
        let driver_result = self
            .driver_done
            .await
            .unwrap_or_else(|_| Err(DriverFailed("driver thread vanished".into())));
        if tokio::time::timeout(SHUTDOWN_GRACE, self.server)
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the grace period; closing");
        }
        tracing::info!("stopped");
        driver_result
    }
}

/// The listening socket: SO_REUSEADDR so that a restarted node gets its
/// port back at once, and TCP_NODELAY, which accepted connections inherit
/// on Linux, so that small replies are never held back by Nagle.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The share (percent) of a snapshot rule by which the member of `rank`
/// (0-based, in id order) among `members` is shifted: even steps from 0,
/// so that the members' snapshots fall as far apart as they can.
fn spread_percent(rank: usize, members: usize) -> u64 {
    (rank * 100 / members.max(1)) as u64
}

fn boot_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // warp logs every connection cut at shutdown as an error; keep it quiet
    // unless asked for.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,warp::server=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The `kv-node` binary: parse flags, log, serve until a signal.
/// Exit code 0 after a graceful shutdown, 1 on a failure, 2 on bad flags.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    if args.get(1).is_some_and(|a| a == "check") {
        return crate::check_command::main(args);
    }
    if args.get(1).is_some_and(|a| a == "restore") {
        return crate::restore_command::main(args);
    }
    let cli: Cli = match crate::cli::parse_flags(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_logging(cli.log_format);
    let config = match cli.validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kv-node: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http_threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kv-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let exit_on_stdin_eof = config.exit_on_stdin_eof;
    let span = tracing::info_span!("node", id = %config.members.this.name);
    let result = runtime.block_on(tracing::Instrument::instrument(
        async move {
            let node = start(config.clone()).await.map_err(|e| e.to_string())?;
            // One plain line on stdout for scripts and tests to wait for.
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            println!(
                "kv-node {} listening on {scheme}://{}",
                config.members.this.name, node.local_addr
            );
            let stdin_closed = async move {
                if exit_on_stdin_eof {
                    let _ = tokio::task::spawn_blocking(|| {
                        let mut sink = Vec::new();
                        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                    })
                    .await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            node.run_until_signal(stdin_closed)
                .await
                .map_err(|e| e.to_string())
        },
        span,
    ));
    // The stdin reader may still block; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kv-node: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::spread_percent;

    #[test]
    fn snapshot_rules_spread_the_members_evenly_by_rank() {
        let spread = |members| {
            (0..members)
                .map(|rank| spread_percent(rank, members))
                .collect::<Vec<_>>()
        };
        assert_eq!(spread(1), [0]);
        assert_eq!(spread(3), [0, 33, 66]);
        assert_eq!(spread(5), [0, 20, 40, 60, 80]);
    }
}
