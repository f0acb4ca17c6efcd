//! The address book as a running node sees it: this node, the peers named
//! by `--peers` (or learnt from `--join`), and every address the replicated
//! state machine has recorded (`ClusterCommand::SetAddress`).
//!
//! The driver writes it after each round that changed the state machine's
//! address book; the HTTP handlers and the peer endpoint read it. It may
//! name nodes that are no longer members: raft-core's membership says who
//! is one, this only says where each node is. So the driver also copies
//! raft-core's membership here whenever it changes, for the peer endpoint
//! to refuse raft messages from removed members ([`Directory::admits`]).

use crate::ids::{Member, Members, node_id_of};
use raft_core::NodeId;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// A shared, growing [`Members`] table, and who was removed.
#[derive(Clone, Debug)]
pub struct Directory {
    members: Arc<RwLock<Members>>,
    roster: Arc<RwLock<Roster>>,
}

/// Membership as the peer endpoint needs it.
#[derive(Debug, Default)]
struct Roster {
    /// Every voter, learner and outgoing voter of the configuration this
    /// node's raft-core has in force.
    configuration: BTreeSet<NodeId>,
    /// Nodes that were members of a configuration this node had in force
    /// (since it started) and are not members of the current one.
    removed: BTreeSet<NodeId>,
}

impl Directory {
    pub fn new(members: Members) -> Directory {
        Directory {
            members: Arc::new(RwLock::new(members)),
            roster: Arc::default(),
        }
    }

    /// Records the membership in force (the driver, whenever it changed):
    /// members of the previous configuration that are not in `members`
    /// count as removed from now on, until a configuration names them again.
    pub fn set_configuration(&self, members: BTreeSet<NodeId>) {
        let mut roster = self.roster.write().unwrap_or_else(|e| e.into_inner());
        let left: Vec<NodeId> = roster.configuration.difference(&members).copied().collect();
        roster.removed.extend(left);
        roster.removed.retain(|id| !members.contains(id));
        roster.configuration = members;
    }

    /// Whether raft messages from `sender` may reach the core: not if it
    /// was removed, i.e. it was a member of a configuration this node had
    /// in force and is no member of the current one. A node never seen as
    /// a member passes (the peer endpoint checks first that the address
    /// book knows it): a node whose committed configuration lags behind,
    /// such as a joiner replaying the log, must take the log from a leader
    /// added after the configuration it has reached, as etcd's transport
    /// refuses only removed member ids.
    pub fn admits(&self, sender: NodeId) -> bool {
        let roster = self.roster.read().unwrap_or_else(|e| e.into_inner());
        !roster.removed.contains(&sender)
    }

    /// The table as it is now. Hold the guard briefly: the driver waits
    /// for it to record new addresses.
    pub fn read(&self) -> RwLockReadGuard<'_, Members> {
        // A panic while holding the lock cannot leave the map half-written
        // (every write is one insert), so a poisoned lock is still usable.
        self.members.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The URL of `id`, this node included.
    pub fn url_of(&self, id: NodeId) -> Option<String> {
        let members = self.read();
        if members.this.id == id {
            return Some(members.this.url.clone());
        }
        members.peers.get(&id).map(|m| m.url.clone())
    }

    /// The name of `id`, or its number if no address names it.
    pub fn name_of(&self, id: NodeId) -> String {
        self.read().name_of(id)
    }

    /// Records `(name, url)` pairs; returns the peers that are new or whose
    /// URL changed (never this node), for the transport to (re)connect. A
    /// name whose id collides with another name's is refused with a log
    /// line: names are unique by construction of the API, but a collision
    /// must not redirect one node's traffic to another.
    pub fn merge<'a>(
        &self,
        addresses: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<Member> {
        let mut members = self.members.write().unwrap_or_else(|e| e.into_inner());
        let mut changed = Vec::new();
        for (name, url) in addresses {
            if name == members.this.name {
                continue;
            }
            let id = node_id_of(name);
            if id == members.this.id {
                tracing::error!(
                    name,
                    "address book names a node whose id collides with ours"
                );
                continue;
            }
            match members.peers.get(&id) {
                Some(known) if known.name != name => {
                    tracing::error!(name, known = %known.name, "address book names collide; ignored");
                    continue;
                }
                Some(known) if known.url == url => continue,
                _ => {}
            }
            let member = Member {
                name: name.to_string(),
                id,
                url: url.to_string(),
            };
            members.peers.insert(id, member.clone());
            changed.push(member);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::test_member as member;

    #[test]
    fn merging_reports_new_and_moved_peers_only() {
        let directory =
            Directory::new(Members::new(member("n1", 1), vec![member("n2", 2)]).unwrap());
        let changed = directory.merge([
            ("n1", "http://elsewhere:1"),
            ("n2", "http://127.0.0.1:2"),
            ("n4", "http://127.0.0.1:4"),
        ]);
        assert_eq!(changed, vec![member("n4", 4)]);
        assert_eq!(
            directory.merge([("n4", "http://127.0.0.1:5")]),
            vec![member("n4", 5)]
        );
        assert_eq!(
            directory.url_of(node_id_of("n1")).unwrap(),
            "http://127.0.0.1:1"
        );
        assert_eq!(directory.name_of(node_id_of("n4")), "n4");
    }

    #[test]
    fn removed_members_are_refused_until_added_back() {
        let directory =
            Directory::new(Members::new(member("n1", 1), vec![member("n2", 2)]).unwrap());
        let (n1, n2, n3, n4) = (
            node_id_of("n1"),
            node_id_of("n2"),
            node_id_of("n3"),
            node_id_of("n4"),
        );
        directory.set_configuration([n1, n2, n3].into());
        assert!(directory.admits(n2) && directory.admits(n3));
        // n3 removed: refused from then on.
        directory.set_configuration([n1, n2].into());
        assert!(!directory.admits(n3));
        // n4, never seen as a member here, passes: this node may lag behind
        // its addition (a joiner replaying the log from an older leader's days).
        assert!(directory.admits(n4));
        // n3 added back: admitted again.
        directory.set_configuration([n1, n2, n3].into());
        assert!(directory.admits(n3));
    }
}
