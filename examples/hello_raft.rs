//! The sans-IO hello world: three raft-core nodes driven by hand in one
//! process, printing the message flow of an election and a replicated write.
//!
//! Run: `cargo run --example hello_raft`
//!
//! Walk-through:
//! 1. Each node is a plain value: `Node::new(config, initial_state)`. It has
//!    no clock, so we tick it; no network, so we carry its messages; no disk,
//!    so we "persist" by saying each `Ready` is durable at once. The steps
//!    of a `Ready` are a `ReadyHandler`; raft-core's `handle_ready` runs them
//!    in order, as it does for kv-node and the simulator.
//! 2. Node 1 is told to campaign. It asks for pre-votes (a probe that does
//!    not bump the term), then for real votes, and becomes leader.
//! 3. The leader appends a no-op of its term, replicates it, and commits it
//!    once a majority acknowledged it durably.
//! 4. We propose `greeting=hello` on a *follower*: it forwards the proposal
//!    to the leader, which replicates and commits it; every node applies it.

use bytes::Bytes;
use raft_core::{
    ChunkRequest, Config, Durability, Entry, InitialState, Input, Membership, Message, Node,
    NodeId, ReadyHandler, SoftState,
};
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;

fn main() {
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let mut nodes: BTreeMap<NodeId, Node> = ids
        .iter()
        .map(|&id| {
            let initial = InitialState {
                bootstrap: Membership::new(ids),
                ..InitialState::default()
            };
            (
                id,
                Node::new(Config::new(id), initial).expect("valid config"),
            )
        })
        .collect();
    let mut network: VecDeque<Message> = VecDeque::new();

    println!("== election: n1 campaigns ==");
    nodes
        .get_mut(&NodeId(1))
        .unwrap()
        .step(Input::Campaign)
        .unwrap();
    run_until_quiet(&mut nodes, &mut network);

    println!("\n== write through follower n2 ==");
    let accepted = nodes
        .get_mut(&NodeId(2))
        .unwrap()
        .step(Input::Propose {
            data: Bytes::from_static(b"greeting=hello"),
        })
        .unwrap();
    println!("n2: proposal {accepted:?}");
    run_until_quiet(&mut nodes, &mut network);

    // One heartbeat round tells every follower the final commit index.
    for node in nodes.values_mut() {
        for _ in 0..2 {
            node.step(Input::Tick).unwrap();
        }
    }
    run_until_quiet(&mut nodes, &mut network);

    println!("\n== result ==");
    for node in nodes.values() {
        let s = node.status();
        println!(
            "{}: {:?} term={} commit={} applied={}",
            s.id, s.role, s.term, s.commit_index, s.applied_index
        );
    }
}

/// One node's view of one `Ready`: raft-core's loop (`Node::handle_ready`)
/// calls these steps in the order of the contract and sends the
/// `Persisted` and `Applied` acknowledgements itself.
struct Printer<'a> {
    id: NodeId,
    network: &'a mut VecDeque<Message>,
}

impl ReadyHandler for Printer<'_> {
    type Error = Infallible;

    fn soft_state(&mut self, soft: &SoftState) {
        println!(
            "{}: now {:?} of term {} (leader {:?})",
            self.id, soft.role, soft.term, soft.leader
        );
    }

    fn send(&mut self, message: Message) -> Result<(), Infallible> {
        self.network.push_back(message);
        Ok(())
    }

    fn snapshot_chunk(&mut self, chunk: ChunkRequest) -> Result<Bytes, Infallible> {
        unreachable!("no snapshot is taken here, so none is sent (asked for {chunk:?})")
    }

    /// Persist (here: nothing to write), durable at once.
    fn persist(&mut self, _ready: u64, _must_sync: bool) -> Result<Durability, Infallible> {
        Ok(Durability::Now)
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), Infallible> {
        for entry in &entries {
            println!(
                "{}: apply #{} {:?} {:?}",
                self.id,
                entry.index,
                entry.kind,
                String::from_utf8_lossy(&entry.data)
            );
        }
        Ok(())
    }
}

/// Drains every node's `Ready` and delivers messages until nothing moves.
fn run_until_quiet(nodes: &mut BTreeMap<NodeId, Node>, network: &mut VecDeque<Message>) {
    for _ in 0..10_000 {
        for (&id, node) in nodes.iter_mut() {
            let mut printer = Printer { id, network };
            while let Ok(true) = node.handle_ready(&mut printer) {}
        }
        let Some(message) = network.pop_front() else {
            return;
        };
        println!("   {}", message.describe());
        let to = message.to;
        nodes
            .get_mut(&to)
            .unwrap()
            .step(Input::Message(message))
            .unwrap();
    }
    panic!("the cluster did not go quiet");
}
