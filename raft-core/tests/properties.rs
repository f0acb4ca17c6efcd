//! Property tests: random schedules of ticks, proposals, deliveries, drops,
//! duplicates and restarts never break election safety, log matching or
//! state-machine safety.

use proptest::prelude::*;
use raft_core::harness::Cluster;
use raft_core::{Input, LogIndex, NodeId, Role, Term};
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Action {
    Tick(u64),
    Propose(u64, u8),
    Deliver(usize),
    Drop(usize),
    Duplicate(usize),
    /// Delivers again a message delivered long ago (stale, reordered).
    Replay(usize),
    Restart(u64),
}

fn action(nodes: u64) -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (1..=nodes).prop_map(Action::Tick),
        2 => (1..=nodes, any::<u8>()).prop_map(|(n, b)| Action::Propose(n, b)),
        8 => any::<usize>().prop_map(Action::Deliver),
        1 => any::<usize>().prop_map(Action::Drop),
        1 => any::<usize>().prop_map(Action::Duplicate),
        1 => any::<usize>().prop_map(Action::Replay),
        1 => (1..=nodes).prop_map(Action::Restart),
    ]
}

struct Checker {
    leaders: BTreeMap<Term, NodeId>,
}

impl Checker {
    fn check(&mut self, c: &Cluster) {
        // Election safety: at most one leader per term.
        for n in c.nodes.values() {
            if n.role() == Role::Leader {
                let prev = self.leaders.insert(n.term(), n.id());
                assert!(
                    prev.is_none_or(|p| p == n.id()),
                    "two leaders in term {}: {:?} and {}",
                    n.term(),
                    prev,
                    n.id()
                );
            }
        }
        // Log matching: same index and term imply the same entry and prefix.
        let nodes: Vec<_> = c.nodes.values().collect();
        for a in &nodes {
            for b in &nodes {
                let last = a.last_index().min(b.last_index());
                let mut agree = false;
                for i in (1..=last.0).rev() {
                    let (ea, eb) = (a.log_entry(LogIndex(i)), b.log_entry(LogIndex(i)));
                    if let (Some(ea), Some(eb)) = (ea, eb) {
                        if agree {
                            assert_eq!(ea, eb, "log matching broken at {i}");
                        } else if ea.term == eb.term {
                            assert_eq!(ea, eb, "same index and term, different entry at {i}");
                            agree = true;
                        }
                    }
                }
            }
        }
        // State-machine safety: applied sequences are prefixes of one another.
        let applied: Vec<_> = c.applied.values().collect();
        for a in &applied {
            for b in &applied {
                let n = a.len().min(b.len());
                assert_eq!(&a[..n], &b[..n], "state machines diverged");
            }
        }
    }
}

fn run(nodes: u64, actions: Vec<Action>) {
    let mut c = Cluster::new(nodes);
    c.tracing = false;
    let mut checker = Checker {
        leaders: BTreeMap::new(),
    };
    // Applied sequences are checked across restarts: a restarted node
    // re-applies from index 1, so keep what each node applied before.
    let mut delivered = Vec::new();
    for a in actions {
        match a {
            Action::Tick(n) => {
                c.step(n, Input::Tick).unwrap();
            }
            Action::Propose(n, b) => {
                let _ = c.propose(n, &[b]);
            }
            Action::Deliver(i) if !c.in_flight.is_empty() => {
                let m = c.in_flight.remove(i % c.in_flight.len()).unwrap();
                delivered.push(m.clone());
                c.step(m.to.0, Input::Message(m)).unwrap();
            }
            Action::Drop(i) if !c.in_flight.is_empty() => {
                c.in_flight.remove(i % c.in_flight.len());
            }
            Action::Duplicate(i) if !c.in_flight.is_empty() => {
                let m = c.in_flight[i % c.in_flight.len()].clone();
                c.in_flight.push_back(m);
            }
            Action::Replay(i) if !delivered.is_empty() => {
                // An honest message, however stale, is never refused.
                let m = delivered[i % delivered.len()].clone();
                c.step(m.to.0, Input::Message(m)).unwrap();
            }
            Action::Restart(n) => c.restart(n),
            _ => {}
        }
        c.drain_ready();
        checker.check(&c);
    }
    // Heal: deliver everything and let time pass; the cluster converges.
    for _ in 0..60 {
        c.tick_all();
    }
    checker.check(&c);
    let leader = c.leader().expect("a leader after healing");
    c.propose(leader.0, b"final").unwrap();
    for _ in 0..5 {
        c.tick_all();
    }
    let commit = c.node(leader.0).commit_index();
    for id in 1..=nodes {
        assert_eq!(c.node(id).commit_index(), commit, "node {id} converged");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_schedules_keep_raft_safe_with_three_nodes(actions in prop::collection::vec(action(3), 1..400)) {
        run(3, actions);
    }

    #[test]
    fn random_schedules_keep_raft_safe_with_five_nodes(actions in prop::collection::vec(action(5), 1..400)) {
        run(5, actions);
    }
}
