//! The replica's side of leases: stepping the leader's countdowns on each
//! tick and proposing expire entries, and the keepalive and remaining-time
//! questions the driver asks on the leader.

use crate::command::{Command, Op};
use crate::lease_clock::KeepaliveRefused;
use crate::replica::{Durable, Replica};
use raft_core::{Input, Role};

impl<D: Durable> Replica<D> {
    /// Sets the length of a tick in milliseconds (kv-node's `--tick-ms`),
    /// which turns lease TTLs into tick counts. Countdowns restart.
    pub fn set_lease_tick_ms(&mut self, tick_ms: u64) {
        let bugs = self.lease_clock.bugs();
        self.lease_clock = crate::lease_clock::LeaseClock::new(tick_ms);
        self.lease_clock.set_bugs(bugs);
    }

    /// Brings the countdowns in line with the role and the state machine.
    fn sync_lease_clock(&mut self) {
        let leader_term = (self.node.role() == Role::Leader).then(|| self.node.term());
        let applied = self.state.applied_index();
        self.lease_clock
            .sync(leader_term, applied, self.state.leases());
    }

    /// After a tick: counts down, and proposes the expiry of each lease
    /// whose countdown ran out (nobody waits for these entries).
    pub(crate) fn tick_leases(&mut self) {
        self.sync_lease_clock();
        for id in self.lease_clock.tick() {
            let command = Command {
                request: None,
                client: None,
                op: Op::LeaseExpire { id },
            };
            match self.node.step(Input::Propose {
                data: command.encode(),
            }) {
                Ok(_) => self.lease_clock.expire_proposed(id),
                // Asked for again on the next tick.
                Err(error) => tracing::debug!(lease = id, %error, "lease expiry not proposed"),
            }
        }
    }

    /// A keepalive for lease `id` on this replica: restarts its countdown
    /// if this replica leads and the lease exists and is not expiring;
    /// returns its TTL. The driver calls it when the keepalive arrives and
    /// again once a ReadIndex round started after that has confirmed the
    /// leadership, and answers only then.
    pub fn lease_keepalive(&mut self, id: u64) -> Result<u64, KeepaliveRefused> {
        self.sync_lease_clock();
        if !self.lease_clock.is_leading() {
            return Err(KeepaliveRefused::NotLeader);
        }
        let Some((ttl_ms, _)) = self.state.lease(id) else {
            return Err(KeepaliveRefused::NotFound);
        };
        self.lease_clock.keepalive(id, ttl_ms)?;
        Ok(ttl_ms)
    }

    /// Milliseconds before lease `id` expires, as this replica counts it;
    /// None unless it leads and the lease exists.
    pub fn lease_remaining_ms(&mut self, id: u64) -> Option<u64> {
        self.sync_lease_clock();
        self.lease_clock.remaining_ms(id)
    }
}
