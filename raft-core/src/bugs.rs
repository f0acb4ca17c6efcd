//! The catalogue of known protocol bugs, compiled only with the `buggy`
//! feature. The simulator's tests switch each on and show that a seed sweep
//! finds it; normal builds contain none of this.

/// Each flag re-introduces one classic Raft bug at exactly one place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Commit an entry of an earlier term by counting replicas (Figure 8).
    pub commit_previous_term: bool,
    /// Send a vote without first persisting it.
    pub vote_before_persist: bool,
    /// Grant a vote to a candidate whose log is less up to date.
    pub vote_for_stale_log: bool,
    /// Release read-index requests without confirming leadership.
    pub read_without_quorum: bool,
    /// Hand a committed entry to the state machine a second time.
    pub apply_twice: bool,
    /// Accept AppendEntries without checking the term at prev_log_index.
    pub skip_prev_term_check: bool,
    /// Decide (commit, elect, confirm reads) with only the new voters'
    /// majority while a joint configuration is in force.
    pub joint_new_majority_only: bool,
    /// Let a second membership change be proposed and applied while one is
    /// still in flight, entering a new joint configuration from a joint one.
    pub concurrent_conf_changes: bool,
    /// A removed or demoted leader that could not hand over gives up and
    /// leaves nothing behind: it never tells the voters still in the old
    /// configuration that its removal committed, so they can wait forever
    /// for its vote (issue 18).
    pub removed_leader_gives_up: bool,
    /// Let a leader that wins alone (one voter, any learners) send appends
    /// and heartbeats in its new term before that term is durable.
    pub lead_before_term_durable: bool,
    /// Let the lease come back in a term after TimeoutNow was sent in it
    /// (an aborted or delayed transfer).
    pub lease_after_aborted_transfer: bool,
    /// Let a node that restarted grant (pre-)votes at once, inside a lease
    /// its acknowledgements before the crash may still support.
    pub vote_at_once_after_restart: bool,
    /// Start a node whose storage lost acknowledged records as if nothing
    /// was lost: it grants (pre-)votes at once, before a leader of a newer
    /// term repaired its log, so it may vote twice in a term, or for a
    /// candidate lacking an entry it helped commit (issue 15).
    pub vote_while_damaged: bool,
}
