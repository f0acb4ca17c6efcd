//! The command line: every subcommand, flag and environment variable.

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the server answered with an error (printed as `code: message`), or a
     write's outcome is unknown (timeout after it was sent)
  2  usage error (bad flags or arguments)
  3  no endpoint could be reached
  4  `cas` and `txn`: the comparison failed; `cas` wrote nothing and prints
     the current value, `txn` ran its --else ops and prints their results
     (a definite, normal answer, so it is not 1; distinct from 0 so that
     `if kvctl cas ...; then` does what it reads like)
  5  the credentials were refused: a node answered 401 (no token, or one it
     does not know) or 403 (the token's role is too low), printed as
     `endpoint X refused the token: ...`; or no endpoint answered and a TLS
     handshake failed (unknown CA, name mismatch, missing or refused client
     certificate), printed per endpoint
  6  `lock`: the lock was lost (its lease ended) and the command was killed
  `lock` otherwise exits with its command's status (128 + N if signal N
  ended it; 126/127 if it could not be run)

Endpoints are tried in order; the next one is tried when a connection fails
or a node answers 503 (unavailable: nothing was proposed, safe to retry).
A read is also retried elsewhere after a timeout; a write only when it
carries --client-id and --seq (the server deduplicates the retry).";

/// kvctl: the command-line client for kv-node clusters.
#[derive(Debug, Parser)]
#[command(name = "kvctl", version, about, after_long_help = EXIT_CODES)]
pub struct Cli {
    /// Comma-separated node URLs, tried in order.
    #[arg(
        long,
        env = "KVCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub endpoints: Vec<String>,

    /// `table` for people; `json` prints the server's JSON (one line).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,

    /// Timeout of each HTTP request: `5s`, `500ms`, `1m` or seconds.
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,

    /// Bearer token sent with every request (`Authorization: Bearer ...`).
    /// Visible to other local users in the process list: prefer
    /// --token-file or KVCTL_TOKEN.
    #[arg(long, env = "KVCTL_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// File whose first non-empty line is the token.
    #[arg(
        long,
        env = "KVCTL_TOKEN_FILE",
        conflicts_with = "token",
        global = true,
        value_name = "PATH"
    )]
    pub token_file: Option<PathBuf>,

    /// PEM bundle of the CA(s) that sign the nodes' certificates, for
    /// `https://` endpoints (default: the system CA bundle).
    #[arg(long, env = "KVCTL_CACERT", global = true, value_name = "PATH")]
    pub cacert: Option<PathBuf>,

    /// PEM client certificate, for nodes run with --tls-client-auth
    /// (requires --key).
    #[arg(
        long = "cert",
        id = "tls_cert",
        env = "KVCTL_CERT",
        requires = "tls_key",
        global = true,
        value_name = "PATH"
    )]
    pub cert: Option<PathBuf>,

    /// PEM private key of --cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long = "key",
        id = "tls_key",
        env = "KVCTL_KEY",
        requires = "tls_cert",
        global = true,
        value_name = "PATH"
    )]
    pub key: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    Linearizable,
    Lease,
    Stale,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Stale => "stale",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write VALUE under KEY (PUT /kv/KEY).
    Put {
        key: String,
        #[arg(allow_hyphen_values = true)]
        value: String,
        /// Attach the key to lease ID (it is deleted when the lease ends).
        #[arg(long, value_name = "ID")]
        lease: Option<u64>,
        #[command(flatten)]
        write_id: WriteId,
    },
    /// Print the value of KEY (GET /kv/KEY); a missing key exits 1 (not_found).
    Get {
        key: String,
        /// Read consistency; the server's default policy when omitted.
        #[arg(long, value_enum)]
        consistency: Option<Consistency>,
    },
    /// Delete KEY (DELETE /kv/KEY); deleting a missing key succeeds.
    Del {
        key: String,
        #[command(flatten)]
        write_id: WriteId,
    },
    /// Compare and swap (POST /kv/KEY/cas). Exits 4 and prints the current
    /// value when the comparison fails.
    Cas(CasArgs),
    /// List keys starting with PREFIX in byte order (GET /kv?prefix=).
    Scan {
        /// Empty lists every key.
        #[arg(default_value = "")]
        prefix: String,
        /// Most entries to return (the server caps it too).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, value_enum)]
        consistency: Option<Consistency>,
    },
    /// Write several keys atomically, in one log entry (POST /kv/mput).
    Mput {
        /// KEY=VALUE pairs; the first `=` splits, so keys cannot contain `=`.
        #[arg(required = true, value_parser = parse_entry, allow_hyphen_values = true)]
        entries: Vec<(String, String)>,
        #[command(flatten)]
        write_id: WriteId,
    },
    /// A transaction (POST /txn): comparisons, then the --then ops if all
    /// hold, else the --else ops, atomically. Without --if/--then/--else the
    /// transaction is read as JSON from --file or stdin. Exits 4 when the
    /// comparisons failed (the --else branch ran).
    Txn(TxnArgs),
    /// Leases: keys that vanish when their owner stops keeping them alive.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Cluster membership.
    #[command(subcommand)]
    Member(MemberCommand),
    /// GET /status from every endpoint and print one row per node.
    /// Exits 0 if at least one node answered, 3 if none did.
    Status,
    /// Ask the leader to hand leadership to node TO (POST /cluster/transfer-leader).
    TransferLeader { to: String },
    /// Take a snapshot and compact the log on every endpoint (POST /admin/snapshot).
    Snapshot,
    /// Download a consistent copy of the whole store to FILE (GET
    /// /admin/backup, admin token): written to a temporary file beside it,
    /// checked (length, checksum), then renamed into place; prints the
    /// revision. Restore it with `kv-node restore`.
    Backup { file: PathBuf },
    /// Show (no argument) or set the default read policy of every endpoint
    /// (GET or PUT /admin/read-policy).
    ReadPolicy {
        #[arg(value_enum)]
        policy: Option<Consistency>,
    },
    /// A small built-in load test: puts and gets from concurrent workers.
    Bench(BenchArgs),
    /// Print changes to KEY (or every key under it with --prefix) as they
    /// are applied (GET /watch); a dropped stream resumes on the next
    /// endpoint from the revision after the last event printed. Runs until
    /// interrupted (or --max-events).
    Watch(WatchArgs),
    /// Take the distributed lock NAME (the key `<--key-prefix>NAME`, tied to
    /// a lease kept alive every TTL/3), run COMMAND while holding it, then
    /// release it and exit with the command's status. Without COMMAND,
    /// print the key and hold the lock until SIGINT/SIGTERM. Exits 6 (and
    /// kills COMMAND) if the lease is lost.
    Lock(LockArgs),
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock's name.
    pub name: String,
    /// TTL of the lock's lease: if kvctl dies, the lock is free this long
    /// after the last keepalive (1s to 24h).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Prefix of the lock's key.
    #[arg(long, default_value = "locks/")]
    pub key_prefix: String,
    /// The command and its arguments (after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The key, or with --prefix the prefix (empty: every key).
    pub key: String,
    /// Watch every key starting with KEY.
    #[arg(long)]
    pub prefix: bool,
    /// Start with the events at this revision (default: from now).
    #[arg(long)]
    pub from_revision: Option<u64>,
    /// Exit 0 after printing this many events.
    #[arg(long)]
    pub max_events: Option<u64>,
}

/// Deduplication of a write: a retry with the same pair is applied at most once.
#[derive(Debug, Args)]
pub struct WriteId {
    /// Client id for deduplication (requires --seq).
    #[arg(long, requires = "seq")]
    pub client_id: Option<String>,
    /// Sequence number for deduplication (requires --client-id).
    #[arg(long, requires = "client_id")]
    pub seq: Option<u64>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("compare").required(true).args(["expected", "absent"])))]
#[command(group(ArgGroup::new("swap").required(true).args(["value", "delete"])))]
pub struct CasArgs {
    pub key: String,
    /// The value the key must hold now.
    #[arg(long, allow_hyphen_values = true)]
    pub expected: Option<String>,
    /// The key must be absent now.
    #[arg(long)]
    pub absent: bool,
    /// The new value if the comparison holds.
    #[arg(long, allow_hyphen_values = true)]
    pub value: Option<String>,
    /// Delete the key if the comparison holds.
    #[arg(long)]
    pub delete: bool,
    #[command(flatten)]
    pub write_id: WriteId,
}

#[derive(Debug, Args)]
pub struct TxnArgs {
    /// A comparison: `KEY == VALUE`, `KEY != VALUE`, or `KEY rev== N`
    /// (also rev!=, rev<, rev>) on the key's revision, 0 when absent.
    #[arg(long = "if", value_name = "COMPARISON", allow_hyphen_values = true)]
    pub compare: Vec<String>,
    /// An op when every comparison holds: `put KEY VALUE`, `del KEY`, `get KEY`.
    #[arg(long, value_name = "OP", allow_hyphen_values = true)]
    pub then: Vec<String>,
    /// An op when a comparison fails.
    #[arg(long = "else", value_name = "OP", allow_hyphen_values = true)]
    pub otherwise: Vec<String>,
    /// Read the JSON body of POST /txn from this file (`-`: stdin).
    #[arg(long)]
    pub file: Option<String>,
    #[command(flatten)]
    pub write_id: WriteId,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL (`10s`, `500ms`, `1m`; 1s to 24h) and print its
    /// id (POST /lease).
    Grant {
        #[arg(value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Keep lease ID alive (POST /lease/ID/keepalive): every third of its
    /// TTL until interrupted, or once with --once. Exits 1 when the lease
    /// is gone (lease_not_found).
    Keepalive {
        id: u64,
        #[arg(long)]
        once: bool,
    },
    /// Revoke lease ID and delete its keys (DELETE /lease/ID).
    Revoke { id: u64 },
    /// List the leases with their remaining time (GET /lease).
    List,
    /// Show lease ID: TTL, remaining time and keys (GET /lease/ID).
    Get { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List voters and learners (GET /cluster/members).
    List,
    /// Add node ID reachable at URL (POST /cluster/members).
    Add {
        id: String,
        url: String,
        /// Add as a non-voting learner (`"voter": false`).
        #[arg(long)]
        learner: bool,
    },
    /// Remove node ID (DELETE /cluster/members/ID).
    Remove { id: String },
    /// Make learner ID a voter: looks up its URL with GET /cluster/members,
    /// then sends POST /cluster/members {"id": ID, "url": URL, "voter": true}.
    Promote { id: String },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrent workers, each with its own connection.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// How long to run: `10s`, `1m`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Percentage of operations that are gets; the rest are puts.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Bytes in each value.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Prefix of every key the benchmark writes.
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
}

/// `500ms`, `5s`, `2m`, or a bare number of seconds (`0.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 5s or 1m"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("duration {text:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

fn parse_entry(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some(("", _)) => Err(format!("{text:?} has an empty key")),
        Some((key, value)) => Ok((key.to_string(), value.to_string())),
        None => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn credential_flags_parse_next_to_subcommand_keys() {
        let cli = Cli::try_parse_from([
            "kvctl",
            "--token-file",
            "t",
            "put",
            "key",
            "v",
            "--cacert",
            "ca.pem",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(cli.token_file, Some(PathBuf::from("t")));
        assert_eq!(cli.key, Some(PathBuf::from("k.pem")));
        assert!(matches!(cli.command, Command::Put { ref key, .. } if key == "key"));
        let half = Cli::try_parse_from(["kvctl", "--cert", "c.pem", "status"]);
        assert!(half.is_err(), "--cert needs --key");
        let both = Cli::try_parse_from(["kvctl", "--token", "a", "--token-file", "t", "status"]);
        assert!(both.is_err(), "--token and --token-file conflict");
    }

    #[test]
    fn lock_takes_the_command_after_the_name_hyphens_included() {
        let cli = Cli::try_parse_from([
            "kvctl", "lock", "deploy", "--ttl", "3s", "--", "sh", "-c", "exit 7",
        ])
        .unwrap();
        let Command::Lock(args) = cli.command else {
            panic!("not a lock command");
        };
        assert_eq!(args.name, "deploy");
        assert_eq!(args.ttl, Duration::from_secs(3));
        assert_eq!(args.key_prefix, "locks/");
        assert_eq!(args.command, ["sh", "-c", "exit 7"]);
        let bare = Cli::try_parse_from(["kvctl", "lock", "x"]).unwrap();
        assert!(matches!(bare.command, Command::Lock(a) if a.command.is_empty()));
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn entries_split_at_the_first_equals_sign() {
        assert_eq!(parse_entry("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_entry("a="), Ok(("a".into(), String::new())));
        assert!(parse_entry("=b").is_err());
        assert!(parse_entry("ab").is_err());
    }
}
