//! The leader's lease countdowns, in ticks: pure data, stepped by the
//! replica on every tick (see `replica_leases`), so that kv-node and the
//! simulator expire leases the same way.
//!
//! Only a leader counts. A replica that becomes leader (or leads in a new
//! term) starts every lease at its full TTL: whatever time an earlier
//! leader had counted is forgotten, so a failover can only make a lease
//! live longer, never shorter. A keepalive resets a countdown to the full
//! TTL. A countdown that runs out asks for an expire entry once; if that
//! entry has not removed the lease after [`EXPIRE_RETRY_TICKS`] (the
//! proposal was lost), it asks again. A lease whose expiry was proposed
//! refuses keepalives: it is as good as gone.
//!
//! Ticks can only arrive late (a busy driver delays them), never early, so
//! counting `ceil(ttl / tick) + 1` ticks lets at least `ttl` pass after a
//! reset, wherever in a tick period the reset falls.

use raft_core::Term;
use std::collections::BTreeMap;

/// Ticks to wait for a proposed expiry to be applied before proposing it
/// again.
pub const EXPIRE_RETRY_TICKS: u64 = 200;

/// The tick length assumed until the caller sets one (kv-node's default
/// `--tick-ms`).
pub const DEFAULT_TICK_MS: u64 = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Countdown {
    /// Ticks left before the lease expires, of a lease of `ttl_ms`.
    Running { ticks_left: u64, ttl_ms: u64 },
    /// Its expiry was proposed; ticks left before proposing it again.
    Expiring { retry_ticks_left: u64 },
}

/// Why a keepalive was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepaliveRefused {
    /// This replica does not lead: only the leader counts.
    NotLeader,
    /// The lease is unknown, or its expiry was already proposed.
    NotFound,
}

/// The countdown of every lease, kept by the leader only.
#[derive(Clone, Debug)]
pub struct LeaseClock {
    tick_ms: u64,
    /// The term this replica leads in, while it leads; countdowns belong
    /// to that term.
    leading: Option<Term>,
    /// Invariant: empty unless `leading` is set; after `sync`, exactly the
    /// leases of the state machine.
    countdowns: BTreeMap<u64, Countdown>,
    /// The state machine's applied index at the last full sync: leases
    /// change only by applying entries, so a sync at the same index and
    /// leadership has nothing to do.
    synced_at: Option<u64>,
    /// Known bugs switched on (`crate::bugs`).
    bugs: crate::bugs::ReplicaBugs,
}

impl LeaseClock {
    /// A clock whose ticks are `tick_ms` long.
    pub fn new(tick_ms: u64) -> LeaseClock {
        assert!(tick_ms > 0, "a tick of 0 ms");
        LeaseClock {
            tick_ms,
            leading: None,
            countdowns: BTreeMap::new(),
            synced_at: None,
            bugs: crate::bugs::ReplicaBugs::default(),
        }
    }

    /// Switches known bugs on (only with the `buggy` feature).
    pub fn set_bugs(&mut self, bugs: crate::bugs::ReplicaBugs) {
        self.bugs = bugs;
    }

    pub fn bugs(&self) -> crate::bugs::ReplicaBugs {
        self.bugs
    }

    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// Ticks a full TTL takes (see the module doc for the extra tick).
    pub fn ticks_for(&self, ttl_ms: u64) -> u64 {
        // Saturating: a TTL from a forged entry must not wrap to an early
        // expiry.
        ttl_ms.div_ceil(self.tick_ms).saturating_add(1)
    }

    /// Brings the countdowns in line with who leads and which leases exist
    /// (`leases`: (id, ttl_ms) in id order). Leading in a new term
    /// restarts every countdown at the full TTL; a new lease starts at its
    /// full TTL; a lease gone is forgotten. `applied_index` is the state
    /// machine's: nothing is done when neither it nor the leadership moved
    /// since the last sync.
    pub fn sync(
        &mut self,
        leader_term: Option<Term>,
        applied_index: u64,
        leases: impl Iterator<Item = (u64, u64)>,
    ) {
        if leader_term != self.leading {
            self.countdowns.clear();
            self.leading = leader_term;
            self.synced_at = None;
        }
        if self.leading.is_none() || self.synced_at == Some(applied_index) {
            return;
        }
        self.synced_at = Some(applied_index);
        let mut kept = BTreeMap::new();
        for (id, ttl_ms) in leases {
            let countdown = self.countdowns.remove(&id).unwrap_or(Countdown::Running {
                ticks_left: self.ticks_for(ttl_ms),
                ttl_ms,
            });
            kept.insert(id, countdown);
        }
        self.countdowns = kept;
    }

    /// One tick passed: returns the leases whose expiry should be proposed
    /// now (the caller reports each one proposed with
    /// [`LeaseClock::expire_proposed`]; one not reported is asked for
    /// again on the next tick).
    pub fn tick(&mut self) -> Vec<u64> {
        let mut due = Vec::new();
        for (id, countdown) in &mut self.countdowns {
            match countdown {
                Countdown::Running { ticks_left, .. } => {
                    *ticks_left = ticks_left.saturating_sub(1);
                    if *ticks_left == 0 {
                        due.push(*id);
                    }
                }
                Countdown::Expiring { retry_ticks_left } => {
                    *retry_ticks_left = retry_ticks_left.saturating_sub(1);
                    if *retry_ticks_left == 0 {
                        due.push(*id);
                    }
                }
            }
        }
        due
    }

    /// The expiry of lease `id` was proposed.
    pub fn expire_proposed(&mut self, id: u64) {
        if let Some(countdown) = self.countdowns.get_mut(&id) {
            *countdown = Countdown::Expiring {
                retry_ticks_left: EXPIRE_RETRY_TICKS,
            };
        }
    }

    /// A keepalive for lease `id` of `ttl_ms`: restarts its countdown.
    pub fn keepalive(&mut self, id: u64, ttl_ms: u64) -> Result<(), KeepaliveRefused> {
        if self.leading.is_none() {
            return Err(KeepaliveRefused::NotLeader);
        }
        let ticks_left = self.ticks_for(ttl_ms);
        match self.countdowns.get_mut(&id) {
            Some(Countdown::Running { .. })
                if crate::bugs::ReplicaBugs::has(self.bugs.lease_keepalive_not_counted) =>
            {
                // Bug: answered, not counted.
                Ok(())
            }
            Some(countdown @ Countdown::Running { .. }) => {
                *countdown = Countdown::Running { ticks_left, ttl_ms };
                Ok(())
            }
            Some(Countdown::Expiring { .. }) | None => Err(KeepaliveRefused::NotFound),
        }
    }

    /// Milliseconds left before lease `id` expires (0 once its expiry is
    /// proposed); None unless this replica leads and counts it.
    pub fn remaining_ms(&self, id: u64) -> Option<u64> {
        match self.countdowns.get(&id)? {
            Countdown::Running { ticks_left, ttl_ms } => {
                // The extra tick of `ticks_for` and the rounding up are
                // slack, not promised time.
                let counted = ticks_left.saturating_sub(1).saturating_mul(self.tick_ms);
                Some(counted.min(*ttl_ms))
            }
            Countdown::Expiring { .. } => Some(0),
        }
    }

    /// Whether this replica counts, as the leader of some term.
    pub fn is_leading(&self) -> bool {
        self.leading.is_some()
    }
}

#[cfg(test)]
mod tests;
