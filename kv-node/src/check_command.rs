//! `kv-node check --data-dir DIR [--repair]`: verify a stopped node's data
//! directory (see `storage::check`). Exit status: 0 clean (or repaired),
//! 1 repairable damage found without `--repair` (a torn tail, or damaged
//! acknowledged records that leave the node in repair mode), 2 damage the
//! rules do not allow to cut (or a directory that cannot be read, or bad
//! flags).

use crate::storage::{self, CheckReport, StorageError};
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// Verify (and with --repair, repair) a data directory. The node must be
/// stopped: the check takes the directory's lock.
#[derive(Clone, Debug, Parser)]
#[command(name = "kv-node check")]
pub struct CheckCli {
    /// The data directory to check.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Cut what the recovery rules allow, as a starting node would: a torn,
    /// never-acknowledged tail; damaged acknowledged records and all after
    /// them (the node then starts in repair mode: no votes until a leader of
    /// a newer term repaired its log); unfinished snapshot files. What is
    /// cut is kept in <dir>/wal-cut/.
    #[arg(long)]
    pub repair: bool,
}

/// Runs the subcommand; `args` starts with the program name, then "check".
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = std::iter::once(OsString::from("kv-node check")).chain(args.into_iter().skip(2));
    let cli: CheckCli = match crate::cli::parse_flags(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match storage::check(&cli.data_dir, cli.repair) {
        Ok(report) => {
            print_report(&cli, &report);
            let only_waiting_for_repair =
                report.damage.is_none() && report.torn_bytes == 0 && report.warnings.is_empty();
            if report.is_clean() || cli.repair || only_waiting_for_repair {
                // A node in repair mode with a clean log has nothing to cut:
                // a leader of a newer term repairs it once it runs.
                ExitCode::SUCCESS
            } else {
                println!("repairable damage found; run again with --repair to cut it");
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("kv-node check: {}: {error}", cli.data_dir.display());
            if let StorageError::Corrupt { .. } | StorageError::HardStateLost { .. } = error {
                eprintln!(
                    "acknowledged data is damaged: this replica must not rejoin as it is; wipe its data directory and let it rejoin the cluster (it is sent a snapshot)"
                );
            }
            ExitCode::from(2)
        }
    }
}

fn print_report(cli: &CheckCli, report: &CheckReport) {
    println!("data directory: {}", cli.data_dir.display());
    match report.snapshot_index {
        Some(index) => println!("snapshot: index {index}"),
        None => println!("snapshot: none"),
    }
    let hs = report.hard_state;
    let vote = hs
        .vote
        .map_or_else(|| "none".to_string(), |v| v.to_string());
    println!(
        "hard state: term {} vote {vote} commit {}",
        hs.term, hs.commit
    );
    match report.log_range {
        Some((first, last)) => println!("log: entries {first}..={last}"),
        None => println!("log: no entries after the snapshot"),
    }
    match &report.damage {
        Some(damage) => println!(
            "damaged acknowledged records: {damage}; {} bytes from there on to cut aside",
            report.torn_bytes
        ),
        None if report.torn_bytes > 0 => {
            println!("torn tail: {} bytes, never acknowledged", report.torn_bytes)
        }
        None => {}
    }
    if let Some(bound) = report.damaged_up_to_term {
        println!(
            "repair mode: the node grants no votes until a leader of a term above {bound} has repaired its log"
        );
    }
    for warning in &report.warnings {
        println!(
            "{}: {warning}",
            if cli.repair { "repaired" } else { "found" }
        );
    }
    if report.is_clean() {
        println!("clean");
    }
}
