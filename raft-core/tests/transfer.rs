//! Leadership transfer (Raft thesis, section 3.10), ported from etcd-io/raft
//! `raft_test.go` (`TestLeaderTransfer*`) and extended with issue 18,
//! section 2: a transfer completes after a snapshot catch-up, a transfer to
//! the leader itself cancels, a retry does not extend the timeout, and a
//! change that removes or demotes the target ends the transfer at once.
//! Setup as etcd's: three voters, pre-vote and check-quorum off, election
//! timeout 10 ticks (the transfer times out after `election_ticks_min`).

use bytes::Bytes;
use raft_core::harness::Cluster;
use raft_core::{
    Accepted, ConfChange, ConfChangeStep, Input, MessageBody, NodeId, Role, StepError,
};

fn cluster() -> Cluster {
    let mut c = Cluster::with_config(3, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
    });
    c.campaign(1);
    assert_eq!(c.node(1).role(), Role::Leader);
    c
}

fn transfer(c: &mut Cluster, from: u64, to: u64) -> Result<Accepted, StepError> {
    c.step(from, Input::TransferLeadership { to: NodeId(to) })
}

/// etcd's `checkLeaderTransferState`: `id` has `role`, knows `leader`, and
/// no transfer is pending on it.
fn check_transfer_state(c: &Cluster, id: u64, role: Role, leader: u64) {
    let n = c.node(id);
    assert_eq!(n.role(), role, "role of n{id}");
    assert_eq!(n.leader(), Some(NodeId(leader)), "leader known to n{id}");
    assert_eq!(n.lead_transferee(), None, "no transfer pending on n{id}");
}

fn ticks(c: &mut Cluster, n: u32) {
    for _ in 0..n {
        c.tick_all();
    }
}

fn proposal_accepted(c: &mut Cluster, id: u64) -> bool {
    matches!(c.propose(id, b"p"), Ok(Accepted::Appended { .. }))
}

#[test]
fn leader_transfer_to_up_to_date_node() {
    let mut c = cluster();
    transfer(&mut c, 1, 2).unwrap();
    c.settle();
    check_transfer_state(&c, 1, Role::Follower, 2);
    // After some log replication, transfer leadership back to 1.
    c.propose(2, b"x").unwrap();
    c.settle();
    transfer(&mut c, 2, 1).unwrap();
    c.settle();
    check_transfer_state(&c, 1, Role::Leader, 1);
}

#[test]
fn leader_transfer_with_check_quorum_skips_the_lease_of_the_voters() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    transfer(&mut c, 1, 2).unwrap();
    c.settle();
    check_transfer_state(&c, 1, Role::Follower, 2);
}

#[test]
fn leader_transfer_to_slow_follower() {
    let mut c = cluster();
    c.isolate(3);
    c.propose(1, b"x").unwrap();
    c.settle();
    c.heal();
    assert!(c.node(1).status().match_index[&NodeId(3)] < c.node(1).last_index());
    transfer(&mut c, 1, 3).unwrap();
    c.settle();
    check_transfer_state(&c, 1, Role::Follower, 3);
}

#[test]
fn leader_transfer_after_snapshot_completes_when_the_snapshot_is_acknowledged() {
    // Issue 18 A: the target catches up by snapshot and then only
    // heartbeats would flow; the snapshot answer must trigger TimeoutNow.
    let mut c = cluster();
    c.isolate(3);
    c.propose(1, b"x").unwrap();
    c.settle();
    c.compact(1);
    c.heal();
    transfer(&mut c, 1, 3).unwrap();
    assert_eq!(c.propose(1, b"y"), Err(StepError::TransferInProgress));
    c.settle();
    let trace = c.take_trace();
    assert!(
        trace.iter().any(|l| l.contains("n1->n3 Snapshot")),
        "node 3 caught up by snapshot: {trace:#?}"
    );
    check_transfer_state(&c, 1, Role::Follower, 3);
    assert_eq!(c.node(3).role(), Role::Leader);
}

#[test]
fn leader_transfer_whose_timeout_now_is_lost_is_repeated_on_a_heartbeat_response() {
    let mut c = cluster();
    transfer(&mut c, 1, 2).unwrap();
    c.drain_ready();
    let before = c.in_flight.len();
    c.in_flight.retain(|m| m.body != MessageBody::TimeoutNow);
    assert_eq!(c.in_flight.len(), before - 1, "the TimeoutNow is lost");
    c.settle();
    assert_eq!(c.node(1).lead_transferee(), Some(NodeId(2)));
    // The next heartbeat round shows node 2 caught up: TimeoutNow again.
    ticks(&mut c, 2);
    check_transfer_state(&c, 1, Role::Follower, 2);
}

#[test]
fn leader_transfer_to_self_is_a_no_op() {
    let mut c = cluster();
    transfer(&mut c, 1, 1).unwrap();
    c.settle();
    check_transfer_state(&c, 1, Role::Leader, 1);
}

#[test]
fn leader_transfer_to_self_cancels_a_pending_transfer() {
    // Issue 18 B (etcd's TestLeaderTransferBack): node 3 lags, the transfer
    // to it is pending; a transfer to node 1 itself ends it.
    let mut c = cluster();
    c.isolate(3);
    c.propose(1, b"x").unwrap();
    c.settle();
    transfer(&mut c, 1, 3).unwrap();
    assert_eq!(c.node(1).lead_transferee(), Some(NodeId(3)));
    assert_eq!(transfer(&mut c, 1, 1), Ok(Accepted::Done));
    check_transfer_state(&c, 1, Role::Leader, 1);
    assert!(proposal_accepted(&mut c, 1), "proposals are taken at once");
    // Once node 3 catches up it is not told to campaign.
    c.heal();
    c.take_trace();
    ticks(&mut c, 5);
    let trace = c.take_trace();
    assert!(
        !trace.iter().any(|l| l.contains("TimeoutNow")),
        "{trace:#?}"
    );
    check_transfer_state(&c, 1, Role::Leader, 1);
    assert_eq!(c.node(3).last_index(), c.node(1).last_index());
}

#[test]
fn leader_transfer_to_non_existing_node_is_refused() {
    let mut c = cluster();
    assert_eq!(transfer(&mut c, 1, 4), Err(StepError::NotAVoter(NodeId(4))));
    check_transfer_state(&c, 1, Role::Leader, 1);
}

#[test]
fn leader_transfer_times_out_after_an_election_timeout() {
    let mut c = cluster();
    c.isolate(3);
    transfer(&mut c, 1, 3).unwrap();
    assert_eq!(c.node(1).lead_transferee(), Some(NodeId(3)));
    let heartbeat = c.node(1).config().heartbeat_ticks;
    let election = c.node(1).config().election_ticks_min;
    ticks(&mut c, heartbeat);
    assert_eq!(c.node(1).lead_transferee(), Some(NodeId(3)));
    ticks(&mut c, election - heartbeat);
    check_transfer_state(&c, 1, Role::Leader, 1);
    assert!(proposal_accepted(&mut c, 1));
}

#[test]
fn leader_transfer_ignores_proposals_while_pending() {
    let mut c = cluster();
    c.isolate(3);
    transfer(&mut c, 1, 3).unwrap();
    let last = c.node(1).last_index();
    assert_eq!(c.propose(1, b"x"), Err(StepError::TransferInProgress));
    c.settle();
    assert_eq!(c.node(1).last_index(), last, "nothing was appended");
}

#[test]
fn leader_transfer_ends_when_a_higher_term_vote_arrives() {
    let mut c = cluster();
    c.isolate(3);
    transfer(&mut c, 1, 3).unwrap();
    c.campaign(2);
    check_transfer_state(&c, 1, Role::Follower, 2);
}

/// Issue 18 D: the change is proposed, then the transfer to its target is
/// asked for while the change is in flight (proposals are refused once a
/// transfer is pending). The change commits: the transfer ends at once.
fn transfer_ends_when_the_target_stops_being_a_voter(step: ConfChangeStep) {
    let mut c = cluster();
    c.isolate(3);
    c.step(1, Input::ProposeConfChange(ConfChange::Enter(vec![step])))
        .unwrap();
    transfer(&mut c, 1, 3).unwrap();
    assert_eq!(c.node(1).lead_transferee(), Some(NodeId(3)));
    // No tick passes: only the change commits (joint, then Leave).
    c.settle();
    assert!(!c.node(1).membership().is_voter(NodeId(3)));
    check_transfer_state(&c, 1, Role::Leader, 1);
    assert!(proposal_accepted(&mut c, 1), "proposals are taken at once");
}

#[test]
fn leader_transfer_ends_when_the_target_is_removed() {
    transfer_ends_when_the_target_stops_being_a_voter(ConfChangeStep::Remove(NodeId(3)));
}

#[test]
fn leader_transfer_ends_when_the_target_is_demoted() {
    transfer_ends_when_the_target_stops_being_a_voter(ConfChangeStep::AddLearner(NodeId(3)));
    let mut c = cluster();
    c.step(
        1,
        Input::ProposeConfChange(ConfChange::Enter(vec![ConfChangeStep::AddLearner(NodeId(
            3,
        ))])),
    )
    .unwrap();
    c.settle();
    assert_eq!(
        transfer(&mut c, 1, 3),
        Err(StepError::NotAVoter(NodeId(3))),
        "a learner cannot be the target"
    );
}

#[test]
fn leader_transfer_second_transfer_to_another_node_replaces_the_first() {
    let mut c = cluster();
    c.isolate(3);
    transfer(&mut c, 1, 3).unwrap();
    transfer(&mut c, 1, 2).unwrap();
    c.settle();
    check_transfer_state(&c, 1, Role::Follower, 2);
}

#[test]
fn leader_transfer_second_transfer_to_same_node_does_not_extend_the_timeout() {
    // Issue 18 C: the timeout counts from the first request.
    let mut c = cluster();
    c.isolate(3);
    transfer(&mut c, 1, 3).unwrap();
    let heartbeat = c.node(1).config().heartbeat_ticks;
    let election = c.node(1).config().election_ticks_min;
    ticks(&mut c, heartbeat);
    assert_eq!(transfer(&mut c, 1, 3), Ok(Accepted::Done));
    ticks(&mut c, election - heartbeat);
    check_transfer_state(&c, 1, Role::Leader, 1);
}

#[test]
fn a_client_retrying_a_transfer_to_an_unreachable_node_blocks_proposals_one_timeout_only() {
    // Issue 18 C as reported: retries every 5 ticks kept proposals refused
    // for 60 of 60 ticks. The transfer ends an election timeout after the
    // first request, whatever the retries in between.
    let mut c = cluster();
    c.isolate(3);
    let election = c.node(1).config().election_ticks_min;
    transfer(&mut c, 1, 3).unwrap();
    for t in 1..=election {
        c.tick_all();
        if t % 5 == 0 && c.node(1).lead_transferee().is_some() {
            transfer(&mut c, 1, 3).unwrap();
        }
    }
    check_transfer_state(&c, 1, Role::Leader, 1);
    c.propose(1, b"after").unwrap();
    c.settle();
    assert!(c.applied_data(2).contains(&Bytes::from_static(b"after")));
}
