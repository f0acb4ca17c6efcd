//! The request waiters: writes answered when applied here, F1 (a write sent
//! to a leader that lost leadership is answered at once), reads served once
//! their read index is applied.

use super::*;
use crate::command::RequestId;
use crate::state_machine::Applied;
use raft_core::{ReadState, Role, SoftState, Term};

const ME: NodeId = NodeId(1);

fn leader_is(leader: Option<NodeId>, term: u64) -> Output {
    Output {
        soft_state: Some(SoftState {
            role: if leader == Some(ME) {
                Role::Leader
            } else {
                Role::Follower
            },
            leader,
            term: Term(term),
        }),
        ..Output::default()
    }
}

fn applied(node: u64, id: u64, index: u64) -> Applied {
    Applied {
        index: LogIndex(index),
        request: Some(RequestId { node, id }),
        result: Some(OpResult::MultiPut { revision: index }),
    }
}

fn forwarded_to(leader: u64) -> Accepted {
    Accepted::Forwarded {
        leader: NodeId(leader),
    }
}

#[test]
fn a_forwarded_write_is_failed_at_once_when_the_leader_changes() {
    let mut waiters: Waiters<&str, ()> = Waiters::new(ME, Some(NodeId(2)));
    waiters.write_proposed(7, &forwarded_to(2), "w7");

    let settled = waiters.on_output(&leader_is(Some(NodeId(3)), 3));

    assert_eq!(settled.leader_changed, vec!["w7"]);
    assert!(settled.applied.is_empty());
    assert_eq!(waiters.writes_waiting(), 0);
    assert_eq!(waiters.leader(), Some(NodeId(3)));
}

#[test]
fn a_forwarded_write_is_failed_when_no_leader_is_known_any_more() {
    let mut waiters: Waiters<&str, ()> = Waiters::new(ME, Some(NodeId(2)));
    waiters.write_proposed(7, &forwarded_to(2), "w7");
    let settled = waiters.on_output(&leader_is(None, 3));
    assert_eq!(settled.leader_changed, vec!["w7"]);
}

#[test]
fn a_write_appended_here_is_failed_when_another_node_becomes_leader() {
    let mut waiters: Waiters<&str, ()> = Waiters::new(ME, Some(ME));
    let appended = Accepted::Appended {
        index: LogIndex(4),
        term: Term(2),
    };
    waiters.write_proposed(1, &appended, "mine");
    waiters.write_proposed(2, &forwarded_to(2), "old");
    let settled = waiters.on_output(&leader_is(Some(NodeId(2)), 3));
    // Only the write that went elsewhere than the new leader fails: one
    // forwarded to node 2, now the leader, may still be applied.
    assert_eq!(settled.leader_changed, vec!["mine"]);
    assert_eq!(waiters.writes_waiting(), 1);
}

#[test]
fn a_soft_state_with_the_same_leader_fails_nothing() {
    let mut waiters: Waiters<&str, ()> = Waiters::new(ME, Some(NodeId(2)));
    waiters.write_proposed(7, &forwarded_to(2), "w7");
    let settled = waiters.on_output(&leader_is(Some(NodeId(2)), 3));
    assert!(settled.leader_changed.is_empty());
    assert_eq!(waiters.writes_waiting(), 1);
}

#[test]
fn a_write_applied_in_the_round_the_leader_changes_gets_its_result() {
    let mut waiters: Waiters<&str, ()> = Waiters::new(ME, Some(NodeId(2)));
    waiters.write_proposed(7, &forwarded_to(2), "applied");
    waiters.write_proposed(8, &forwarded_to(2), "lost");
    let mut output = leader_is(Some(NodeId(3)), 3);
    output.applied = vec![applied(1, 7, 5)];
    let settled = waiters.on_output(&output);
    let result = Some(OpResult::MultiPut { revision: 5 });
    assert_eq!(settled.applied, vec![("applied", result)]);
    assert_eq!(settled.leader_changed, vec!["lost"]);
}

#[test]
fn only_this_nodes_requests_are_answered_here() {
    let mut waiters: Waiters<&str, ()> = Waiters::new(ME, Some(ME));
    waiters.write_proposed(7, &Accepted::Done, "w7");
    let output = Output {
        applied: vec![applied(2, 7, 5)],
        ..Output::default()
    };
    assert!(waiters.on_output(&output).applied.is_empty());
    let output = Output {
        applied: vec![applied(1, 7, 6)],
        ..Output::default()
    };
    assert_eq!(waiters.on_output(&output).applied.len(), 1);
    assert_eq!(waiters.writes_waiting(), 0);
}

#[test]
fn a_read_is_served_only_once_its_read_index_is_applied() {
    let mut waiters: Waiters<(), &str> = Waiters::new(ME, Some(ME));
    waiters.read_requested(1, "r1");
    waiters.read_requested(2, "r2");
    waiters.read_requested(3, "r3");
    assert!(waiters.ready_reads(LogIndex(100)).is_empty(), "unconfirmed");
    let output = Output {
        read_states: vec![
            ReadState {
                context: 2,
                index: LogIndex(9),
            },
            ReadState {
                context: 1,
                index: LogIndex(10),
            },
        ],
        dropped_reads: vec![3],
        ..Output::default()
    };
    let settled = waiters.on_output(&output);
    assert_eq!(settled.dropped_reads, vec!["r3"]);
    assert!(waiters.ready_reads(LogIndex(8)).is_empty());
    assert_eq!(waiters.ready_reads(LogIndex(9)), vec!["r2"]);
    assert_eq!(waiters.reads_waiting(), 1);
    assert_eq!(waiters.ready_reads(LogIndex(12)), vec!["r1"]);
    assert_eq!(waiters.reads_waiting(), 0);
}

#[test]
fn a_cancelled_read_is_forgotten_whether_confirmed_or_not() {
    let mut waiters: Waiters<(), &str> = Waiters::new(ME, Some(ME));
    waiters.read_requested(1, "r1");
    waiters.read_requested(2, "r2");
    let output = Output {
        read_states: vec![ReadState {
            context: 1,
            index: LogIndex(4),
        }],
        ..Output::default()
    };
    waiters.on_output(&output);
    assert_eq!(waiters.remove_read(1), Some("r1"));
    assert_eq!(waiters.remove_read(2), Some("r2"));
    assert_eq!(waiters.remove_read(2), None);
    assert!(waiters.ready_reads(LogIndex(10)).is_empty());
}

#[test]
fn retain_and_drain_take_every_kind_of_waiter() {
    let mut waiters: Waiters<u64, u64> = Waiters::new(ME, Some(ME));
    waiters.write_proposed(1, &Accepted::Done, 1);
    waiters.write_proposed(2, &Accepted::Done, 2);
    waiters.read_requested(10, 10);
    waiters.read_requested(11, 11);
    waiters.on_output(&Output {
        read_states: vec![ReadState {
            context: 11,
            index: LogIndex(3),
        }],
        ..Output::default()
    });
    waiters.retain(|w| *w != 1, |r| *r != 10);
    assert_eq!(waiters.drain(), (vec![2], vec![11]));
    assert_eq!((waiters.writes_waiting(), waiters.reads_waiting()), (0, 0));
}
