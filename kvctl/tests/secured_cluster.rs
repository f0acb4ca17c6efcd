//! kvctl against a real 3-node kv-node cluster with mutual TLS and tokens
//! (issue 13): every command succeeds with the right token, CA and client
//! certificate; a wrong, missing or too weak token gives the documented
//! `endpoint X refused the token` message and exit 5; a wrong CA, a
//! missing client certificate, a client certificate of another CA and a
//! host the certificate does not name give a certificate error naming the
//! endpoint, also exit 5.
//!
//! The kv-node binary is built here with `cargo build -p kv-node` (quick
//! when up to date), or taken from `$KV_NODE_BIN`. Certificates are made
//! at run time with rcgen, as in kv-node's TLS tests.

mod common;

use common::{Run, run};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::Value;
use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

const READ: &str = "read-token-aaaaaaaaaaaaaaaaaaaa";
const WRITE: &str = "write-token-bbbbbbbbbbbbbbbbbbb";
const ADMIN: &str = "admin-token-ccccccccccccccccccc";
const PEER: &str = "peer-token-ddddddddddddddddddddd";

/// Exit code of refused credentials and failed handshakes (kvctl --help).
const CREDENTIALS_EXIT: i32 = 5;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A certificate naming 127.0.0.1 only (not `localhost`, so that a
/// `https://localhost:...` endpoint is a name mismatch): (cert, key) PEM.
fn leaf(ca: &Ca) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes `text` to `dir/name` with mode 0600 and returns the path.
fn secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `target/<profile>/kv-node`, built with cargo unless `$KV_NODE_BIN`.
fn kv_node_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KV_NODE_BIN") {
        return PathBuf::from(path);
    }
    let kvctl = PathBuf::from(env!("CARGO_BIN_EXE_kvctl"));
    let binary = kvctl.with_file_name(format!("kv-node{}", std::env::consts::EXE_SUFFIX));
    let profile_dir = kvctl.parent().unwrap().to_path_buf();
    // Several test runs may overlap: one build at a time (as tests/common).
    let lock = File::create(profile_dir.join(".kv-node-test-build.lock")).unwrap();
    lock.lock().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--quiet", "-p", "kv-node", "--bin", "kv-node"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        command.arg("--release");
    }
    let built = command.status().map(|s| s.success()).unwrap_or(false);
    drop(lock);
    assert!(
        built || binary.exists(),
        "`cargo build -p kv-node` failed and there is no {}",
        binary.display()
    );
    binary
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The cluster's processes; dropping it kills them (their stdin closes
/// too: `--exit-on-stdin-eof`) and, on a panic, prints their logs' tails.
struct Cluster {
    nodes: Vec<(Child, ChildStdin)>,
    logs: Vec<PathBuf>,
    endpoints: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (child, _) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for log in &self.logs {
                let text = fs::read_to_string(log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                eprintln!("--- {} ---\n{tail}", log.display());
            }
        }
    }
}

/// The files of the secured setup, all in one temporary directory.
struct Setup {
    dir: tempfile::TempDir,
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
    admin_token_file: PathBuf,
}

fn start_cluster() -> (Setup, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let d = &dir.path().to_path_buf();
    let ca = new_ca("kvctl test cluster CA");
    let other = new_ca("some other CA");
    let (client_cert, client_key) = leaf(&ca);
    let (stranger_cert, stranger_key) = leaf(&other);
    let setup = Setup {
        ca: secret(d, "ca.crt", &ca.pem),
        client_cert: secret(d, "client.crt", &client_cert),
        client_key: secret(d, "client.key", &client_key),
        other_ca: secret(d, "other-ca.crt", &other.pem),
        stranger_cert: secret(d, "stranger.crt", &stranger_cert),
        stranger_key: secret(d, "stranger.key", &stranger_key),
        admin_token_file: secret(d, "admin.token", &format!("{ADMIN}\n")),
        dir,
    };
    let tokens = secret(
        d,
        "tokens.txt",
        &format!("# role token\nread {READ}\nwrite {WRITE}\nadmin {ADMIN}\n"),
    );
    let peer = secret(d, "cluster.token", PEER);

    let binary = kv_node_binary();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = (0..3)
        .map(|i| format!("n{i}=https://127.0.0.1:{}", ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut cluster = Cluster {
        nodes: Vec::new(),
        logs: Vec::new(),
        endpoints: ports
            .iter()
            .map(|p| format!("https://127.0.0.1:{p}"))
            .collect(),
    };
    for (i, port) in ports.iter().enumerate() {
        let name = format!("n{i}");
        let (cert, key) = leaf(&ca);
        let cert = secret(d, &format!("{name}.crt"), &cert);
        let key = secret(d, &format!("{name}.key"), &key);
        let log_path = d.join(format!("{name}.log"));
        let log = File::create(&log_path).unwrap();
        let mut command = Command::new(&binary);
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("KV_NODE_") {
                command.env_remove(var);
            }
        }
        let mut child = command
            .args(["--id", &name, "--listen", &format!("127.0.0.1:{port}")])
            .args(["--peers", &peers])
            .arg("--data-dir")
            .arg(d.join(&name))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--tls-ca")
            .arg(&setup.ca)
            .arg("--tls-client-auth")
            .arg("--auth-token-file")
            .arg(&tokens)
            .arg("--peer-token-file")
            .arg(&peer)
            .arg("--exit-on-stdin-eof")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kv-node");
        let stdin = child.stdin.take().unwrap();
        cluster.nodes.push((child, stdin));
        cluster.logs.push(log_path);
    }
    (setup, cluster)
}

impl Setup {
    /// kvctl with the cluster's CA and the client certificate given as
    /// flags, and no token; `args` add the token and the command.
    fn kvctl(&self, endpoints: &[String], args: &[&str]) -> Run {
        let mut command = self.bare(endpoints);
        command
            .arg("--cacert")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.client_cert)
            .arg("--key")
            .arg(&self.client_key);
        run(command.args(args))
    }

    /// kvctl with the admin token from a file and every TLS file given.
    fn admin(&self, endpoints: &[String], args: &[&str]) -> Run {
        let mut full = vec!["--token-file", self.admin_token_file.to_str().unwrap()];
        full.extend_from_slice(args);
        self.kvctl(endpoints, &full)
    }

    /// kvctl with nothing but the endpoints (no KVCTL_* from outside).
    fn bare(&self, endpoints: &[String]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kvctl"));
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("KVCTL_") {
                command.env_remove(var);
            }
        }
        command.arg("--endpoints").arg(endpoints.join(","));
        command.env("SSL_CERT_FILE", self.dir.path().join("no-system-bundle"));
        command
    }
}

fn ok(run: Run) -> Run {
    assert_eq!(run.code, 0, "{run:?}");
    run
}

/// The `status` replies of every node, when all three answered.
fn statuses(setup: &Setup, cluster: &Cluster) -> Option<Vec<Value>> {
    let run = setup.admin(
        &cluster.endpoints,
        &["--timeout", "2s", "-o", "json", "status"],
    );
    if run.code != 0 {
        return None;
    }
    let all = run.json();
    let replies: Vec<Value> = all
        .as_array()?
        .iter()
        .filter_map(|a| a.get("reply").cloned())
        .collect();
    (replies.len() == 3).then_some(replies)
}

/// Waits (at most 60 s and 300 polls) until every node names the same
/// leader, other than `not`; returns its name.
fn wait_leader(setup: &Setup, cluster: &mut Cluster, not: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..300 {
        for (child, _) in &mut cluster.nodes {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("a kv-node exited early with {status}");
            }
        }
        if let Some(replies) = statuses(setup, cluster) {
            let leader = replies[0]["leader"].as_str().map(str::to_string);
            let agreed = replies
                .iter()
                .all(|r| r["leader"].as_str() == leader.as_deref());
            if let Some(leader) = leader
                && agreed
                && Some(leader.as_str()) != not
            {
                return leader;
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no agreed leader after 300 polls");
}

#[test]
fn every_command_works_over_mutual_tls_with_tokens_and_bad_credentials_are_named() {
    let (setup, mut cluster) = start_cluster();
    let leader = wait_leader(&setup, &mut cluster, None);
    let all = cluster.endpoints.clone();
    let e = all.as_slice();

    // Key-value commands with the admin token (a file) and every TLS file.
    ok(setup.admin(e, &["put", "greeting", "hello"]));
    assert_eq!(ok(setup.admin(e, &["get", "greeting"])).stdout, "hello\n");
    for consistency in ["linearizable", "lease", "stale"] {
        // A stale read may come from a follower that has not applied the
        // put yet (not_found): only the others must succeed.
        let got = setup.admin(e, &["get", "greeting", "--consistency", consistency]);
        assert!(got.code == 0 || consistency == "stale", "{got:?}");
    }
    let failed = setup.admin(e, &["cas", "greeting", "--expected", "bye", "--value", "x"]);
    assert_eq!(failed.code, 4, "{failed:?}");
    ok(setup.admin(
        e,
        &["cas", "greeting", "--expected", "hello", "--value", "hi"],
    ));
    ok(setup.admin(e, &["cas", "fresh", "--absent", "--value", "new"]));
    ok(setup.admin(e, &["mput", "dir/a=1", "dir/b=2", "dir/c=3"]));
    let scan = ok(setup.admin(e, &["-o", "json", "scan", "dir/"])).json();
    assert_eq!(scan["entries"].as_array().map(Vec::len), Some(3), "{scan}");
    let limited = ok(setup.admin(e, &["-o", "json", "scan", "dir/", "--limit", "2"])).json();
    assert_eq!(limited["more"], true, "{limited}");
    let txn = ok(setup.admin(
        e,
        &[
            "txn",
            "--if",
            "lock rev== 0",
            "--then",
            "put lock me",
            "--then",
            "get lock",
            "--else",
            "get lock",
        ],
    ));
    assert!(txn.stdout.starts_with("SUCCEEDED"), "{txn:?}");
    ok(setup.admin(e, &["del", "fresh"]));
    let missing = setup.admin(e, &["get", "fresh"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.starts_with("not_found: "), "{missing:?}");
    let dedup = [
        "-o",
        "json",
        "put",
        "once",
        "1",
        "--client-id",
        "c1",
        "--seq",
        "1",
    ];
    let first = ok(setup.admin(e, &dedup)).json();
    assert_eq!(
        ok(setup.admin(e, &dedup)).json()["revision"],
        first["revision"]
    );

    // The token from KVCTL_TOKEN, the TLS files from KVCTL_CACERT,
    // KVCTL_CERT and KVCTL_KEY; a write token may write.
    let mut command = setup.bare(e);
    command
        .env("KVCTL_TOKEN", WRITE)
        .env("KVCTL_CACERT", &setup.ca)
        .env("KVCTL_CERT", &setup.client_cert)
        .env("KVCTL_KEY", &setup.client_key)
        .args(["put", "from-env", "yes"]);
    ok(run(&mut command));
    // --token on the command line, a read token reads.
    let read = ok(setup.kvctl(e, &["--token", READ, "get", "from-env"]));
    assert_eq!(read.stdout, "yes\n");
    // KVCTL_TOKEN_FILE.
    let mut command = setup.bare(e);
    command
        .env("KVCTL_TOKEN_FILE", &setup.admin_token_file)
        .env("KVCTL_CACERT", &setup.ca)
        .env("KVCTL_CERT", &setup.client_cert)
        .env("KVCTL_KEY", &setup.client_key)
        .args(["get", "from-env"]);
    ok(run(&mut command));

    // Cluster and admin commands.
    let status = ok(setup.admin(e, &["status"]));
    assert_eq!(status.stdout.lines().count(), 4, "{status:?}");
    let members = ok(setup.admin(e, &["-o", "json", "member", "list"])).json();
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(3),
        "{members}"
    );
    // A learner nobody runs (port 9 on loopback): added, listed, removed.
    // Ask a follower, which forwards to the leader over TLS.
    let follower = (0..3).find(|i| format!("n{i}") != leader).unwrap();
    let via_follower = [all[follower].clone()];
    ok(setup.admin(
        &via_follower,
        &["member", "add", "n9", "https://127.0.0.1:9", "--learner"],
    ));
    let members = ok(setup.admin(e, &["member", "list"]));
    assert!(members.stdout.contains("n9"), "{members:?}");
    ok(setup.admin(&via_follower, &["member", "remove", "n9"]));
    let members = ok(setup.admin(e, &["member", "list"]));
    assert!(!members.stdout.contains("n9"), "{members:?}");
    let target = format!("n{follower}");
    ok(setup.admin(e, &["transfer-leader", &target]));
    let new_leader = wait_leader(&setup, &mut cluster, Some(&leader));
    assert_eq!(new_leader, target);
    ok(setup.admin(e, &["snapshot"]));
    ok(setup.admin(e, &["read-policy", "lease"]));
    let policy = ok(setup.admin(e, &["read-policy"]));
    assert_eq!(policy.stdout.matches("lease").count(), 3, "{policy:?}");
    ok(setup.admin(e, &["read-policy", "linearizable"]));
    ok(setup.admin(e, &["bench", "--duration", "300ms", "--workers", "2"]));
    assert_eq!(ok(setup.admin(e, &["get", "greeting"])).stdout, "hi\n");

    // Bad tokens: exit 5 and the endpoint that refused, nothing written.
    let first = &all[0];
    let wrong = setup.kvctl(
        e,
        &["--token", "not-a-token-of-this-cluster", "get", "greeting"],
    );
    assert_eq!(wrong.code, CREDENTIALS_EXIT, "{wrong:?}");
    assert!(
        wrong.stderr.starts_with(&format!(
            "endpoint {first} refused the token: unauthorized: "
        )),
        "{wrong:?}"
    );
    let none = setup.kvctl(e, &["put", "greeting", "stolen"]);
    assert_eq!(none.code, CREDENTIALS_EXIT, "{none:?}");
    assert!(
        none.stderr.contains(&format!("endpoint {first} refused")),
        "{none:?}"
    );
    assert!(none.stderr.contains("--token"), "names the flags: {none:?}");
    let weak = setup.kvctl(e, &["--token", READ, "put", "greeting", "stolen"]);
    assert_eq!(weak.code, CREDENTIALS_EXIT, "{weak:?}");
    assert!(
        weak.stderr
            .starts_with(&format!("endpoint {first} refused the token: forbidden: ")),
        "{weak:?}"
    );
    let weak = setup.kvctl(e, &["--token", WRITE, "member", "remove", "n0"]);
    assert_eq!(weak.code, CREDENTIALS_EXIT, "{weak:?}");
    let weak = setup.kvctl(e, &["--token", WRITE, "snapshot"]);
    assert_eq!(weak.code, CREDENTIALS_EXIT, "{weak:?}");
    assert_eq!(
        weak.stderr.matches("refused the token: forbidden").count(),
        3,
        "{weak:?}"
    );
    let json = setup.kvctl(e, &["--token", READ, "-o", "json", "del", "greeting"]);
    assert_eq!(json.code, CREDENTIALS_EXIT, "{json:?}");
    assert_eq!(json.json()["error"]["code"], "forbidden");
    assert_eq!(ok(setup.admin(e, &["get", "greeting"])).stdout, "hi\n");
    let members = ok(setup.admin(e, &["-o", "json", "member", "list"])).json();
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(3),
        "{members}"
    );

    // TLS failures: exit 5, every endpoint named with what failed.
    let token = ["--token", ADMIN];
    let mut command = setup.bare(e);
    command
        .arg("--cacert")
        .arg(&setup.other_ca)
        .arg("--cert")
        .arg(&setup.client_cert)
        .arg("--key")
        .arg(&setup.client_key)
        .args(token)
        .args(["get", "greeting"]);
    let wrong_ca = run(&mut command);
    assert_eq!(wrong_ca.code, CREDENTIALS_EXIT, "{wrong_ca:?}");
    for endpoint in &all {
        assert!(
            wrong_ca
                .stderr
                .contains(&format!("{endpoint}: certificate error: unknown CA")),
            "{wrong_ca:?}"
        );
    }
    let mut command = setup.bare(e);
    command
        .arg("--cacert")
        .arg(&setup.ca)
        .args(token)
        .args(["get", "greeting"]);
    let no_cert = run(&mut command);
    assert_eq!(no_cert.code, CREDENTIALS_EXIT, "{no_cert:?}");
    assert!(
        no_cert.stderr.contains(&format!(
            "{first}: certificate error: missing client certificate"
        )),
        "{no_cert:?}"
    );
    let mut command = setup.bare(e);
    command
        .arg("--cacert")
        .arg(&setup.ca)
        .arg("--cert")
        .arg(&setup.stranger_cert)
        .arg("--key")
        .arg(&setup.stranger_key)
        .args(token)
        .args(["get", "greeting"]);
    let stranger = run(&mut command);
    assert_eq!(stranger.code, CREDENTIALS_EXIT, "{stranger:?}");
    assert!(
        stranger.stderr.contains(&format!(
            "{first}: certificate error: the server refused the client certificate"
        )),
        "{stranger:?}"
    );
    let by_name: Vec<String> = all
        .iter()
        .map(|u| u.replace("127.0.0.1", "localhost"))
        .collect();
    let mismatch = setup.admin(&by_name, &["get", "greeting"]);
    assert_eq!(mismatch.code, CREDENTIALS_EXIT, "{mismatch:?}");
    assert!(
        mismatch
            .stderr
            .contains(&format!("{}: certificate error: name mismatch", by_name[0])),
        "{mismatch:?}"
    );
    // Without --cacert (and no system bundle) the node is unknown too.
    let mut command = setup.bare(e);
    command.args(token).args(["status"]);
    let no_ca = run(&mut command);
    assert_eq!(no_ca.code, CREDENTIALS_EXIT, "{no_ca:?}");
    assert!(no_ca.stderr.contains("unknown CA"), "{no_ca:?}");

    // The cluster kept serving.
    assert_eq!(ok(setup.admin(e, &["get", "greeting"])).stdout, "hi\n");
}
