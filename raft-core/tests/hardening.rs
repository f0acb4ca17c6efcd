//! Issue 11: the three safety bugs an independent review found, the cases
//! it suspected, one test each. Every test sets the scene in its first lines
//! and fails on the code before the fix.

use bytes::Bytes;
use raft_core::harness::Cluster;
use raft_core::{
    Config, EntryKind, ForwardedEntry, HardState, InitialState, Input, LogIndex, Membership,
    Message, MessageBody, Node, NodeId, Role, Term,
};
use std::collections::BTreeSet;

fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Input {
    Input::Message(Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body,
    })
}

/// Node 1, the only voter, with node 2 as a learner, at durable term `term`.
fn lone_voter_with_learner(adjust: impl Fn(&mut Config)) -> Node {
    let mut config = Config::new(NodeId(1));
    adjust(&mut config);
    Node::new(
        config,
        InitialState {
            hard_state: HardState {
                term: Term(3),
                vote: None,
                commit: LogIndex(0),
            },
            bootstrap: Membership {
                voters: BTreeSet::from([NodeId(1)]),
                outgoing: BTreeSet::new(),
                learners: BTreeSet::from([NodeId(2)]),
            },
            ..InitialState::default()
        },
    )
    .unwrap()
}

/// Messages in the first `Ready` after a lone voter campaigns and proposes,
/// before its new term is acknowledged durable.
fn messages_before_term_is_durable(node: &mut Node) -> (Term, Vec<Message>, u64) {
    node.step(Input::Campaign).unwrap();
    assert_eq!(node.role(), Role::Leader, "a lone voter wins at once");
    node.step(Input::Propose {
        data: Bytes::from_static(b"A"),
    })
    .unwrap();
    let rd = node.ready();
    let term = rd.hard_state.expect("the new term is to be persisted").term;
    (term, rd.messages, rd.number)
}

#[test]
fn a_lone_voter_sends_nothing_of_its_new_term_before_the_term_is_durable() {
    let mut node = lone_voter_with_learner(|_| {});
    let (term, early, number) = messages_before_term_is_durable(&mut node);
    assert_eq!(term, Term(4));
    let leaked: Vec<String> = early
        .iter()
        .filter(|m| m.term >= term)
        .map(|m| m.describe())
        .collect();
    assert!(
        leaked.is_empty(),
        "sent before term {term} was durable: {leaked:?}"
    );
    assert_eq!(
        node.durable_term(),
        Term(3),
        "leading, but not yet in a durable term"
    );
    // Once the term is durable, the learner gets the no-op and A.
    node.step(Input::Persisted { ready: number }).unwrap();
    assert_eq!(node.durable_term(), term);
    let mut sent = Vec::new();
    while node.has_ready() {
        let rd = node.ready();
        if rd.must_persist() {
            node.step(Input::Persisted { ready: rd.number }).unwrap();
        }
        sent.extend(rd.messages);
    }
    assert!(
        sent.iter().any(|m| m.to == NodeId(2)
            && matches!(&m.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty())),
        "the held appends leave after Persisted"
    );
}

#[cfg(feature = "buggy")]
#[test]
fn with_the_bug_a_lone_voter_leaks_its_appends_before_the_fsync() {
    let mut node = lone_voter_with_learner(|c| c.bugs.lead_before_term_durable = true);
    let (term, early, _) = messages_before_term_is_durable(&mut node);
    assert!(early.iter().any(|m| m.term == term));
}

/// A leader sends TimeoutNow, the transfer times out, the leader renews its
/// lease with new heartbeat rounds; meanwhile the TimeoutNow is only late.
fn leader_after_an_aborted_transfer(adjust: impl Fn(&mut Config)) -> (Cluster, Message) {
    let mut c = Cluster::with_config(3, adjust);
    c.campaign(1);
    c.tick_all();
    c.step(1, Input::TransferLeadership { to: NodeId(2) })
        .unwrap();
    c.drain_ready();
    let at = c
        .in_flight
        .iter()
        .position(|m| m.body == MessageBody::TimeoutNow)
        .expect("the target is caught up: TimeoutNow is sent at once");
    let late = c.in_flight.remove(at).expect("position is valid");
    // The leader repeats TimeoutNow on heartbeat responses while the
    // transfer is pending (issue 18 A); those are lost too, so the
    // transfer times out and is aborted.
    for _ in 0..25 {
        for id in 1..=3 {
            c.step(id, Input::Tick).unwrap();
        }
        for _ in 0..10_000 {
            let drained = c.drain_ready();
            c.in_flight.retain(|m| m.body != MessageBody::TimeoutNow);
            if !c.deliver_one() && !drained {
                break;
            }
        }
    }
    assert_eq!(
        c.node(1).role(),
        Role::Leader,
        "the transfer was aborted: {:#?}",
        c.trace
    );
    (c, late)
}

#[test]
fn no_lease_read_after_timeout_now_was_sent_in_the_term() {
    let (mut c, late) = leader_after_an_aborted_transfer(|_| {});
    // The old leader is cut off; the delayed TimeoutNow lets n2 win without
    // waiting out any lease, and commit a write.
    c.isolate(1);
    c.step(2, Input::Message(late)).unwrap();
    c.settle();
    assert_eq!(c.node(2).role(), Role::Leader);
    c.propose(2, b"W").unwrap();
    c.settle();
    c.step(
        1,
        Input::ReadIndex {
            context: 7,
            lease: true,
        },
    )
    .unwrap();
    let rd = c.nodes.get_mut(&NodeId(1)).unwrap().ready();
    assert!(
        rd.read_states.is_empty(),
        "a lease read below the new leader's write: {:?}",
        rd.read_states
    );
}

#[test]
fn read_index_with_a_quorum_round_still_works_after_an_aborted_transfer() {
    let (mut c, _late) = leader_after_an_aborted_transfer(|_| {});
    c.step(
        1,
        Input::ReadIndex {
            context: 8,
            lease: true,
        },
    )
    .unwrap();
    c.settle();
    assert_eq!(c.read_states[&NodeId(1)].len(), 1, "served after a round");
}

#[cfg(feature = "buggy")]
#[test]
fn with_the_bug_the_lease_comes_back_after_an_aborted_transfer() {
    let (mut c, _late) =
        leader_after_an_aborted_transfer(|c| c.bugs.lease_after_aborted_transfer = true);
    c.isolate(1);
    c.step(
        1,
        Input::ReadIndex {
            context: 7,
            lease: true,
        },
    )
    .unwrap();
    let rd = c.nodes.get_mut(&NodeId(1)).unwrap().ready();
    assert_eq!(rd.read_states.len(), 1);
}

/// A 3-node cluster whose leader n1 holds a lease that n2 helped confirm;
/// then n2 restarts. Returns the cluster and the term.
fn restarted_follower_inside_the_lease(adjust: impl Fn(&mut Config)) -> (Cluster, u64) {
    let mut c = Cluster::with_config(3, adjust);
    c.campaign(1);
    c.tick_all();
    c.tick_all();
    c.restart(2);
    let term = c.node(1).term().0;
    (c, term)
}

fn granted_votes(c: &mut Cluster, id: u64) -> Vec<Message> {
    c.drain_ready();
    let granted: Vec<Message> = c
        .in_flight
        .iter()
        .filter(|m| {
            m.from == NodeId(id)
                && matches!(
                    m.body,
                    MessageBody::RequestVoteResponse { granted: true, .. }
                )
        })
        .cloned()
        .collect();
    c.in_flight.clear();
    granted
}

#[test]
fn a_restarted_follower_refuses_votes_for_the_minimum_election_timeout() {
    let (mut c, term) = restarted_follower_inside_the_lease(|_| {});
    let last = c.node(3).last_index().0;
    let last_term = c.node(3).log_term(LogIndex(last)).unwrap().0;
    for pre_vote in [true, false] {
        let request = MessageBody::RequestVote {
            pre_vote,
            last_log_index: LogIndex(last),
            last_log_term: Term(last_term),
            transfer: false,
        };
        c.step(2, msg(3, 2, term + 1, request)).unwrap();
        assert!(
            granted_votes(&mut c, 2).is_empty(),
            "granted a pre_vote={pre_vote} request right after restart"
        );
    }
    // After the minimum election timeout the node votes again.
    for _ in 0..10 {
        c.step(2, Input::Tick).unwrap();
    }
    let request = MessageBody::RequestVote {
        pre_vote: true,
        last_log_index: LogIndex(last),
        last_log_term: Term(last_term),
        transfer: false,
    };
    c.step(2, msg(3, 2, term + 1, request)).unwrap();
    assert_eq!(granted_votes(&mut c, 2).len(), 1);
}

#[test]
fn a_brand_new_node_votes_at_once() {
    // A node that never held a term acknowledged nothing a lease rests on.
    let mut c = Cluster::new(3);
    c.campaign(1);
    assert_eq!(c.node(1).role(), Role::Leader);
}

#[cfg(feature = "buggy")]
#[test]
fn with_the_bug_a_restarted_follower_votes_at_once() {
    let (mut c, term) =
        restarted_follower_inside_the_lease(|c| c.bugs.vote_at_once_after_restart = true);
    let last = c.node(3).last_index().0;
    let last_term = c.node(3).log_term(LogIndex(last)).unwrap().0;
    let request = MessageBody::RequestVote {
        pre_vote: true,
        last_log_index: LogIndex(last),
        last_log_term: Term(last_term),
        transfer: false,
    };
    c.step(2, msg(3, 2, term + 1, request)).unwrap();
    assert_eq!(granted_votes(&mut c, 2).len(), 1);
}

// ----- The suspected cases. -----

#[test]
fn a_forwarded_proposal_from_a_peer_may_only_carry_normal_entries() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    let term = c.node(1).term().0;
    let last = c.node(1).last_index();
    for kind in [EntryKind::ConfChange, EntryKind::Noop] {
        let forged = MessageBody::Propose {
            entries: vec![ForwardedEntry {
                kind,
                data: raft_core::ConfChange::Leave.encode(),
            }],
        };
        assert!(c.step(1, msg(2, 1, term, forged)).is_err());
    }
    assert_eq!(c.node(1).last_index(), last, "nothing was appended");
    let normal = MessageBody::Propose {
        entries: vec![ForwardedEntry {
            kind: EntryKind::Normal,
            data: Bytes::from_static(b"ok"),
        }],
    };
    c.step(1, msg(2, 1, term, normal)).unwrap();
    assert_eq!(c.node(1).last_index(), last.next());
}

#[test]
fn leaving_a_joint_configuration_waits_for_a_transfer_in_progress() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    let term = c.node(1).term();
    // Enter a joint configuration (n4 never answers) and, before it
    // commits, start handing leadership to n3, which lags by that entry.
    c.step(
        1,
        Input::ProposeConfChange(raft_core::ConfChange::Enter(vec![
            raft_core::ConfChangeStep::AddVoter(NodeId(4)),
        ])),
    )
    .unwrap();
    c.step(1, Input::TransferLeadership { to: NodeId(3) })
        .unwrap();
    c.settle();
    assert_eq!(
        c.node(3).role(),
        Role::Leader,
        "the transfer succeeded: {:?} {:?}",
        c.node(1).status(),
        c.node(3).status()
    );
    let leave = raft_core::ConfChange::Leave.encode();
    for id in 1..=3 {
        let node = c.node(id);
        let in_old_term = (1..=node.last_index().0)
            .filter_map(|i| node.log_entry(LogIndex(i)))
            .any(|e| e.term == term && e.kind == EntryKind::ConfChange && e.data == leave);
        assert!(
            !in_old_term,
            "n{id}: the old leader appended Leave during the transfer"
        );
    }
}

#[test]
fn a_read_forwarded_to_a_leader_of_an_older_term_is_reported_dropped() {
    // Without check-quorum no lease stops n1 from being re-elected at once.
    let mut c = Cluster::with_config(3, |c| c.check_quorum = false);
    c.campaign(1);
    let term = c.node(1).term().0;
    // n3 forwards a read to n1; it is delayed.
    c.step(
        3,
        Input::ReadIndex {
            context: 42,
            lease: false,
        },
    )
    .unwrap();
    c.drain_ready();
    let forwarded: Vec<Message> = c.in_flight.drain(..).collect();
    assert!(
        forwarded
            .iter()
            .any(|m| matches!(m.body, MessageBody::ReadIndex { context: 42, .. }))
    );
    // n1 moves to a higher term and is elected again.
    c.step(
        1,
        msg(
            2,
            1,
            term + 1,
            MessageBody::HeartbeatResponse { read_round: 0 },
        ),
    )
    .unwrap();
    c.isolate(3);
    c.campaign(1);
    c.heal();
    c.tick_all();
    assert_eq!(c.node(1).role(), Role::Leader);
    assert!(c.node(1).term().0 > term);
    assert_eq!(c.node(3).leader(), Some(NodeId(1)));
    // The old-term request arrives only now.
    c.in_flight.extend(forwarded);
    c.settle();
    for _ in 0..5 {
        c.tick_all();
    }
    let answered = c
        .read_states
        .get(&NodeId(3))
        .is_some_and(|r| r.iter().any(|s| s.context == 42));
    let dropped = c
        .dropped_reads
        .get(&NodeId(3))
        .is_some_and(|d| d.contains(&42));
    assert!(answered || dropped, "read 42 was silently lost");
}

#[test]
fn a_leave_held_back_by_a_transfer_follows_once_the_transfer_is_given_up() {
    let mut c = Cluster::new(5);
    c.campaign(1);
    // n5 is cut off, so the transfer to it can only time out; n6 never
    // answers, but n1..n4 are a majority of both halves.
    c.isolate(5);
    c.step(
        1,
        Input::ProposeConfChange(raft_core::ConfChange::Enter(vec![
            raft_core::ConfChangeStep::AddVoter(NodeId(6)),
        ])),
    )
    .unwrap();
    c.step(1, Input::TransferLeadership { to: NodeId(5) })
        .unwrap();
    c.settle();
    assert!(
        c.node(1).membership().is_joint(),
        "the joint entry committed"
    );
    assert!(
        c.node(1).membership().voters.contains(&NodeId(6)),
        "in the joint configuration"
    );
    for _ in 0..30 {
        c.tick_all();
    }
    assert_eq!(c.node(1).role(), Role::Leader);
    assert!(
        !c.node(1).membership().is_joint(),
        "the joint configuration was left after the transfer timed out"
    );
}
