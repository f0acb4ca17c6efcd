//! Leases in the state machine: grant, attach, detach, revoke and expire
//! (keys deleted at one revision), unknown leases refused with nothing
//! applied, deduplication, snapshots and the digest.

use super::tests::{apply, apply_as, put};
use super::*;
use crate::command::{Txn, TxnOp, TxnOpResult};

fn grant(machine: &mut KvStateMachine, ttl_ms: u64) -> u64 {
    match apply(machine, Op::LeaseGrant { ttl_ms }) {
        OpResult::LeaseGranted { id, ttl_ms: t } => {
            assert_eq!(t, ttl_ms);
            id
        }
        other => panic!("grant answered {other:?}"),
    }
}

fn leased(key: &str, value: &str, lease: u64) -> Op {
    Op::PutWithLease {
        key: key.into(),
        value: value.into(),
        lease,
    }
}

fn keys_of(machine: &KvStateMachine, id: u64) -> Vec<String> {
    let (_, keys) = machine.lease(id).expect("the lease exists");
    keys.iter().map(|k| k.to_string()).collect()
}

#[test]
fn a_grant_gets_the_index_of_its_entry_as_id() {
    let mut machine = KvStateMachine::new();
    apply(&mut machine, put("x", "1"));
    let id = grant(&mut machine, 5_000);
    assert_eq!(id, 2);
    assert_eq!(machine.lease(2), Some((5_000, vec![])));
    assert_eq!(machine.leases().collect::<Vec<_>>(), vec![(2, 5_000)]);
}

#[test]
fn a_put_with_a_lease_attaches_and_a_plain_put_or_delete_detaches() {
    let mut machine = KvStateMachine::new();
    let id = grant(&mut machine, 5_000);
    let result = apply(&mut machine, leased("a", "1", id));
    assert_eq!(
        result,
        OpResult::Put {
            revision: 2,
            prev: None
        }
    );
    apply(&mut machine, leased("b", "1", id));
    assert_eq!(keys_of(&machine, id), ["a", "b"]);
    assert_eq!(machine.lease_of("a"), Some(id));
    apply(&mut machine, put("a", "2"));
    assert_eq!(keys_of(&machine, id), ["b"]);
    assert_eq!(machine.lease_of("a"), None);
    apply(&mut machine, Op::Delete { key: "b".into() });
    assert_eq!(keys_of(&machine, id), Vec::<String>::new());
    // Moving a key from one lease to another.
    let other = grant(&mut machine, 9_000);
    apply(&mut machine, leased("c", "1", id));
    apply(&mut machine, leased("c", "2", other));
    assert_eq!(keys_of(&machine, id), Vec::<String>::new());
    assert_eq!(keys_of(&machine, other), ["c"]);
}

#[test]
fn revoking_deletes_every_attached_key_at_the_revoke_revision() {
    let mut machine = KvStateMachine::new();
    let id = grant(&mut machine, 5_000);
    apply(&mut machine, leased("a", "1", id));
    apply(&mut machine, leased("b", "1", id));
    apply(&mut machine, leased("c", "1", id));
    apply(&mut machine, put("c", "detached"));
    apply(&mut machine, put("d", "unleased"));
    let result = apply(&mut machine, Op::LeaseRevoke { id });
    assert_eq!(
        result,
        OpResult::LeaseRevoked {
            revision: 7,
            deleted: 2
        }
    );
    assert_eq!(machine.get("a"), None);
    assert_eq!(machine.get("b"), None);
    assert_eq!(machine.get("c"), Some(("detached", 5)));
    assert_eq!(machine.get("d"), Some(("unleased", 6)));
    assert_eq!(machine.lease(id), None);
    assert_eq!(machine.lease_count(), 0);
    // Revoking again finds nothing.
    let again = apply(&mut machine, Op::LeaseRevoke { id });
    assert_eq!(again, OpResult::LeaseNotFound { lease: id });
}

#[test]
fn an_expire_entry_deletes_like_a_revoke_and_a_second_one_is_a_no_op() {
    let mut machine = KvStateMachine::new();
    let id = grant(&mut machine, 1_000);
    apply(&mut machine, leased("a", "1", id));
    let result = apply(&mut machine, Op::LeaseExpire { id });
    assert_eq!(
        result,
        OpResult::LeaseRevoked {
            revision: 3,
            deleted: 1
        }
    );
    assert!(machine.is_empty());
    let data_before = machine.data.clone();
    let again = apply(&mut machine, Op::LeaseExpire { id });
    assert_eq!(again, OpResult::LeaseNotFound { lease: id });
    assert_eq!(machine.data, data_before);
}

#[test]
fn a_put_or_txn_naming_an_unknown_lease_applies_nothing() {
    let mut machine = KvStateMachine::new();
    apply(&mut machine, put("a", "1"));
    let id = grant(&mut machine, 1_000);
    apply(&mut machine, Op::LeaseRevoke { id });
    let data_before = machine.data.clone();
    assert_eq!(
        apply(&mut machine, leased("a", "2", id)),
        OpResult::LeaseNotFound { lease: id }
    );
    assert_eq!(
        apply(&mut machine, leased("b", "2", 999)),
        OpResult::LeaseNotFound { lease: 999 }
    );
    let txn = Txn {
        compare: vec![],
        success: vec![
            TxnOp::Put {
                key: "a".into(),
                value: "3".into(),
            },
            TxnOp::PutWithLease {
                key: "b".into(),
                value: "3".into(),
                lease: 999,
            },
        ],
        failure: vec![],
    };
    assert_eq!(
        apply(&mut machine, Op::Txn(txn)),
        OpResult::LeaseNotFound { lease: 999 }
    );
    assert_eq!(machine.data, data_before);
}

#[test]
fn a_txn_put_with_a_lease_attaches_the_key() {
    let mut machine = KvStateMachine::new();
    let id = grant(&mut machine, 1_000);
    let txn = Txn {
        compare: vec![],
        success: vec![TxnOp::PutWithLease {
            key: "a".into(),
            value: "1".into(),
            lease: id,
        }],
        failure: vec![],
    };
    let result = apply(&mut machine, Op::Txn(txn));
    assert_eq!(
        result,
        OpResult::Txn {
            succeeded: true,
            revision: 2,
            results: vec![TxnOpResult::Prev(None)]
        }
    );
    assert_eq!(keys_of(&machine, id), ["a"]);
}

#[test]
fn lease_writes_are_deduplicated_like_every_write() {
    let mut machine = KvStateMachine::new();
    let first = apply_as(
        &mut machine,
        Some(("c", 1)),
        Op::LeaseGrant { ttl_ms: 2_000 },
    );
    let retry = apply_as(
        &mut machine,
        Some(("c", 1)),
        Op::LeaseGrant { ttl_ms: 2_000 },
    );
    assert_eq!(first, retry);
    assert_eq!(machine.lease_count(), 1);
    let id = first.revision().unwrap();
    apply_as(&mut machine, Some(("c", 2)), leased("a", "1", id));
    let revoke = apply_as(&mut machine, Some(("c", 3)), Op::LeaseRevoke { id });
    let retried = apply_as(&mut machine, Some(("c", 3)), Op::LeaseRevoke { id });
    assert_eq!(revoke, retried);
    assert!(matches!(revoke, OpResult::LeaseRevoked { deleted: 1, .. }));
}

fn machine_with_leases() -> KvStateMachine {
    let mut machine = KvStateMachine::with_dedup_limit(10);
    let first = grant(&mut machine, 3_000);
    let second = grant(&mut machine, 60_000);
    let _empty = grant(&mut machine, 1_000);
    apply(&mut machine, leased("b", "1", first));
    apply(&mut machine, leased("a", "1", first));
    apply(&mut machine, leased("c", "1", second));
    apply(&mut machine, put("d", "1"));
    apply_as(&mut machine, Some(("c", 1)), leased("zz", "1", 999));
    machine
}

#[test]
fn a_snapshot_round_trip_keeps_leases_and_their_keys() {
    let machine = machine_with_leases();
    let bytes = machine.snapshot_bytes();
    assert_eq!(&bytes[8..12], &SNAPSHOT_VERSION.to_le_bytes());
    let mut restored = KvStateMachine::restore_from_bytes(&bytes).unwrap();
    assert_eq!(restored, machine);
    assert_eq!(restored.digest(), machine.digest());
    assert_eq!(keys_of(&restored, 1), ["a", "b"]);
    // The restored machine goes on the same way.
    let mut original = machine.clone();
    for m in [&mut original, &mut restored] {
        apply(m, Op::LeaseRevoke { id: 1 });
    }
    assert_eq!(original, restored);
    assert_eq!(original.get("a"), None);
}

#[test]
fn a_snapshot_without_leases_is_still_the_version_2_format() {
    let mut machine = KvStateMachine::new();
    let id = grant(&mut machine, 3_000);
    apply(&mut machine, Op::LeaseRevoke { id });
    apply(&mut machine, put("a", "1"));
    let bytes = machine.snapshot_bytes();
    assert_eq!(&bytes[8..12], &2u32.to_le_bytes());
    assert_eq!(KvStateMachine::restore_from_bytes(&bytes).unwrap(), machine);
}

#[test]
fn every_truncation_of_a_snapshot_with_leases_is_refused() {
    let bytes = machine_with_leases().snapshot_bytes();
    for cut in 0..bytes.len() {
        assert!(
            KvStateMachine::restore_from_bytes(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn the_digest_covers_leases_and_their_keys() {
    let base = machine_with_leases();
    let mut detached = base.clone();
    apply(&mut detached, put("a", "1"));
    let mut plain = base.clone();
    apply(&mut plain, leased("a", "1", 1));
    // Same data, one key attached or not.
    assert_eq!(detached.data.len(), plain.data.len());
    assert_ne!(detached.digest(), plain.digest());
}

#[test]
fn a_well_framed_snapshot_with_inconsistent_leases_is_refused() {
    use super::records::Record;
    use super::snapshot_tests::{key_record, meta, well_framed, well_framed_as};
    let lease = |id| Record::Lease { id, ttl_ms: 1_000 };
    let attach = |lease, key| Record::LeaseKey { lease, key };
    let trailer = |record_count| Record::Trailer { record_count };
    let good = [
        meta(1, 0),
        key_record("a", 1),
        lease(2),
        attach(2, "a"),
        trailer(4),
    ];
    let machine = KvStateMachine::restore_from_bytes(&well_framed_as(3, &good)).unwrap();
    assert_eq!(machine.lease_of("a"), Some(2));
    // A TTL outside the contract's range (which the lease clock could not
    // count) is refused as such.
    for ttl_ms in [0, MAX_TTL_MS + 1, u64::MAX] {
        let records = [
            meta(1, 0),
            key_record("a", 1),
            Record::Lease { id: 2, ttl_ms },
            trailer(3),
        ];
        assert!(
            matches!(
                KvStateMachine::restore_from_bytes(&well_framed_as(3, &records)),
                Err(SnapshotError::BadLeaseTtl { record: 2, lease: 2, ttl_ms: t }) if t == ttl_ms
            ),
            "ttl {ttl_ms}"
        );
    }
    // Lease records in a version 2 snapshot.
    assert!(matches!(
        KvStateMachine::restore_from_bytes(&well_framed(&good)),
        Err(SnapshotError::UnexpectedRecord { record: 2, .. })
    ));
    let cases: Vec<(Vec<Record>, &str)> = vec![
        (vec![meta(0, 0), trailer(1)], "version 3 without a lease"),
        (
            vec![meta(0, 0), lease(9), trailer(2)],
            "lease beyond the applied index",
        ),
        (vec![meta(0, 0), lease(0), trailer(2)], "lease 0"),
        (
            vec![meta(0, 0), lease(3), lease(2), trailer(3)],
            "leases out of order",
        ),
        (
            vec![meta(0, 0), lease(2), attach(2, "a"), trailer(3)],
            "absent key",
        ),
        (
            vec![
                meta(1, 0),
                key_record("a", 1),
                lease(2),
                attach(3, "a"),
                trailer(4),
            ],
            "unknown lease",
        ),
        (
            vec![
                meta(1, 0),
                key_record("a", 1),
                lease(2),
                lease(3),
                attach(2, "a"),
                attach(3, "a"),
                trailer(6),
            ],
            "a key attached twice",
        ),
        (
            vec![
                meta(2, 0),
                key_record("a", 1),
                key_record("b", 1),
                lease(2),
                attach(2, "b"),
                attach(2, "a"),
                trailer(6),
            ],
            "keys out of order",
        ),
        (
            vec![
                meta(1, 0),
                key_record("a", 1),
                lease(2),
                attach(2, "a"),
                lease(3),
                trailer(5),
            ],
            "a lease after lease keys",
        ),
    ];
    for (records, case) in cases {
        let bytes = well_framed_as(3, &records);
        assert!(
            KvStateMachine::restore_from_bytes(&bytes).is_err(),
            "{case}"
        );
    }
}

#[test]
fn a_grant_entry_with_a_ttl_outside_the_range_is_clamped_and_its_snapshot_restores() {
    let mut machine = KvStateMachine::default();
    for (asked, granted) in [(0, MIN_TTL_MS), (u64::MAX, MAX_TTL_MS)] {
        match apply(&mut machine, Op::LeaseGrant { ttl_ms: asked }) {
            OpResult::LeaseGranted { ttl_ms, .. } => assert_eq!(ttl_ms, granted),
            other => panic!("{other:?}"),
        }
    }
    let restored = KvStateMachine::restore_from_bytes(&machine.snapshot_bytes()).unwrap();
    assert_eq!(restored.digest(), machine.digest());
}
