//! Fuzzing WAL recovery (`Storage::open`) through the public storage API.
//!
//! Each case writes a real WAL of random batches (entries of random sizes,
//! hard states, overwritten suffixes, small segments so that it rolls
//! over), syncs it, then damages a copy and reopens it. The unit of damage
//! is the synced batch (WAL format 2, `storage/batch.rs`):
//!
//! - a byte flipped or a length inflated in any batch but the last (an
//!   acknowledged one): the log cut before that batch, with a warning naming
//!   that segment and that batch's offset, and the node in repair mode
//!   (`damaged_up_to_term`); or `StorageError::HardStateLost` naming them
//!   if no hard state can be read after the damage;
//! - the last batch damaged or cut short: a torn-tail warning and the log
//!   as it was at the sync before, never an error;
//! - garbage or zeros after the last batch: a warning and the whole log;
//! - any other damage (cuts anywhere, random bytes anywhere, whole random
//!   segment files, well-framed batches with hostile contents): an error,
//!   or the whole log, or a warned prefix; never a panic, a hang or an
//!   allocation that an on-disk length could inflate.
//!
//! Run longer with `FUZZ_CASES=N` (FUZZING.md).

mod fuzz_harness;

use bytes::Bytes;
use fuzz_harness::{Cost, assert_bounded, fuzz, within};
use kv_node::storage::{Storage, StorageError, StorageOptions};
use proptest::prelude::*;
use raft_core::{Entry, EntryKind, HardState, LogIndex, NodeId, Term};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Generous for a loaded 2-core machine: a WAL here is a few KiB.
const DEADLINE: Duration = Duration::from_secs(20);
/// The framing limit documented in `storage/segment.rs` (`MAX_BODY_BYTES`).
const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024 + 64 * 1024;

#[derive(Clone, Debug)]
enum Step {
    /// Appends entries of these sizes, then commits `commit_percent` of the
    /// uncommitted ones.
    Append {
        sizes: Vec<usize>,
        new_term: bool,
        commit_percent: u8,
    },
    /// A new leader overwrites up to `back` uncommitted entries.
    Overwrite {
        back: u8,
        sizes: Vec<usize>,
        commit_percent: u8,
    },
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0usize..48, 2 => 48usize..400, 1 => 400usize..3000]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (prop::collection::vec(size(), 1..6), any::<bool>(), 0u8..=100).prop_map(
            |(sizes, new_term, commit_percent)| Step::Append { sizes, new_term, commit_percent }
        ),
        1 => (1u8..6, prop::collection::vec(size(), 1..4), 0u8..=100).prop_map(
            |(back, sizes, commit_percent)| Step::Overwrite { back, sizes, commit_percent }
        ),
    ]
}

#[derive(Clone, Debug)]
struct Plan {
    steps: Vec<Step>,
    segment_size_bytes: u64,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        prop::collection::vec(step(), 1..10),
        prop_oneof![Just(200u64), 200u64..3000, Just(1 << 20)],
    )
        .prop_map(|(steps, segment_size_bytes)| Plan {
            steps,
            segment_size_bytes,
        })
}

fn options(segment_size_bytes: u64) -> StorageOptions {
    StorageOptions {
        segment_size_bytes,
        preallocate: false,
        ..StorageOptions::default()
    }
}

/// The block size batches are aligned and padded to.
const BLOCK: u64 = 4096;
const BATCH_HEADER: u64 = 24;

/// One synced batch as it lies on disk.
#[derive(Clone, Debug)]
struct BatchAt {
    /// The segment's file name.
    segment: String,
    start: u64,
    /// The end of its header and body; padding follows up to the block.
    end: u64,
    /// Whether it holds entry records (a roll's opening batch does not).
    has_entries: bool,
}

/// A WAL written and synced through `Storage`, with what it must recover to.
struct Written {
    dir: tempfile::TempDir,
    entries: Vec<Entry>,
    /// The log at every sync, oldest first: a torn write may take the log
    /// back to any of them (a cut inside a truncate record brings back the
    /// entries it overwrote, as the crash it imitates would).
    history: Vec<Vec<Entry>>,
    hard_state: HardState,
    segment_size_bytes: u64,
    /// Every batch of every segment, in replay order.
    records: Vec<BatchAt>,
}

fn entry(index: u64, term: u64, size: usize) -> Entry {
    let data: Vec<u8> = (0..size)
        .map(|i| (index as usize * 31 + i * 7) as u8)
        .collect();
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind: if size.is_multiple_of(5) {
            EntryKind::Noop
        } else {
            EntryKind::Normal
        },
        data: Bytes::from(data),
    }
}

fn write_wal(plan: &Plan) -> Written {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, recovered) =
        Storage::open(dir.path(), options(plan.segment_size_bytes)).unwrap();
    assert!(recovered.entries.is_empty());
    let mut entries: Vec<Entry> = Vec::new();
    let (mut term, mut commit) = (1u64, 0u64);
    let mut hard_state = recovered.hard_state;
    let mut history = vec![Vec::new()];
    for step in &plan.steps {
        let last = entries.len() as u64;
        let (first, sizes, percent) = match step {
            Step::Append {
                sizes,
                new_term,
                commit_percent,
            } => {
                term += u64::from(*new_term);
                (last + 1, sizes, *commit_percent)
            }
            Step::Overwrite {
                back,
                sizes,
                commit_percent,
            } => {
                term += 1;
                let back = u64::from(*back).min(last - commit);
                (last + 1 - back, sizes, *commit_percent)
            }
        };
        entries.truncate(first as usize - 1);
        let batch: Vec<Entry> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| entry(first + i as u64, term, size))
            .collect();
        storage.append(&batch).unwrap();
        entries.extend(batch);
        let last = entries.len() as u64;
        commit += (last - commit) * u64::from(percent) / 100;
        hard_state = HardState {
            term: Term(term),
            vote: Some(NodeId(1)),
            commit: LogIndex(commit),
        };
        storage.set_hard_state(&hard_state).unwrap();
        storage.sync().unwrap();
        history.push(entries.clone());
    }
    drop(storage);
    let records = scan_records(&dir.path().join("wal"));
    Written {
        dir,
        entries,
        history,
        hard_state,
        segment_size_bytes: plan.segment_size_bytes,
        records,
    }
}

/// Walks the segment header block and the batch framing of every segment.
fn scan_records(wal: &Path) -> Vec<BatchAt> {
    // Segments only: a `.spare` (a compacted segment kept for reuse)
    // holds nothing of the log.
    let mut names: Vec<String> = fs::read_dir(wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".wal"))
        .collect();
    names.sort();
    let mut batches = Vec::new();
    for name in names {
        let bytes = fs::read(wal.join(&name)).unwrap();
        assert_eq!(&bytes[..8], b"RKVWAL\0\0", "{name} has a segment header");
        let mut at = BLOCK as usize;
        while at < bytes.len() {
            assert_eq!(&bytes[at..at + 4], b"RKVB", "{name}: a batch at {at}");
            let len = u32::from_le_bytes(bytes[at + 12..at + 16].try_into().unwrap()) as usize;
            let end = at + BATCH_HEADER as usize + len;
            assert!(end <= bytes.len(), "a freshly synced WAL is well framed");
            // Records inside: [len u32][crc u32][kind u8][payload].
            let mut record = at + BATCH_HEADER as usize;
            let mut has_entries = false;
            while record < end {
                let record_len =
                    u32::from_le_bytes(bytes[record..record + 4].try_into().unwrap()) as usize;
                has_entries |= bytes[record + 8] == 1;
                record += 8 + record_len;
            }
            batches.push(BatchAt {
                segment: name.clone(),
                start: at as u64,
                end: end as u64,
                has_entries,
            });
            at = end.div_ceil(BLOCK as usize) * BLOCK as usize;
        }
        assert_eq!(at, bytes.len(), "{name} ends on a block boundary");
    }
    batches
}

/// A copy of the data directory (without its lock file) to damage.
fn copy_of(written: &Written) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for sub in ["wal", "snapshots"] {
        let from = written.dir.path().join(sub);
        let to = copy.path().join(sub);
        fs::create_dir_all(&to).unwrap();
        for file in fs::read_dir(&from).unwrap() {
            let file = file.unwrap();
            fs::copy(file.path(), to.join(file.file_name())).unwrap();
        }
    }
    copy
}

/// What reopening a directory gave, with owned values only.
#[derive(Debug)]
enum Reopened {
    Ok {
        entries: Vec<Entry>,
        hard_state: HardState,
        warnings: Vec<String>,
        damaged_up_to_term: Option<Term>,
    },
    /// Damage to acknowledged records with no hard state readable after it.
    HardStateLost {
        file: PathBuf,
        offset: u64,
    },
    Corrupt {
        reason: String,
    },
    /// A typed refusal other than `Corrupt`: a lost hard state, or a
    /// header of another format version.
    Refused(String),
    Other(String),
}

fn reopen(dir: &Path, segment_size_bytes: u64, what: &str) -> (Reopened, Cost) {
    let dir = dir.to_path_buf();
    let input_bytes = dir_bytes(&dir);
    let (reopened, cost) = within(DEADLINE, what, move || {
        match Storage::open(&dir, options(segment_size_bytes)) {
            Ok((_storage, recovered)) => Reopened::Ok {
                entries: recovered.entries,
                hard_state: recovered.hard_state,
                warnings: recovered.warnings,
                damaged_up_to_term: recovered.damaged_up_to_term,
            },
            Err(StorageError::HardStateLost { file, offset, .. }) => {
                Reopened::HardStateLost { file, offset }
            }
            Err(StorageError::Corrupt { reason, .. }) => Reopened::Corrupt { reason },
            Err(
                refused @ (StorageError::MissingHardState { .. }
                | StorageError::UnsupportedFormat { .. }),
            ) => Reopened::Refused(refused.to_string()),
            Err(other) => Reopened::Other(other.to_string()),
        }
    });
    assert_bounded(&cost, input_bytes, what);
    (reopened, cost)
}

fn dir_bytes(dir: &Path) -> usize {
    let mut total = 0;
    for sub in ["wal", "snapshots"] {
        if let Ok(files) = fs::read_dir(dir.join(sub)) {
            for file in files {
                total += file.unwrap().metadata().unwrap().len() as usize;
            }
        }
    }
    total
}

fn segment_path(dir: &Path, record: &BatchAt) -> PathBuf {
    dir.join("wal").join(&record.segment)
}

fn edit(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).unwrap();
    change(&mut bytes);
    fs::write(path, bytes).unwrap();
}

/// The property every reopen must have, whatever was damaged: a typed
/// error, or the whole log, or (with a warning) a prefix of the log as it
/// was at some sync, with a hard state that commits nothing beyond it.
fn assert_never_silently_shorter(written: &Written, reopened: &Reopened, what: &str) {
    match reopened {
        Reopened::Ok {
            entries,
            hard_state,
            warnings,
            ..
        } => {
            let whole = entries == &written.entries && hard_state == &written.hard_state;
            assert!(
                whole || !warnings.is_empty(),
                "{what}: recovered {} of {} entries (hard state {hard_state:?}, written {:?}) without a warning",
                entries.len(),
                written.entries.len(),
                written.hard_state
            );
            assert!(
                written.history.iter().any(|log| log.starts_with(entries)),
                "{what}: recovered a log that was never written"
            );
            let last = entries.last().map_or(0, |e| e.index.0);
            assert!(
                hard_state.commit.0 <= last,
                "{what}: hard state commits {} beyond the recovered log's end {last}",
                hard_state.commit.0
            );
        }
        Reopened::Corrupt { reason, .. } => assert!(!reason.is_empty()),
        Reopened::HardStateLost { .. } => {}
        Reopened::Refused(message) => assert!(!message.is_empty()),
        Reopened::Other(message) => panic!("{what}: unexpected error kind: {message}"),
    }
}

/// Whole batches missing at the end of a segment (a segment cut on a batch
/// boundary or inside the padding after a batch, or a segment file
/// deleted) look like a log that ended there: no segment records how many
/// batches it held and no manifest lists the segments, so recovery cannot
/// tell and gives no warning. If a truncate record is among the missing
/// ones, the entries it overwrote come back, next to the newer ones: a log
/// that never existed. FUZZING.md lists this as a known limit; all that is
/// checked here is a typed result (no panic, no hang).
fn assert_typed_result_is_the_known_limit(reopened: &Reopened, what: &str) {
    assert!(
        !matches!(reopened, Reopened::Other(_)),
        "{what}: unexpected error kind: {reopened:?}"
    );
}

#[derive(Clone, Debug)]
enum Damage {
    /// XOR `mask` (non-zero) into one byte of the header or body of a batch
    /// that is not the last.
    FlipEarly { record: usize, at: usize, mask: u8 },
    /// Set the body length field of a batch that is not the last.
    InflateEarly { record: usize, len: u32 },
    /// XOR `mask` into one byte of the last batch's header or body.
    FlipLast { at: usize, mask: u8 },
    /// Cut the last segment inside its last batch's header or body.
    CutLast { at: usize },
    /// Append garbage (or zeros) after the last batch.
    Garbage { bytes: Vec<u8>, zeros: bool },
    /// Cut any segment anywhere.
    CutAnywhere { segment: usize, at: usize },
    /// Overwrite a run of bytes anywhere with random ones.
    SmashAnywhere {
        segment: usize,
        at: usize,
        bytes: Vec<u8>,
    },
    /// Delete one segment file.
    DropSegment { segment: usize },
}

fn inflated_len() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(u32::MAX),
        Just(0),
        Just(MAX_BODY_BYTES as u32),
        Just(MAX_BODY_BYTES as u32 + 1),
        Just(1 << 31),
        1u32..64,
        any::<u32>(),
    ]
}

fn damage() -> impl Strategy<Value = Damage> {
    let mask = 1u8..=255;
    prop_oneof![
        4 => (any::<usize>(), any::<usize>(), mask.clone())
            .prop_map(|(record, at, mask)| Damage::FlipEarly { record, at, mask }),
        2 => (any::<usize>(), inflated_len())
            .prop_map(|(record, len)| Damage::InflateEarly { record, len }),
        2 => (any::<usize>(), mask)
            .prop_map(|(at, mask)| Damage::FlipLast { at, mask }),
        2 => any::<usize>().prop_map(|at| Damage::CutLast { at }),
        1 => (prop::collection::vec(any::<u8>(), 1..40), any::<bool>())
            .prop_map(|(bytes, zeros)| Damage::Garbage { bytes, zeros }),
        2 => (any::<usize>(), any::<usize>())
            .prop_map(|(segment, at)| Damage::CutAnywhere { segment, at }),
        2 => (
            any::<usize>(),
            any::<usize>(),
            prop::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(segment, at, bytes)| Damage::SmashAnywhere { segment, at, bytes }),
        1 => any::<usize>().prop_map(|segment| Damage::DropSegment { segment }),
    ]
}

/// `selector` reduced to `0..len` (`len` > 0).
fn pick(selector: usize, len: usize) -> usize {
    selector % len
}

fn segments(written: &Written) -> Vec<String> {
    let mut names: Vec<String> = written.records.iter().map(|r| r.segment.clone()).collect();
    names.dedup();
    names
}

/// Applies `damage` to the copy in `dir` and checks the reopen.
fn damage_and_check(written: &Written, damage: &Damage) {
    let copy = copy_of(written);
    let dir = copy.path();
    let records = &written.records;
    let last = records.last().expect("every WAL holds a hard state record");
    let what = format!("{damage:?}");
    match damage {
        Damage::FlipEarly { record, .. } | Damage::InflateEarly { record, .. } => {
            if records.len() < 2 {
                return;
            }
            let target = &records[pick(*record, records.len() - 1)];
            let path = segment_path(dir, target);
            let start = target.start as usize;
            match damage {
                Damage::FlipEarly { at, mask, .. } => {
                    let byte = start + pick(*at, (target.end - target.start) as usize);
                    edit(&path, |b| b[byte] ^= mask);
                }
                Damage::InflateEarly { len, .. } => {
                    if u64::from(*len) == target.end - target.start - BATCH_HEADER {
                        return;
                    }
                    edit(&path, |b| {
                        b[start + 12..start + 16].copy_from_slice(&len.to_le_bytes())
                    });
                }
                _ => unreachable!("matched above"),
            }
            let (reopened, _) = reopen(dir, written.segment_size_bytes, &what);
            assert_never_silently_shorter(written, &reopened, &what);
            match reopened {
                Reopened::Ok {
                    warnings,
                    damaged_up_to_term,
                    ..
                } => {
                    assert_eq!(
                        damaged_up_to_term,
                        Some(written.hard_state.term),
                        "{what}: repair mode, bounded by the last term"
                    );
                    let place = format!("{} at offset {}", path.display(), target.start);
                    assert!(
                        warnings.iter().any(|w| w.contains(&place)),
                        "{what}: no warning names {place}: {warnings:?}"
                    );
                }
                Reopened::HardStateLost { file, offset } => {
                    assert_eq!(file, path, "{what}: the error names the damaged segment");
                    assert_eq!(
                        offset, target.start,
                        "{what}: the error names the damaged record"
                    );
                }
                other => panic!(
                    "{what}: damage before the last batch of {} batches must start repair mode, got {other:?}",
                    records.len()
                ),
            }
        }
        Damage::FlipLast { at, mask } => {
            let byte = last.start as usize + pick(*at, (last.end - last.start) as usize);
            edit(&segment_path(dir, last), |b| b[byte] ^= mask);
            check_torn_last(written, dir, &what);
        }
        Damage::CutLast { at } => {
            // Strictly inside the header and body: a cut on its start leaves
            // a shorter, well-formed log that nothing can tell from a crash
            // before the write, and a cut in the padding loses nothing.
            let len = last.end - last.start;
            let keep = last.start + 1 + pick(*at, len as usize - 1) as u64;
            let file = fs::OpenOptions::new()
                .write(true)
                .open(segment_path(dir, last))
                .unwrap();
            file.set_len(keep).unwrap();
            drop(file);
            check_torn_last(written, dir, &what);
        }
        Damage::Garbage { bytes, zeros } => {
            edit(&segment_path(dir, last), |b| {
                if *zeros {
                    b.extend(std::iter::repeat_n(0, bytes.len()));
                } else {
                    b.extend_from_slice(bytes);
                }
            });
            let (reopened, _) = reopen(dir, written.segment_size_bytes, &what);
            match reopened {
                Reopened::Ok {
                    entries,
                    hard_state,
                    warnings,
                    ..
                } => {
                    assert_eq!(entries, written.entries, "{what}: the whole log");
                    assert_eq!(hard_state, written.hard_state, "{what}");
                    assert!(
                        !warnings.is_empty(),
                        "{what}: garbage cut off without a warning"
                    );
                }
                other => panic!(
                    "{what}: garbage after the last batch must be a torn tail, got {other:?}"
                ),
            }
        }
        Damage::CutAnywhere { segment, at } => {
            let names = segments(written);
            let path = dir.join("wal").join(&names[pick(*segment, names.len())]);
            let len = fs::metadata(&path).unwrap().len();
            let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
            let keep = pick(*at, len as usize + 1) as u64;
            file.set_len(keep).unwrap();
            drop(file);
            let (reopened, _) = reopen(dir, written.segment_size_bytes, &what);
            let name = &names[pick(*segment, names.len())];
            // On a batch's start, or anywhere from the end of its body to
            // the next block: whole batches after it are gone unnoticed.
            let on_boundary = keep == len
                || keep <= BLOCK
                || written.records.iter().any(|r| {
                    &r.segment == name
                        && (r.start == keep
                            || (r.end <= keep && keep <= r.end.div_ceil(BLOCK) * BLOCK))
                });
            if on_boundary {
                assert_typed_result_is_the_known_limit(&reopened, &what);
            } else {
                assert_never_silently_shorter(written, &reopened, &what);
            }
        }
        Damage::SmashAnywhere { segment, at, bytes } => {
            let names = segments(written);
            let path = dir.join("wal").join(&names[pick(*segment, names.len())]);
            edit(&path, |b| {
                if b.is_empty() {
                    return;
                }
                let start = pick(*at, b.len());
                for (i, byte) in bytes.iter().enumerate() {
                    if let Some(slot) = b.get_mut(start + i) {
                        *slot = *byte;
                    }
                }
            });
            let (reopened, _) = reopen(dir, written.segment_size_bytes, &what);
            assert_never_silently_shorter(written, &reopened, &what);
        }
        Damage::DropSegment { segment } => {
            let names = segments(written);
            let name = &names[pick(*segment, names.len())];
            fs::remove_file(dir.join("wal").join(name)).unwrap();
            let (reopened, _) = reopen(dir, written.segment_size_bytes, &what);
            // A whole segment file gone is not detected either when what
            // remains is consistent (the last one; or the first when the
            // rest holds no entries): the same known limit.
            assert_typed_result_is_the_known_limit(&reopened, &what);
        }
    }
}

/// Damage confined to the last batch: a torn write. Recovery keeps every
/// earlier batch, cuts the last one off and says so.
fn check_torn_last(written: &Written, dir: &Path, what: &str) {
    let last = written.records.last().unwrap();
    let (reopened, _) = reopen(dir, written.segment_size_bytes, what);
    match &reopened {
        Reopened::Ok {
            entries, warnings, ..
        } => {
            assert!(
                !warnings.is_empty(),
                "{what}: a torn tail cut without a warning"
            );
            // The last batch is the last step's (or a roll's opening batch
            // holding only the hard state): the log goes back one sync.
            let expected = if last.has_entries {
                &written.history[written.history.len() - 2]
            } else {
                &written.entries
            };
            assert_eq!(
                entries, expected,
                "{what}: one damaged batch (entries: {}) takes the log back one sync",
                last.has_entries
            );
        }
        other => panic!("{what}: damage to the last record must be a torn tail, got {other:?}"),
    }
    assert_never_silently_shorter(written, &reopened, what);
}

#[test]
fn fuzz_wal_damaged_copies_of_a_synced_log_recover_or_fail_clearly() {
    fuzz(
        "wal_damage",
        60,
        (plan(), prop::collection::vec(damage(), 6..10)),
        |(plan, damages)| {
            let written = write_wal(&plan);
            // The undamaged log reads back exactly, without warnings.
            let copy = copy_of(&written);
            let (reopened, _) = reopen(copy.path(), plan.segment_size_bytes, "clean reopen");
            match reopened {
                Reopened::Ok {
                    entries,
                    hard_state,
                    warnings,
                    ..
                } => {
                    assert_eq!(entries, written.entries);
                    assert_eq!(hard_state, written.hard_state);
                    assert!(warnings.is_empty(), "{warnings:?}");
                }
                other => panic!("a clean WAL does not reopen: {other:?}"),
            }
            for damage in &damages {
                damage_and_check(&written, damage);
            }
        },
    );
}

/// Every single-bit flip of every batch but the last, exhaustively, on
/// one small log: each starts repair mode with a warning naming the batch
/// (or is a typed refusal naming it).
#[test]
fn fuzz_wal_every_bit_flip_before_the_last_batch_starts_repair_mode() {
    let plan = Plan {
        steps: vec![
            Step::Append {
                sizes: vec![3, 0, 17],
                new_term: false,
                commit_percent: 50,
            },
            Step::Overwrite {
                back: 1,
                sizes: vec![5],
                commit_percent: 100,
            },
        ],
        segment_size_bytes: 60,
    };
    let written = write_wal(&plan);
    assert!(segments(&written).len() >= 2, "the plan spans segments");
    let early = &written.records[..written.records.len() - 1];
    let mut flips = 0;
    // Every bit of the batch header and the first record header, and one
    // bit of every other byte of the body.
    for (index, _) in early.iter().enumerate() {
        let record = &early[index];
        for byte in 0..(record.end - record.start) as usize {
            let bits: &[u8] = if byte < 36 {
                &[0, 1, 2, 3, 4, 5, 6, 7]
            } else {
                &[3]
            };
            for &bit in bits {
                let damage = Damage::FlipEarly {
                    record: index,
                    at: byte,
                    mask: 1 << bit,
                };
                damage_and_check(&written, &damage);
                flips += 1;
            }
        }
    }
    eprintln!("fuzz target wal_every_bit_flip: {flips} flips");
}

/// Whole segment files of random bytes, or of well-framed batches of
/// random well-framed records (valid checksums over hostile contents:
/// unknown kinds, undecodable payloads, entries out of order, truncations
/// past the end, commit indexes beyond the log, batch numbers out of
/// order): never a panic, a hang or an unbounded allocation; what opens is
/// a contiguous log its hard state fits.
#[test]
fn fuzz_wal_random_segment_files() {
    fuzz(
        "wal_random_segments",
        400,
        prop::collection::vec(segment_file(), 1..4),
        |files| {
            let dir = tempfile::tempdir().unwrap();
            let wal = dir.path().join("wal");
            fs::create_dir_all(&wal).unwrap();
            let rendered: Vec<Vec<u8>> = files
                .iter()
                .enumerate()
                .map(|(i, file)| file.render(i as u64 + 1))
                .collect();
            for (i, bytes) in rendered.iter().enumerate() {
                let name = format!("{:020}-{:020}.wal", i + 1, 1);
                fs::write(wal.join(name), bytes).unwrap();
            }
            let what = format!("random segments {files:?}");
            let (reopened, _) = reopen(dir.path(), 1 << 20, &what);
            match reopened {
                Reopened::Ok {
                    entries,
                    hard_state,
                    ..
                } => {
                    for pair in entries.windows(2) {
                        assert_eq!(pair[1].index, pair[0].index.next(), "{what}");
                    }
                    if let Some(first) = entries.first() {
                        assert_eq!(
                            first.index,
                            LogIndex(1),
                            "{what}: no snapshot, so the log starts at 1"
                        );
                    }
                    let last = entries.last().map_or(0, |e| e.index.0);
                    assert!(hard_state.commit.0 <= last, "{what}");
                }
                Reopened::Corrupt { .. }
                | Reopened::HardStateLost { .. }
                | Reopened::Refused(_) => {}
                Reopened::Other(message) => panic!("{what}: {message}"),
            }
        },
    );
}

/// The CRC32C of `parts` seeded with the segment salt, as `batch.rs` writes it.
fn salted_crc(salt: u64, parts: &[&[u8]]) -> u32 {
    let mut crc = crc32c::crc32c(&salt.to_le_bytes());
    for part in parts {
        crc = crc32c::crc32c_append(crc, part);
    }
    crc
}

/// Block 0 of a format-2 segment.
fn segment_header(seq: u64, salt: u64) -> Vec<u8> {
    let mut block = b"RKVWAL\0\0".to_vec();
    block.extend_from_slice(&2u32.to_le_bytes());
    block.extend_from_slice(&salt.to_le_bytes());
    block.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&block);
    block.extend_from_slice(&crc.to_le_bytes());
    block.resize(BLOCK as usize, 0);
    block
}

/// One batch, padded to the block; `len` overrides the body length field.
fn batch_frame(salt: u64, seq: u64, body: &[u8], len: Option<u32>) -> Vec<u8> {
    let mut out = b"RKVB".to_vec();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&len.unwrap_or(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&salted_crc(salt, &[body]).to_le_bytes());
    let header_crc = salted_crc(salt, &[&out]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(body);
    out.resize(out.len().div_ceil(BLOCK as usize) * BLOCK as usize, 0);
    out
}

/// A segment file to render once its sequence number is known.
#[derive(Clone, Debug)]
enum SegmentFile {
    Raw(Vec<u8>),
    Framed {
        salt: u64,
        /// Each batch: its records, and whether its number is off by one.
        batches: Vec<(Vec<Vec<u8>>, bool)>,
        tail: Vec<u8>,
    },
}

impl SegmentFile {
    fn render(&self, seq: u64) -> Vec<u8> {
        match self {
            SegmentFile::Raw(bytes) => bytes.clone(),
            SegmentFile::Framed {
                salt,
                batches,
                tail,
            } => {
                let mut out = segment_header(seq, *salt);
                for (n, (records, skew)) in batches.iter().enumerate() {
                    let number = n as u64 + u64::from(*skew);
                    out.extend(batch_frame(*salt, number, &records.concat(), None));
                }
                out.extend_from_slice(tail);
                out
            }
        }
    }
}

/// One framed record: `[len][crc32c][kind][payload]`.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(payload);
    let mut out = Vec::new();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn hostile_record() -> impl Strategy<Value = Vec<u8>> {
    let index = prop_oneof![0u64..8, Just(u64::MAX - 1), Just(u64::MAX), any::<u64>()];
    let entry = (
        0u64..4,
        index.clone(),
        0u8..3,
        prop::collection::vec(any::<u8>(), 0..20),
    )
        .prop_map(|(term, index, kind, data)| {
            let entry = Entry {
                term: Term(term),
                index: LogIndex(index),
                kind: [EntryKind::Normal, EntryKind::Noop, EntryKind::ConfChange][kind as usize],
                data: Bytes::from(data),
            };
            frame(1, &postcard::to_allocvec(&entry).unwrap())
        });
    let hard_state = (0u64..4, prop::option::of(any::<u64>()), index.clone()).prop_map(
        |(term, vote, commit)| {
            let hard_state = HardState {
                term: Term(term),
                vote: vote.map(NodeId),
                commit: LogIndex(commit),
            };
            frame(2, &postcard::to_allocvec(&hard_state).unwrap())
        },
    );
    let truncate = index.prop_map(|i| frame(3, &postcard::to_allocvec(&LogIndex(i)).unwrap()));
    let raw = (any::<u8>(), prop::collection::vec(any::<u8>(), 0..24))
        .prop_map(|(kind, payload)| frame(kind, &payload));
    // A valid entry whose payload claims a huge data length.
    let huge_count = (any::<u32>()).prop_map(|count| {
        let mut payload =
            postcard::to_allocvec(&(Term(1), LogIndex(1), EntryKind::Normal)).unwrap();
        let mut varint = Vec::new();
        let mut n = u64::from(count) | (1 << 32);
        while n >= 0x80 {
            varint.push((n as u8) | 0x80);
            n >>= 7;
        }
        varint.push(n as u8);
        payload.extend(varint);
        payload.extend_from_slice(&[7; 8]);
        frame(1, &payload)
    });
    prop_oneof![4 => entry, 2 => hard_state, 2 => truncate, 2 => raw, 1 => huge_count]
}

fn segment_file() -> impl Strategy<Value = SegmentFile> {
    let batch = (
        prop::collection::vec(hostile_record(), 0..5),
        prop::bool::weighted(0.05),
    );
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..200).prop_map(SegmentFile::Raw),
        4 => (
            any::<u64>(),
            prop::collection::vec(batch, 0..4),
            prop::collection::vec(any::<u8>(), 0..12)
        )
            .prop_map(|(salt, batches, tail)| SegmentFile::Framed { salt, batches, tail }),
    ]
}

/// A batch header (with a valid salted checksum) claiming a 4 GiB body:
/// refused at once, as damage, without reading or allocating for the claim.
#[test]
fn a_batch_claiming_a_4_gib_body_is_refused_quickly() {
    for (len, is_last) in [
        (u32::MAX, true),
        (u32::MAX, false),
        (MAX_BODY_BYTES as u32 + 1, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal");
        fs::create_dir_all(&wal).unwrap();
        let head = frame(2, &postcard::to_allocvec(&HardState::default()).unwrap());
        let mut bytes = segment_header(1, 77);
        bytes.extend(batch_frame(77, 0, &head, None));
        bytes.extend(batch_frame(77, 1, &[0xA5; 32], Some(len)));
        fs::write(wal.join(format!("{:020}-{:020}.wal", 1, 1)), &bytes).unwrap();
        if !is_last {
            // A later segment makes the first one "not the last", so the
            // damage is to acknowledged data: repair mode.
            let mut next = segment_header(2, 78);
            next.extend(batch_frame(78, 0, &head, None));
            fs::write(wal.join(format!("{:020}-{:020}.wal", 2, 1)), next).unwrap();
        }
        let (reopened, cost) = reopen(dir.path(), 1 << 20, "a 4 GiB length");
        assert!(cost.elapsed < Duration::from_secs(2), "{cost:?}");
        assert!(cost.largest_alloc < 1 << 20, "{cost:?}");
        match (reopened, is_last) {
            (
                Reopened::Ok {
                    entries, warnings, ..
                },
                true,
            ) => {
                assert!(entries.is_empty());
                assert!(!warnings.is_empty());
            }
            (
                Reopened::Ok {
                    warnings,
                    damaged_up_to_term,
                    ..
                },
                false,
            ) => {
                assert_eq!(damaged_up_to_term, Some(Term(0)));
                let place = format!("at offset {}", 2 * BLOCK);
                assert!(
                    warnings
                        .iter()
                        .any(|w| w.contains(&place) && w.contains("runs past")),
                    "{warnings:?}"
                );
            }
            (other, _) => panic!("{len} (last: {is_last}): {other:?}"),
        }
    }
}

/// Found by `fuzz_wal_random_segment_files`: a segment holding one entry
/// record with a valid checksum and index u64::MAX panics in replay
/// (`LogIndex::next` overflows: raft-core/src/types.rs, called from
/// kv-storage/src/replay.rs `Replay::apply`) instead of returning
/// `StorageError::Corrupt`. In a release build the addition wraps instead.
#[test]
fn an_entry_record_with_index_u64_max_is_refused_not_a_panic() {
    // [len 14][crc][kind 1][term 0][index u64::MAX as varint][Normal][no data]
    let segment: [u8; 22] = [
        0x0e, 0x00, 0x00, 0x00, 0x5c, 0x1f, 0x66, 0x08, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00,
    ];
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    fs::create_dir_all(&wal).unwrap();
    let mut bytes = segment_header(1, 5);
    bytes.extend(batch_frame(5, 0, &segment, None));
    fs::write(wal.join(format!("{:020}-{:020}.wal", 1, 1)), bytes).unwrap();
    let (reopened, _) = reopen(dir.path(), 1 << 20, "an entry at u64::MAX");
    // Without a snapshot the log starts at entry 1: one starting anywhere
    // else follows lost batches, and with no hard state after it the node
    // cannot even be repaired.
    assert!(
        matches!(reopened, Reopened::HardStateLost { offset, .. } if offset == BLOCK),
        "{reopened:?}"
    );
}
