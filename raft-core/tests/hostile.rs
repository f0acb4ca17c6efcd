//! Forged and corrupt peer messages: each is refused at the door of `step`
//! with a typed error and changes nothing. Each case used to panic the core
//! (or the driver behind it) or to corrupt its state.

use bytes::Bytes;
use raft_core::harness::Cluster;
use raft_core::{
    Entry, EntryKind, Input, LogIndex, Membership, Message, MessageBody, NodeId, SnapshotMeta,
    StepError, Term,
};

fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Input {
    Input::Message(Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body,
    })
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index: LogIndex(index),
        term: Term(term),
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"x"),
    }
}

fn append(prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> MessageBody {
    MessageBody::AppendEntries {
        prev_log_index: LogIndex(prev.0),
        prev_log_term: Term(prev.1),
        entries,
        leader_commit: LogIndex(commit),
    }
}

/// A 3-node cluster led by n1 with a few committed entries everywhere.
fn cluster() -> (Cluster, u64) {
    let mut c = Cluster::new(3);
    c.campaign(1);
    for i in 0..3u8 {
        c.propose(1, &[i]).unwrap();
    }
    c.settle();
    c.tick_all();
    let term = c.node(1).term().0;
    (c, term)
}

/// Steps `input` into node `id`, which must refuse it and stay as it was.
fn refused(c: &mut Cluster, id: u64, input: Input) -> StepError {
    let before = c.node(id).status();
    let err = c
        .step(id, input)
        .expect_err("a forged message must be refused");
    assert_eq!(
        c.node(id).status(),
        before,
        "a refused message changed state"
    );
    assert!(
        err.peer_message_kind().is_some(),
        "{err} has a metrics label"
    );
    // The cluster carries on.
    c.tick_all();
    err
}

#[test]
fn an_append_response_acknowledging_beyond_the_leaders_log_is_refused() {
    let (mut c, term) = cluster();
    let last = c.node(1).last_index().0;
    let forged = MessageBody::AppendEntriesResponse {
        success: true,
        match_index: LogIndex(last + 100),
        conflict_index: LogIndex(0),
        conflict_term: None,
        reject_index: LogIndex(0),
    };
    let err = refused(&mut c, 1, msg(2, 1, term, forged));
    assert!(
        matches!(err, StepError::AckBeyondLastIndex { index, .. } if index == LogIndex(last + 100))
    );
}

#[test]
fn a_rejection_hinting_beyond_the_leaders_log_is_refused() {
    let (mut c, term) = cluster();
    let last = c.node(1).last_index().0;
    let forged = MessageBody::AppendEntriesResponse {
        success: false,
        match_index: LogIndex(0),
        conflict_index: LogIndex(last + 50),
        conflict_term: None,
        reject_index: LogIndex(last),
    };
    let err = refused(&mut c, 1, msg(2, 1, term, forged));
    assert!(matches!(err, StepError::AckBeyondLastIndex { .. }));
}

#[test]
fn an_append_whose_entries_repeat_an_index_is_refused() {
    let (mut c, term) = cluster();
    let last = c.node(2).last_index().0;
    let t = term;
    let forged = append(
        (last, t),
        vec![entry(last + 1, t), entry(last + 1, t), entry(last + 1, t)],
        u64::MAX / 8,
    );
    let err = refused(&mut c, 2, msg(1, 2, term, forged));
    assert!(matches!(
        err,
        StepError::EntriesNotContiguous { position: 1, .. }
    ));
}

#[test]
fn an_append_with_a_gap_after_prev_log_index_is_refused() {
    let (mut c, term) = cluster();
    let last = c.node(2).last_index().0;
    let forged = append((last, term), vec![entry(last + 3, term)], 0);
    let err = refused(&mut c, 2, msg(1, 2, term, forged));
    assert_eq!(
        err,
        StepError::EntriesNotContiguous {
            position: 0,
            expected: LogIndex(last + 1),
            found: LogIndex(last + 3)
        }
    );
}

#[test]
fn an_append_contradicting_a_committed_entry_is_refused() {
    let (mut c, term) = cluster();
    let commit = c.node(2).commit_index().0;
    assert!(commit >= 2);
    // Rewrites the last committed entry with a newer term.
    let forged = append((commit - 1, 1), vec![entry(commit, term + 1)], commit);
    let err = refused(&mut c, 2, msg(1, 2, term + 1, forged));
    assert!(
        matches!(err, StepError::ConflictsWithCommitted { index, .. } if index == LogIndex(commit))
    );
}

#[test]
fn entries_whose_terms_go_down_or_exceed_the_senders_are_refused() {
    let (mut c, term) = cluster();
    let last = c.node(2).last_index().0;
    let down = append(
        (last, term),
        vec![entry(last + 1, term), entry(last + 2, 0)],
        0,
    );
    assert!(matches!(
        refused(&mut c, 2, msg(1, 2, term, down)),
        StepError::EntryTermsDecrease { .. }
    ));
    let ahead = append((last, term), vec![entry(last + 1, term + 5)], 0);
    assert!(matches!(
        refused(&mut c, 2, msg(1, 2, term, ahead)),
        StepError::LogTermAboveMessageTerm { .. }
    ));
}

#[test]
fn a_term_that_could_not_be_incremented_is_refused() {
    let (mut c, _) = cluster();
    for body in [
        MessageBody::Heartbeat {
            commit: LogIndex(0),
            read_round: 0,
        },
        MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: LogIndex(u64::MAX),
            last_log_term: Term(u64::MAX),
            transfer: true,
        },
        MessageBody::TimeoutNow,
    ] {
        let err = refused(&mut c, 2, msg(1, 2, u64::MAX, body));
        assert!(matches!(err, StepError::TermOutOfRange { .. }));
    }
    // The cluster keeps electing and committing.
    c.propose(1, b"after").unwrap();
    c.settle();
    assert!(c.applied_data(2).contains(&Bytes::from_static(b"after")));
}

#[test]
fn indexes_beyond_the_peer_limit_are_refused() {
    let (mut c, term) = cluster();
    let forged = MessageBody::Heartbeat {
        commit: LogIndex(u64::MAX),
        read_round: 0,
    };
    assert!(matches!(
        refused(&mut c, 2, msg(1, 2, term, forged)),
        StepError::IndexOutOfRange { .. }
    ));
    let forged = append((u64::MAX, term), vec![], 0);
    assert!(matches!(
        refused(&mut c, 2, msg(1, 2, term, forged)),
        StepError::IndexOutOfRange { .. }
    ));
}

fn snapshot(offset: u64, len: u64, total: u64, data: &'static [u8], term: u64) -> MessageBody {
    MessageBody::InstallSnapshot {
        meta: SnapshotMeta {
            index: LogIndex(100),
            term: Term(term),
            membership: Membership::new([NodeId(1), NodeId(2), NodeId(3)]),
        },
        offset,
        len,
        total_bytes: total,
        data: Bytes::from_static(data),
    }
}

#[test]
fn a_snapshot_chunk_whose_data_disagrees_with_its_metadata_is_refused() {
    let (mut c, term) = cluster();
    assert!(matches!(
        refused(
            &mut c,
            2,
            msg(1, 2, term, snapshot(0, 10, 3, b"0123456789", term))
        ),
        StepError::SnapshotChunkOutOfRange { .. }
    ));
    assert!(matches!(
        refused(
            &mut c,
            2,
            msg(1, 2, term, snapshot(0, 4, 10, b"0123456789", term))
        ),
        StepError::SnapshotChunkLength {
            len: 4,
            carried: 10
        }
    ));
    assert!(matches!(
        refused(
            &mut c,
            2,
            msg(1, 2, term, snapshot(u64::MAX, 2, 10, b"01", term))
        ),
        StepError::SnapshotChunkOutOfRange { .. }
    ));
    let mut no_voters = snapshot(0, 2, 2, b"01", term);
    if let MessageBody::InstallSnapshot { meta, .. } = &mut no_voters {
        meta.membership = Membership::default();
    }
    assert!(matches!(
        refused(&mut c, 2, msg(1, 2, term, no_voters)),
        StepError::SnapshotWithoutVoters { .. }
    ));
}

#[test]
fn snapshot_responses_beyond_the_leaders_log_or_snapshot_are_refused() {
    let (mut c, term) = cluster();
    let forged = MessageBody::InstallSnapshotResponse {
        snapshot_index: LogIndex(0),
        received: 0,
        last_index: Some(LogIndex(10_000)),
    };
    assert!(matches!(
        refused(&mut c, 1, msg(2, 1, term, forged)),
        StepError::AckBeyondLastIndex { .. }
    ));
    let forged = MessageBody::InstallSnapshotResponse {
        snapshot_index: LogIndex(0),
        received: 5,
        last_index: None,
    };
    assert!(matches!(
        refused(&mut c, 1, msg(2, 1, term, forged)),
        StepError::SnapshotReceivedBeyondTotal { .. }
    ));
}

#[test]
fn a_heartbeat_answer_for_a_round_never_sent_is_refused() {
    let (mut c, term) = cluster();
    let forged = MessageBody::HeartbeatResponse {
        read_round: u64::MAX,
    };
    assert!(matches!(
        refused(&mut c, 1, msg(2, 1, term, forged)),
        StepError::ReadRoundAhead { .. }
    ));
}

#[test]
fn a_message_claiming_to_come_from_the_receiver_is_refused() {
    let (mut c, term) = cluster();
    assert!(matches!(
        refused(&mut c, 2, msg(2, 2, term, MessageBody::TimeoutNow)),
        StepError::FromSelf { .. }
    ));
}

/// n2 has staged the first chunk of a 10-byte snapshot from n1.
fn follower_with_a_staged_chunk() -> (Cluster, u64) {
    let (mut c, term) = cluster();
    c.step(2, msg(1, 2, term, snapshot(0, 4, 10, b"0123", term)))
        .unwrap();
    c.in_flight.clear();
    (c, term)
}

/// The chunks n2 stages and the resume point it answers with.
fn resume_point(c: &mut Cluster) -> (usize, Option<u64>) {
    let node = c.nodes.get_mut(&NodeId(2)).unwrap();
    let (mut chunks, mut messages) = (0, Vec::new());
    for _ in 0..3 {
        let rd = node.ready();
        chunks += rd.snapshot_chunks.len();
        messages.extend(rd.messages);
        node.step(Input::Persisted { ready: rd.number }).unwrap();
    }
    let received = messages.iter().find_map(|m| match m.body {
        MessageBody::InstallSnapshotResponse { received, .. } => Some(received),
        _ => None,
    });
    (chunks, received)
}

#[test]
fn a_snapshot_transfer_resumes_only_with_the_same_bytes() {
    // The same sender continues where it left off.
    let (mut c, term) = follower_with_a_staged_chunk();
    resume_point(&mut c);
    c.step(2, msg(1, 2, term, snapshot(4, 3, 10, b"456", term)))
        .unwrap();
    assert_eq!(resume_point(&mut c), (1, Some(7)));

    // Same metadata, another total size: another file; start over.
    let (mut c, term) = follower_with_a_staged_chunk();
    resume_point(&mut c);
    c.step(2, msg(1, 2, term, snapshot(4, 3, 12, b"456", term)))
        .unwrap();
    assert_eq!(resume_point(&mut c), (0, Some(0)));

    // Same metadata and size from a new leader in a later term: its file
    // may encode the same state differently; start over.
    let (mut c, term) = follower_with_a_staged_chunk();
    resume_point(&mut c);
    c.step(2, msg(3, 2, term + 1, snapshot(4, 3, 10, b"456", term)))
        .unwrap();
    assert_eq!(resume_point(&mut c), (0, Some(0)));
}
