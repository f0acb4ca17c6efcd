//! Protocol-aware recovery (issue 15; FAST 2018): a node whose storage lost
//! records it had acknowledged grants no (pre-)votes and does not campaign
//! until a leader of a newer term has written into its log. etcd-io/raft
//! has no counterpart (it trusts its storage), so these are our own.
//! Setup: three voters; check-quorum off so that the restart lease does not
//! hide what the damage rule does.

use raft_core::harness::{Cluster, MemStorage};
use raft_core::{
    Config, ConfigError, HardState, InitialState, Input, LogIndex, Membership, Message,
    MessageBody, Node, NodeId, Role, StepError, Term,
};

fn msg(from: u64, to: u64, term: Term, body: MessageBody) -> Input {
    Input::Message(Message {
        from: NodeId(from),
        to: NodeId(to),
        term,
        body,
    })
}

fn cluster(adjust: impl Fn(&mut Config)) -> Cluster {
    Cluster::with_config(3, |cfg| {
        cfg.check_quorum = false;
        adjust(cfg);
    })
}

/// n1 leads and has committed `count` proposals on every node.
fn cluster_with_commits(adjust: impl Fn(&mut Config), count: usize) -> Cluster {
    let mut c = cluster(adjust);
    c.campaign(1);
    for i in 0..count {
        c.propose(1, format!("x{i}").as_bytes()).unwrap();
        c.settle();
    }
    c
}

/// Loses the newest `count` entries and the hard state that covered them.
fn lose_tail(count: usize) -> impl FnOnce(&mut MemStorage) {
    move |disk| {
        let keep = disk.entries.len().saturating_sub(count);
        disk.entries.truncate(keep);
        let last = disk.entries.last().map_or(LogIndex::ZERO, |e| e.index);
        disk.hard_state.commit = disk.hard_state.commit.min(last);
    }
}

/// The (pre-)vote answers `id` sent, drained from the network.
fn vote_answers(c: &mut Cluster, id: u64) -> Vec<bool> {
    c.drain_ready();
    let answers = c
        .in_flight
        .iter()
        .filter(|m| m.from == NodeId(id))
        .filter_map(|m| match m.body {
            MessageBody::RequestVoteResponse { granted, .. } => Some(granted),
            _ => None,
        })
        .collect();
    c.in_flight.retain(|m| m.from != NodeId(id));
    answers
}

fn vote_request(c: &Cluster, pre_vote: bool) -> MessageBody {
    // As up to date as the most complete log in the cluster.
    let leader = c.node(1);
    MessageBody::RequestVote {
        pre_vote,
        last_log_index: leader.last_index(),
        last_log_term: leader.log_term(leader.last_index()).unwrap(),
        transfer: false,
    }
}

#[test]
fn a_damaged_follower_refuses_votes_and_pre_votes() {
    let mut c = cluster_with_commits(|_| {}, 3);
    let bound = c.node(3).term();
    c.restart_damaged(3, lose_tail(2));
    assert_eq!(c.node(3).status().damaged_up_to_term, Some(bound));
    let term = c.node(3).term();
    assert_eq!(term, bound.next(), "starts above the bound");
    for pre_vote in [true, false] {
        let request = vote_request(&c, pre_vote);
        c.step(3, msg(2, 3, term.next(), request)).unwrap();
        assert_eq!(
            vote_answers(&mut c, 3),
            vec![false],
            "pre_vote={pre_vote} request granted by a damaged node"
        );
    }
}

#[test]
fn a_damaged_follower_does_not_campaign() {
    let mut c = cluster_with_commits(|_| {}, 2);
    c.restart_damaged(3, lose_tail(1));
    c.isolate(3);
    let term = c.node(3).term();
    for _ in 0..100 {
        c.step(3, Input::Tick).unwrap();
        c.drain_ready_of(3);
    }
    assert_eq!(c.node(3).role(), Role::Follower);
    assert_eq!(c.node(3).term(), term, "a damaged node never starts a term");
    assert!(matches!(
        c.step(3, Input::Campaign),
        Err(StepError::LogDamaged { bound }) if bound.next() == term
    ));
    // Nor does a leadership transfer make it campaign.
    c.step(3, msg(1, 3, term, MessageBody::TimeoutNow)).unwrap();
    assert_eq!(c.node(3).role(), Role::Follower);
}

#[test]
fn the_leader_of_the_bounds_term_steps_down_and_the_next_leader_repairs_the_node() {
    let mut c = cluster_with_commits(|_| {}, 3);
    let bound = c.node(1).term();
    c.restart_damaged(3, lose_tail(3));
    // n1's match index for n3 rests on the lost entries: n3, a term ahead,
    // answers its heartbeat and n1 steps down.
    for _ in 0..200 {
        c.tick_all();
        if c.leader()
            .is_some_and(|l| c.node(l.0).term() > bound.next())
        {
            break;
        }
    }
    let leader = c.leader().expect("a leader of a newer term");
    assert_ne!(leader, NodeId(3));
    assert!(c.node(leader.0).term() > bound);
    c.propose(leader.0, b"after").unwrap();
    c.settle();
    assert_eq!(c.node(3).status().damaged_up_to_term, None);
    assert_eq!(c.node(3).last_index(), c.node(leader.0).last_index());
    assert_eq!(c.node(3).commit_index(), c.node(leader.0).commit_index());
}

#[test]
fn a_damaged_follower_votes_again_once_a_leader_of_a_newer_term_repaired_it() {
    let mut c = cluster_with_commits(|_| {}, 3);
    let old_term = c.node(1).term();
    c.restart_damaged(3, lose_tail(3));
    // n2 wins the next term with n1's vote alone, and its no-op reaches n3.
    c.campaign(2);
    assert_eq!(c.node(2).role(), Role::Leader);
    assert!(c.node(2).term() > old_term);
    assert_eq!(c.node(3).status().damaged_up_to_term, None);
    assert_eq!(c.node(3).last_index(), c.node(2).last_index());
    let term = c.node(3).term();
    let request = vote_request(&c, false);
    c.step(3, msg(1, 3, term.next(), request)).unwrap();
    assert_eq!(vote_answers(&mut c, 3), vec![true]);
}

#[test]
fn a_damaged_node_restarted_again_before_its_repair_is_still_damaged() {
    let mut c = cluster_with_commits(|_| {}, 2);
    c.restart_damaged(3, lose_tail(1));
    c.restart(3);
    assert!(c.node(3).status().damaged_up_to_term.is_some());
    c.campaign(2);
    c.restart(3);
    assert_eq!(
        c.node(3).status().damaged_up_to_term,
        None,
        "the repairing entry is durable: the repair survives a restart"
    );
}

/// n2 wins term `t` with n3's vote; n3 then loses that vote record (its
/// hard state goes back to term `t - 1`) and restarts; n1, restarted in
/// term `t - 1`, campaigns in term `t` and asks n3. Returns the cluster
/// and `t`.
fn lost_vote_then_second_candidate(adjust: impl Fn(&mut Config)) -> (Cluster, Term) {
    let mut c = cluster_with_commits(
        |cfg| {
            cfg.pre_vote = false;
            adjust(cfg);
        },
        1,
    );
    let before = c.storage[&NodeId(3)].hard_state;
    c.step(2, Input::Campaign).unwrap();
    c.drain_ready_of(2);
    c.in_flight.retain(|m| m.to != NodeId(1));
    assert!(c.deliver_one(), "the vote request to n3");
    c.drain_ready_of(3);
    assert!(c.deliver_one(), "n3's vote");
    let term = c.node(2).term();
    assert_eq!(c.node(2).role(), Role::Leader, "won with n3's vote");
    assert_eq!(c.storage[&NodeId(3)].hard_state.vote, Some(NodeId(2)));
    // n2's appends of term `t` never leave it.
    c.isolate(2);
    c.restart_damaged(3, move |disk| disk.hard_state = before);
    c.restart(1);
    assert!(c.node(1).term() < term);
    c.step(1, Input::Campaign).unwrap();
    c.settle();
    (c, term)
}

fn leaders_of(c: &Cluster, term: Term) -> Vec<NodeId> {
    c.nodes
        .values()
        .filter(|n| n.role() == Role::Leader && n.term() == term)
        .map(|n| n.id())
        .collect()
}

#[test]
fn a_node_that_lost_its_vote_record_does_not_vote_twice_in_the_term() {
    let (c, term) = lost_vote_then_second_candidate(|_| {});
    assert_eq!(c.node(1).term(), term, "n1 campaigned in the same term");
    assert_eq!(c.node(3).term(), term.next(), "n3 starts above the bound");
    assert_eq!(c.node(3).status().vote, None);
    assert_eq!(leaders_of(&c, term), vec![NodeId(2)]);
}

#[cfg(feature = "buggy")]
#[test]
fn with_the_bug_a_node_that_lost_its_vote_record_elects_a_second_leader() {
    let (c, term) = lost_vote_then_second_candidate(|cfg| cfg.bugs.vote_while_damaged = true);
    assert_eq!(leaders_of(&c, term), vec![NodeId(1), NodeId(2)]);
}

/// An entry is committed by n1 and n3 while n2 is cut off; n3 then loses
/// it, n1 goes away, and n2 (without the entry) campaigns with n3.
/// Returns the cluster and the lost entry's index.
fn lost_committed_entry(adjust: impl Fn(&mut Config)) -> (Cluster, LogIndex) {
    let mut c = cluster_with_commits(adjust, 1);
    c.isolate(2);
    c.propose(1, b"committed by n1 and n3").unwrap();
    c.settle();
    let index = c.node(1).last_index();
    assert_eq!(c.node(1).commit_index(), index);
    c.restart_damaged(3, lose_tail(1));
    c.heal();
    c.isolate(1);
    for _ in 0..100 {
        c.tick_all();
        if c.leader().is_some() {
            break;
        }
    }
    (c, index)
}

#[test]
fn a_damaged_node_does_not_help_elect_a_leader_that_lacks_an_entry_it_committed() {
    let (c, _) = lost_committed_entry(|_| {});
    assert_eq!(c.leader(), None, "n2 cannot win without n3's vote");
    assert!(c.node(3).status().damaged_up_to_term.is_some());
}

#[cfg(feature = "buggy")]
#[test]
fn with_the_bug_a_damaged_node_elects_a_leader_that_lacks_a_committed_entry() {
    let (c, index) = lost_committed_entry(|cfg| cfg.bugs.vote_while_damaged = true);
    assert_eq!(c.leader(), Some(NodeId(2)));
    let committed = c.node(1).log_entry(index).unwrap().clone();
    assert_ne!(
        c.node(2).log_entry(index),
        Some(&committed),
        "the new leader holds the committed entry"
    );
}

#[test]
fn one_damaged_node_of_three_still_elects_and_commits_and_is_repaired() {
    let mut c = cluster_with_commits(|_| {}, 3);
    c.restart(1);
    c.restart(2);
    c.restart_damaged(3, lose_tail(2));
    let leader = c.elect(200).expect("n1 and n2 elect a leader");
    assert_ne!(leader, NodeId(3));
    c.propose(leader.0, b"new").unwrap();
    c.settle();
    let last = c.node(leader.0).last_index();
    assert_eq!(c.node(leader.0).commit_index(), last);
    assert_eq!(c.node(3).last_index(), last);
    assert_eq!(c.node(3).status().damaged_up_to_term, None);
    // Repaired, n3 counts in elections again: the leader goes away and n3
    // elects with the remaining node.
    c.isolate(leader.0);
    let next = (1..=2).find(|&id| id != leader.0).unwrap();
    for _ in 0..200 {
        c.tick_all();
        if c.leader().is_some() {
            break;
        }
    }
    let new_leader = c.leader().expect("a new leader with n3's vote");
    assert!([NodeId(next), NodeId(3)].contains(&new_leader));
}

#[test]
fn a_damaged_node_whose_term_record_was_lost_refuses_a_stale_leader() {
    let mut c = cluster_with_commits(|_| {}, 1);
    let old_term = c.node(1).term();
    c.campaign(2);
    let bound = c.node(3).term();
    assert!(bound > old_term);
    let old_hard_state = HardState {
        term: old_term,
        vote: Some(NodeId(1)),
        commit: LogIndex::ZERO,
    };
    c.restart_damaged(3, move |disk| {
        disk.hard_state = old_hard_state;
        disk.entries.truncate(1);
    });
    assert_eq!(c.node(3).term(), bound.next(), "starts above the bound");
    let last = c.node(3).last_index();
    let heartbeat = MessageBody::AppendEntries {
        prev_log_index: last,
        prev_log_term: c.node(3).log_term(last).unwrap(),
        entries: Vec::new(),
        leader_commit: LogIndex::ZERO,
    };
    c.step(3, msg(1, 3, old_term, heartbeat)).unwrap();
    c.drain_ready_of(3);
    let answers: Vec<&Message> = c.in_flight.iter().filter(|m| m.from == NodeId(3)).collect();
    assert!(
        answers.iter().all(|m| m.term == bound.next()
            && !matches!(m.body, MessageBody::AppendEntriesResponse { .. })),
        "a stale leader was acknowledged: {answers:?}"
    );
    assert_eq!(c.node(3).leader(), None);
}

#[test]
fn a_damaged_voter_whose_vote_every_election_needs_refuses_to_start() {
    let id = NodeId(1);
    let initial = |voters: &[u64]| InitialState {
        hard_state: HardState {
            term: Term(4),
            vote: Some(id),
            commit: LogIndex::ZERO,
        },
        bootstrap: Membership::new(voters.iter().copied().map(NodeId)),
        damaged_up_to_term: Some(Term(4)),
        ..InitialState::default()
    };
    for voters in [&[1][..], &[1, 2]] {
        assert!(matches!(
            Node::new(Config::new(id), initial(voters)),
            Err(ConfigError::DamagedVoteNeeded(n)) if n == id
        ));
    }
    // With two other voters a leader of a newer term can repair it; a node
    // that knows no membership yet (joining) learns it from the leader.
    for voters in [&[1, 2, 3][..], &[]] {
        let node = Node::new(Config::new(id), initial(voters)).unwrap();
        assert_eq!(node.status().damaged_up_to_term, Some(Term(4)));
    }
}

#[test]
fn a_bound_below_the_last_log_term_means_the_log_was_already_repaired() {
    let id = NodeId(1);
    let c = cluster_with_commits(|_| {}, 1);
    let disk = c.storage[&id].clone();
    let last_term = disk.entries.last().unwrap().term;
    let node = Node::new(
        Config::new(id),
        InitialState {
            hard_state: disk.hard_state,
            entries: disk.entries,
            bootstrap: Membership::new((1..=3).map(NodeId)),
            damaged_up_to_term: Some(Term(last_term.0 - 1)),
            ..InitialState::default()
        },
    )
    .unwrap();
    assert_eq!(node.status().damaged_up_to_term, None);
}
