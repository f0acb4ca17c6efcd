//! Readable message traces of canonical scenarios, reviewed like code when
//! they change (`cargo insta review`). One line per delivered message.

use bytes::Bytes;
use raft_core::harness::Cluster;
use raft_core::{Input, NodeId};

fn transcript(c: &mut Cluster) -> String {
    c.take_trace().join("\n")
}

#[test]
fn three_node_election() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    insta::assert_snapshot!(transcript(&mut c));
}

#[test]
fn replication_of_three_proposals() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.take_trace();
    for p in ["a", "b", "c"] {
        c.propose(1, p.as_bytes()).unwrap();
    }
    c.settle();
    c.tick_all();
    c.tick_all();
    insta::assert_snapshot!(transcript(&mut c));
}

#[test]
fn repair_of_a_diverged_follower() {
    // Node 1 leads term 1 and appends two entries only it holds; node 2
    // then leads term 2 and overwrites them on node 1 when it returns.
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.isolate(1);
    c.propose(1, b"lost-1").unwrap();
    c.propose(1, b"lost-2").unwrap();
    c.settle();
    c.heal();
    c.isolate(1);
    for _ in 0..12 {
        c.tick_all();
    }
    c.step(2, Input::Campaign).unwrap();
    c.settle();
    c.propose(2, b"kept").unwrap();
    c.settle();
    c.heal();
    c.take_trace();
    for _ in 0..3 {
        c.tick_all();
    }
    assert_eq!(
        c.applied_data(1),
        vec![Bytes::from_static(b"kept")],
        "the diverged tail was replaced"
    );
    insta::assert_snapshot!(transcript(&mut c));
}

#[test]
fn read_index_round() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.propose(1, b"w").unwrap();
    c.settle();
    c.take_trace();
    c.step(
        1,
        Input::ReadIndex {
            context: 42,
            lease: false,
        },
    )
    .unwrap();
    c.step(
        3,
        Input::ReadIndex {
            context: 43,
            lease: false,
        },
    )
    .unwrap();
    c.settle();
    let reads = format!(
        "n1 reads: {:?}\nn3 reads: {:?}",
        c.read_states[&NodeId(1)],
        c.read_states[&NodeId(3)]
    );
    insta::assert_snapshot!(format!("{}\n{reads}", transcript(&mut c)));
}

#[test]
fn leadership_transfer() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.propose(1, b"w").unwrap();
    c.settle();
    c.take_trace();
    c.step(1, Input::TransferLeadership { to: NodeId(2) })
        .unwrap();
    c.settle();
    insta::assert_snapshot!(transcript(&mut c));
}

#[test]
fn snapshot_install_round() {
    // Node 3 misses entries that node 1 compacts; it catches up by a
    // snapshot sent in chunks of 4 KiB.
    let mut c = Cluster::new(3);
    c.snapshot_size = 10_000;
    c.with_chunk_bytes(4096);
    c.campaign(1);
    c.isolate(3);
    for i in 0..5u8 {
        c.propose(1, &[i]).unwrap();
    }
    c.settle();
    c.tick_all();
    c.compact(1);
    c.heal();
    c.take_trace();
    for _ in 0..2 {
        c.tick_all();
    }
    let trace: Vec<String> = c
        .take_trace()
        .into_iter()
        .filter(|l| l.contains("n3"))
        .collect();
    insta::assert_snapshot!(trace.join("\n"));
}
