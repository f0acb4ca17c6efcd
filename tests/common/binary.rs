//! Finding the kv-node binary, and picking free ports.
//!
//! The root package does not own kv-node's binary, so `CARGO_BIN_EXE_kv-node`
//! is not set for these tests. The binary lives in the same target profile
//! directory as the test executable (`target/<profile>/deps/<test>` ->
//! `target/<profile>/kv-node`). It is built once per test process with
//! `cargo build -p kv-node`, which is quick when it is up to date and keeps
//! tests from running a stale node; if that build fails (someone is midway
//! through an edit), an existing binary is used with a warning.

use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The kv-node binary to run: `$KV_NODE_BIN` if set, else the one in this
/// test's target profile directory, built if needed.
pub fn kv_node_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(locate_or_build).clone()
}

/// `target/<profile>`, the directory of the test executable's parent.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable is in target/<profile>/deps")
        .to_path_buf()
}

fn locate_or_build() -> PathBuf {
    if let Some(path) = std::env::var_os("KV_NODE_BIN") {
        return PathBuf::from(path);
    }
    let profile_dir = profile_dir();
    let binary = profile_dir.join("kv-node");
    let release = profile_dir
        .file_name()
        .is_some_and(|name| name == "release");
    // Test binaries of one `cargo test` run one after another, but several
    // engineers' runs may overlap: one build at a time.
    let lock_path = profile_dir.join(".kv-node-test-build.lock");
    let lock = File::create(&lock_path).expect("create the build lock file");
    lock.lock().expect("lock the build lock file");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--quiet", "-p", "kv-node", "--bin", "kv-node"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        command.arg("--release");
    }
    let built = command.status().map(|s| s.success()).unwrap_or(false);
    drop(lock);
    if !built {
        assert!(
            binary.exists(),
            "`cargo build -p kv-node` failed and there is no {}",
            binary.display()
        );
        let _ = writeln!(
            std::io::stderr(),
            "WARNING: `cargo build -p kv-node` failed; testing the existing {}",
            binary.display()
        );
    }
    binary
}

/// A port that is free on every one of `ips`, starting from a base drawn
/// from `name` in 20000..32000 (below the ephemeral range, so outgoing
/// connections never hold it), so concurrent tests rarely collide; the
/// binding check catches the rest.
pub fn free_port(name: &str, ips: &[Ipv4Addr]) -> u16 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let base = 20_000 + (hash % 12_000) as u16;
    for offset in 0..2_000u16 {
        let port = 20_000 + (base - 20_000 + offset * 7) % 12_000;
        let free = ips
            .iter()
            .all(|&ip| TcpListener::bind(SocketAddrV4::new(ip, port)).is_ok());
        if free {
            return port;
        }
    }
    panic!("no free port for {name} on {ips:?}");
}
