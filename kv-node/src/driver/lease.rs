//! Lease requests on the driver thread: keepalives and lease reads, served
//! on the leader after a ReadIndex round.
//!
//! A keepalive restarts the lease's countdown when it arrives and is
//! answered only after a ReadIndex round started after that has confirmed
//! this node's leadership and the state machine has applied up to the read
//! index: any newer leader was then elected after the keepalive arrived,
//! and restarts every countdown at the full TTL, so the lease cannot expire
//! earlier than its TTL after the keepalive. An expiry already proposed or
//! applied by then makes the answer `lease_not_found`. A lease's remaining
//! time is the leader's countdown; its keys come from the state machine.

use super::Driver;
use kv_replica::lease_clock::KeepaliveRefused;
use kv_replica::replica::Durable;

/// A lease request that waits for a ReadIndex round on the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseQuery {
    Keepalive { id: u64 },
    Get { id: u64 },
    List,
}

/// One lease as `GET /lease` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSummary {
    pub id: u64,
    pub ttl_ms: u64,
    pub remaining_ms: u64,
}

/// The answer to a [`LeaseQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// Unknown, revoked, expired, or its expiry is under way.
    NotFound(u64),
    /// This node does not lead (any more): the caller may retry.
    NotLeader,
    KeptAlive {
        id: u64,
        ttl_ms: u64,
    },
    Info {
        summary: LeaseSummary,
        keys: Vec<kv_replica::state_machine::Key>,
    },
    List(Vec<LeaseSummary>),
}

fn refused(id: u64, refusal: KeepaliveRefused) -> LeaseAnswer {
    match refusal {
        KeepaliveRefused::NotLeader => LeaseAnswer::NotLeader,
        KeepaliveRefused::NotFound => LeaseAnswer::NotFound(id),
    }
}

impl<D: Durable> Driver<D> {
    /// When a lease request arrives: an answer to give at once (not the
    /// leader), or None to start the ReadIndex round. A keepalive restarts
    /// the countdown here already.
    pub(super) fn lease_arrived(&mut self, query: &LeaseQuery) -> Option<LeaseAnswer> {
        match query {
            // An unknown lease may be one whose grant this node has
            // committed but not applied yet: the answer, after the round,
            // says.
            LeaseQuery::Keepalive { id } => match self.replica.lease_keepalive(*id) {
                Ok(_) | Err(KeepaliveRefused::NotFound) => None,
                Err(KeepaliveRefused::NotLeader) => Some(LeaseAnswer::NotLeader),
            },
            LeaseQuery::Get { .. } | LeaseQuery::List => {
                let leading = self.replica.node.role() == raft_core::Role::Leader;
                (!leading).then_some(LeaseAnswer::NotLeader)
            }
        }
    }

    /// Once the read index is applied: the answer, read again from the
    /// replica (the lease may have gone, or leadership moved, meanwhile).
    pub(super) fn answer_lease(&mut self, query: &LeaseQuery) -> LeaseAnswer {
        match query {
            LeaseQuery::Keepalive { id } => match self.replica.lease_keepalive(*id) {
                Ok(ttl_ms) => LeaseAnswer::KeptAlive { id: *id, ttl_ms },
                Err(refusal) => refused(*id, refusal),
            },
            LeaseQuery::Get { id } => {
                let Some((ttl_ms, keys)) = self.replica.state.lease(*id) else {
                    return LeaseAnswer::NotFound(*id);
                };
                match self.replica.lease_remaining_ms(*id) {
                    Some(remaining_ms) => LeaseAnswer::Info {
                        summary: LeaseSummary {
                            id: *id,
                            ttl_ms,
                            remaining_ms,
                        },
                        keys,
                    },
                    None => LeaseAnswer::NotLeader,
                }
            }
            LeaseQuery::List => {
                let leases: Vec<(u64, u64)> = self.replica.state.leases().collect();
                let mut summaries = Vec::with_capacity(leases.len());
                for (id, ttl_ms) in leases {
                    let Some(remaining_ms) = self.replica.lease_remaining_ms(id) else {
                        return LeaseAnswer::NotLeader;
                    };
                    summaries.push(LeaseSummary {
                        id,
                        ttl_ms,
                        remaining_ms,
                    });
                }
                LeaseAnswer::List(summaries)
            }
        }
    }
}
