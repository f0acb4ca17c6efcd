//! Recognising, in a liveness failure, the raft-core bugs the simulator
//! found and the core has not fixed yet (see `sim/FOUND_BUGS.md`), so that
//! they are reported under their own property. Delete a classifier once its
//! bug is fixed.

use crate::world::World;

impl World {
    /// A liveness failure that matches the raft-core bug recorded in
    /// `sim/FOUND_BUGS.md`: a granted pre-vote answers in the voter's term
    /// plus one rather than in the term asked for, so a candidate never
    /// counts the vote of a voter more than one term behind it. With
    /// membership changes such a voter is common: a node promoted (or added
    /// back) while cut off stays at its old term, and nothing but pre-votes
    /// reaches it while no leader can be elected without it.
    pub(crate) fn prevote_term_suspect(&self) -> Option<String> {
        for node in self.nodes.iter().filter_map(|n| n.replica()) {
            let (me, term, config) = (node.node.id(), node.node.term(), node.node.membership());
            if !config.is_voter(me) {
                continue;
            }
            for voter in config.voters.iter().chain(&config.outgoing) {
                let Some(other) = self.node(*voter).replica() else {
                    continue;
                };
                if other.node.term() < term {
                    return Some(format!(
                        "{voter} (term {}) can grant {me} (term {term}) no pre-vote that {me} counts",
                        other.node.term()
                    ));
                }
            }
        }
        None
    }

    /// A liveness failure that matches the second raft-core bug of
    /// `sim/FOUND_BUGS.md`: a node no longer a voter in its own
    /// configuration, with a longer log than a node whose (joint)
    /// configuration still counts it as a voter.
    pub(crate) fn removed_leader_suspect(&self) -> Option<String> {
        let up: Vec<_> = self.nodes.iter().filter_map(|n| n.replica()).collect();
        for removed in &up {
            let x = &removed.node;
            if x.membership().is_voter(x.id()) {
                continue;
            }
            let x_last = (x.status().last_log_term, x.last_index());
            for other in &up {
                let y = &other.node;
                if y.membership().is_joint()
                    && y.membership().is_voter(x.id())
                    && (y.status().last_log_term, y.last_index()) < x_last
                {
                    return Some(format!(
                        "{} left the voters with a longer log than {}, whose joint configuration needs its vote",
                        x.id(),
                        y.id()
                    ));
                }
            }
        }
        None
    }
}
