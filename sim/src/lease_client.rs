//! Lease clients: each grants a lease, attaches a key or two to it, keeps
//! it alive for a while, then stops and lets it expire, and starts over.
//! The world records when each keepalive arrived and whether it was
//! answered, and when each lease's expiry was first applied; the checks
//! at the end hold those times against the promise of API.md:
//!
//! - **Safety**: a lease never expires earlier than its TTL after a
//!   keepalive that was answered (`kept alive`), counted from the
//!   keepalive's arrival at the leader.
//! - **Liveness**: once its owner stops, the lease expires within its TTL
//!   plus a bound after the last keepalive sent (answered or not), once
//!   every fault has healed (see [`LeaseLife::expiry_deadline`]).
//!
//! # Time
//!
//! A simulated tick stands for [`LEASE_TICK_MS`] of lease time: the
//! replicas count TTLs in their own ticks (`kv_replica::lease_clock`), and
//! a node whose clock is skewed ticks a little faster or slower than
//! `STEPS_PER_TICK`. The promise is in the leader's clock, so the safety
//! bound counts the TTL in ticks of the fastest node (ticks only arrive
//! late, never early), and the liveness bound in ticks of the slowest.

use crate::client::{Client, ClientCall, ClientKind, ClientRet};
use crate::rng::SimRng;
use kv_replica::command::{Op, OpResult};

/// The lease time one simulated tick stands for (the replicas'
/// `set_lease_tick_ms`).
pub const LEASE_TICK_MS: u64 = 50;

/// The TTLs drawn for leases, in ms (21 to 41 ticks of lease time).
pub const LEASE_TTL_MS: (u64, u64) = (1_000, 2_000);

/// What a lease client is doing.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum LeasePhase {
    /// About to ask for a lease.
    #[default]
    Grant,
    /// Attaching keys (how many are left) to lease `lease` (position in
    /// the world's `leases`).
    Attach { lease: usize, left: u64 },
    /// Keeping lease `lease` alive: keepalives left to send.
    KeepAlive { lease: usize, left: u64 },
}

/// A lease client's state.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LeaseOwner {
    pub phase: LeasePhase,
    /// Leases granted so far (numbers the keys).
    pub granted: u64,
}

/// One lease granted to a lease client, as the world saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseLife {
    pub owner: usize,
    /// The lease id: the index of the grant entry.
    pub id: u64,
    pub ttl_ms: u64,
    pub keys: Vec<String>,
    /// Arrival step of the last keepalive answered `kept alive`.
    pub last_answered: Option<u64>,
    /// Arrival step of the last keepalive sent to any node (answered or
    /// not: an unanswered one may still have restarted the countdown).
    pub last_sent: Option<u64>,
    /// The step the grant was answered.
    pub granted_step: u64,
    /// The owner stopped keeping it alive.
    pub stopped: bool,
    /// The first step at which some node had applied its expiry.
    pub expired_step: Option<u64>,
}

impl LeaseLife {
    /// Lease ticks a TTL takes (`LeaseClock::ticks_for` at
    /// [`LEASE_TICK_MS`], without its extra tick of slack).
    pub fn ttl_ticks(&self) -> u64 {
        self.ttl_ms.div_ceil(LEASE_TICK_MS)
    }

    /// The earliest step at which the lease may expire, with the fastest
    /// node's tick period: its TTL after the last answered keepalive.
    pub fn earliest_expiry(&self, fastest_period: u64) -> Option<u64> {
        Some(self.last_answered? + self.ttl_ticks() * fastest_period)
    }

    /// The step by which a stopped lease must have expired, once every
    /// fault healed at `healed`: the TTL after the later of the last
    /// keepalive and the heal (a new leader restarts the countdown at the
    /// full TTL), plus `bound_ticks` (an election, and a lost expiry
    /// proposal's retry).
    pub fn expiry_deadline(&self, healed: u64, slowest_period: u64, bound_ticks: u64) -> u64 {
        let from = self.last_sent.unwrap_or(self.granted_step).max(healed);
        from + (self.ttl_ticks() + 1 + bound_ticks) * slowest_period
    }
}

impl Client {
    /// A lease client's next operation, given the world's leases.
    pub fn next_lease_call(&mut self, rng: &mut SimRng, leases: &[LeaseLife]) -> ClientCall {
        let ClientKind::Lease(owner) = &mut self.kind else {
            unreachable!("a lease call for a client of another kind");
        };
        match owner.phase.clone() {
            LeasePhase::Grant => {
                let ttl_ms = rng.range(LEASE_TTL_MS.0 / 100, LEASE_TTL_MS.1 / 100) * 100;
                ClientCall::Write(Op::LeaseGrant { ttl_ms })
            }
            LeasePhase::Attach { lease, left } => {
                let life = &leases[lease];
                ClientCall::Write(Op::PutWithLease {
                    key: format!("l{}.{}.{left}", self.id, owner.granted),
                    value: format!("{}.{}", self.name, self.next_seq),
                    lease: life.id,
                })
            }
            LeasePhase::KeepAlive { lease, .. } => ClientCall::Keepalive {
                lease: leases[lease].id,
            },
        }
    }

    /// Moves a lease client on after an operation ended (`ret` for an
    /// answered one). Returns a newly granted lease to record.
    pub fn lease_answered(
        &mut self,
        ret: Option<&ClientRet>,
        rng: &mut SimRng,
        lease_count: usize,
    ) -> Option<(u64, u64)> {
        let ClientKind::Lease(owner) = &mut self.kind else {
            return None;
        };
        let mut granted = None;
        owner.phase = match (owner.phase.clone(), ret) {
            (LeasePhase::Grant, Some(ClientRet::Write(OpResult::LeaseGranted { id, ttl_ms }))) => {
                granted = Some((*id, *ttl_ms));
                owner.granted += 1;
                LeasePhase::Attach {
                    lease: lease_count,
                    left: rng.range(1, 2),
                }
            }
            // Not granted (or unknown): ask again.
            (LeasePhase::Grant, _) => LeasePhase::Grant,
            (LeasePhase::Attach { lease, left }, Some(ClientRet::Write(OpResult::Put { .. })))
                if left > 1 =>
            {
                LeasePhase::Attach {
                    lease,
                    left: left - 1,
                }
            }
            (LeasePhase::Attach { lease, .. }, Some(ClientRet::Write(OpResult::Put { .. }))) => {
                LeasePhase::KeepAlive {
                    lease,
                    left: rng.range(2, 10),
                }
            }
            // The lease is gone already, or the put's outcome is unknown.
            (LeasePhase::Attach { lease, .. }, _) => LeasePhase::KeepAlive {
                lease,
                left: rng.range(0, 3),
            },
            (LeasePhase::KeepAlive { .. }, Some(ClientRet::LeaseGone)) => LeasePhase::Grant,
            (LeasePhase::KeepAlive { lease, left }, _) => {
                if left <= 1 {
                    LeasePhase::Grant
                } else {
                    LeasePhase::KeepAlive {
                        lease,
                        left: left - 1,
                    }
                }
            }
        };
        granted
    }
}
