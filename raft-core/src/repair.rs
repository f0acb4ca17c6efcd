//! Protocol-aware recovery (Alagappan et al., "Protocol-Aware Recovery for
//! Consensus-Based Storage", FAST 2018): a node whose storage lost records
//! it had acknowledged takes no part in elections until a leader of a newer
//! term has repaired its log.
//!
//! The driver starts such a node with `InitialState::damaged_up_to_term =
//! Some(b)`, where `b` bounds every term the node may have had before the
//! damage: every term it voted in and every term whose leader it
//! acknowledged. Storage must give a bound it can prove (kv-node's WAL
//! writes the hard state into every synced batch, so a valid batch after
//! the damage holds it exactly; without such a record it refuses to start).
//!
//! While damaged the node:
//! - starts in term `b + 1` with no vote (unless its hard state is already
//!   above `b`: then it was written after the damage and is exact). The
//!   term rules then refuse every leader of a term up to `b`, and the leader
//!   of term `b`, whose match index for this node may rest on lost records,
//!   steps down when it hears from it: the next leader is of a newer term,
//!   and only counts acknowledgements given after the restart. This costs
//!   one election per damaged restart, on purpose: it is what repairs;
//! - grants no vote and no pre-vote, and never campaigns (no election
//!   timeout, no `TimeoutNow`, `Input::Campaign` refused);
//! - otherwise follows: appends, heartbeats and snapshots of a leader of its
//!   term (or newer) are taken and acknowledged as usual.
//!
//! It is *repaired* once its log (or its snapshot) holds an entry of a term
//! above `b`. Checked after every step and at start.
//!
//! Why this is safe:
//! - No double vote. The lost records may have held a vote in any term up
//!   to `b`. The node votes again only when repaired, when its term is above
//!   `b` (an entry's term never exceeds the current term); it never votes in
//!   a term below its current one. So every vote after the damage is in a
//!   term it had never voted in.
//! - No acknowledgement that contradicts a lost one. Before the damage the
//!   node never went back to an older term; starting above `b` keeps that
//!   true, so it cannot acknowledge a stale leader's entry after having
//!   voted for a newer candidate. It never voted or acknowledged in a term
//!   above `b` before, so a leader of such a term holds no match index for
//!   it from before the damage: every acknowledgement counted describes
//!   what the node holds durably now.
//! - Committed entries survive. An entry committed with this node's lost
//!   acknowledgement is committed in a term at most `b`. Election quorums
//!   formed while the node does not vote intersect the commit quorum in a
//!   node that still holds the entry (`|V| + |M \ D| >= 2q - |D| > n - |D|`
//!   for voters V, commit quorum M and damaged nodes D, all of V outside
//!   D), so every leader elected meanwhile holds it (Leader Completeness).
//!   An entry of term `t > b` in the node's log was written there by the
//!   leader of `t`, and by Log Matching the node's log up to that entry is
//!   that leader's, which holds every entry committed in a term below `t`
//!   before its own entries. So once repaired, the node holds every
//!   committed entry it had acknowledged, and its up-to-date check in later
//!   votes protects them as Raft's does.
//! - In-memory before durable is fine: the node's writes are persisted in
//!   order and its vote is sent only once durable, so a vote sent after the
//!   repair implies the repairing entry is on disk; a crash that loses the
//!   entry loses the vote too, and the node restarts damaged again.
//!
//! A damaged voter whose vote every election needs (the only voter, or one
//! of two) could never be repaired: no leader of a newer term can be
//! elected without it, and the leader of its old term steps down when it
//! hears from it. `Node::new` refuses it with
//! `ConfigError::DamagedVoteNeeded` rather than leave the cluster stuck
//! without saying why. More damaged voters than the others can outvote
//! (two of three) likewise leave no leader until an operator acts: the
//! price of never trusting a damaged log.

use crate::input::StepError;
use crate::node::Node;
use crate::types::Term;

impl Node {
    /// Whether the node waits to be repaired (see the module docs).
    pub(crate) fn is_damaged(&self) -> bool {
        self.damaged_up_to_term.is_some()
    }

    /// Clears the damage once the log holds an entry of a term above the
    /// bound: a leader of a newer term has written into it.
    pub(crate) fn check_repaired(&mut self) {
        if let Some(bound) = self.damaged_up_to_term
            && self.log.last_term() > bound
        {
            tracing::info!(bound = %bound, term = %self.log.last_term(), "log repaired by a leader of a newer term: voting again");
            self.damaged_up_to_term = None;
        }
    }

    /// Refuses a campaign asked for by the driver while damaged.
    pub(crate) fn refuse_campaign_if_damaged(&self) -> Result<(), StepError> {
        match self.damaged_up_to_term {
            Some(bound) => Err(StepError::LogDamaged { bound }),
            None => Ok(()),
        }
    }
}

/// The term and vote a damaged node starts with: above the bound, so that
/// no leader of a term it may have acknowledged or voted in before the
/// damage is followed, and the leader of the bound's term (whose match index
/// for this node may rest on lost records) steps down when it hears from
/// it. A hard state already above the bound was written after the damage
/// and is kept as it is.
pub(crate) fn starting_term_and_vote(
    term: Term,
    vote: Option<crate::types::NodeId>,
    damaged_up_to_term: Option<Term>,
) -> (Term, Option<crate::types::NodeId>) {
    match damaged_up_to_term {
        Some(bound) if bound >= term => (bound.next(), None),
        _ => (term, vote),
    }
}
