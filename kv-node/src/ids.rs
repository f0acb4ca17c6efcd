//! Node names (`node1`) and their raft-core ids, and the peer table.
//!
//! raft-core only knows numbers; people and URLs know names. A name maps to
//! its [`NodeId`] by a stable hash (FNV-1a, 64 bits) so that every node, on
//! every start, computes the same id from the same name without having to
//! agree on a numbering.

use raft_core::NodeId;
use std::collections::BTreeMap;

/// The stable id of a node name: FNV-1a 64 of its UTF-8 bytes.
pub fn node_id_of(name: &str) -> NodeId {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = name
        .bytes()
        .fold(OFFSET_BASIS, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    NodeId(hash)
}

/// One member of the cluster as the command line names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub id: NodeId,
    /// Base URL, e.g. `http://127.0.0.1:8081` (no trailing slash).
    pub url: String,
}

/// Why a set of names cannot form a cluster.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("node name must be 1..=64 characters of [A-Za-z0-9._-], got {0:?}")]
    BadName(String),
    #[error("node names {first:?} and {second:?} hash to the same id {id}; rename one")]
    Collision {
        first: String,
        second: String,
        id: NodeId,
    },
    #[error("node {name:?} appears twice with different URLs ({first} and {second})")]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
}

/// Every member of the cluster, by id, with a way back to names.
#[derive(Clone, Debug)]
pub struct Members {
    pub this: Member,
    /// The other members (never contains `this`).
    pub peers: BTreeMap<NodeId, Member>,
}

impl Members {
    /// Builds the table from this node and its peers. A peer entry naming
    /// this node is ignored, so every node may be given the same list.
    pub fn new(this: Member, peers: Vec<Member>) -> Result<Members, IdError> {
        check_name(&this.name)?;
        let mut by_id: BTreeMap<NodeId, Member> = BTreeMap::new();
        for peer in peers {
            check_name(&peer.name)?;
            if peer.name == this.name {
                continue;
            }
            if peer.id == this.id {
                return Err(IdError::Collision {
                    first: this.name.clone(),
                    second: peer.name,
                    id: this.id,
                });
            }
            if let Some(known) = by_id.get(&peer.id) {
                if known.name != peer.name {
                    return Err(IdError::Collision {
                        first: known.name.clone(),
                        second: peer.name,
                        id: peer.id,
                    });
                }
                if known.url != peer.url {
                    return Err(IdError::Duplicate {
                        name: peer.name,
                        first: known.url.clone(),
                        second: peer.url,
                    });
                }
                continue;
            }
            by_id.insert(peer.id, peer);
        }
        Ok(Members { this, peers: by_id })
    }

    /// The name of `id`, or its number if it is not a known member.
    pub fn name_of(&self, id: NodeId) -> String {
        if id == self.this.id {
            return self.this.name.clone();
        }
        self.peers
            .get(&id)
            .map_or_else(|| id.0.to_string(), |m| m.name.clone())
    }

    /// The member called `name`, this node included.
    pub fn by_name(&self, name: &str) -> Option<&Member> {
        if self.this.name == name {
            return Some(&self.this);
        }
        self.peers.values().find(|m| m.name == name)
    }

    /// Every member, this node first.
    pub fn all(&self) -> impl Iterator<Item = &Member> {
        std::iter::once(&self.this).chain(self.peers.values())
    }
}

/// Checks a node name: 1..=64 characters of [A-Za-z0-9._-].
pub fn check_name(name: &str) -> Result<(), IdError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(IdError::BadName(name.to_string()))
    }
}

/// A member named `name` on loopback port `port`, for tests.
#[cfg(test)]
pub(crate) fn test_member(name: &str, port: u16) -> Member {
    Member {
        name: name.into(),
        id: node_id_of(name),
        url: format!("http://127.0.0.1:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::test_member as member;
    use super::*;

    #[test]
    fn ids_are_fnv1a_64_and_stable() {
        // Reference values of FNV-1a 64.
        assert_eq!(node_id_of(""), NodeId(0xcbf2_9ce4_8422_2325));
        assert_eq!(node_id_of("a"), NodeId(0xaf63_dc4c_8601_ec8c));
        assert_ne!(node_id_of("node1"), node_id_of("node2"));
    }

    #[test]
    fn a_peer_list_naming_this_node_is_accepted() {
        let members = Members::new(
            member("node1", 8080),
            vec![member("node1", 8080), member("node2", 8081)],
        )
        .unwrap();
        assert_eq!(members.peers.len(), 1);
        assert_eq!(members.name_of(node_id_of("node2")), "node2");
        assert_eq!(
            members.by_name("node1").unwrap().url,
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn bad_names_and_conflicting_urls_are_refused() {
        assert!(matches!(
            Members::new(member("bad name", 1), vec![]),
            Err(IdError::BadName(_))
        ));
        assert!(matches!(
            Members::new(member("n1", 1), vec![member("n2", 2), member("n2", 3)]),
            Err(IdError::Duplicate { .. })
        ));
    }
}
