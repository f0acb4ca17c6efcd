//! A leader that removes or demotes itself must never strand the voters it
//! leaves behind (issue 18, section 1). Two voters {1, 2}: node 1 leads and
//! takes itself out; the append carrying its last proposals is lost; the
//! Leave commits on node 1 alone, and node 1 is cut off before it can tell
//! anyone. Node 2 is left in the joint configuration, where it needs node
//! 1's vote, and node 1's log is longer than its own.

use raft_core::harness::Cluster;
use raft_core::{
    ConfChange, ConfChangeStep, Config, Input, LogIndex, MessageBody, NodeId, Role, StepError,
};

/// Runs the scenario up to the moment node 1 is cut off, with the Leave
/// committed on node 1 only. Returns the cluster and node 1's commit index.
fn remove_leader_then_cut_it_off(
    step: ConfChangeStep,
    adjust: impl Fn(&mut Config),
) -> (Cluster, LogIndex) {
    let mut c = Cluster::with_config(2, adjust);
    c.campaign(1);
    c.step(1, Input::ProposeConfChange(ConfChange::Enter(vec![step])))
        .unwrap();
    for _ in 0..10_000 {
        c.drain_ready();
        if c.node(1).membership().is_joint() {
            break;
        }
        assert!(c.deliver_one(), "the joint configuration commits");
    }
    assert!(c.node(1).membership().is_joint());
    // The Leave entry goes out; then three proposals, whose append is lost.
    c.drain_ready();
    let leave = c.node(1).last_index();
    for i in 0..3u8 {
        c.propose(1, &[i]).unwrap();
    }
    c.drain_ready();
    let before = c.in_flight.len();
    c.in_flight.retain(|m| {
        !(m.from == NodeId(1)
            && matches!(&m.body, MessageBody::AppendEntries { entries, .. }
                if entries.iter().any(|e| e.index > leave)))
    });
    assert!(
        c.in_flight.len() < before,
        "the append with the proposals is lost"
    );
    // Node 2's acknowledgement of the Leave reaches node 1.
    for _ in 0..10_000 {
        if c.node(1).commit_index() >= leave {
            break;
        }
        assert!(c.deliver_one(), "the Leave commits on node 1");
        c.drain_ready_of(2);
    }
    assert!(!c.node(1).membership().is_voter(NodeId(1)));
    assert!(
        c.node(2).membership().is_joint(),
        "node 2 has not heard that the Leave committed"
    );
    // From that moment node 1 is cut off: nothing it sends arrives.
    c.isolate(1);
    let committed = c.node(1).commit_index();
    (c, committed)
}

/// Heals after 30 ticks and checks that node 2 leads the new configuration
/// with every entry node 1 knew committed.
fn heal_and_expect_node_2_to_lead(mut c: Cluster, committed: LogIndex) {
    for _ in 0..30 {
        c.tick_all();
    }
    // Its hand-over timed out: node 1 gave up leading a configuration it is
    // no voter of. That is safe because of what it still tells node 2.
    assert_ne!(c.node(1).role(), Role::Leader, "the removed leader gave up");
    c.heal();
    let mut leader = None;
    // A few election timeouts (the timeout is drawn from 10..20 ticks).
    for _ in 0..100 {
        c.tick_all();
        leader = c.leader();
        if leader.is_some() {
            break;
        }
    }
    let s1 = c.node(1).status();
    let s2 = c.node(2).status();
    assert_eq!(
        leader,
        Some(NodeId(2)),
        "node 2 leads; n1 {s1:?}, n2 {s2:?}"
    );
    let m = c.node(2).membership().clone();
    assert!(!m.is_joint(), "node 2 left the joint configuration: {m:?}");
    assert_eq!(m.voters, [NodeId(2)].into_iter().collect());
    for i in 1..=committed.0 {
        assert_eq!(
            c.node(2).log_term(LogIndex(i)),
            c.node(1).log_term(LogIndex(i)),
            "committed entry {i} kept"
        );
    }
    // And the cluster takes writes again.
    let accepted = c.propose(2, b"after").unwrap();
    c.settle();
    assert!(matches!(accepted, raft_core::Accepted::Appended { .. }));
    assert!(
        c.applied_data(2)
            .contains(&bytes::Bytes::from_static(b"after"))
    );
    assert_ne!(c.node(1).role(), Role::Leader);
}

#[test]
fn a_removed_leader_cut_off_after_its_removal_commits_does_not_strand_the_last_voter() {
    let (c, committed) = remove_leader_then_cut_it_off(ConfChangeStep::Remove(NodeId(1)), |_| {});
    assert_eq!(c.node(1).role(), Role::Leader, "still handing over");
    heal_and_expect_node_2_to_lead(c, committed);
}

#[test]
fn a_demoted_leader_cut_off_after_its_demotion_commits_does_not_strand_the_last_voter() {
    let (c, committed) =
        remove_leader_then_cut_it_off(ConfChangeStep::AddLearner(NodeId(1)), |_| {});
    assert!(c.node(1).membership().learners.contains(&NodeId(1)));
    heal_and_expect_node_2_to_lead(c, committed);
}

#[test]
fn a_removed_leader_does_not_strand_the_last_voter_without_pre_vote_or_check_quorum() {
    // Without pre-vote node 2 raises its term while node 1 is away, which
    // deposes node 1 the moment they meet again.
    let (c, committed) = remove_leader_then_cut_it_off(ConfChangeStep::Remove(NodeId(1)), |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
    });
    heal_and_expect_node_2_to_lead(c, committed);
}

#[test]
fn a_removed_leader_that_restarts_while_cut_off_does_not_strand_the_last_voter() {
    // After a restart node 1 is no leader and can never be one again: only
    // what it persisted (the Leave is committed) is left to help node 2.
    let (mut c, committed) =
        remove_leader_then_cut_it_off(ConfChangeStep::Remove(NodeId(1)), |_| {});
    c.drain_ready();
    c.restart(1);
    assert_eq!(c.node(1).role(), Role::Learner);
    assert_eq!(c.node(1).commit_index(), committed);
    heal_and_expect_node_2_to_lead(c, committed);
}

#[test]
fn a_removed_leader_refuses_proposals_and_transfers_while_it_hands_over() {
    let (mut c, _) = remove_leader_then_cut_it_off(ConfChangeStep::Remove(NodeId(1)), |_| {});
    assert_eq!(c.propose(1, b"x"), Err(StepError::TransferInProgress));
    assert_eq!(
        c.step(1, Input::TransferLeadership { to: NodeId(1) }),
        Err(StepError::Removed),
        "a transfer to itself would cancel the hand-over"
    );
    assert_eq!(
        c.step(1, Input::TransferLeadership { to: NodeId(2) }),
        Err(StepError::Removed)
    );
}

#[cfg(feature = "buggy")]
#[test]
fn with_the_removed_leader_gives_up_bug_the_last_voter_is_stranded() {
    let (mut c, _) = remove_leader_then_cut_it_off(ConfChangeStep::Remove(NodeId(1)), |cfg| {
        cfg.bugs.removed_leader_gives_up = true;
    });
    for _ in 0..30 {
        c.tick_all();
    }
    c.heal();
    for _ in 0..500 {
        c.tick_all();
    }
    assert_eq!(c.leader(), None, "nobody can win");
    assert!(
        c.node(2).membership().is_joint(),
        "node 2 is stuck in the joint configuration"
    );
}

fn vote_request_from_2(term: u64, pre_vote: bool, last: (u64, u64)) -> Input {
    Input::Message(raft_core::Message {
        from: NodeId(2),
        to: NodeId(1),
        term: raft_core::Term(term),
        body: MessageBody::RequestVote {
            pre_vote,
            last_log_index: LogIndex(last.0),
            last_log_term: raft_core::Term(last.1),
            transfer: false,
        },
    })
}

fn sent_by(c: &mut Cluster, id: u64) -> Vec<raft_core::Message> {
    let before = c.in_flight.len();
    c.drain_ready_of(id);
    c.in_flight.iter().skip(before).cloned().collect()
}

#[test]
fn a_node_outside_its_configuration_tells_a_vote_asker_what_is_committed_and_still_refuses() {
    let (mut c, committed) =
        remove_leader_then_cut_it_off(ConfChangeStep::Remove(NodeId(1)), |_| {});
    for _ in 0..15 {
        c.tick_all();
    }
    assert_eq!(c.node(1).role(), Role::Learner, "the hand-over timed out");
    c.heal();
    // Node 2's log ends at the Leave (index 4); node 1 knows it committed.
    c.step(1, vote_request_from_2(2, true, (4, 1))).unwrap();
    let sent = sent_by(&mut c, 1);
    let notice = sent
        .iter()
        .find_map(|m| match m.body {
            MessageBody::CommitNotice { index, log_term } => Some((index, log_term)),
            _ => None,
        })
        .expect("a commit notice");
    assert_eq!(notice, (committed, c.node(1).log_term(committed).unwrap()));
    assert!(
        sent.iter().any(|m| matches!(
            m.body,
            MessageBody::RequestVoteResponse { granted: false, .. }
        )),
        "the vote itself follows the usual rule: node 1's log is longer"
    );
    // A shorter log learns only what it can hold.
    c.step(1, vote_request_from_2(2, true, (3, 1))).unwrap();
    let sent = sent_by(&mut c, 1);
    assert!(sent.iter().any(|m| matches!(
        m.body,
        MessageBody::CommitNotice {
            index: LogIndex(3),
            ..
        }
    )));
}

#[test]
fn a_commit_notice_moves_the_commit_index_only_over_a_matching_entry_in_any_term() {
    let (mut c, committed) =
        remove_leader_then_cut_it_off(ConfChangeStep::Remove(NodeId(1)), |_| {});
    let before = c.node(2).commit_index();
    let notice = |term: u64, log_term: u64| {
        Input::Message(raft_core::Message {
            from: NodeId(1),
            to: NodeId(2),
            term: raft_core::Term(term),
            body: MessageBody::CommitNotice {
                index: committed,
                log_term: raft_core::Term(log_term),
            },
        })
    };
    c.step(2, notice(7, 7)).unwrap();
    assert_eq!(
        c.node(2).commit_index(),
        before,
        "a different entry: ignored"
    );
    // Stamped with a term below node 2's: the fact holds in every term.
    let term_of_entry = c.node(2).log_term(committed).unwrap().0;
    // A notice whose entry term is above its own term cannot come from an
    // honest node: refused at the door.
    assert!(c.step(2, notice(0, term_of_entry)).is_err());
    assert_eq!(c.node(2).commit_index(), before);
    c.step(2, notice(term_of_entry, term_of_entry)).unwrap();
    assert_eq!(c.node(2).commit_index(), committed);
    assert!(!c.node(2).membership().is_joint());
}
