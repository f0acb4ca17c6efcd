//! The catalogue of known replica bugs (issue 14), one flag each, the way
//! raft-core's and kv-storage's `bugs.rs` catalogue theirs: each breaks a
//! promise of watches, leases or transactions, and the simulator's
//! bug-catalogue tests switch it on (with the `buggy` feature) and show
//! that a seed sweep finds it.
//!
//! Without the `buggy` feature [`ReplicaBugs::has`] is a constant `false`,
//! so normal builds keep none of the buggy paths live.

use std::fmt;

/// Which replica bugs to switch on ([`crate::replica::Replica::set_bugs`],
/// [`crate::watch::WatchHub::set_bugs`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaBugs {
    /// A watch resumed with `from_revision = R` starts after R: the events
    /// of revision R are skipped on every reconnect.
    pub watch_resume_skips_revision: bool,
    /// A keepalive is answered but does not restart the lease's countdown:
    /// a lease kept alive expires its TTL after the leader started
    /// counting.
    pub lease_keepalive_not_counted: bool,
    /// A transaction applies every op of its branch but the last, and
    /// answers as if it had applied them all: not atomic.
    pub txn_drops_last_op: bool,
}

impl ReplicaBugs {
    /// Every flag, by name (for `sim --bug`).
    pub const NAMES: [&'static str; 3] = [
        "watch_resume_skips_revision",
        "lease_keepalive_not_counted",
        "txn_drops_last_op",
    ];

    /// The bugs with the flag called `name` on, if there is one.
    pub fn named(name: &str) -> Option<ReplicaBugs> {
        let mut bugs = ReplicaBugs::default();
        match name {
            "watch_resume_skips_revision" => bugs.watch_resume_skips_revision = true,
            "lease_keepalive_not_counted" => bugs.lease_keepalive_not_counted = true,
            "txn_drops_last_op" => bugs.txn_drops_last_op = true,
            _ => return None,
        }
        Some(bugs)
    }

    /// Whether `flag` (a field of `self`) is in force: never without the
    /// `buggy` feature.
    #[inline(always)]
    pub(crate) fn has(flag: bool) -> bool {
        cfg!(feature = "buggy") && flag
    }
}

/// The bugs a state machine runs with: configuration, not replicated
/// state, so equality ignores it (as the event recorder).
#[derive(Clone, Copy, Default)]
pub(crate) struct BugSwitch(pub(crate) ReplicaBugs);

impl PartialEq for BugSwitch {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for BugSwitch {}

impl fmt::Debug for BugSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
