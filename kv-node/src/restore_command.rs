//! `kv-node restore --from FILE --data-dir DIR --id ID [--peers ...]`:
//! seeds the empty data directory of one node of a NEW cluster from a
//! backup (`GET /admin/backup`, `kvctl backup`).
//!
//! Every node of the new cluster is restored from the same file with the
//! same members, and each ends with the same durable state: a snapshot at
//! the backup's revision R and term 1, whose membership is `--id` plus the
//! names in `--peers` (all voters), and a hard state of term 1, no vote,
//! commit R. The new cluster's log starts at R + 1, so its revisions
//! continue above the backup's; its first election is in term 2. The
//! address book of the old cluster is left out (its URLs point at the old
//! nodes): the new leader records the `--peers` addresses, as in any new
//! cluster. Leases keep their TTLs; the new leader starts every countdown
//! at the full TTL (`kv-replica/src/lease_clock.rs`).
//!
//! The file is verified whole (header, length, checksum, then every
//! record decoded) before anything is created. Exit status: 0 restored;
//! 2 refused (bad flags, a truncated or damaged file, a data directory
//! that is not empty): nothing was written; 1 the file was good but
//! writing the data directory failed (wipe it before trying again).

use crate::ids::{Member, Members, node_id_of};
use crate::storage::{Storage, StorageOptions};
use clap::Parser;
use kv_replica::backup::{BackupError, check_backup, read_backup};
use kv_replica::state_machine::KvStateMachine;
use raft_core::{HardState, LogIndex, Membership, SnapshotMeta, Term};
use std::ffi::OsString;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Seed the empty data directory of a node of a new cluster from a backup.
#[derive(Clone, Debug, Parser)]
#[command(name = "kv-node restore")]
pub struct RestoreCli {
    /// The backup file (from `GET /admin/backup` or `kvctl backup`).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The data directory to seed: absent or empty.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This node's name in the new cluster.
    #[arg(long)]
    pub id: String,
    /// The other members of the new cluster: name=url,name=url, as given
    /// to the node itself (only the names matter here). Give every node
    /// the same members.
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
}

/// Why a restore was refused (exit 2) or failed (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot open the backup {path}: {source}")]
    OpenBackup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the backup {path} is refused: {source}")]
    BadBackup {
        path: PathBuf,
        #[source]
        source: BackupError,
    },
    #[error("the backup {path} is at revision 0: it holds nothing to restore")]
    EmptyBackup { path: PathBuf },
    #[error(
        "the data directory {path} is not empty: restore seeds a NEW node only (remove its contents, or pick another directory)"
    )]
    NotEmpty { path: PathBuf },
    #[error("cannot read the data directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--peers entry {0:?} is not name=url")]
    BadPeer(String),
    #[error(transparent)]
    Ids(#[from] crate::ids::IdError),
    #[error("writing the data directory {path} failed: {source}; wipe it before trying again")]
    Write {
        path: PathBuf,
        #[source]
        source: crate::storage::StorageError,
    },
}

impl RestoreError {
    /// 1 when writing failed; 2 when the restore was refused before
    /// anything was written.
    pub fn exit_code(&self) -> u8 {
        match self {
            RestoreError::Write { .. } => 1,
            _ => 2,
        }
    }
}

/// What a restore wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub revision: u64,
    pub keys: usize,
    pub members: usize,
}

/// Runs the subcommand; `args` starts with the program name, then "restore".
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = std::iter::once(OsString::from("kv-node restore")).chain(args.into_iter().skip(2));
    let cli: RestoreCli = match crate::cli::parse_flags(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match restore(&cli) {
        Ok(done) => {
            println!(
                "restored revision {} ({} keys) into {} for {} of a {}-member cluster",
                done.revision,
                done.keys,
                cli.data_dir.display(),
                cli.id,
                done.members
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kv-node restore: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Checks everything, then writes the data directory.
pub fn restore(cli: &RestoreCli) -> Result<Restored, RestoreError> {
    let membership = membership_of(&cli.id, &cli.peers)?;
    check_empty(&cli.data_dir)?;
    let mut state = read_verified(&cli.from)?;
    let revision = state.applied_index();
    if revision == 0 {
        return Err(RestoreError::EmptyBackup {
            path: cli.from.clone(),
        });
    }
    state.clear_addresses();
    let members = membership.voters.len();
    let meta = SnapshotMeta {
        index: LogIndex(revision),
        term: Term(1),
        membership,
    };
    seed(&cli.data_dir, &meta, &state).map_err(|source| RestoreError::Write {
        path: cli.data_dir.clone(),
        source,
    })?;
    Ok(Restored {
        revision,
        keys: state.len(),
        members,
    })
}

/// The voters of the new cluster: this node and every peer named.
fn membership_of(id: &str, peers: &[String]) -> Result<Membership, RestoreError> {
    let member = |name: &str, url: &str| Member {
        name: name.to_string(),
        id: node_id_of(name),
        url: url.to_string(),
    };
    let mut others = Vec::new();
    for entry in peers.iter().filter(|e| !e.trim().is_empty()) {
        let (name, url) = entry
            .trim()
            .split_once('=')
            .ok_or_else(|| RestoreError::BadPeer(entry.clone()))?;
        others.push(member(name, url.trim_end_matches('/')));
    }
    let members = Members::new(member(id, ""), others)?;
    Ok(Membership::new(members.all().map(|m| m.id)))
}

/// Refuses a data directory that exists and holds anything.
fn check_empty(dir: &Path) -> Result<(), RestoreError> {
    let read_dir = |source| RestoreError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(Ok(_)) => Err(RestoreError::NotEmpty {
                path: dir.to_path_buf(),
            }),
            Some(Err(e)) => Err(read_dir(e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(read_dir(e)),
    }
}

/// Two passes over the file: header, length and checksum first (the
/// clearest message for a truncated or damaged copy), then every record.
fn read_verified(path: &Path) -> Result<KvStateMachine, RestoreError> {
    let open = || {
        File::open(path)
            .map(BufReader::new)
            .map_err(|source| RestoreError::OpenBackup {
                path: path.to_path_buf(),
                source,
            })
    };
    let bad = |source| RestoreError::BadBackup {
        path: path.to_path_buf(),
        source,
    };
    check_backup(&mut open()?).map_err(bad)?;
    let (_, state) = read_backup(&mut open()?).map_err(bad)?;
    Ok(state)
}

/// Writes the snapshot and the hard state, durably.
fn seed(
    dir: &Path,
    meta: &SnapshotMeta,
    state: &KvStateMachine,
) -> Result<(), crate::storage::StorageError> {
    let (mut storage, _) = Storage::open(dir, StorageOptions::default())?;
    storage.install_snapshot_with(meta, |mut w| state.write_snapshot(&mut w))?;
    storage.set_hard_state(&HardState {
        term: meta.term,
        vote: None,
        commit: meta.index,
    })?;
    storage.sync()?;
    Ok(())
}
