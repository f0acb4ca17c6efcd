//! The one Ready loop (`Node::handle_ready`): the order of the steps, the
//! acknowledgements it sends, a persist stage that acknowledges later, and
//! which rounds must end with an fsync.

use bytes::Bytes;
use raft_core::{
    ChunkRequest, Config, Durability, Entry, EntryKind, HardState, InitialState, Input, LogIndex,
    Membership, Message, MessageBody, Node, NodeId, ReadyHandler, Term,
};

/// Records each step the loop calls, in order.
struct Recorder {
    steps: Vec<String>,
    durability: Durability,
    sent: Vec<Message>,
}

impl Recorder {
    fn new(durability: Durability) -> Recorder {
        Recorder {
            steps: Vec::new(),
            durability,
            sent: Vec::new(),
        }
    }
}

impl ReadyHandler for Recorder {
    type Error = String;

    fn send(&mut self, message: Message) -> Result<(), String> {
        self.steps.push(format!("send {}", message.body.name()));
        self.sent.push(message);
        Ok(())
    }

    fn snapshot_chunk(&mut self, _: ChunkRequest) -> Result<Bytes, String> {
        Err("no snapshot stored".into())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), String> {
        self.steps.push(format!("append {}", entries.len()));
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), String> {
        self.steps
            .push(format!("hard state commit {}", hard_state.commit));
        Ok(())
    }

    fn persist(&mut self, ready: u64, must_sync: bool) -> Result<Durability, String> {
        self.steps
            .push(format!("persist ready {ready} sync {must_sync}"));
        Ok(self.durability)
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        self.steps.push(format!("apply {}", entries.len()));
        Ok(())
    }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index: LogIndex(index),
        term: Term(term),
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"x"),
    }
}

/// Node 1 of three, a follower at term 1 with an empty log.
fn follower() -> Node {
    let mut config = Config::new(NodeId(1));
    config.check_quorum = false;
    Node::new(
        config,
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
    .unwrap()
}

fn append_from_leader(prev: u64, entries: Vec<Entry>, commit: u64) -> Input {
    Input::Message(Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(1),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(prev),
            prev_log_term: Term(if prev == 0 { 0 } else { 1 }),
            entries,
            leader_commit: LogIndex(commit),
        },
    })
}

fn drain(node: &mut Node, handler: &mut Recorder) {
    for _ in 0..100 {
        if !node.handle_ready(handler).unwrap() {
            return;
        }
    }
    panic!("the node kept producing readies");
}

#[test]
fn a_follower_round_writes_then_syncs_then_acknowledges_then_applies() {
    let mut node = follower();
    node.step(append_from_leader(0, vec![entry(1, 1), entry(2, 1)], 0))
        .unwrap();
    let mut recorder = Recorder::new(Durability::Now);
    drain(&mut node, &mut recorder);
    // The append's acknowledgement depends on the write: the core holds it
    // until the loop steps `Persisted`, so it leaves in the next round.
    assert_eq!(
        recorder.steps,
        ["append 2", "persist ready 1 sync true", "send AppendResp"]
    );

    // The leader commits both: a round that moves only the commit index
    // needs no fsync, the entries are applied after the write, and the
    // acknowledgement waits for `Persisted` like every follower answer.
    recorder.steps.clear();
    node.step(append_from_leader(2, vec![], 2)).unwrap();
    drain(&mut node, &mut recorder);
    assert_eq!(
        recorder.steps,
        [
            "hard state commit 2",
            "persist ready 3 sync false",
            "apply 2",
            "send AppendResp"
        ]
    );
    assert_eq!(node.applied_index(), LogIndex(2));
}

#[test]
fn a_persist_stage_that_acknowledges_later_holds_the_acknowledgement_until_it_does() {
    let mut node = follower();
    node.step(append_from_leader(0, vec![entry(1, 1)], 0))
        .unwrap();
    let mut recorder = Recorder::new(Durability::Later);
    drain(&mut node, &mut recorder);
    assert_eq!(recorder.steps, ["append 1", "persist ready 1 sync true"]);
    assert!(
        recorder.sent.is_empty(),
        "no acknowledgement before the write is durable"
    );

    node.step(Input::Persisted { ready: 1 }).unwrap();
    drain(&mut node, &mut recorder);
    let acks: Vec<&Message> = recorder
        .sent
        .iter()
        .filter(|m| matches!(m.body, MessageBody::AppendEntriesResponse { .. }))
        .collect();
    assert_eq!(
        acks.len(),
        1,
        "acknowledged once durable: {:?}",
        recorder.sent
    );
}

#[test]
fn a_granted_vote_must_be_synced() {
    let mut node = follower();
    let mut recorder = Recorder::new(Durability::Now);
    // The bootstrap configuration is written first.
    drain(&mut node, &mut recorder);
    recorder.steps.clear();
    node.step(Input::Message(Message {
        from: NodeId(3),
        to: NodeId(1),
        term: Term(2),
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            transfer: false,
        },
    }))
    .unwrap();
    drain(&mut node, &mut recorder);
    assert_eq!(
        recorder.steps,
        [
            "hard state commit 0",
            "persist ready 2 sync true",
            "send VoteResp"
        ]
    );
}

#[test]
fn a_handler_error_stops_the_round_where_it_happened() {
    struct FailingDisk;
    impl ReadyHandler for FailingDisk {
        type Error = &'static str;
        fn send(&mut self, _: Message) -> Result<(), &'static str> {
            Ok(())
        }
        fn snapshot_chunk(&mut self, _: ChunkRequest) -> Result<Bytes, &'static str> {
            Err("none")
        }
        fn append(&mut self, _: &[Entry]) -> Result<(), &'static str> {
            Err("disk full")
        }
        fn persist(&mut self, _: u64, _: bool) -> Result<Durability, &'static str> {
            panic!("persist after a failed append")
        }
    }
    let mut node = follower();
    node.step(append_from_leader(0, vec![entry(1, 1)], 0))
        .unwrap();
    assert_eq!(node.handle_ready(&mut FailingDisk), Err("disk full"));
    assert_eq!(node.applied_index(), LogIndex(0));
}
