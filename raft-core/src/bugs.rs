//! The catalogue of known protocol bugs. The simulator's tests switch each
//! on (with the `buggy` feature) and show that a seed sweep finds it.
//!
//! Each bug is checked at exactly one place in the core, through
//! `Node::bug(Bug::X)`. Without the `buggy` feature that call is a constant
//! `false` and `Config` has no `bugs` field, so normal builds keep none of
//! the buggy paths.

/// Declares the flags struct (`Bugs`, what a `Config` switches on) and the
/// enum the core checks (`Bug`) from one list, so the two cannot drift.
macro_rules! bugs {
    ($( $(#[$doc:meta])* $flag:ident => $bug:ident, )*) => {
        /// Which bugs to switch on; every flag re-introduces one classic
        /// Raft bug.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Bugs {
            $( $(#[$doc])* pub $flag: bool, )*
        }

        /// One bug of the catalogue, as the core asks for it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Bug {
            $( $(#[$doc])* $bug, )*
        }

        impl Bugs {
            /// Whether `bug` is switched on.
            pub fn has(&self, bug: Bug) -> bool {
                match bug {
                    $( Bug::$bug => self.$flag, )*
                }
            }
        }
    };
}

bugs! {
    /// Commit an entry of an earlier term by counting replicas (Figure 8).
    commit_previous_term => CommitPreviousTerm,
    /// Send a vote without first persisting it.
    vote_before_persist => VoteBeforePersist,
    /// Grant a vote to a candidate whose log is less up to date.
    vote_for_stale_log => VoteForStaleLog,
    /// Release read-index requests without confirming leadership.
    read_without_quorum => ReadWithoutQuorum,
    /// Hand a committed entry to the state machine a second time.
    apply_twice => ApplyTwice,
    /// Accept AppendEntries without checking the term at prev_log_index.
    skip_prev_term_check => SkipPrevTermCheck,
    /// Decide (commit, elect, confirm reads) with only the new voters'
    /// majority while a joint configuration is in force.
    joint_new_majority_only => JointNewMajorityOnly,
    /// Let a second membership change be proposed and applied while one is
    /// still in flight, entering a new joint configuration from a joint one.
    concurrent_conf_changes => ConcurrentConfChanges,
    /// A removed or demoted leader that could not hand over gives up and
    /// leaves nothing behind: it never tells the voters still in the old
    /// configuration that its removal committed, so they can wait forever
    /// for its vote (issue 18).
    removed_leader_gives_up => RemovedLeaderGivesUp,
    /// Let a leader that wins alone (one voter, any learners) send appends
    /// and heartbeats in its new term before that term is durable.
    lead_before_term_durable => LeadBeforeTermDurable,
    /// Let the lease come back in a term after TimeoutNow was sent in it
    /// (an aborted or delayed transfer).
    lease_after_aborted_transfer => LeaseAfterAbortedTransfer,
    /// Let a node that restarted grant (pre-)votes at once, inside a lease
    /// its acknowledgements before the crash may still support.
    vote_at_once_after_restart => VoteAtOnceAfterRestart,
    /// Start a node whose storage lost acknowledged records as if nothing
    /// was lost: it grants (pre-)votes at once, before a leader of a newer
    /// term repaired its log, so it may vote twice in a term, or for a
    /// candidate lacking an entry it helped commit (issue 15).
    vote_while_damaged => VoteWhileDamaged,
    /// Send the next snapshot chunk for every copy of a follower's answer,
    /// duplicates included: under message duplication the copies never die
    /// out and multiply (simulator seed 1800 at one node).
    resend_chunk_per_answer => ResendChunkPerAnswer,
}

/// Whether `config` switches the known bug `bug` on: always `false`
/// without the `buggy` feature.
#[inline(always)]
pub(crate) fn switched_on(config: &crate::Config, bug: Bug) -> bool {
    #[cfg(feature = "buggy")]
    {
        config.bugs.has(bug)
    }
    #[cfg(not(feature = "buggy"))]
    {
        let _ = (config, bug);
        false
    }
}

impl crate::node::Node {
    /// Whether the known bug `bug` is switched on (see [`switched_on`]).
    #[inline(always)]
    pub(crate) fn bug(&self, bug: Bug) -> bool {
        switched_on(&self.config, bug)
    }

    /// Whether any bug is switched on (the core's own debug checks of its
    /// output contract are then off: the bugs break that contract).
    pub(crate) fn any_bug(&self) -> bool {
        #[cfg(feature = "buggy")]
        {
            self.config.bugs != Bugs::default()
        }
        #[cfg(not(feature = "buggy"))]
        {
            false
        }
    }
}
