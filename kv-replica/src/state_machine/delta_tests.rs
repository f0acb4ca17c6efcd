//! Delta snapshots: a chain of deltas on a whole snapshot restores exactly
//! the state it was taken from, in random histories with leases and dedup;
//! and damaged or misplaced deltas are refused with typed errors.

use super::records::{DELTA_MAGIC, Record, write_record};
use super::tests::{apply, apply_as, put};
use super::*;

/// A fixed pseudo-random sequence (xorshift64), no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random op over a few keys, leases among them.
fn random_op(rng: &mut Rng, leases: &[u64]) -> Op {
    let key = format!("k{}", rng.below(12));
    let value = format!("v{}", rng.below(5));
    match rng.below(10) {
        0..=2 => Op::Put { key, value },
        3 => Op::Delete { key },
        4 => Op::Cas {
            key,
            expected: (rng.below(2) == 0).then(|| format!("v{}", rng.below(5))),
            value: (rng.below(3) != 0).then_some(value),
        },
        5 => Op::MultiPut {
            entries: (0..rng.below(4))
                .map(|i| (format!("k{}", rng.below(12) + i), format!("m{i}")))
                .collect(),
        },
        6 => Op::LeaseGrant {
            ttl_ms: lease::MIN_TTL_MS,
        },
        7 if !leases.is_empty() => Op::PutWithLease {
            key,
            value,
            lease: leases[rng.below(leases.len() as u64) as usize],
        },
        8 if !leases.is_empty() => Op::LeaseRevoke {
            id: leases[rng.below(leases.len() as u64) as usize],
        },
        _ => Op::Put { key, value },
    }
}

/// Applies a random history to a live state, taking a whole snapshot at
/// its first snapshot point and deltas at the later ones (a whole one
/// again whenever the changed keys were not tracked), and returns the live
/// state with the chain that ends at its last point.
fn history(seed: u64, steps: usize) -> (KvStateMachine, Vec<u8>, Vec<Vec<u8>>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut live = KvStateMachine::with_dedup_limit(3);
    let mut leases = Vec::new();
    let mut whole: Option<Vec<u8>> = None;
    let mut deltas = Vec::new();
    let mut base = 0;
    for _ in 0..steps {
        let op = random_op(&mut rng, &leases);
        let client = (rng.below(2) == 0).then(|| (rng.below(5), rng.below(8)));
        let client_id = client.map(|(id, _)| format!("c{id}"));
        let result = apply_as(
            &mut live,
            client_id.as_deref().zip(client.map(|(_, seq)| seq)),
            op,
        );
        if let OpResult::LeaseGranted { id, .. } = result {
            leases.push(id);
        }
        if rng.below(8) == 0 {
            let changed = live.take_changed_keys();
            match (changed, &whole) {
                (Some(changed), Some(_)) if base < live.applied_index() => {
                    let mut bytes = Vec::new();
                    live.write_delta_snapshot(base, changed, &mut bytes)
                        .unwrap();
                    deltas.push(bytes);
                }
                (_, Some(_)) if base == live.applied_index() => {}
                _ => {
                    whole = Some(live.snapshot_bytes());
                    deltas.clear();
                }
            }
            base = live.applied_index();
        }
    }
    // The chain ends at the live state.
    let changed = live.take_changed_keys();
    match (changed, whole) {
        (Some(changed), Some(whole)) if base < live.applied_index() => {
            let mut bytes = Vec::new();
            live.write_delta_snapshot(base, changed, &mut bytes)
                .unwrap();
            deltas.push(bytes);
            (live, whole, deltas)
        }
        (_, Some(whole)) if base == live.applied_index() => (live, whole, deltas),
        _ => {
            let whole = live.snapshot_bytes();
            (live, whole, Vec::new())
        }
    }
}

#[test]
fn a_chain_of_deltas_restores_exactly_the_state_it_was_taken_from() {
    let mut chains_with_deltas = 0;
    for seed in 0..400 {
        let (live, whole, deltas) = history(seed, 120);
        chains_with_deltas += usize::from(!deltas.is_empty());
        let mut readers: Vec<&[u8]> = deltas.iter().map(Vec::as_slice).collect();
        let restored = KvStateMachine::read_snapshot_chain(&mut whole.as_slice(), &mut readers)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let mut readers: Vec<&[u8]> = deltas.iter().map(Vec::as_slice).collect();
        let merged = KvStateMachine::restore_merged(&mut whole.as_slice(), &mut readers)
            .unwrap_or_else(|e| panic!("seed {seed}, merged: {e}"));
        assert_eq!(merged, live, "seed {seed}, merged");
        assert_eq!(
            merged.live_bytes(),
            live.live_bytes(),
            "seed {seed}, merged"
        );
        assert_eq!(
            merged.snapshot_bytes(),
            live.snapshot_bytes(),
            "seed {seed}, merged"
        );
        assert!(
            readers.iter().all(|rest| rest.is_empty()),
            "seed {seed}, merged"
        );
        assert_eq!(restored, live, "seed {seed}");
        assert_eq!(restored.digest(), live.digest(), "seed {seed}");
        assert_eq!(restored.live_bytes(), live.live_bytes(), "seed {seed}");
        assert_eq!(
            restored.snapshot_bytes(),
            live.snapshot_bytes(),
            "seed {seed}"
        );
        assert!(readers.iter().all(|rest| rest.is_empty()), "seed {seed}");
    }
    assert!(chains_with_deltas > 300, "{chains_with_deltas}");
}

#[test]
fn a_restored_chain_goes_on_as_the_live_state_does() {
    let (mut live, whole, deltas) = history(7, 150);
    let mut readers: Vec<&[u8]> = deltas.iter().map(Vec::as_slice).collect();
    let mut restored =
        KvStateMachine::read_snapshot_chain(&mut whole.as_slice(), &mut readers).unwrap();
    for state in [&mut live, &mut restored] {
        apply_as(state, Some(("c1", 100)), put("k1", "after"));
        apply(state, Op::Delete { key: "k2".into() });
    }
    assert_eq!(restored.digest(), live.digest());
    // And a delta taken by the restored state goes on top of the chain.
    let base = whole_state_at(&whole, &deltas);
    let mut delta = Vec::new();
    let changed = restored.take_changed_keys().unwrap();
    assert_eq!(
        changed,
        KeyList::from(["k1", "k2"]),
        "a restore tracks from the restored state"
    );
    restored
        .write_delta_snapshot(base.applied_index(), changed, &mut delta)
        .unwrap();
    let mut again = base;
    again.apply_delta_snapshot(&mut delta.as_slice()).unwrap();
    assert_eq!(again, live);
}

fn whole_state_at(whole: &[u8], deltas: &[Vec<u8>]) -> KvStateMachine {
    let mut readers: Vec<&[u8]> = deltas.iter().map(Vec::as_slice).collect();
    KvStateMachine::read_snapshot_chain(&mut { whole }, &mut readers).unwrap()
}

/// A state of a few keys with a snapshot, then a delta of two changes.
fn base_and_delta() -> (KvStateMachine, Vec<u8>, KvStateMachine) {
    let mut state = KvStateMachine::new();
    apply(&mut state, put("a", "1"));
    apply(&mut state, put("b", "2"));
    apply(&mut state, put("c", "3"));
    let base = state.clone();
    state.take_changed_keys();
    apply(&mut state, put("a", "one"));
    apply(&mut state, Op::Delete { key: "b".into() });
    let mut delta = Vec::new();
    let changed = state.take_changed_keys().unwrap();
    state
        .write_delta_snapshot(base.applied_index(), changed, &mut delta)
        .unwrap();
    (base, delta, state)
}

#[test]
fn a_delta_on_another_base_is_refused() {
    let (base, delta, _) = base_and_delta();
    let mut older = KvStateMachine::new();
    apply(&mut older, put("a", "1"));
    assert!(matches!(
        older.apply_delta_snapshot(&mut delta.as_slice()),
        Err(SnapshotError::DeltaBaseMismatch {
            expected: 1,
            found: 3
        })
    ));
    let mut right = base;
    right.apply_delta_snapshot(&mut delta.as_slice()).unwrap();
    assert_eq!(
        right.get("a").map(|(v, _)| v.to_string()),
        Some("one".into())
    );
    assert_eq!(right.get("b"), None);
}

#[test]
fn a_delta_can_only_be_written_forward() {
    let (base, _, _) = base_and_delta();
    let mut out = Vec::new();
    let error = base
        .write_delta_snapshot(base.applied_index(), KeyList::default(), &mut out)
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn a_whole_snapshot_is_not_taken_for_a_delta_nor_a_delta_for_a_whole_one() {
    let (mut base, delta, state) = base_and_delta();
    assert!(matches!(
        base.apply_delta_snapshot(&mut state.snapshot_bytes().as_slice()),
        Err(SnapshotError::BadMagic { .. })
    ));
    assert!(matches!(
        KvStateMachine::restore_from_bytes(&delta),
        Err(SnapshotError::BadMagic { found }) if found == DELTA_MAGIC
    ));
}

#[test]
fn every_truncation_and_every_flipped_bit_of_a_delta_is_refused() {
    let (base, delta, state) = base_and_delta();
    for len in 0..delta.len() {
        let mut target = base.clone();
        assert!(
            target.apply_delta_snapshot(&mut &delta[..len]).is_err(),
            "truncated to {len}"
        );
    }
    for byte in 0..delta.len() {
        for bit in 0..8 {
            let mut damaged = delta.clone();
            damaged[byte] ^= 1 << bit;
            let mut target = base.clone();
            // A flipped bit is refused, or (in a length or the version)
            // caught otherwise: it never yields a state other than the true one.
            if target.apply_delta_snapshot(&mut damaged.as_slice()).is_ok() {
                assert_eq!(target, state, "byte {byte} bit {bit}");
            }
        }
    }
}

/// A delta written by hand from `records`, framed and checksummed.
fn handmade_delta(records: &[Record]) -> Vec<u8> {
    let mut bytes = DELTA_MAGIC.to_vec();
    bytes.extend_from_slice(&super::records::DELTA_VERSION.to_le_bytes());
    let mut buffer = Vec::new();
    for record in records {
        write_record(&mut bytes, &mut buffer, record).unwrap();
    }
    bytes
}

fn meta(applied_index: u64, key_count: u64) -> Record<'static> {
    Record::Meta {
        applied_index,
        dedup_limit: DEFAULT_DEDUP_LIMIT as u64,
        key_count,
        dedup_count: 0,
    }
}

#[test]
fn well_framed_but_inconsistent_deltas_are_refused() {
    let (base, _, _) = base_and_delta();
    let cases: Vec<(Vec<Record>, &str)> = vec![
        (
            vec![
                meta(5, 3),
                Record::DeltaBase {
                    base_index: 3,
                    changed_count: 2,
                },
                Record::Key {
                    key: "b",
                    value: "x",
                    revision: 4,
                },
                Record::Key {
                    key: "a",
                    value: "x",
                    revision: 4,
                },
                Record::Trailer { record_count: 4 },
            ],
            "keys out of order",
        ),
        (
            vec![
                meta(5, 3),
                Record::DeltaBase {
                    base_index: 3,
                    changed_count: 1,
                },
                Record::Key {
                    key: "d",
                    value: "x",
                    revision: 9,
                },
                Record::Trailer { record_count: 3 },
            ],
            "a revision beyond the applied index",
        ),
        (
            vec![
                meta(5, 7),
                Record::DeltaBase {
                    base_index: 3,
                    changed_count: 1,
                },
                Record::Tombstone { key: "a" },
                Record::Trailer { record_count: 3 },
            ],
            "a key count that does not match",
        ),
        (
            vec![
                meta(3, 3),
                Record::DeltaBase {
                    base_index: 3,
                    changed_count: 0,
                },
                Record::Trailer { record_count: 2 },
            ],
            "a delta that does not move forward",
        ),
        (
            vec![
                meta(5, 3),
                Record::DeltaBase {
                    base_index: 3,
                    changed_count: 0,
                },
                Record::Trailer { record_count: 7 },
            ],
            "a trailer that miscounts",
        ),
        (
            vec![
                Record::DeltaBase {
                    base_index: 3,
                    changed_count: 0,
                },
                meta(5, 3),
                Record::Trailer { record_count: 2 },
            ],
            "the base before the meta",
        ),
    ];
    for (records, what) in cases {
        let mut target = base.clone();
        let result = target.apply_delta_snapshot(&mut handmade_delta(&records).as_slice());
        assert!(result.is_err(), "{what}: accepted");
    }
    // Records in the right shape are taken.
    let good = handmade_delta(&[
        meta(5, 3),
        Record::DeltaBase {
            base_index: 3,
            changed_count: 2,
        },
        Record::Tombstone { key: "a" },
        Record::Key {
            key: "d",
            value: "x",
            revision: 5,
        },
        Record::Trailer { record_count: 4 },
    ]);
    let mut target = base;
    target
        .apply_delta_snapshot(&mut good.as_slice())
        .expect("a well-formed delta");
    assert_eq!(target.applied_index(), 5);
    assert_eq!(target.get("a"), None);
    assert_eq!(target.get("d"), Some(("x", 5)));
}

#[test]
fn tracking_stops_once_the_writes_outnumber_the_keys_and_resumes_after_a_take() {
    let mut state = KvStateMachine::new();
    let keys = 2 * super::delta::MIN_TRACKED as u64;
    // From nothing, every write is a new key: past the floor, the writes
    // reach the key count at once.
    for i in 0..keys {
        apply(&mut state, put(&format!("k{i:06}"), "v"));
    }
    assert_eq!(state.take_changed_keys(), None);
    // On top of them, as many new keys again: fewer writes than keys.
    for i in keys..2 * keys {
        apply(&mut state, put(&format!("k{i:06}"), "v"));
    }
    assert_eq!(
        state.take_changed_keys().map(|l| l.len()),
        Some(keys as usize)
    );
    // Then every key twice over: more writes than keys.
    for round in 0..2 {
        for i in 0..2 * keys {
            apply(&mut state, put(&format!("k{i:06}"), &format!("{round}")));
        }
    }
    assert_eq!(state.take_changed_keys(), None);
    apply(&mut state, put("k000001", "w"));
    apply(&mut state, put("k000001", "x"));
    assert_eq!(
        state.take_changed_keys(),
        Some(KeyList::from(["k000001", "k000001"])),
        "each write, in order"
    );
    // A capture tracks nothing.
    let mut capture = state.clone();
    apply(&mut capture, put("k000002", "w"));
    assert_eq!(capture.take_changed_keys(), None);
}

#[test]
fn a_merged_restore_refuses_every_truncation_and_a_misplaced_delta() {
    let (base, delta, state) = base_and_delta();
    let whole = base.snapshot_bytes();
    let merged = |whole: &[u8], deltas: &[&[u8]]| {
        let mut readers = deltas.to_vec();
        KvStateMachine::restore_merged(&mut { whole }, &mut readers)
    };
    assert_eq!(merged(&whole, &[&delta]).unwrap(), state);
    for len in 0..delta.len() {
        assert!(
            merged(&whole, &[&delta[..len]]).is_err(),
            "delta cut to {len}"
        );
    }
    for len in 0..whole.len() {
        assert!(
            merged(&whole[..len], &[&delta]).is_err(),
            "whole cut to {len}"
        );
    }
    // The delta twice: the second does not go on top of the first.
    assert!(matches!(
        merged(&whole, &[&delta, &delta]),
        Err(SnapshotError::DeltaBaseMismatch { .. })
    ));
    // A delta on the wrong whole snapshot.
    assert!(matches!(
        merged(&state.snapshot_bytes(), &[&delta]),
        Err(SnapshotError::DeltaBaseMismatch { .. })
    ));
    // A flipped bit anywhere never yields another state.
    for byte in 0..delta.len() {
        for bit in 0..8 {
            let mut damaged = delta.clone();
            damaged[byte] ^= 1 << bit;
            if let Ok(restored) = merged(&whole, &[&damaged]) {
                assert_eq!(restored, state, "byte {byte} bit {bit}");
            }
        }
    }
}

#[test]
fn a_merged_restore_of_many_keys_builds_the_map_on_a_second_thread_alike() {
    // Over `RESTORE_BATCH` keys, in several batches, with deltas that add,
    // overwrite and delete across the range.
    let mut live = KvStateMachine::new();
    let mops = |range: std::ops::Range<u32>, tag: &str| Op::MultiPut {
        entries: range
            .map(|i| (format!("k{i:06}"), format!("{tag}{i}")))
            .collect(),
    };
    apply(&mut live, mops(0..9000, "a"));
    let whole = live.snapshot_bytes();
    live.take_changed_keys();
    let mut deltas = Vec::new();
    for round in 0..3u32 {
        let base = live.applied_index();
        apply(&mut live, mops(round * 1000..round * 1000 + 500, "b"));
        apply(
            &mut live,
            mops(9000 + round * 10..9000 + round * 10 + 5, "c"),
        );
        for i in (round * 7..3000).step_by(97) {
            apply(
                &mut live,
                Op::Delete {
                    key: format!("k{i:06}"),
                },
            );
        }
        let mut bytes = Vec::new();
        let changed = live.take_changed_keys().unwrap();
        live.write_delta_snapshot(base, changed, &mut bytes)
            .unwrap();
        deltas.push(bytes);
    }
    let mut readers: Vec<&[u8]> = deltas.iter().map(Vec::as_slice).collect();
    let merged = KvStateMachine::restore_merged(&mut whole.as_slice(), &mut readers).unwrap();
    assert_eq!(merged, live);
    assert_eq!(merged.snapshot_bytes(), live.snapshot_bytes());
}

#[test]
fn a_key_list_grows_in_chunks_and_sorts_each_key_once() {
    let mut list = KeyList::default();
    let keys = 2 * super::delta::CHUNK_KEYS_FOR_TESTS + 7;
    for i in (0..keys).rev() {
        list.push(Key::from(format!("k{:07}", i % 1000)));
    }
    assert_eq!(list.len(), keys);
    let sorted = list.into_sorted();
    assert_eq!(sorted.len(), 1000);
    assert!(sorted.windows(2).all(|w| w[0] < w[1]));
}
