//! Recognising, in a liveness failure, the raft-core bugs the simulator
//! found and the core has not fixed yet (see `sim/FOUND_BUGS.md`), so that
//! they are reported under their own property. Delete a classifier once its
//! bug is fixed.

use crate::world::World;

impl World {
    /// A liveness failure that matches the remaining case of raft-core bug
    /// 2 of `sim/FOUND_BUGS.md`: a node no longer a voter in its own
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
