//! `kvctl lock NAME -- COMMAND`: a distributed lock, then a command run
//! while it is held (the recipe of `etcdctl lock`, with one key per lock).
//!
//! 1. Grant a lease of `--ttl` and keep it alive from a thread, every third
//!    of the TTL.
//! 2. Acquire: `POST /txn` that puts `<prefix>NAME` (value: this owner,
//!    attached to the lease) if the key's revision is 0 (absent), and else
//!    reads it. Every attempt carries `(client_id, seq)`, so a retry after
//!    a timeout or a dropped connection gets the first result again: an
//!    unknown outcome is resolved, never assumed. A holder whose value is
//!    ours (an earlier attempt that applied) counts as ours.
//! 3. Held by someone else: watch the key from the revision after the
//!    failed transaction until a delete (a release, a revoke or an
//!    expiry), then try again. A broken stream also tries again: the
//!    transaction re-reads the truth.
//! 4. Held: run COMMAND with the inherited stdio and `KVCTL_LOCK_KEY`,
//!    `KVCTL_LOCK_LEASE`, `KVCTL_LOCK_REVISION`; when it exits, revoke the
//!    lease (deleting the key) and exit with its status.
//!
//! The lock is gone when the lease is: a keepalive answered
//! `lease_not_found`, or no keepalive confirmed within the TTL. Then the
//! command is killed and kvctl exits `LOCK_LOST_EXIT`. SIGINT and SIGTERM
//! end the command, revoke and exit 128 + signal. If kvctl is killed
//! outright, the keepalives stop and the lock is free after the TTL; on
//! Linux the command gets SIGKILL when kvctl dies (`PR_SET_PDEATHSIG`), so
//! it never runs on without the lock.

use crate::Context;
use crate::cli::LockArgs;
use crate::client::{Call, Client, Failure, Method, encode};
use serde_json::{Value, json};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Exit code when the lock was lost while held (or the lease before it
/// was acquired): the command was killed.
pub const LOCK_LOST_EXIT: u8 = 6;

/// How often the main thread looks at the command, the signals and the lease.
const POLL: Duration = Duration::from_millis(50);
/// A watch stream silent this long is taken as dead (nodes send a progress
/// line every 5 s).
const STREAM_SILENCE: Duration = Duration::from_secs(15);
/// After SIGINT/SIGTERM, how long the command has to exit before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// The signal received (0: none), set by the handler.
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    SIGNALLED.store(signal, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores into an atomic, which is
        // async-signal-safe; `signal` is given a valid function pointer.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

fn signalled() -> Option<i32> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Why the lock recipe stopped before the command finished.
enum Stop {
    Signal(i32),
    LeaseLost(String),
    Failed(Failure),
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Stop {
        Stop::Failed(failure)
    }
}

/// The lease and its keepalive thread's view of it.
struct Keeper {
    lease: u64,
    ttl: Duration,
    state: Mutex<KeepState>,
    stop: AtomicBool,
}

struct KeepState {
    /// When the last keepalive answered 200 was sent: the lease lives at
    /// least a TTL from then.
    confirmed_at: Instant,
    /// Set when the cluster said the lease is gone.
    lost: Option<String>,
}

impl Keeper {
    /// Why the lease (and so the lock) may be gone, if it may.
    fn lost(&self) -> Option<String> {
        let state = self.state.lock().expect("keeper state");
        if let Some(reason) = &state.lost {
            return Some(reason.clone());
        }
        let silent = state.confirmed_at.elapsed();
        (silent >= self.ttl).then(|| {
            format!(
                "no keepalive of lease {} was confirmed for {silent:.1?} (TTL {:?}); \
                 it may have expired",
                self.lease, self.ttl
            )
        })
    }

    fn check(&self) -> Result<(), Stop> {
        if let Some(signal) = signalled() {
            return Err(Stop::Signal(signal));
        }
        match self.lost() {
            Some(reason) => Err(Stop::LeaseLost(reason)),
            None => Ok(()),
        }
    }
}

pub fn lock(ctx: &Context, args: &LockArgs) -> Result<u8, Failure> {
    if args.name.is_empty() {
        return Err(Failure::Usage("the lock NAME is empty".into()));
    }
    install_signal_handlers();
    let key = format!("{}{}", args.key_prefix, args.name);
    let keeper = Arc::new(grant(ctx, args.ttl)?);
    {
        let (client, keeper) = (ctx.client.clone(), keeper.clone());
        std::thread::spawn(move || keep_alive(&client, &keeper));
    }
    let outcome = acquire(ctx, &key, &keeper).and_then(|revision| {
        eprintln!(
            "kvctl lock: holding {key} (lease {}, revision {revision})",
            keeper.lease
        );
        hold(args, &key, revision, &keeper)
    });
    keeper.stop.store(true, Ordering::SeqCst);
    match outcome {
        Ok(code) => {
            revoke(&ctx.client, keeper.lease);
            Ok(code)
        }
        Err(Stop::Signal(signal)) => {
            revoke(&ctx.client, keeper.lease);
            eprintln!("kvctl lock: interrupted by signal {signal}; released {key}");
            Ok(128u8.saturating_add(u8::try_from(signal).unwrap_or(0)))
        }
        Err(Stop::LeaseLost(reason)) => {
            eprintln!("kvctl lock: lost the lock {key}: {reason}");
            Ok(LOCK_LOST_EXIT)
        }
        Err(Stop::Failed(failure)) => {
            // Whether or not an unanswered transaction applied, revoking
            // the lease deletes the key; if the revoke fails too, the
            // lease expires after its TTL.
            revoke(&ctx.client, keeper.lease);
            Err(failure)
        }
    }
}

fn grant(ctx: &Context, ttl: Duration) -> Result<Keeper, Failure> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    // Retried after a timeout: a second grant leaves at worst an unused
    // lease with no keys, which expires on its own.
    let call = Call::write(
        Method::POST,
        "/lease".into(),
        Some(json!({ "ttl_ms": ttl_ms })),
        true,
    );
    let sent = Instant::now();
    let reply = ctx.client.send(&call)?;
    let lease = reply
        .body
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            Failure::Client(format!(
                "POST /lease answered without an id: {}",
                reply.body
            ))
        })?;
    let granted_ms = reply.body.get("ttl_ms").and_then(Value::as_u64);
    Ok(Keeper {
        lease,
        ttl: Duration::from_millis(granted_ms.unwrap_or(ttl_ms)),
        state: Mutex::new(KeepState {
            confirmed_at: sent,
            lost: None,
        }),
        stop: AtomicBool::new(false),
    })
}

/// The keepalive thread: one every third of the TTL, sooner again after a
/// failure, until stopped or the lease is gone.
fn keep_alive(client: &Client, keeper: &Keeper) {
    let beat = keeper.ttl / 3;
    let retry = (beat / 4).max(Duration::from_millis(100));
    let call = Call::write(
        Method::POST,
        format!("/lease/{}/keepalive", keeper.lease),
        None,
        true,
    );
    let mut next = Instant::now() + beat;
    while !keeper.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(POLL));
            continue;
        }
        match client.send(&call) {
            Ok(_) => {
                keeper.state.lock().expect("keeper state").confirmed_at = now;
                next = now + beat;
            }
            Err(Failure::Server(e)) if e.code == "lease_not_found" => {
                keeper.state.lock().expect("keeper state").lost =
                    Some(format!("lease {} is gone: {}", keeper.lease, e.message));
                return;
            }
            Err(failure) => {
                if !keeper.stop.load(Ordering::SeqCst) {
                    eprintln!("kvctl lock: keepalive failed, trying again: {failure}");
                }
                next = Instant::now() + retry;
            }
        }
    }
}

/// Loops until the lock is ours; returns the revision it was taken at.
fn acquire(ctx: &Context, key: &str, keeper: &Keeper) -> Result<u64, Stop> {
    let owner = format!("lease={} pid={}", keeper.lease, std::process::id());
    let client_id = format!("kvctl-lock-{}", keeper.lease);
    let mut announced = false;
    for seq in 1u64.. {
        keeper.check()?;
        let body = json!({
            "compare": [{"key": key, "target": "revision", "op": "==", "revision": 0}],
            "success": [{"put": {"key": key, "value": owner, "lease": keeper.lease}}],
            "failure": [{"get": {"key": key}}],
            "client_id": client_id,
            "seq": seq,
        });
        let reply = send_txn(&ctx.client, body, keeper)?;
        let revision = reply.get("revision").and_then(Value::as_u64).unwrap_or(0);
        if reply.get("succeeded").and_then(Value::as_bool) == Some(true) {
            return Ok(revision);
        }
        let holder = reply.pointer("/results/0").cloned().unwrap_or(Value::Null);
        match holder.get("value").and_then(Value::as_str) {
            Some(value) if value == owner => {
                return Ok(holder.get("revision").and_then(Value::as_u64).unwrap_or(0));
            }
            Some(value) => {
                if !announced {
                    eprintln!("kvctl lock: {key} is held by {value}; waiting");
                    announced = true;
                }
                wait_for_delete(&ctx.client, key, revision + 1, seq, keeper)?;
            }
            // Released between the comparison and now? Not within one
            // transaction; try again anyway.
            None => std::thread::sleep(POLL),
        }
    }
    unreachable!("the acquire loop only ends by returning")
}

/// Sends one acquire transaction until an answer comes back, always with
/// the same `(client_id, seq)`: the server applies it at most once and
/// answers a retry with the first result.
fn send_txn(client: &Client, body: Value, keeper: &Keeper) -> Result<Value, Stop> {
    let call = Call::write(Method::POST, "/txn".into(), Some(body), true);
    let mut pause = Duration::from_millis(100);
    loop {
        let failure = match client.send(&call) {
            Ok(reply) => return Ok(reply.body),
            Err(Failure::Server(e)) if e.code == "lease_not_found" => {
                return Err(Stop::LeaseLost(format!(
                    "lease {} is gone before the lock was taken: {}",
                    keeper.lease, e.message
                )));
            }
            // No leader (503), outcome unknown (504), nobody reachable:
            // the same request again, after a pause.
            Err(Failure::Server(e)) if matches!(e.status, 503 | 504) => Failure::Server(e),
            Err(failure @ (Failure::Unreachable(_) | Failure::OutcomeUnknown { .. })) => failure,
            Err(failure) => return Err(Stop::Failed(failure)),
        };
        if let Some(signal) = signalled() {
            return Err(Stop::Signal(signal));
        }
        if keeper.lost().is_some() {
            // The cluster stayed out of reach for a whole TTL.
            return Err(Stop::Failed(failure));
        }
        eprintln!("kvctl lock: acquiring failed, trying again: {failure}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Waits until `key` is deleted at or after `from_revision`, or the watch
/// breaks (then the caller's transaction looks again). The stream is read
/// on a thread so that signals and a lost lease are noticed at once.
fn wait_for_delete(
    client: &Client,
    key: &str,
    from_revision: u64,
    round: u64,
    keeper: &Keeper,
) -> Result<(), Stop> {
    let endpoint = client.endpoints[(round as usize) % client.endpoints.len()].clone();
    let path = format!("/watch?key={}&from_revision={from_revision}", encode(key));
    let (sender, receiver) = mpsc::channel::<()>();
    let thread_client = client.clone();
    std::thread::spawn(move || {
        let started = Instant::now();
        let released = watch_once(&thread_client, &endpoint, &path);
        if !released && started.elapsed() < Duration::from_secs(1) {
            // A stream that failed at once: do not spin on a dead node.
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = sender.send(());
    });
    loop {
        keeper.check()?;
        match receiver.recv_timeout(POLL) {
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

/// One watch stream on one endpoint: true when it saw a delete.
fn watch_once(client: &Client, endpoint: &str, path: &str) -> bool {
    let Ok(lines) = client.open_stream(endpoint, path) else {
        return false;
    };
    for line in lines.with_silence_limit(STREAM_SILENCE) {
        let Ok(line) = line else { return false };
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            return false;
        };
        if event.get("error").is_some() {
            return false;
        }
        if event.get("type").and_then(Value::as_str) == Some("delete") {
            return true;
        }
    }
    false
}

/// Runs the command (or, without one, waits for a signal) while the lock
/// is held; returns the exit code.
fn hold(args: &LockArgs, key: &str, revision: u64, keeper: &Keeper) -> Result<u8, Stop> {
    let Some((program, rest)) = args.command.split_first() else {
        // Like `etcdctl lock NAME`: print the key and hold until signalled.
        println!("{key}");
        loop {
            keeper.check()?;
            std::thread::sleep(POLL);
        }
    };
    let mut command = Command::new(program);
    command
        .args(rest)
        .env("KVCTL_LOCK_KEY", key)
        .env("KVCTL_LOCK_LEASE", keeper.lease.to_string())
        .env("KVCTL_LOCK_REVISION", revision.to_string());
    die_with_parent(&mut command);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("kvctl lock: cannot run {program:?}: {e}");
            // The shell's codes: 127 not found, 126 found but not runnable.
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return Ok(code);
        }
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(exit_code(status)),
            Ok(None) => {}
            Err(e) => {
                eprintln!("kvctl lock: cannot wait for the command: {e}");
                kill_now(&mut child);
                return Ok(1);
            }
        }
        match keeper.check() {
            Ok(()) => std::thread::sleep(POLL),
            Err(Stop::Signal(signal)) => {
                stop_gracefully(&mut child, signal);
                return Err(Stop::Signal(signal));
            }
            Err(stop) => {
                // The lock may already be someone else's: no grace period.
                kill_now(&mut child);
                return Err(stop);
            }
        }
    }
}

/// On Linux, the command gets SIGKILL when kvctl dies, even by SIGKILL.
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        // SAFETY: between fork and exec the closure only calls prctl and
        // getppid, both async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // kvctl died before prctl took effect.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("kvctl exited"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Passes the signal on, waits up to `GRACE`, then kills.
fn stop_gracefully(child: &mut Child, signal: i32) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid; it has not been reaped.
        unsafe {
            libc::kill(pid, signal);
        }
    }
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(POLL);
    }
    kill_now(child);
}

fn kill_now(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The command's exit code, or 128 + the signal that ended it (as a shell).
fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => 128u8.saturating_add(u8::try_from(signal).unwrap_or(0)),
        (None, None) => 1,
    }
}

/// Releases the lock: revoking the lease deletes the key. A lease already
/// gone is released too; a revoke that fails leaves the TTL to do it.
fn revoke(client: &Client, lease: u64) {
    // Retry-safe: a revoke sent twice answers lease_not_found the second time.
    let call = Call::write(Method::DELETE, format!("/lease/{lease}"), None, true);
    match client.send(&call) {
        Ok(_) => {}
        Err(Failure::Server(e)) if e.code == "lease_not_found" => {}
        Err(failure) => eprintln!(
            "kvctl lock: could not revoke lease {lease} ({failure}); \
             the lock is released when the lease expires"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }

    #[test]
    fn a_lease_without_a_confirmed_keepalive_for_a_ttl_counts_as_lost() {
        let keeper = Keeper {
            lease: 7,
            ttl: Duration::from_millis(200),
            state: Mutex::new(KeepState {
                confirmed_at: Instant::now(),
                lost: None,
            }),
            stop: AtomicBool::new(false),
        };
        assert!(keeper.lost().is_none());
        keeper.state.lock().unwrap().confirmed_at = Instant::now() - Duration::from_millis(250);
        assert!(keeper.lost().unwrap().contains("lease 7"));
        keeper.state.lock().unwrap().confirmed_at = Instant::now();
        keeper.state.lock().unwrap().lost = Some("gone".into());
        assert_eq!(keeper.lost().as_deref(), Some("gone"));
    }
}
