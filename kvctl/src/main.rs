//! kvctl: the command-line client for kv-node clusters.
//!
//! - `cli`: the flags and subcommands (clap), and the exit codes in `--help`.
//! - `client`: one HTTP request sent to the endpoints in order, and the
//!   failures that map to exit codes.
//! - `kv`: put, get, del, cas, scan, mput; `txn`: transactions.
//! - `cluster`: member, status, transfer-leader, snapshot, read-policy.
//! - `bench`: the built-in load test.
//! - `watch`: following `GET /watch`, resuming across nodes.
//! - `output`: tables and JSON.

mod bench;
mod cli;
mod client;
mod cluster;
mod kv;
mod output;
mod txn;
mod watch;

use clap::Parser;
use cli::{Cli, Command, Output};
use client::{Client, Failure};
use std::process::ExitCode;

/// What every command needs.
pub struct Context {
    pub client: Client,
    pub output: Output,
}

fn main() -> ExitCode {
    // clap prints usage errors and exits with 2 itself.
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            if let (Failure::Server(e), Output::Json) = (&failure, cli.output)
                && !e.body.is_null()
            {
                output::print_json(&e.body);
            }
            eprintln!("{failure}");
            failure.exit_code()
        }
    }
}

fn run(cli: &Cli) -> Result<u8, Failure> {
    let ctx = Context {
        client: Client::new(&cli.endpoints, cli.timeout)?,
        output: cli.output,
    };
    match &cli.command {
        Command::Put {
            key,
            value,
            write_id,
        } => kv::put(&ctx, key, value, write_id),
        Command::Get { key, consistency } => kv::get(&ctx, key, *consistency),
        Command::Del { key, write_id } => kv::del(&ctx, key, write_id),
        Command::Cas(args) => kv::cas(&ctx, args),
        Command::Scan {
            prefix,
            limit,
            consistency,
        } => kv::scan(&ctx, prefix, *limit, *consistency),
        Command::Mput { entries, write_id } => kv::mput(&ctx, entries, write_id),
        Command::Txn(args) => txn::txn(&ctx, args),
        Command::Member(command) => cluster::member(&ctx, command),
        Command::Status => cluster::status(&ctx),
        Command::TransferLeader { to } => cluster::transfer_leader(&ctx, to),
        Command::Snapshot => cluster::snapshot(&ctx),
        Command::ReadPolicy { policy } => cluster::read_policy(&ctx, *policy),
        Command::Bench(args) => bench::bench(&ctx, args),
        Command::Watch(args) => watch::watch(&ctx, cli.timeout, args),
    }
}
