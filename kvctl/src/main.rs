//! kvctl: the command-line client for kv-node clusters.
//!
//! - `cli`: the flags and subcommands (clap), and the exit codes in `--help`.
//! - `client`: one HTTP request sent to the endpoints in order, and the
//!   failures that map to exit codes; `tls`: `https://` with `--cacert`,
//!   `--cert`, `--key`, and what a failed handshake means.
//! - `kv`: put, get, del, cas, scan, mput; `txn`: transactions; `lease`:
//!   lease grant, keepalive, revoke, list, get.
//! - `cluster`: member, status, transfer-leader, snapshot, read-policy.
//! - `backup`: downloading and checking a backup of the whole store.
//! - `bench`: the built-in load test.
//! - `watch`: following `GET /watch`, resuming across nodes.
//! - `lock`: a distributed lock held while a command runs.
//! - `output`: tables and JSON.

mod backup;
mod bench;
mod cli;
mod client;
mod cluster;
mod kv;
mod lease;
mod lock;
mod output;
mod tls;
mod txn;
mod watch;

use clap::Parser;
use cli::{Cli, Command, Output};
use client::{Client, ClientOptions, Failure};
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
            if let (Some(body), Output::Json) = (failure.server_body(), cli.output) {
                output::print_json(body);
            }
            eprintln!("{failure}");
            failure.exit_code()
        }
    }
}

fn run(cli: &Cli) -> Result<u8, Failure> {
    let token = match (&cli.token, &cli.token_file) {
        (Some(token), _) => Some(token.trim().to_string()),
        (None, Some(path)) => Some(client::read_token_file(path)?),
        (None, None) => None,
    };
    let options = ClientOptions {
        timeout: cli.timeout,
        token,
        tls: tls::TlsFiles {
            cacert: cli.cacert.clone(),
            cert: cli.cert.clone(),
            key: cli.key.clone(),
        },
    };
    let ctx = Context {
        client: Client::with_options(&cli.endpoints, &options)?,
        output: cli.output,
    };
    match &cli.command {
        Command::Put {
            key,
            value,
            lease,
            write_id,
        } => kv::put(&ctx, key, value, *lease, write_id),
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
        Command::Lease(command) => lease::lease(&ctx, command),
        Command::Member(command) => cluster::member(&ctx, command),
        Command::Status => cluster::status(&ctx),
        Command::TransferLeader { to } => cluster::transfer_leader(&ctx, to),
        Command::Snapshot => cluster::snapshot(&ctx),
        Command::Backup { file } => backup::backup(&ctx, file),
        Command::ReadPolicy { policy } => cluster::read_policy(&ctx, *policy),
        Command::Bench(args) => bench::bench(&ctx, args),
        Command::Watch(args) => watch::watch(&ctx, cli.timeout, args),
        Command::Lock(args) => lock::lock(&ctx, args),
    }
}
