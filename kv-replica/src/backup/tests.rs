//! The backup format: round trips, every truncation and every bit flip
//! refused by both readers, random mutations never panicking.

use super::*;
use crate::command::{ClientSeq, ClusterCommand, Command, Op};
use raft_core::{Entry, EntryKind, LogIndex, Term};

fn apply(machine: &mut KvStateMachine, client: Option<(&str, u64)>, op: Op) {
    let command = Command {
        request: None,
        client: client.map(|(id, seq)| ClientSeq {
            client_id: id.into(),
            seq,
        }),
        op,
    };
    apply_data(machine, command.encode());
}

fn apply_data(machine: &mut KvStateMachine, data: bytes::Bytes) {
    let index = machine.applied_index() + 1;
    machine.apply_entry(&Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data,
    });
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
    }
}

/// Keys, a dedup entry, an address and a lease with a key: every kind of
/// snapshot record.
fn machine() -> KvStateMachine {
    let mut m = KvStateMachine::new();
    apply(&mut m, None, put("alpha", "1"));
    apply(&mut m, Some(("client-a", 3)), put("beta", "2"));
    let address = ClusterCommand::SetAddress {
        name: "node1".into(),
        url: "http://127.0.0.1:1".into(),
    };
    apply_data(&mut m, address.encode());
    apply(&mut m, None, Op::LeaseGrant { ttl_ms: 5_000 });
    let lease = m.applied_index();
    let op = Op::PutWithLease {
        key: "leased".into(),
        value: "v".into(),
        lease,
    };
    apply(&mut m, None, op);
    apply(&mut m, None, put("gamma", "3"));
    m
}

fn backup_of(m: &KvStateMachine) -> Vec<u8> {
    let mut bytes = Vec::new();
    let info = write_backup(m, &mut bytes).unwrap();
    assert_eq!(info.total_bytes, bytes.len() as u64);
    bytes
}

/// Gives at most `step` bytes per read, to exercise the readers' buffering.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, into: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(into.len()).min(self.data.len());
        into[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn a_backup_round_trips_to_an_equal_machine_at_its_revision() {
    let original = machine();
    let bytes = backup_of(&original);
    let (info, restored) = read_backup(&mut bytes.as_slice()).unwrap();
    assert_eq!(restored, original);
    assert_eq!(info.revision, original.applied_index());
    assert_eq!(info.total_bytes, bytes.len() as u64);
    assert_eq!(restored.lease_of("leased"), original.lease_of("leased"));
    assert_eq!(restored.addresses(), original.addresses());
    for step in [1, 7, 20, 64 * 1024] {
        let checked = check_backup(&mut Trickle { data: &bytes, step }).unwrap();
        assert_eq!(checked, info, "read {step} bytes at a time");
        let (_, again) = read_backup(&mut Trickle { data: &bytes, step }).unwrap();
        assert_eq!(again, original);
    }
    // The body is the state machine's own snapshot, byte for byte.
    let body = &bytes[20..bytes.len() - 20];
    assert_eq!(body, original.snapshot_bytes().as_slice());
}

#[test]
fn an_empty_store_round_trips() {
    let empty = KvStateMachine::new();
    let bytes = backup_of(&empty);
    assert_eq!(check_backup(&mut bytes.as_slice()).unwrap().revision, 0);
    assert_eq!(read_backup(&mut bytes.as_slice()).unwrap().1, empty);
}

#[test]
fn every_truncation_is_refused_by_both_readers() {
    let bytes = backup_of(&machine());
    for len in 0..bytes.len() {
        let cut = &bytes[..len];
        assert!(
            check_backup(&mut &cut[..]).is_err(),
            "check accepted {len} of {} bytes",
            bytes.len()
        );
        assert!(
            read_backup(&mut &cut[..]).is_err(),
            "read accepted {len} of {} bytes",
            bytes.len()
        );
    }
    assert!(matches!(
        check_backup(&mut &bytes[..30]),
        Err(BackupError::TooShort { bytes: 30, .. })
    ));
    assert!(matches!(
        check_backup(&mut &bytes[..bytes.len() - 1]),
        Err(BackupError::MissingEnd)
    ));
}

#[test]
fn every_single_bit_flip_is_refused_by_both_readers() {
    let bytes = backup_of(&machine());
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert!(
            check_backup(&mut damaged.as_slice()).is_err(),
            "check missed a flip of bit {bit}"
        );
        assert!(
            read_backup(&mut damaged.as_slice()).is_err(),
            "read missed a flip of bit {bit}"
        );
    }
}

#[test]
fn bytes_after_the_footer_are_refused() {
    let mut bytes = backup_of(&machine());
    bytes.push(0);
    assert!(check_backup(&mut bytes.as_slice()).is_err());
    assert!(matches!(
        read_backup(&mut bytes.as_slice()),
        Err(BackupError::TrailingBytes { count: 1 })
    ));
}

#[test]
fn a_snapshot_file_or_another_version_is_named_as_such() {
    let snapshot = machine().snapshot_bytes();
    assert!(matches!(
        check_backup(&mut snapshot.as_slice()),
        Err(BackupError::BadMagic { .. })
    ));
    let mut bytes = backup_of(&machine());
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert!(matches!(
        check_backup(&mut bytes.as_slice()),
        Err(BackupError::BadVersion { found: 2, .. })
    ));
    assert!(matches!(
        read_backup(&mut bytes.as_slice()),
        Err(BackupError::BadVersion { found: 2, .. })
    ));
}

#[test]
fn a_header_naming_another_revision_is_refused_even_with_a_matching_checksum() {
    let m = machine();
    let mut bytes = backup_of(&m);
    bytes[12..20].copy_from_slice(&(m.applied_index() + 1).to_le_bytes());
    // Recompute the checksum, as a forger would.
    let crc_end = bytes.len() - 12;
    let crc = crc32c::crc32c(&bytes[..crc_end]);
    bytes[crc_end..crc_end + 4].copy_from_slice(&crc.to_le_bytes());
    assert!(check_backup(&mut bytes.as_slice()).is_ok());
    assert!(matches!(
        read_backup(&mut bytes.as_slice()),
        Err(BackupError::RevisionMismatch { .. })
    ));
}

#[test]
fn a_failing_reader_is_an_io_error() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    assert!(matches!(
        check_backup(&mut Failing),
        Err(BackupError::Io(_))
    ));
    assert!(matches!(read_backup(&mut Failing), Err(BackupError::Io(_))));
}

/// A fuzz-style sweep: seeded random mutations (overwrites, insertions,
/// deletions, truncations) never panic, and a changed file never passes.
#[test]
fn random_mutations_never_panic_and_never_pass() {
    let bytes = backup_of(&machine());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*: deterministic, no dependency.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for _ in 0..3_000 {
        let mut damaged = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % damaged.len().max(1) as u64) as usize;
            match next() % 4 {
                0 if !damaged.is_empty() => damaged[at] = next() as u8,
                1 => damaged.insert(at.min(damaged.len()), next() as u8),
                2 if !damaged.is_empty() => {
                    damaged.remove(at);
                }
                _ => damaged.truncate(at),
            }
        }
        let checked = check_backup(&mut damaged.as_slice());
        let read = read_backup(&mut damaged.as_slice());
        if damaged != bytes {
            assert!(checked.is_err() || read.is_err(), "a mutation passed both");
            assert!(read.is_err(), "a mutation decoded: {damaged:?}");
        }
    }
}
