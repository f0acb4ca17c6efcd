//! Network partitions between loopback addresses with iptables.
//!
//! All rules live in one dedicated chain, `KVCHAOS`, jumped to from OUTPUT.
//! Packets between two 127.0.0.x addresses traverse OUTPUT on the way out,
//! so dropping them there cuts the link. The chain is flushed and removed
//! when a [`Firewall`] is created (left over from a crashed run) and dropped
//! (also on panic). Rules name the cluster's port, so that other clusters on
//! the same addresses are not cut.

use std::net::Ipv4Addr;
use std::process::Command;

pub const CHAIN: &str = "KVCHAOS";

pub struct Firewall {
    chain: &'static str,
    port: u16,
    rules: usize,
}

fn iptables(args: &[&str]) -> Result<(), String> {
    let output = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| format!("iptables {args:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Why partitions cannot be made here, if they cannot.
pub fn unavailable_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output();
    match uid {
        Ok(out) if String::from_utf8_lossy(&out.stdout).trim() == "0" => {}
        _ => return Some("not running as root, so iptables rules cannot be set".into()),
    }
    if let Err(e) = iptables(&["-L", "OUTPUT", "-n"]) {
        return Some(format!(
            "iptables is not usable ({e}); install it with `apt-get install -y iptables`"
        ));
    }
    None
}

/// Removes the chain and the jump to it, whatever state they are in.
fn remove_chain(chain: &str) {
    // A crashed run may have left more than one jump; bounded.
    for _ in 0..10 {
        if iptables(&["-D", "OUTPUT", "-j", chain]).is_err() {
            break;
        }
    }
    let _ = iptables(&["-F", chain]);
    let _ = iptables(&["-X", chain]);
}

impl Firewall {
    /// Sets up an empty `KVCHAOS` chain for a cluster on `port`.
    pub fn install(port: u16) -> Result<Firewall, String> {
        Firewall::install_chain(CHAIN, port)
    }

    /// As [`Firewall::install`], in a chain of its own (a test that runs
    /// beside the chaos test must not flush its rules).
    pub fn install_chain(chain: &'static str, port: u16) -> Result<Firewall, String> {
        remove_chain(chain);
        iptables(&["-N", chain])?;
        iptables(&["-I", "OUTPUT", "-j", chain])?;
        Ok(Firewall {
            chain,
            port,
            rules: 0,
        })
    }

    /// Drops the requests `from` sends to `to` on the cluster's port, and
    /// nothing else: `to`'s own requests to `from`, and their replies, still
    /// pass. Peer traffic is one request per batch from sender to receiver,
    /// so `to` hears nothing from `from` while `from` still hears `to`.
    #[allow(dead_code)] // used by tests/transfer_and_removal.rs, not by chaos
    pub fn cut_one_way(&mut self, from: Ipv4Addr, to: Ipv4Addr) -> Result<(), String> {
        let port = self.port.to_string();
        let (from, to) = (from.to_string(), to.to_string());
        iptables(&[
            "-A", self.chain, "-p", "tcp", "-s", &from, "-d", &to, "--dport", &port, "-j", "DROP",
        ])?;
        self.rules += 1;
        Ok(())
    }

    /// Drops every packet between `a` and `b` on the cluster's port, both
    /// ways: requests each way, and the replies to them.
    pub fn cut(&mut self, a: Ipv4Addr, b: Ipv4Addr) -> Result<(), String> {
        let port = self.port.to_string();
        for (from, to) in [(a, b), (b, a)] {
            let (from, to) = (from.to_string(), to.to_string());
            for direction in ["--dport", "--sport"] {
                iptables(&[
                    "-A", self.chain, "-p", "tcp", "-s", &from, "-d", &to, direction, &port, "-j",
                    "DROP",
                ])?;
                self.rules += 1;
            }
        }
        Ok(())
    }

    /// Cuts every link between a node of `side` and a node of `other`.
    pub fn split(&mut self, side: &[Ipv4Addr], other: &[Ipv4Addr]) -> Result<(), String> {
        for &a in side {
            for &b in other {
                self.cut(a, b)?;
            }
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<(), String> {
        if self.rules > 0 {
            iptables(&["-F", self.chain])?;
            self.rules = 0;
        }
        Ok(())
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        remove_chain(self.chain);
    }
}
