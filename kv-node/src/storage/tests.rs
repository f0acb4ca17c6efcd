//! Scenario tests of `Storage` against real files in a temp directory.

use super::*;
use bytes::Bytes;
use raft_core::{EntryKind, Membership, NodeId, Term};
use std::fs::{self, OpenOptions};
use std::io::Read;

pub(super) fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: Bytes::from(format!("value of entry {index} in term {term}")),
    }
}

fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes.map(|index| entry(index, term)).collect()
}

fn index_term(entries: &[Entry]) -> Vec<(u64, u64)> {
    entries.iter().map(|e| (e.index.0, e.term.0)).collect()
}

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(index),
        term: Term(term),
        membership: Membership::new([NodeId(1), NodeId(2), NodeId(3)]),
    }
}

fn small_segments() -> StorageOptions {
    StorageOptions {
        segment_size_bytes: 300,
        ..StorageOptions::default()
    }
}

fn open(dir: &Path) -> (Storage, Recovered) {
    Storage::open(dir, StorageOptions::default()).expect("open storage")
}

fn open_small(dir: &Path) -> (Storage, Recovered) {
    Storage::open(dir, small_segments()).expect("open storage")
}

/// Appends `batch` and syncs, returning the active segment's size after it.
fn append_synced(storage: &mut Storage, batch: &[Entry]) -> u64 {
    storage.append(batch).unwrap();
    storage.sync().unwrap();
    fs::metadata(active_segment(storage)).unwrap().len()
}

fn active_segment(storage: &Storage) -> PathBuf {
    storage.wal.segment_paths().pop().unwrap()
}

fn read_snapshot(path: &Path) -> (SnapshotMeta, Vec<u8>) {
    let (meta, mut reader) = open_snapshot(path).unwrap();
    let mut data = Vec::new();
    reader.read_to_end(&mut data).unwrap();
    (meta, data)
}

#[test]
fn a_fresh_directory_recovers_an_empty_log_and_default_hard_state() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, recovered) = open(dir.path());
    assert_eq!(recovered.hard_state, HardState::default());
    assert!(recovered.entries.is_empty() && recovered.snapshot.is_none());
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert_eq!(storage.last_index(), LogIndex(0));
}

#[test]
fn entries_and_hard_state_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let hard_state = HardState {
        term: Term(3),
        vote: Some(NodeId(2)),
        commit: LogIndex(4),
    };
    {
        let (mut storage, _) = open(dir.path());
        storage.append(&entries(1..=5, 3)).unwrap();
        storage.set_hard_state(&hard_state).unwrap();
        let stats = storage.sync().unwrap();
        assert!(stats.bytes > 0);
    }
    let (storage, recovered) = open(dir.path());
    assert_eq!(recovered.entries, entries(1..=5, 3));
    assert_eq!(recovered.hard_state, hard_state);
    assert_eq!(storage.last_index(), LogIndex(5));
    assert_eq!(storage.hard_state(), hard_state);
}

#[test]
fn a_suffix_truncation_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = open(dir.path());
        storage.append(&entries(1..=10, 1)).unwrap();
        storage.append(&entries(6..=8, 2)).unwrap();
        assert_eq!(storage.last_index(), LogIndex(8));
        storage.sync().unwrap();
    }
    let (storage, recovered) = open(dir.path());
    let mut expected = entries(1..=5, 1);
    expected.extend(entries(6..=8, 2));
    assert_eq!(recovered.entries, expected);
    assert_eq!(storage.last_index(), LogIndex(8));
}

#[test]
fn a_torn_tail_at_every_byte_offset_of_the_last_record_is_cut_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, before_last, full) = {
        let (mut storage, _) = open(dir.path());
        let before_last = append_synced(&mut storage, &entries(1..=4, 1));
        let full = append_synced(&mut storage, &entries(5..=5, 1));
        (active_segment(&storage), before_last, full)
    };
    let pristine = fs::read(&segment).unwrap();
    for cut in before_last + 1..full {
        fs::write(&segment, &pristine[..cut as usize]).unwrap();
        let (storage, recovered) = open(dir.path());
        assert_eq!(recovered.entries, entries(1..=4, 1), "cut at {cut}");
        assert_eq!(
            recovered.warnings.len(),
            1,
            "cut at {cut}: {:?}",
            recovered.warnings
        );
        assert!(
            recovered.warnings[0].contains("torn"),
            "{:?}",
            recovered.warnings
        );
        assert_eq!(
            fs::metadata(&segment).unwrap().len(),
            before_last,
            "cut at {cut}"
        );
        drop(storage);
        let (_, again) = open(dir.path());
        assert!(
            again.warnings.is_empty(),
            "the cut is durable: {:?}",
            again.warnings
        );
    }
}

#[test]
fn a_zero_filled_tail_is_cut_with_a_warning_and_appends_continue_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let segment = {
        let (mut storage, _) = open(dir.path());
        append_synced(&mut storage, &entries(1..=3, 1));
        active_segment(&storage)
    };
    let mut raw = fs::read(&segment).unwrap();
    raw.extend([0u8; 4096]);
    fs::write(&segment, raw).unwrap();
    {
        let (mut storage, recovered) = open(dir.path());
        assert_eq!(recovered.entries, entries(1..=3, 1));
        assert_eq!(recovered.warnings.len(), 1, "{:?}", recovered.warnings);
        storage.append(&entries(4..=4, 1)).unwrap();
        storage.sync().unwrap();
    }
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.entries, entries(1..=4, 1));
    assert!(recovered.warnings.is_empty());
}

#[test]
fn a_flipped_bit_in_a_middle_record_is_a_corrupt_error_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, record_start, record_end) = {
        let (mut storage, _) = open(dir.path());
        let start = append_synced(&mut storage, &entries(1..=2, 1));
        let end = append_synced(&mut storage, &entries(3..=3, 1));
        append_synced(&mut storage, &entries(4..=5, 1));
        (active_segment(&storage), start, end)
    };
    let pristine = fs::read(&segment).unwrap();
    for byte in record_start..record_end {
        for bit in 0..8 {
            let mut raw = pristine.clone();
            raw[byte as usize] ^= 1 << bit;
            fs::write(&segment, &raw).unwrap();
            match Storage::open(dir.path(), StorageOptions::default()) {
                Err(StorageError::Corrupt { file, offset, .. }) => {
                    assert_eq!((file, offset), (segment.clone(), record_start));
                }
                other => panic!("bit {bit} of byte {byte}: expected Corrupt, got {other:?}"),
            }
        }
    }
    fs::write(&segment, &pristine).unwrap();
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.entries, entries(1..=5, 1), "nothing was cut");
}

#[test]
fn a_damaged_tail_of_a_segment_that_is_not_the_last_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let segments = {
        let (mut storage, _) = open_small(dir.path());
        for index in 1..=30 {
            storage.append(&[entry(index, 1)]).unwrap();
        }
        storage.sync().unwrap();
        storage.wal.segment_paths()
    };
    assert!(segments.len() >= 3, "{segments:?}");
    let middle = &segments[1];
    let len = fs::metadata(middle).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(middle)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    match Storage::open(dir.path(), small_segments()) {
        Err(StorageError::Corrupt { file, .. }) => assert_eq!(&file, middle),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn segments_roll_over_and_recovery_reads_across_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let hard_state = HardState {
        term: Term(2),
        vote: None,
        commit: LogIndex(90),
    };
    let segments = {
        let (mut storage, _) = open_small(dir.path());
        for batch in (1..=100).step_by(10) {
            storage.append(&entries(batch..=batch + 9, 2)).unwrap();
            storage
                .set_hard_state(&HardState {
                    commit: LogIndex(batch),
                    ..hard_state
                })
                .unwrap();
        }
        storage.set_hard_state(&hard_state).unwrap();
        storage.sync().unwrap();
        storage.wal.segment_paths()
    };
    assert!(segments.len() > 5, "{} segments", segments.len());
    let names: Vec<String> = segments
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names[0], "00000000000000000001-00000000000000000001.wal");
    let (_, recovered) = open_small(dir.path());
    assert_eq!(recovered.entries, entries(1..=100, 2));
    assert_eq!(recovered.hard_state, hard_state);
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
}

#[test]
fn a_truncation_reaching_back_into_an_older_segment_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = open_small(dir.path());
        storage.append(&entries(1..=40, 1)).unwrap();
        storage.append(&entries(3..=50, 2)).unwrap();
        storage.sync().unwrap();
    }
    let (_, recovered) = open_small(dir.path());
    let mut expected = entries(1..=2, 1);
    expected.extend(entries(3..=50, 2));
    assert_eq!(index_term(&recovered.entries), index_term(&expected));
}

#[test]
fn a_snapshot_deletes_covered_segments_and_reopen_gives_snapshot_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let hard_state = HardState {
        term: Term(1),
        vote: Some(NodeId(1)),
        commit: LogIndex(100),
    };
    {
        let (mut storage, _) = open_small(dir.path());
        storage.append(&entries(1..=100, 1)).unwrap();
        storage.set_hard_state(&hard_state).unwrap();
        storage.sync().unwrap();
        let before = storage.wal.segment_count();
        let info = storage
            .save_snapshot(&meta(60, 1), |w| w.write_all(b"state at 60"))
            .unwrap();
        assert!(info.segments_removed > 0);
        assert_eq!(storage.wal.segment_count(), before - info.segments_removed);
        assert_eq!(storage.snapshot_path(), Some((meta(60, 1), info.path)));
    }
    let (storage, recovered) = open_small(dir.path());
    let (snapshot_meta, path) = recovered.snapshot.unwrap();
    assert_eq!(snapshot_meta, meta(60, 1));
    assert_eq!(read_snapshot(&path), (meta(60, 1), b"state at 60".to_vec()));
    assert_eq!(recovered.entries, entries(61..=100, 1));
    assert_eq!(recovered.hard_state, hard_state);
    assert_eq!(storage.last_index(), LogIndex(100));
}

#[test]
fn a_newer_snapshot_removes_the_older_snapshot_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    storage.append(&entries(1..=10, 1)).unwrap();
    let first = storage
        .save_snapshot(&meta(4, 1), |w| w.write_all(b"4"))
        .unwrap();
    let second = storage
        .save_snapshot(&meta(8, 1), |w| w.write_all(b"8"))
        .unwrap();
    assert!(!first.path.exists());
    assert!(second.path.exists());
    let stale = storage.save_snapshot(&meta(8, 1), |w| w.write_all(b"8"));
    assert!(
        matches!(stale, Err(StorageError::StaleSnapshot { .. })),
        "{stale:?}"
    );
}

#[test]
fn a_leftover_temp_file_from_a_crashed_snapshot_write_keeps_the_previous_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = open(dir.path());
        storage.append(&entries(1..=50, 1)).unwrap();
        storage.sync().unwrap();
        storage
            .save_snapshot(&meta(30, 1), |w| w.write_all(b"at 30"))
            .unwrap();
    }
    let temp = dir
        .path()
        .join(SNAPSHOT_DIR)
        .join("00000000000000000045.snap.tmp");
    fs::write(&temp, b"RKVSNAP\0 half a header").unwrap();
    let (_, recovered) = open(dir.path());
    let (snapshot_meta, path) = recovered.snapshot.unwrap();
    assert_eq!(read_snapshot(&path), (snapshot_meta, b"at 30".to_vec()));
    assert_eq!(recovered.entries, entries(31..=50, 1));
    assert_eq!(recovered.warnings.len(), 1, "{:?}", recovered.warnings);
    assert!(!temp.exists());
}

#[test]
fn a_truncated_new_snapshot_file_falls_back_to_the_previous_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = open(dir.path());
        storage.append(&entries(1..=50, 1)).unwrap();
        storage.sync().unwrap();
        storage
            .save_snapshot(&meta(30, 1), |w| w.write_all(b"at 30"))
            .unwrap();
    }
    // The crash hit after the rename but before the data reached the disk.
    let header = SnapshotHeader {
        meta: meta(45, 1),
        wal_start_seq: 0,
    };
    let (newer, bytes) =
        snapshot_file::write(elsewhere.path(), &header, |w| w.write_all(&[9; 500])).unwrap();
    let target = dir
        .path()
        .join(SNAPSHOT_DIR)
        .join(newer.file_name().unwrap());
    fs::write(&target, &fs::read(&newer).unwrap()[..bytes as usize / 2]).unwrap();

    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.snapshot.unwrap().0, meta(30, 1));
    assert_eq!(recovered.entries, entries(31..=50, 1));
    assert!(
        recovered.warnings.iter().any(|w| w.contains("damaged")),
        "{:?}",
        recovered.warnings
    );
}

#[test]
fn install_snapshot_discards_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let hard_state = HardState {
        term: Term(3),
        vote: None,
        commit: LogIndex(25),
    };
    {
        let (mut storage, _) = open_small(dir.path());
        storage.append(&entries(1..=40, 1)).unwrap();
        storage.sync().unwrap();
        storage
            .install_snapshot(&meta(20, 3), b"leader state")
            .unwrap();
        assert_eq!(storage.last_index(), LogIndex(20));
        assert_eq!(storage.wal.segment_count(), 1);
        storage.append(&entries(21..=25, 3)).unwrap();
        storage.set_hard_state(&hard_state).unwrap();
        storage.sync().unwrap();
    }
    let (storage, recovered) = open_small(dir.path());
    let (snapshot_meta, path) = recovered.snapshot.unwrap();
    assert_eq!(
        read_snapshot(&path),
        (snapshot_meta, b"leader state".to_vec())
    );
    assert_eq!(recovered.entries, entries(21..=25, 3));
    assert_eq!(recovered.hard_state, hard_state);
    assert_eq!(storage.last_index(), LogIndex(25));
}

#[test]
fn install_snapshot_discards_entries_beyond_its_index_too() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = open(dir.path());
        storage.append(&entries(1..=30, 1)).unwrap();
        storage.sync().unwrap();
        storage.install_snapshot(&meta(20, 4), b"x").unwrap();
        assert_eq!(storage.last_index(), LogIndex(20));
    }
    let (storage, recovered) = open(dir.path());
    assert!(recovered.entries.is_empty(), "{:?}", recovered.entries);
    assert_eq!(storage.last_index(), LogIndex(20));
}

#[test]
fn recovery_finishes_an_install_that_crashed_before_deleting_the_old_log() {
    let dir = tempfile::tempdir().unwrap();
    let old_segment = {
        let (mut storage, _) = open(dir.path());
        storage.append(&entries(1..=30, 1)).unwrap();
        storage.sync().unwrap();
        let old_segment = active_segment(&storage);
        let preserved = fs::read(&old_segment).unwrap();
        storage.install_snapshot(&meta(20, 4), b"x").unwrap();
        // Put the old segment back as if the crash came before its deletion.
        fs::write(&old_segment, preserved).unwrap();
        old_segment
    };
    let (storage, recovered) = open(dir.path());
    assert!(recovered.entries.is_empty(), "{:?}", recovered.entries);
    assert_eq!(storage.last_index(), LogIndex(20));
    assert!(!old_segment.exists());
}

#[test]
fn a_second_open_of_a_locked_dir_fails_with_locked() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = open(dir.path());
    let second = Storage::open(dir.path(), StorageOptions::default());
    assert!(
        matches!(second, Err(StorageError::Locked { .. })),
        "{second:?}"
    );
    drop(first);
    open(dir.path());
}

#[test]
fn sync_reports_the_bytes_written_since_the_previous_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    let before = fs::metadata(active_segment(&storage)).unwrap().len();
    storage.append(&entries(1..=3, 1)).unwrap();
    let stats = storage.sync().unwrap();
    let after = fs::metadata(active_segment(&storage)).unwrap().len();
    assert_eq!(stats.bytes, after - before);
    assert_eq!(storage.sync().unwrap().bytes, 0, "nothing new to sync");
}

#[test]
fn an_entry_larger_than_the_limit_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    let mut big = entry(2, 1);
    big.data = Bytes::from(vec![0u8; MAX_ENTRY_DATA_BYTES + 1]);
    let result = storage.append(&[entry(1, 1), big]);
    assert!(
        matches!(result, Err(StorageError::RecordTooLarge { .. })),
        "{result:?}"
    );
    assert_eq!(storage.last_index(), LogIndex(0));
}

#[test]
#[should_panic(expected = "leaves a gap")]
fn an_append_that_leaves_a_gap_is_a_bug() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    storage.append(&entries(1..=3, 1)).unwrap();
    let _ = storage.append(&entries(5..=6, 1));
}

#[test]
fn a_zero_segment_size_is_an_invalid_option() {
    let dir = tempfile::tempdir().unwrap();
    let options = StorageOptions {
        segment_size_bytes: 0,
        ..StorageOptions::default()
    };
    let result = Storage::open(dir.path(), options);
    assert!(matches!(
        result,
        Err(StorageError::InvalidOption {
            option: "segment_size_bytes",
            ..
        })
    ));
}

#[test]
fn a_hard_state_torn_off_with_the_entries_it_commits_lowers_the_commit_index_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, before_batch) = {
        let (mut storage, _) = open(dir.path());
        let before_batch = append_synced(&mut storage, &entries(1..=2, 1));
        // A driver that writes the hard state before the entries it commits.
        storage
            .set_hard_state(&HardState {
                term: Term(1),
                vote: None,
                commit: LogIndex(4),
            })
            .unwrap();
        storage.append(&entries(3..=4, 1)).unwrap();
        storage.sync().unwrap();
        (active_segment(&storage), before_batch)
    };
    let raw = fs::read(&segment).unwrap();
    // Keep the hard state record and a piece of entry 3.
    let hard_state_record_bytes = 8 + 1 + 3;
    fs::write(
        &segment,
        &raw[..before_batch as usize + hard_state_record_bytes + 5],
    )
    .unwrap();
    {
        let (_, recovered) = open(dir.path());
        assert_eq!(recovered.entries, entries(1..=2, 1));
        assert_eq!(recovered.hard_state.commit, LogIndex(2));
        assert_eq!(recovered.warnings.len(), 2, "{:?}", recovered.warnings);
    }
    let (_, again) = open(dir.path());
    assert_eq!(
        again.hard_state.commit,
        LogIndex(2),
        "the repair is durable"
    );
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
}

#[test]
fn a_commit_index_beyond_an_intact_log_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = open(dir.path());
        storage.append(&entries(1..=2, 1)).unwrap();
        storage
            .set_hard_state(&HardState {
                term: Term(1),
                vote: None,
                commit: LogIndex(2),
            })
            .unwrap();
        storage.sync().unwrap();
        // Forge a record the API would never write: commit beyond the log.
        let mut forged = Vec::new();
        let hard_state = HardState {
            term: Term(1),
            vote: None,
            commit: LogIndex(9),
        };
        segment::encode(segment::RecordRef::HardState(&hard_state), &mut forged).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(active_segment(&storage))
            .unwrap();
        std::io::Write::write_all(&mut file, &forged).unwrap();
    }
    let result = Storage::open(dir.path(), StorageOptions::default());
    assert!(
        matches!(result, Err(StorageError::Corrupt { .. })),
        "{result:?}"
    );
}

#[test]
fn a_snapshot_whose_first_wal_segment_is_missing_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = open(dir.path());
        storage.append(&entries(1..=10, 1)).unwrap();
        storage.install_snapshot(&meta(12, 2), b"x").unwrap();
        for path in storage.wal.segment_paths() {
            fs::remove_file(path).unwrap();
        }
    }
    let result = Storage::open(dir.path(), StorageOptions::default());
    assert!(
        matches!(result, Err(StorageError::Corrupt { .. })),
        "{result:?}"
    );
}

#[test]
fn storage_refuses_further_writes_after_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    storage.append(&entries(1..=2, 1)).unwrap();
    // A snapshot directory that vanished makes the snapshot write fail.
    fs::remove_dir_all(dir.path().join(SNAPSHOT_DIR)).unwrap();
    let result = storage.save_snapshot(&meta(2, 1), |w| w.write_all(b"x"));
    assert!(matches!(result, Err(StorageError::Io { .. })), "{result:?}");
    assert!(matches!(storage.sync(), Err(StorageError::Failed)));
    assert!(matches!(
        storage.append(&entries(3..=3, 1)),
        Err(StorageError::Failed)
    ));
}

#[test]
fn a_snapshot_range_is_read_without_loading_the_whole_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    storage.append(&entries(1..=10, 1)).unwrap();
    storage.sync().unwrap();
    let state: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let info = storage
        .save_snapshot(&meta(10, 1), |w| w.write_all(&state))
        .unwrap();
    let mut rebuilt = Vec::new();
    for offset in (0..state.len() as u64).step_by(4096) {
        rebuilt.extend(read_snapshot_range(&info.path, offset, 4096).unwrap());
    }
    assert_eq!(rebuilt, state, "chunks put back together give the state");
    assert!(
        read_snapshot_range(&info.path, 20_000, 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        read_snapshot_range(&info.path, 9_990, 100).unwrap().len(),
        10
    );
}
