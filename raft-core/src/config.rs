//! Node configuration, validated once at construction into typed errors.

use crate::types::NodeId;

/// Tunables of one node. Times are in ticks: the driver decides how long a
/// tick is (kv-node uses 15 ms, so the default election timeout of 10..20
/// ticks is the classic 150-300 ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub id: NodeId,
    /// The lower bound of the randomized election timeout, inclusive.
    pub election_ticks_min: u32,
    /// The upper bound of the randomized election timeout, exclusive.
    pub election_ticks_max: u32,
    /// A leader sends heartbeats this often.
    pub heartbeat_ticks: u32,
    /// Ask for pre-votes before a real election (Raft thesis, section 9.6), so
    /// that a node that was cut off does not disrupt the cluster on return.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down; followers ignore votes while they hear from a leader, and
    /// for `election_ticks_min` ticks after they start (a restarted node may
    /// have acknowledged the round a lease counts from). Lease reads need it.
    pub check_quorum: bool,
    /// The lease of a leader is `election_ticks_min - lease_drift_ticks`
    /// ticks from the send time of the last heartbeat a quorum acknowledged:
    /// the margin absorbs clock-rate drift between nodes.
    ///
    /// The lease is safe only because every follower refuses votes for its
    /// own `election_ticks_min` after hearing from the leader: the lease
    /// rests on values every member must agree on. The core cannot see its
    /// peers' configuration, so the rule is the driver's to keep: every
    /// member must run with the same tick length, `election_ticks_min`,
    /// `lease_drift_ticks` and `check_quorum` (or at least no follower with a
    /// shorter minimum election timeout, in wall time, than any leader's
    /// lease). Mixed timings break lease reads only; ReadIndex reads with a
    /// quorum round (`lease: false`) stay linearizable whatever the timings.
    pub lease_drift_ticks: u32,
    /// The most AppendEntries messages in flight to one follower.
    pub max_inflight_messages: usize,
    /// The most entry bytes in one AppendEntries message (at least one entry
    /// is always sent).
    pub max_message_bytes: usize,
    /// The size of one snapshot chunk sent to a lagging follower.
    pub snapshot_chunk_bytes: u64,
    /// The most committed-entry bytes handed out in one `Ready`.
    pub max_committed_bytes_per_ready: usize,
    /// The most proposals a leader holds that are not yet committed; further
    /// proposals are refused with `ProposeError::Backpressure`.
    pub max_uncommitted_entries: usize,
    /// Seeds the generator behind randomized election timeouts.
    pub seed: u64,
    /// Protocol bugs to switch on, for proving that the simulator catches them.
    #[cfg(feature = "buggy")]
    pub bugs: crate::bugs::Bugs,
}

impl Config {
    /// Defaults for node `id`: 10..20 election ticks, heartbeat every 2 ticks,
    /// pre-vote and check-quorum on.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_ticks_min: 10,
            election_ticks_max: 20,
            heartbeat_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            lease_drift_ticks: 2,
            max_inflight_messages: 256,
            max_message_bytes: 1 << 20,
            snapshot_chunk_bytes: 1 << 20,
            max_committed_bytes_per_ready: 16 << 20,
            max_uncommitted_entries: 100_000,
            seed: id.0,
            #[cfg(feature = "buggy")]
            bugs: crate::bugs::Bugs::default(),
        }
    }

    /// Checks every rule; a node is only built from a valid configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_ticks == 0 {
            return Err(ConfigError::ZeroHeartbeat);
        }
        if self.election_ticks_min <= self.heartbeat_ticks {
            return Err(ConfigError::ElectionNotAboveHeartbeat {
                election_ticks_min: self.election_ticks_min,
                heartbeat_ticks: self.heartbeat_ticks,
            });
        }
        if self.election_ticks_max <= self.election_ticks_min {
            return Err(ConfigError::EmptyElectionRange {
                min: self.election_ticks_min,
                max: self.election_ticks_max,
            });
        }
        if self.lease_drift_ticks >= self.election_ticks_min {
            return Err(ConfigError::DriftNotBelowElection {
                lease_drift_ticks: self.lease_drift_ticks,
                election_ticks_min: self.election_ticks_min,
            });
        }
        if self.max_inflight_messages == 0 {
            return Err(ConfigError::ZeroInflight);
        }
        if self.max_message_bytes == 0
            || self.max_committed_bytes_per_ready == 0
            || self.snapshot_chunk_bytes == 0
        {
            return Err(ConfigError::ZeroByteLimit);
        }
        if self.max_uncommitted_entries == 0 {
            return Err(ConfigError::ZeroUncommitted);
        }
        Ok(())
    }
}

/// One variant per configuration rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("heartbeat_ticks must be at least 1")]
    ZeroHeartbeat,
    #[error(
        "election_ticks_min ({election_ticks_min}) must exceed heartbeat_ticks ({heartbeat_ticks})"
    )]
    ElectionNotAboveHeartbeat {
        election_ticks_min: u32,
        heartbeat_ticks: u32,
    },
    #[error("election_ticks_max ({max}) must exceed election_ticks_min ({min})")]
    EmptyElectionRange { min: u32, max: u32 },
    #[error(
        "lease_drift_ticks ({lease_drift_ticks}) must be below election_ticks_min ({election_ticks_min})"
    )]
    DriftNotBelowElection {
        lease_drift_ticks: u32,
        election_ticks_min: u32,
    },
    #[error("max_inflight_messages must be at least 1")]
    ZeroInflight,
    #[error("byte limits must be at least 1")]
    ZeroByteLimit,
    #[error("max_uncommitted_entries must be at least 1")]
    ZeroUncommitted,
    #[error("node {0} is not in the initial membership and has no log to learn it from")]
    NotAMember(crate::NodeId),
    #[error("the initial state is inconsistent: {0}")]
    BadInitialState(String),
    #[error(
        "node {0} lost acknowledged log records and no leader can be elected without its vote (it is the only voter, or one of two), so none can repair it: restore its data directory from a backup, or rebuild the cluster"
    )]
    DamagedVoteNeeded(crate::NodeId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new(NodeId(1)).validate(), Ok(()));
    }

    #[test]
    fn each_rule_has_its_own_error() {
        let mut c = Config::new(NodeId(1));
        c.heartbeat_ticks = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroHeartbeat));
        let mut c = Config::new(NodeId(1));
        c.election_ticks_min = 2;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ElectionNotAboveHeartbeat { .. })
        ));
        let mut c = Config::new(NodeId(1));
        c.election_ticks_max = 10;
        assert_eq!(
            c.validate(),
            Err(ConfigError::EmptyElectionRange { min: 10, max: 10 })
        );
        let mut c = Config::new(NodeId(1));
        c.lease_drift_ticks = 10;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DriftNotBelowElection { .. })
        ));
        let mut c = Config::new(NodeId(1));
        c.max_inflight_messages = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroInflight));
        let mut c = Config::new(NodeId(1));
        c.max_message_bytes = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroByteLimit));
        let mut c = Config::new(NodeId(1));
        c.max_uncommitted_entries = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroUncommitted));
    }
}
