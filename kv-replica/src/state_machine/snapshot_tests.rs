//! The snapshot format: round trips, damage of every kind refused with a
//! typed error, well-framed but inconsistent records, and random histories
//! restored midway.

use super::records::{RECORD_FRAME_BYTES, Record, write_record};
use super::tests::{apply, apply_as, cas, command, normal, put, small_machine};
use super::*;
use raft_core::Term;

#[test]
fn a_version_1_snapshot_without_addresses_is_still_read() {
    let mut machine = KvStateMachine::new();
    machine.apply_entry(&normal(
        1,
        &command(
            None,
            Op::Put {
                key: "k".into(),
                value: "v".into(),
            },
        ),
    ));
    let mut bytes = machine.snapshot_bytes();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(KvStateMachine::restore_from_bytes(&bytes).unwrap(), machine);
}

#[test]
fn snapshot_round_trip_restores_an_equal_machine_that_stays_equal() {
    let mut original = small_machine();
    let mut restored = KvStateMachine::restore_from_bytes(&original.snapshot_bytes()).unwrap();
    assert_eq!(restored, original);
    assert_eq!(restored.digest(), original.digest());
    assert_eq!(restored.dedup_limit(), 10);
    for machine in [&mut original, &mut restored] {
        apply_as(machine, Some(("c1", 2)), put("beta", "again")); // a retry
        apply_as(machine, Some(("c2", 8)), put("beta", "stale"));
        apply(machine, put("gamma", "4"));
    }
    assert_eq!(restored.digest(), original.digest());
    assert_eq!(restored.snapshot_bytes(), original.snapshot_bytes());
    assert_eq!(restored.applied_index(), 9);
}

#[test]
fn snapshot_of_an_empty_machine_round_trips() {
    let empty = KvStateMachine::new();
    let restored = KvStateMachine::restore_from_bytes(&empty.snapshot_bytes()).unwrap();
    assert_eq!(restored, empty);
}

#[test]
fn snapshot_is_read_from_a_stream_and_stops_at_its_trailer() {
    let machine = small_machine();
    let mut stream = machine.snapshot_bytes();
    stream.extend_from_slice(b"next");
    let mut reader = stream.as_slice();
    let restored = KvStateMachine::read_snapshot(&mut reader).unwrap();
    assert_eq!(restored, machine);
    assert_eq!(reader, b"next");
    assert!(matches!(
        KvStateMachine::restore_from_bytes(&stream),
        Err(SnapshotError::TrailingBytes { count: 4 })
    ));
}

#[test]
fn every_single_bit_flip_in_a_snapshot_gives_an_error() {
    let bytes = small_machine().snapshot_bytes();
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        let result = KvStateMachine::restore_from_bytes(&damaged);
        assert!(result.is_err(), "flipping bit {bit} went unnoticed");
    }
}

#[test]
fn truncation_at_every_offset_gives_a_truncated_error() {
    let bytes = small_machine().snapshot_bytes();
    for cut in 0..bytes.len() {
        match KvStateMachine::restore_from_bytes(&bytes[..cut]) {
            Err(SnapshotError::TruncatedHeader) => assert!(cut < 12),
            Err(SnapshotError::Truncated { .. }) => assert!(cut >= 12),
            other => panic!("cut at {cut}: expected a truncation error, got {other:?}"),
        }
    }
}

#[test]
fn a_damaged_header_is_reported_as_bad_magic_or_bad_version() {
    let bytes = small_machine().snapshot_bytes();
    let mut wrong_magic = bytes.clone();
    wrong_magic[0] = b'X';
    assert!(matches!(
        KvStateMachine::restore_from_bytes(&wrong_magic),
        Err(SnapshotError::BadMagic { found }) if found[0] == b'X'
    ));
    let mut wrong_version = bytes;
    wrong_version[8..12].copy_from_slice(&7u32.to_le_bytes());
    assert!(matches!(
        KvStateMachine::restore_from_bytes(&wrong_version),
        Err(SnapshotError::BadVersion {
            found: 7,
            supported: SNAPSHOT_VERSION
        })
    ));
}

#[test]
fn a_damaged_payload_is_reported_with_its_record_number() {
    let bytes = small_machine().snapshot_bytes();
    let meta_length = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    // The first byte of record 1's payload (the first key record).
    let offset = 12 + RECORD_FRAME_BYTES + meta_length + RECORD_FRAME_BYTES;
    let mut damaged = bytes;
    damaged[offset] ^= 0x40;
    assert!(matches!(
        KvStateMachine::restore_from_bytes(&damaged),
        Err(SnapshotError::CrcMismatch { record: 1, .. })
    ));
}

#[test]
fn a_huge_record_length_is_refused_without_allocating_it() {
    let mut bytes = SNAPSHOT_MAGIC.to_vec();
    bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        KvStateMachine::restore_from_bytes(&bytes),
        Err(SnapshotError::RecordTooLarge {
            record: 0,
            length: u32::MAX,
            max: MAX_SNAPSHOT_RECORD_BYTES
        })
    ));
    // Under the cap but far beyond the data: truncated, not allocated.
    let length = MAX_SNAPSHOT_RECORD_BYTES;
    bytes[12..16].copy_from_slice(&length.to_le_bytes());
    assert!(matches!(
        KvStateMachine::restore_from_bytes(&bytes),
        Err(SnapshotError::Truncated { record: 0 })
    ));
}

/// Frames `records` after a valid version 2 header, checksums and all.
pub(super) fn well_framed(records: &[Record]) -> Vec<u8> {
    well_framed_as(2, records)
}

pub(super) fn well_framed_as(version: u32, records: &[Record]) -> Vec<u8> {
    let mut bytes = SNAPSHOT_MAGIC.to_vec();
    bytes.extend_from_slice(&version.to_le_bytes());
    let mut buffer = Vec::new();
    for record in records {
        write_record(&mut bytes, &mut buffer, record).unwrap();
    }
    bytes
}

pub(super) fn meta(key_count: u64, dedup_count: u64) -> Record<'static> {
    Record::Meta {
        applied_index: 5,
        dedup_limit: 1,
        key_count,
        dedup_count,
    }
}

pub(super) fn key_record(key: &str, revision: u64) -> Record<'_> {
    Record::Key {
        key,
        value: "v",
        revision,
    }
}

#[test]
fn a_well_framed_snapshot_with_inconsistent_contents_is_refused() {
    let keys_out_of_order = well_framed(&[
        meta(2, 0),
        key_record("b", 1),
        key_record("a", 2),
        Record::Trailer { record_count: 3 },
    ]);
    assert!(matches!(
        KvStateMachine::restore_from_bytes(&keys_out_of_order),
        Err(SnapshotError::OutOfOrder { record: 2 })
    ));
    let revision_beyond_applied = well_framed(&[meta(1, 0), key_record("a", 6)]);
    assert!(matches!(
        KvStateMachine::restore_from_bytes(&revision_beyond_applied),
        Err(SnapshotError::IndexOutOfRange {
            record: 1,
            index: 6,
            applied: 5
        })
    ));
    let over_limit = well_framed(&[meta(0, 2)]);
    assert!(matches!(
        KvStateMachine::restore_from_bytes(&over_limit),
        Err(SnapshotError::DedupOverLimit { count: 2, limit: 1 })
    ));
    let missing_key = well_framed(&[meta(1, 0), Record::Trailer { record_count: 1 }]);
    assert!(matches!(
        KvStateMachine::restore_from_bytes(&missing_key),
        Err(SnapshotError::UnexpectedRecord {
            record: 1,
            expected: "key"
        })
    ));
    let wrong_count = well_framed(&[meta(0, 0), Record::Trailer { record_count: 7 }]);
    assert!(matches!(
        KvStateMachine::restore_from_bytes(&wrong_count),
        Err(SnapshotError::RecordCountMismatch {
            trailer: 7,
            actual: 1
        })
    ));
}

mod random_histories {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Step {
        Noop,
        Garbage,
        Write {
            client: Option<(String, u64)>,
            op: Op,
        },
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "ab", "b", "b/1", "c"]).prop_map(String::from)
    }

    fn value() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["", "x", "y", "zz"]).prop_map(String::from)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (key(), value()).prop_map(|(key, value)| Op::Put { key, value }),
            key().prop_map(|key| Op::Delete { key }),
            (key(), prop::option::of(value()), prop::option::of(value())).prop_map(
                |(key, expected, value)| Op::Cas {
                    key,
                    expected,
                    value
                }
            ),
            prop::collection::vec((key(), value()), 0..4)
                .prop_map(|entries| Op::MultiPut { entries }),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        let client = prop::option::of((0..5u8, 0..6u64))
            .prop_map(|client| client.map(|(id, seq)| (format!("c{id}"), seq)));
        prop_oneof![
            1 => Just(Step::Noop),
            1 => Just(Step::Garbage),
            10 => (client, op()).prop_map(|(client, op)| Step::Write { client, op }),
        ]
    }

    fn entry(index: u64, step: &Step) -> Entry {
        let (kind, data) = match step {
            Step::Noop => (EntryKind::Noop, bytes::Bytes::new()),
            Step::Garbage => (EntryKind::Normal, bytes::Bytes::from_static(&[9, 9, 9])),
            Step::Write { client, op } => {
                let client = client.as_ref().map(|(id, seq)| (id.as_str(), *seq));
                (EntryKind::Normal, command(client, op.clone()).encode())
            }
        };
        Entry {
            term: Term(1),
            index: LogIndex(index),
            kind,
            data,
        }
    }

    proptest! {
        #[test]
        fn a_replica_restored_from_a_snapshot_midway_ends_with_the_same_digest(
            steps in prop::collection::vec(step(), 0..60),
            split in 0usize..61,
        ) {
            let split = split.min(steps.len());
            let entries: Vec<Entry> = steps
                .iter()
                .enumerate()
                .map(|(position, step)| entry(position as u64 + 1, step))
                .collect();
            let mut straight = KvStateMachine::with_dedup_limit(3);
            let mut via_snapshot = KvStateMachine::with_dedup_limit(3);
            for entry in &entries[..split] {
                via_snapshot.apply_entry(entry);
            }
            via_snapshot =
                KvStateMachine::restore_from_bytes(&via_snapshot.snapshot_bytes()).unwrap();
            for entry in &entries[..split] {
                straight.apply_entry(entry);
            }
            prop_assert_eq!(straight.digest(), via_snapshot.digest());
            for entry in &entries[split..] {
                let left = straight.apply_entry(entry);
                let right = via_snapshot.apply_entry(entry);
                prop_assert_eq!(left, right);
            }
            prop_assert_eq!(straight.digest(), via_snapshot.digest());
            prop_assert_eq!(straight.snapshot_bytes(), via_snapshot.snapshot_bytes());
            prop_assert!(straight.dedup_len() <= 3);
        }
    }
}

/// The bytes below were written by the code before the state machine was
/// split into modules and its twin record enums merged into one `Record`:
/// the format on disk, address book included, must not move.
#[test]
fn a_snapshot_is_byte_for_byte_the_version_2_format() {
    const GOLDEN: &str = "524146544b56534d02000000050000003553919500050a03020a000000d5095f61\
        0105616c70686101310109000000146d499d0104626574610133050a0000005baeddee010567616d6d61\
        013405080000000655457102026331020503050c0000009436a9330202633209030200030101311a0000\
        00ffa5953004056e6f64653212687474703a2f2f3132372e302e302e313a32020000003b108b6c0307";
    let mut machine = KvStateMachine::with_dedup_limit(10);
    let entry = |index: u64, data: bytes::Bytes| Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data,
    };
    let write = |client: Option<(&str, u64)>, op: Op| {
        let mut command = command(client, op);
        command.request = Some(RequestId { node: 7, id: 9 });
        command.encode()
    };
    machine.apply_entry(&entry(1, write(Some(("c1", 1)), put("alpha", "1"))));
    machine.apply_entry(&entry(2, write(None, put("beta", "2"))));
    machine.apply_entry(&entry(
        3,
        write(Some(("c2", 9)), cas("alpha", Some("x"), None)),
    ));
    let address = ClusterCommand::SetAddress {
        name: "node2".into(),
        url: "http://127.0.0.1:2".into(),
    };
    machine.apply_entry(&entry(4, address.encode()));
    let multi_put = Op::MultiPut {
        entries: vec![("beta".into(), "3".into()), ("gamma".into(), "4".into())],
    };
    machine.apply_entry(&entry(5, write(Some(("c1", 2)), multi_put)));

    let bytes = machine.snapshot_bytes();
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(hex, GOLDEN);
    assert_eq!(KvStateMachine::restore_from_bytes(&bytes).unwrap(), machine);
    assert_eq!(machine.digest(), 0xf85d_1d7f_ff6e_5bd3);
}

/// A machine with more keys than `PARALLEL_RESTORE_KEYS` (1,000 in unit
/// tests): the map is built on a second thread while the records are read.
fn large_machine() -> KvStateMachine {
    let mut machine = KvStateMachine::new();
    for i in 0..3_000 {
        apply(
            &mut machine,
            put(&format!("key{i:05}"), &format!("value {i}")),
        );
    }
    machine
}

#[test]
fn a_large_snapshot_restores_an_equal_machine_on_two_threads() {
    let machine = large_machine();
    let restored = KvStateMachine::restore_from_bytes(&machine.snapshot_bytes()).unwrap();
    assert_eq!(restored, machine);
    assert_eq!(restored.digest(), machine.digest());
    assert_eq!(restored.live_bytes(), machine.live_bytes());
}

/// Damage among the keys of a large snapshot is refused with the same
/// typed errors as in a small one, and the second thread ends with it.
#[test]
fn damage_among_the_keys_of_a_large_snapshot_is_refused() {
    let bytes = large_machine().snapshot_bytes();
    let middle = bytes.len() / 2;
    let truncated = KvStateMachine::restore_from_bytes(&bytes[..middle]).unwrap_err();
    assert!(
        matches!(truncated, SnapshotError::Truncated { .. }),
        "{truncated}"
    );
    let mut flipped = bytes.clone();
    flipped[middle] ^= 0x40;
    let damaged = KvStateMachine::restore_from_bytes(&flipped).unwrap_err();
    assert!(
        matches!(
            damaged,
            SnapshotError::CrcMismatch { .. } | SnapshotError::RecordTooLarge { .. }
        ),
        "{damaged}"
    );
}
