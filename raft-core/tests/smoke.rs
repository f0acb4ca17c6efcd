use raft_core::harness::Cluster;
use raft_core::{Accepted, Input, NodeId, Role};

#[test]
fn three_nodes_elect_a_leader_and_replicate_proposals() {
    let mut c = Cluster::new(3);
    let leader = c.elect(100).expect("a leader is elected");
    for i in 0..10u8 {
        let r = c.propose(leader.0, &[i]).unwrap();
        assert!(matches!(r, Accepted::Appended { .. }));
    }
    c.settle();
    for _ in 0..5 {
        c.tick_all();
    }
    for id in 1..=3 {
        assert_eq!(c.applied_data(id).len(), 10, "node {id}");
    }
    let follower = (1..=3).find(|&i| NodeId(i) != leader).unwrap();
    assert!(matches!(
        c.propose(follower, b"x"),
        Ok(Accepted::Forwarded { .. })
    ));
    c.settle();
    c.tick_all();
    for id in 1..=3 {
        assert_eq!(c.applied_data(id).len(), 11, "node {id}");
    }
    c.step(
        leader.0,
        Input::ReadIndex {
            context: 7,
            lease: false,
        },
    )
    .unwrap();
    c.settle();
    assert_eq!(c.read_states[&leader].len(), 1);
    assert_eq!(c.node(leader.0).role(), Role::Leader);
}
