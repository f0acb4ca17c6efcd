//! One focused test per Raft rule. Each test names the scenario and the
//! expected behaviour; the first lines set the scene.

use bytes::Bytes;
use raft_core::harness::Cluster;
use raft_core::{
    Accepted, ConfChange, ConfChangeStep, Config, Entry, EntryKind, HardState, InitialState, Input,
    LogIndex, Membership, Message, MessageBody, Node, NodeId, Ready, Role, StepError, Term,
};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index: LogIndex(index),
        term: Term(term),
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"x"),
    }
}

/// Default configuration without check-quorum: a node restarted from a
/// durable term then votes at once (with check-quorum it waits out the
/// minimum election timeout first; tests/hardening.rs covers that).
fn config_voting_at_start(id: u64) -> Config {
    let mut config = Config::new(NodeId(id));
    config.check_quorum = false;
    config
}

/// A lone node 1 of a 3-voter cluster whose durable log has these terms.
fn node_with_log(term: u64, log_terms: &[u64]) -> Node {
    let entries = log_terms
        .iter()
        .enumerate()
        .map(|(i, &t)| entry(i as u64 + 1, t))
        .collect();
    Node::new(
        config_voting_at_start(1),
        InitialState {
            hard_state: HardState {
                term: Term(term),
                vote: None,
                commit: LogIndex(0),
            },
            snapshot: None,
            snapshot_bytes: 0,
            entries,
            bootstrap: Membership::new([NodeId(1), NodeId(2), NodeId(3)]),
            damaged_up_to_term: None,
        },
    )
    .unwrap()
}

fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Input {
    Input::Message(Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body,
    })
}

/// Drains readies, acknowledging persistence, and returns every message.
fn drain_all(node: &mut Node) -> Vec<Message> {
    let mut out = Vec::new();
    while node.has_ready() {
        let rd = node.ready();
        out.extend(rd.messages.iter().cloned());
        if rd.must_persist() {
            node.step(Input::Persisted { ready: rd.number }).unwrap();
        }
    }
    out
}

fn append(prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> MessageBody {
    MessageBody::AppendEntries {
        prev_log_index: LogIndex(prev.0),
        prev_log_term: Term(prev.1),
        entries,
        leader_commit: LogIndex(commit),
    }
}

fn vote_request(pre_vote: bool, last: (u64, u64)) -> MessageBody {
    MessageBody::RequestVote {
        pre_vote,
        last_log_index: LogIndex(last.0),
        last_log_term: Term(last.1),
        transfer: false,
    }
}

// ----- Log replication. -----

#[test]
fn follower_rejects_append_whose_prev_term_mismatches_with_a_conflict_hint() {
    // Follower log terms: 1 2 2 2; the leader thinks index 4 has term 3.
    let mut n = node_with_log(3, &[1, 2, 2, 2]);
    n.step(msg(2, 1, 3, append((4, 3), vec![entry(5, 3)], 0)))
        .unwrap();
    let out = drain_all(&mut n);
    assert_eq!(out.len(), 1);
    match &out[0].body {
        MessageBody::AppendEntriesResponse {
            success,
            conflict_index,
            conflict_term,
            reject_index,
            ..
        } => {
            assert!(!success);
            assert_eq!(*conflict_term, Some(Term(2)), "the follower's term at prev");
            assert_eq!(*conflict_index, LogIndex(2), "the first index of that term");
            assert_eq!(*reject_index, LogIndex(4));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(n.last_index(), LogIndex(4), "nothing appended on rejection");
}

#[test]
fn follower_with_a_short_log_hints_its_log_end() {
    let mut n = node_with_log(2, &[1, 1]);
    n.step(msg(2, 1, 2, append((6, 2), vec![], 0))).unwrap();
    let out = drain_all(&mut n);
    assert!(matches!(
        out[0].body,
        MessageBody::AppendEntriesResponse {
            success: false,
            conflict_index: LogIndex(3),
            conflict_term: None,
            ..
        }
    ));
}

#[test]
fn follower_overwrites_a_conflicting_uncommitted_suffix() {
    let mut n = node_with_log(3, &[1, 2, 2]);
    n.step(msg(
        2,
        1,
        3,
        append((1, 1), vec![entry(2, 3), entry(3, 3)], 0),
    ))
    .unwrap();
    let rd = n.ready();
    assert_eq!(
        rd.entries.first().map(|e| e.index),
        Some(LogIndex(2)),
        "rewrite from 2"
    );
    assert_eq!(n.log_term(LogIndex(3)), Some(Term(3)));
}

#[test]
fn follower_acknowledges_append_only_after_it_is_persisted() {
    let mut n = node_with_log(1, &[]);
    n.step(msg(2, 1, 1, append((0, 0), vec![entry(1, 1)], 0)))
        .unwrap();
    let rd = n.ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(
        !rd.messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::AppendEntriesResponse { .. })),
        "no acknowledgement before the entries are durable"
    );
    n.step(Input::Persisted { ready: rd.number }).unwrap();
    let rd = n.ready();
    assert!(rd.messages.iter().any(|m| matches!(
        m.body,
        MessageBody::AppendEntriesResponse {
            success: true,
            match_index: LogIndex(1),
            ..
        }
    )));
}

#[test]
fn leader_backs_up_next_index_in_one_step_with_the_conflict_hint() {
    // Node 3 holds 50 entries of a stale term 1 that the leader never had.
    let mut c = Cluster::new(3);
    c.campaign(1);
    for i in 0..5u8 {
        c.propose(1, &[i]).unwrap();
    }
    c.settle();
    c.isolate(3);
    c.isolate(1);
    // Let node 1 append 50 entries nobody else receives; then node 2 leads.
    for i in 0..50u8 {
        c.propose(1, &[i]).unwrap();
    }
    c.settle();
    c.heal();
    c.isolate(1);
    let leader = c.elect(100).expect("nodes 2 and 3 elect a leader").0;
    for i in 0..3u8 {
        c.propose(leader, &[i]).unwrap();
    }
    c.settle();
    c.heal();
    c.take_trace();
    // Node 1 steps down on hearing the newer term and is repaired.
    for _ in 0..4 {
        c.tick_all();
    }
    let rejections = c
        .take_trace()
        .iter()
        .filter(|l| l.contains("n1->") && l.contains("AppendResp") && l.contains("reject"))
        .count();
    assert!(
        rejections <= 2,
        "{rejections} rejections: backtracking is not one step"
    );
    assert_eq!(c.node(1).last_index(), c.node(leader).last_index());
    assert_eq!(c.applied_data(1), c.applied_data(leader));
}

#[test]
fn leader_never_commits_a_previous_term_entry_by_counting_replicas() {
    // Figure 8: node 1 holds entry 2 of term 2 from an old leadership and
    // becomes leader of term 4 (its no-op goes to index 3).
    let mut n = node_with_log(3, &[1, 2]);
    n.step(Input::Campaign).unwrap();
    drain_all(&mut n);
    let grant = |pre_vote| MessageBody::RequestVoteResponse {
        pre_vote,
        granted: true,
    };
    n.step(msg(2, 1, 4, grant(true))).unwrap();
    drain_all(&mut n);
    n.step(msg(2, 1, 4, grant(false))).unwrap();
    drain_all(&mut n);
    assert_eq!((n.role(), n.term()), (Role::Leader, Term(4)));
    let ack = |index| MessageBody::AppendEntriesResponse {
        success: true,
        match_index: LogIndex(index),
        conflict_index: LogIndex(0),
        conflict_term: None,
        reject_index: LogIndex(0),
    };
    // A majority (nodes 1 and 2) now holds entry 2, but it is of term 2.
    n.step(msg(2, 1, 4, ack(2))).unwrap();
    drain_all(&mut n);
    assert_eq!(
        n.commit_index(),
        LogIndex(0),
        "a term-2 entry is not committed by counting"
    );
    // Once the term-4 no-op is on a majority, both commit together.
    n.step(msg(2, 1, 4, ack(3))).unwrap();
    drain_all(&mut n);
    assert_eq!(n.commit_index(), LogIndex(3));
}

#[test]
fn committed_entries_are_applied_exactly_once_and_in_order_after_a_restart() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    for i in 0..20u8 {
        c.propose(1, &[i]).unwrap();
    }
    c.settle();
    c.tick_all();
    c.restart(2);
    for _ in 0..5 {
        c.tick_all();
    }
    let indexes = c.applied_indexes(2);
    // The bootstrap configuration, the no-op and the 20 proposals.
    let expected: Vec<LogIndex> = (1..=22).map(LogIndex).collect();
    assert_eq!(indexes, expected, "each index once, in order");
}

// ----- Elections. -----

#[test]
fn candidate_with_a_less_up_to_date_log_loses_the_vote() {
    let mut n = node_with_log(2, &[1, 2]);
    n.step(msg(2, 1, 3, vote_request(false, (5, 1)))).unwrap();
    let out = drain_all(&mut n);
    assert!(matches!(
        out[0].body,
        MessageBody::RequestVoteResponse { granted: false, .. }
    ));
    assert_eq!(n.term(), Term(3), "the higher term is still adopted");
    assert_eq!(n.status().vote, None);
}

#[test]
fn vote_is_in_the_persist_output_before_the_vote_reply_is_sent() {
    let mut n = node_with_log(1, &[1]);
    n.step(msg(2, 1, 2, vote_request(false, (1, 1)))).unwrap();
    let rd: Ready = n.ready();
    assert_eq!(rd.hard_state.and_then(|h| h.vote), Some(NodeId(2)));
    assert!(
        rd.messages.is_empty(),
        "the vote must not leave before it is durable"
    );
    n.step(Input::Persisted { ready: rd.number }).unwrap();
    let rd = n.ready();
    assert!(matches!(
        rd.messages[0].body,
        MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true
        }
    ));
}

#[test]
fn a_node_votes_at_most_once_per_term() {
    let mut n = node_with_log(1, &[1]);
    n.step(msg(2, 1, 2, vote_request(false, (1, 1)))).unwrap();
    n.step(msg(3, 1, 2, vote_request(false, (1, 1)))).unwrap();
    let out = drain_all(&mut n);
    let granted: Vec<NodeId> = out
        .iter()
        .filter(|m| {
            matches!(
                m.body,
                MessageBody::RequestVoteResponse { granted: true, .. }
            )
        })
        .map(|m| m.to)
        .collect();
    assert_eq!(granted, vec![NodeId(2)]);
}

#[test]
fn node_steps_down_on_a_higher_term() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    assert_eq!(c.node(1).role(), Role::Leader);
    c.step(
        1,
        msg(2, 1, 9, MessageBody::HeartbeatResponse { read_round: 0 }),
    )
    .unwrap();
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).term(), Term(9));
}

#[test]
fn messages_from_a_stale_term_are_ignored_or_answered_with_the_current_term() {
    let mut n = node_with_log(5, &[1]);
    n.step(msg(2, 1, 3, append((1, 1), vec![entry(2, 3)], 0)))
        .unwrap();
    let out = drain_all(&mut n);
    assert_eq!(
        n.last_index(),
        LogIndex(1),
        "a stale leader's entries are not taken"
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].term,
        Term(5),
        "the stale leader learns the newer term"
    );
    // A stale vote request gets no vote.
    n.step(msg(3, 1, 4, vote_request(false, (9, 4)))).unwrap();
    assert!(drain_all(&mut n).is_empty());
    assert_eq!(n.term(), Term(5));
}

#[test]
fn pre_vote_does_not_disturb_a_stable_leader() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    let term = c.node(1).term();
    // Node 3 is cut off long enough to time out many times.
    c.isolate(3);
    for _ in 0..100 {
        c.tick_all();
    }
    assert_eq!(c.node(3).term(), term, "pre-vote kept node 3's term");
    c.heal();
    for _ in 0..30 {
        c.tick_all();
    }
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), term, "the leader was not disturbed");
}

#[test]
fn a_vote_request_inside_the_leader_lease_is_ignored() {
    let mut c = Cluster::with_config(3, |cfg| cfg.pre_vote = false);
    c.campaign(1);
    let term = c.node(1).term();
    // Node 3 campaigns at once, while node 2 still hears from the leader.
    c.step(3, Input::Campaign).unwrap();
    c.settle();
    assert_eq!(
        c.node(2).term(),
        term,
        "node 2 ignored the disruptive candidate"
    );
    assert_eq!(c.node(1).role(), Role::Leader);
}

#[test]
fn leader_cut_off_from_the_quorum_steps_down_under_check_quorum() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.isolate(1);
    for _ in 0..25 {
        c.tick_all();
    }
    assert_ne!(c.node(1).role(), Role::Leader);
}

#[test]
fn randomized_election_timeouts_come_from_the_seed() {
    let run = |seed: u64| {
        let mut c = Cluster::with_config(5, |cfg| cfg.seed = seed * 100 + cfg.id.0);
        c.elect(200).unwrap();
        (c.time, c.leader())
    };
    assert_eq!(run(7), run(7), "same seed, same election");
}

#[test]
fn every_node_agrees_on_a_single_leader_after_an_election() {
    let mut c = Cluster::new(5);
    let leader = c.elect(200).unwrap();
    c.tick_all();
    for (id, n) in &c.nodes {
        if *id != leader {
            assert_eq!(n.leader(), Some(leader));
            assert_eq!(n.role(), Role::Follower);
        }
    }
}

// ----- Proposals. -----

#[test]
fn proposal_without_a_known_leader_is_refused_as_not_proposed() {
    let mut n = node_with_log(1, &[]);
    assert_eq!(
        n.step(Input::Propose {
            data: Bytes::from_static(b"x")
        }),
        Err(StepError::NoLeader)
    );
}

#[test]
fn follower_forwards_proposals_to_the_leader() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    assert_eq!(
        c.propose(2, b"via-follower"),
        Ok(Accepted::Forwarded { leader: NodeId(1) })
    );
    c.settle();
    c.tick_all();
    assert!(
        c.applied_data(2)
            .contains(&Bytes::from_static(b"via-follower"))
    );
}

#[test]
fn leader_refuses_proposals_beyond_the_uncommitted_limit() {
    let mut c = Cluster::with_config(3, |cfg| cfg.max_uncommitted_entries = 3);
    c.campaign(1);
    c.isolate(1);
    c.propose(1, b"a").unwrap();
    c.propose(1, b"b").unwrap();
    c.propose(1, b"c").unwrap();
    assert_eq!(
        c.propose(1, b"d"),
        Err(StepError::Backpressure { uncommitted: 3 })
    );
}

// ----- Reads. -----

#[test]
fn read_index_is_not_released_before_the_leaders_noop_commits() {
    let mut c = Cluster::new(3);
    // Node 1 wins but cannot reach anyone to commit its no-op.
    c.campaign(1);
    c.isolate(1);
    c.step(1, Input::Campaign).ok();
    let mut n = node_with_log(1, &[1]);
    n.step(Input::Campaign).unwrap();
    drain_all(&mut n);
    for voter in [2, 3] {
        n.step(msg(
            voter,
            1,
            2,
            MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: true,
            },
        ))
        .unwrap();
    }
    drain_all(&mut n);
    n.step(msg(
        2,
        1,
        2,
        MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        },
    ))
    .unwrap();
    assert_eq!(n.role(), Role::Leader);
    n.step(Input::ReadIndex {
        context: 1,
        lease: false,
    })
    .unwrap();
    let mut released = Vec::new();
    while n.has_ready() {
        let rd = n.ready();
        if rd.must_persist() {
            n.step(Input::Persisted { ready: rd.number }).unwrap();
        }
        released.extend(rd.read_states);
    }
    // Even with heartbeat acknowledgements, nothing before the no-op commits.
    n.step(Input::Tick).unwrap();
    n.step(Input::Tick).unwrap();
    let round = drain_all(&mut n)
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::Heartbeat { read_round, .. } => Some(read_round),
            _ => None,
        })
        .max()
        .expect("a heartbeat round went out");
    n.step(msg(
        2,
        1,
        2,
        MessageBody::HeartbeatResponse { read_round: round },
    ))
    .unwrap();
    while n.has_ready() {
        released.extend(n.ready().read_states);
    }
    assert!(
        released.is_empty(),
        "read released before the no-op committed"
    );
    // Node 2 acknowledges the no-op: it commits, and the read goes through a round.
    n.step(msg(
        2,
        1,
        2,
        MessageBody::AppendEntriesResponse {
            success: true,
            match_index: LogIndex(2),
            conflict_index: LogIndex(0),
            conflict_term: None,
            reject_index: LogIndex(0),
        },
    ))
    .unwrap();
    let mut round = 0;
    while n.has_ready() {
        let rd = n.ready();
        released.extend(rd.read_states);
        for m in rd.messages {
            if let MessageBody::Heartbeat { read_round, .. } = m.body {
                round = round.max(read_round);
            }
        }
    }
    n.step(msg(
        2,
        1,
        2,
        MessageBody::HeartbeatResponse { read_round: round },
    ))
    .unwrap();
    while n.has_ready() {
        released.extend(n.ready().read_states);
    }
    assert_eq!(released.len(), 1);
    assert_eq!(
        released[0].index,
        LogIndex(2),
        "the read index is the no-op's index"
    );
}

#[test]
fn read_index_needs_a_quorum_round_and_a_partitioned_leader_never_releases() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.isolate(1);
    c.step(
        1,
        Input::ReadIndex {
            context: 5,
            lease: false,
        },
    )
    .unwrap();
    for _ in 0..5 {
        c.tick_all();
    }
    assert!(c.read_states.get(&NodeId(1)).is_none_or(|r| r.is_empty()));
    // Once check-quorum deposes it, the read is failed, not left hanging.
    for _ in 0..20 {
        c.tick_all();
    }
    assert_eq!(c.dropped_reads[&NodeId(1)], vec![5]);
}

#[test]
fn follower_read_index_is_forwarded_and_confirmed_by_the_leader() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.propose(1, b"w").unwrap();
    c.settle();
    assert_eq!(
        c.step(
            3,
            Input::ReadIndex {
                context: 8,
                lease: false
            }
        ),
        Ok(Accepted::Forwarded { leader: NodeId(1) })
    );
    c.settle();
    let rs = &c.read_states[&NodeId(3)];
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].context, 8);
    assert_eq!(rs[0].index, c.node(1).commit_index());
}

#[test]
fn lease_read_is_served_without_a_round_while_the_lease_holds() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.tick_all();
    c.tick_all();
    c.take_trace();
    c.step(
        1,
        Input::ReadIndex {
            context: 3,
            lease: true,
        },
    )
    .unwrap();
    let rd = c.nodes.get_mut(&NodeId(1)).unwrap().ready();
    assert_eq!(rd.read_states.len(), 1, "served at once from the lease");
    // Cut off for longer than the lease: the next lease read needs a round.
    c.isolate(1);
    for _ in 0..10 {
        c.tick_all();
    }
    c.step(
        1,
        Input::ReadIndex {
            context: 4,
            lease: true,
        },
    )
    .unwrap();
    let rd = c.nodes.get_mut(&NodeId(1)).unwrap().ready();
    assert!(rd.read_states.is_empty(), "an expired lease serves nothing");
}

// ----- Leadership transfer. -----

#[test]
fn leadership_transfer_catches_the_target_up_then_it_campaigns() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.isolate(3);
    for i in 0..5u8 {
        c.propose(1, &[i]).unwrap();
    }
    c.settle();
    c.heal();
    c.step(1, Input::TransferLeadership { to: NodeId(3) })
        .unwrap();
    assert_eq!(
        c.propose(1, b"during"),
        Err(StepError::TransferInProgress),
        "no proposals while handing over"
    );
    c.settle();
    assert_eq!(c.node(3).role(), Role::Leader);
    assert_eq!(c.node(1).role(), Role::Follower);
    assert!(c.node(3).last_index() > LogIndex(6));
}

// ----- Membership. -----

#[test]
fn a_learner_receives_the_log_but_never_votes_and_can_be_promoted() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.step(
        1,
        Input::ProposeConfChange(ConfChange::Enter(vec![ConfChangeStep::Remove(NodeId(3))])),
    )
    .unwrap();
    c.settle();
    c.tick_all();
    assert!(!c.node(1).membership().is_member(NodeId(3)));
    // Node 3 is no longer a voter: it does not campaign.
    c.step(
        1,
        Input::ProposeConfChange(ConfChange::Enter(vec![ConfChangeStep::AddLearner(NodeId(
            3,
        ))])),
    )
    .unwrap();
    c.settle();
    c.tick_all();
    c.propose(1, b"to-learner").unwrap();
    c.settle();
    c.tick_all();
    assert_eq!(c.node(3).role(), Role::Learner);
    assert!(
        c.applied_data(3)
            .contains(&Bytes::from_static(b"to-learner"))
    );
    assert_eq!(
        c.step(3, Input::Campaign),
        Err(StepError::NotAVoter(NodeId(3)))
    );
    c.step(
        1,
        Input::ProposeConfChange(ConfChange::Enter(vec![ConfChangeStep::AddVoter(NodeId(3))])),
    )
    .unwrap();
    c.settle();
    for _ in 0..3 {
        c.tick_all();
    }
    assert!(c.node(1).membership().voters.contains(&NodeId(3)));
    assert!(
        !c.node(1).membership().is_joint(),
        "the joint phase was left"
    );
    assert_eq!(c.node(3).role(), Role::Follower);
}

/// etcd-raft's TestLearnerElectionTimeout: a learner does not start an
/// election when its timer runs out. Except (simulator seed 1104 at one
/// node, `sim/tests/found_bugs.rs`) when its own uncommitted log tail makes
/// it a voter: every election must win that configuration too, so it
/// campaigns like any voter of it.
#[test]
fn a_learner_campaigns_on_its_timer_only_if_its_log_tail_makes_it_a_voter() {
    let conf = |index: u64, change: ConfChange| Entry {
        index: LogIndex(index),
        term: Term(1),
        kind: EntryKind::ConfChange,
        data: change.encode(),
    };
    let learner = |entries: Vec<Entry>| {
        Node::new(
            config_voting_at_start(2),
            InitialState {
                hard_state: HardState {
                    term: Term(1),
                    vote: None,
                    commit: LogIndex(2),
                },
                entries,
                bootstrap: Membership::new([NodeId(1)]),
                ..InitialState::default()
            },
        )
        .unwrap()
    };
    let committed = vec![
        conf(1, ConfChange::Bootstrap(vec![NodeId(1)])),
        conf(
            2,
            ConfChange::Enter(vec![ConfChangeStep::AddLearner(NodeId(2))]),
        ),
    ];
    let ticks = Config::new(NodeId(2)).election_ticks_max * 2;

    let mut n2 = learner(committed.clone());
    for _ in 0..ticks {
        n2.step(Input::Tick).unwrap();
    }
    assert_eq!(n2.role(), Role::Learner);
    assert_eq!(n2.term(), Term(1));

    let mut tail = committed;
    tail.push(conf(
        3,
        ConfChange::Enter(vec![ConfChangeStep::AddVoter(NodeId(2))]),
    ));
    let mut n2 = learner(tail);
    assert_eq!(n2.role(), Role::Learner, "the change is not committed");
    for _ in 0..ticks {
        n2.step(Input::Tick).unwrap();
    }
    assert_eq!(n2.role(), Role::PreCandidate);
    let asked: std::collections::BTreeSet<NodeId> = n2
        .ready()
        .messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::RequestVote { .. }))
        .map(|m| m.to)
        .collect();
    assert_eq!(
        asked,
        [NodeId(1)].into(),
        "the voter of the configuration in force"
    );
}

#[test]
fn only_one_membership_change_may_be_in_flight() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.isolate(1);
    c.step(
        1,
        Input::ProposeConfChange(ConfChange::Enter(vec![ConfChangeStep::AddLearner(NodeId(
            4,
        ))])),
    )
    .unwrap();
    assert_eq!(
        c.step(
            1,
            Input::ProposeConfChange(ConfChange::Enter(vec![ConfChangeStep::AddLearner(NodeId(
                5
            ))]))
        ),
        Err(StepError::ConfChangeInProgress)
    );
}

#[test]
fn a_leader_that_removes_itself_steps_down_once_the_change_commits() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.step(
        1,
        Input::ProposeConfChange(ConfChange::Enter(vec![ConfChangeStep::Remove(NodeId(1))])),
    )
    .unwrap();
    c.settle();
    for _ in 0..40 {
        c.tick_all();
    }
    assert_ne!(c.node(1).role(), Role::Leader);
    let leader = c.leader().expect("the remaining voters elect a leader");
    assert_ne!(leader, NodeId(1));
    assert!(!c.node(leader.0).membership().is_member(NodeId(1)));
}

#[test]
fn a_new_leader_finishes_a_joint_configuration_left_behind() {
    // Node 1 enters a joint configuration removing node 5 and is cut off
    // the moment it has committed it, before its Leave entry gets out.
    let mut c = Cluster::new(5);
    c.campaign(1);
    c.step(
        1,
        Input::ProposeConfChange(ConfChange::Enter(vec![ConfChangeStep::Remove(NodeId(5))])),
    )
    .unwrap();
    for _ in 0..10_000 {
        c.drain_ready();
        if c.node(1).membership().is_joint() {
            break;
        }
        assert!(c.deliver_one(), "the change commits");
    }
    assert!(c.node(1).membership().is_joint());
    c.isolate(1);
    for _ in 0..100 {
        c.tick_all();
    }
    let leader = c.leader().expect("nodes 2-5 elect a leader");
    assert_ne!(leader, NodeId(1));
    let m = c.node(leader.0).membership().clone();
    assert!(!m.is_joint(), "the new leader left the joint configuration");
    assert!(!m.is_member(NodeId(5)));
}

#[test]
fn a_pre_vote_granted_by_a_voter_several_terms_behind_is_counted() {
    // Found by the simulator (sim/FOUND_BUGS.md, bug 1): n1 at term 5 asks
    // n2, still at term 1, for a pre-vote in term 6; n2 grants it, and its
    // answer must come in term 6 for n1 to count it.
    let mut n1 = node_with_log(5, &[]);
    n1.step(Input::Campaign).unwrap();
    assert_eq!(n1.role(), Role::PreCandidate);
    n1.step(msg(
        2,
        1,
        6,
        MessageBody::RequestVoteResponse {
            pre_vote: true,
            granted: true,
        },
    ))
    .unwrap();
    assert_eq!(n1.role(), Role::Candidate);
    // And the voter side stamps its grant with the requested term.
    let mut n2 = Node::new(
        config_voting_at_start(2),
        InitialState {
            hard_state: HardState {
                term: Term(1),
                vote: None,
                commit: LogIndex(0),
            },
            bootstrap: Membership::new([NodeId(1), NodeId(2), NodeId(3)]),
            ..InitialState::default()
        },
    )
    .unwrap();
    n2.step(msg(1, 2, 6, vote_request(true, (1, 0)))).unwrap();
    let answer = drain_all(&mut n2).pop().expect("n2 answers");
    assert_eq!(answer.term, Term(6));
    assert_eq!(
        n2.term(),
        Term(1),
        "a pre-vote changes nothing on the voter"
    );
}

#[test]
fn a_leader_that_removes_itself_hands_leadership_to_an_up_to_date_voter() {
    // Found by the simulator (sim/FOUND_BUGS.md, bug 2): a removed leader
    // that steps down at once can leave the remaining voters in a joint
    // configuration that needs its vote. It hands over instead.
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.step(
        1,
        Input::ProposeConfChange(ConfChange::Enter(vec![ConfChangeStep::Remove(NodeId(1))])),
    )
    .unwrap();
    c.settle();
    let trace = c.take_trace();
    assert!(
        trace
            .iter()
            .any(|l| l.contains("n1->") && l.contains("TimeoutNow")),
        "the removed leader hands over: {trace:#?}"
    );
    let leader = c.leader().expect("a remaining voter leads at once");
    assert_ne!(leader, NodeId(1));
    let m = c.node(leader.0).membership().clone();
    assert!(!m.is_member(NodeId(1)) && !m.is_joint());
    // Node 1 refuses proposals while it hands over, then follows.
    assert_ne!(c.node(1).role(), Role::Leader);
}

/// Node 2 of voters {1, 2, 3} holds the joint entry that replaces 2 and 3
/// with 4 and 5, and the Leave after it, but its commit index says neither
/// committed (it restarted before the commit-only hard state was synced, or
/// never heard). Both may have committed on the others, who then commit
/// more without 2 and 3. So an election must also win the configurations
/// its uncommitted log tail makes (Raft thesis 4.1: a server uses the latest
/// configuration in its log): 2 and 3 alone must not elect 2 (simulator seed
/// 3989 at 5 nodes found it, with leader completeness broken).
#[test]
fn a_candidate_must_win_the_configurations_in_its_uncommitted_log_tail() {
    let conf = |index: u64, change: ConfChange| Entry {
        index: LogIndex(index),
        term: Term(1),
        kind: EntryKind::ConfChange,
        data: change.encode(),
    };
    let joint = ConfChange::Enter(vec![
        ConfChangeStep::AddVoter(NodeId(4)),
        ConfChangeStep::AddVoter(NodeId(5)),
        ConfChangeStep::Remove(NodeId(2)),
        ConfChangeStep::Remove(NodeId(3)),
    ]);
    let mut config = config_voting_at_start(2);
    config.pre_vote = false;
    let mut node = Node::new(
        config,
        InitialState {
            hard_state: HardState {
                term: Term(1),
                vote: None,
                commit: LogIndex(0),
            },
            snapshot: None,
            snapshot_bytes: 0,
            entries: vec![conf(1, joint), conf(2, ConfChange::Leave)],
            bootstrap: Membership::new([NodeId(1), NodeId(2), NodeId(3)]),
            damaged_up_to_term: None,
        },
    )
    .unwrap();
    node.step(Input::Campaign).unwrap();
    let asked: std::collections::BTreeSet<u64> = drain_all(&mut node)
        .iter()
        .filter(|m| matches!(m.body, MessageBody::RequestVote { .. }))
        .map(|m| m.to.0)
        .collect();
    assert_eq!(
        asked,
        [1, 3, 4, 5].into(),
        "every voter of every configuration is asked"
    );
    let granted = MessageBody::RequestVoteResponse {
        pre_vote: false,
        granted: true,
    };
    let refused = MessageBody::RequestVoteResponse {
        pre_vote: false,
        granted: false,
    };
    // A majority of {1, 2, 3} is not enough.
    node.step(msg(3, 2, 2, granted.clone())).unwrap();
    assert_eq!(node.role(), Role::Candidate);
    // The new voters, who hold what they committed, refuse: lost.
    node.step(msg(4, 2, 2, refused.clone())).unwrap();
    assert_eq!(node.role(), Role::Candidate);
    node.step(msg(5, 2, 2, refused)).unwrap();
    assert_eq!(node.role(), Role::Follower, "the election is lost");

    // With the new voters' votes as well, it wins.
    node.step(Input::Campaign).unwrap();
    drain_all(&mut node);
    for from in [3, 4, 5] {
        node.step(msg(from, 2, 3, granted.clone())).unwrap();
    }
    assert_eq!(node.role(), Role::Leader);
}
