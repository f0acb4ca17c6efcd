//! Scenario tests of `Storage` against real files in a temp directory.

use super::*;
use bytes::Bytes;
use raft_core::{EntryKind, Membership, NodeId, Term};
use std::fs;
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
fn a_batch_torn_at_any_offset_is_cut_into_a_side_file_and_torn_padding_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, before_last, full) = {
        let (mut storage, _) = open(dir.path());
        let before_last = append_synced(&mut storage, &entries(1..=4, 1));
        let full = append_synced(&mut storage, &entries(5..=5, 1));
        (active_segment(&storage), before_last, full)
    };
    assert_eq!(full - before_last, batch::BLOCK_BYTES, "one padded batch");
    let pristine = fs::read(&segment).unwrap();
    let batch_bytes = batch::BATCH_HEADER_BYTES as u64
        + u64::from(u32::from_le_bytes(
            pristine[before_last as usize + 12..before_last as usize + 16]
                .try_into()
                .unwrap(),
        ));
    let cut_dir = dir.path().join(WAL_CUT_DIR);
    for cut in
        (before_last + 1..full).filter(|c| *c < before_last + batch_bytes + 3 || c % 512 == 0)
    {
        let _ = fs::remove_dir_all(&cut_dir);
        fs::write(&segment, &pristine[..cut as usize]).unwrap();
        let (storage, recovered) = open(dir.path());
        if cut < before_last + batch_bytes {
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
            let kept: Vec<_> = fs::read_dir(&cut_dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(kept.len(), 1, "cut at {cut}: {kept:?}");
            assert_eq!(
                fs::read(&kept[0]).unwrap(),
                &pristine[before_last as usize..cut as usize],
                "the cut bytes are kept, not destroyed"
            );
        } else {
            // The batch is whole; only padding was lost.
            assert_eq!(recovered.entries, entries(1..=5, 1), "cut at {cut}");
            assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
        }
        let expected_len = if cut < before_last + batch_bytes {
            before_last
        } else {
            full
        };
        assert_eq!(
            fs::metadata(&segment).unwrap().len(),
            expected_len,
            "cut at {cut}"
        );
        drop(storage);
        let (_, again) = open(dir.path());
        assert!(
            again.warnings.is_empty(),
            "the repair is durable: {:?}",
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

/// The side files in `<dir>/wal-cut/`, by name, with their bytes.
fn side_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(listing) = fs::read_dir(dir.join(WAL_CUT_DIR)) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = listing
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn term_vote(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term: Term(term),
        vote: Some(NodeId(vote)),
        commit: LogIndex(commit),
    }
}

#[test]
fn a_flipped_bit_in_an_acknowledged_batch_is_found_by_check_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, batch_start) = {
        let (mut storage, _) = open(dir.path());
        let start = append_synced(&mut storage, &entries(1..=2, 1));
        append_synced(&mut storage, &entries(3..=3, 1));
        append_synced(&mut storage, &entries(4..=5, 1));
        (active_segment(&storage), start)
    };
    let pristine = fs::read(&segment).unwrap();
    let at = batch_start as usize;
    let body_len = u32::from_le_bytes(pristine[at + 12..at + 16].try_into().unwrap()) as usize;
    for byte in at..at + batch::BATCH_HEADER_BYTES + body_len {
        for bit in 0..8 {
            let mut raw = pristine.clone();
            raw[byte] ^= 1 << bit;
            fs::write(&segment, &raw).unwrap();
            let report = check(dir.path(), false).unwrap();
            let damage = report
                .damage
                .as_deref()
                .unwrap_or_else(|| panic!("bit {bit} of byte {byte}: no damage found: {report:?}"));
            let place = format!("{} at offset {batch_start}:", segment.display());
            assert!(damage.starts_with(&place), "{damage}");
            assert!(damage.contains("acknowledged"), "{damage}");
            assert_eq!(report.damaged_up_to_term, Some(Term(1)));
            assert_eq!(fs::read(&segment).unwrap(), raw, "check changes nothing");
        }
    }
    fs::write(&segment, &pristine).unwrap();
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.entries, entries(1..=5, 1), "nothing was cut");
    assert_eq!(recovered.damaged_up_to_term, None);
}

#[test]
fn damage_to_an_acknowledged_batch_starts_the_node_in_repair_mode_and_keeps_the_cut_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let voted = term_vote(3, 2, 2);
    let (segment, batch_start) = {
        let (mut storage, _) = open(dir.path());
        storage.append(&entries(1..=2, 3)).unwrap();
        storage.set_hard_state(&voted).unwrap();
        let start = fs::metadata(active_segment(&storage)).unwrap().len();
        storage.sync().unwrap();
        let start = start.max(append_synced(&mut storage, &[]));
        append_synced(&mut storage, &entries(3..=4, 3));
        append_synced(&mut storage, &entries(5..=5, 3));
        (active_segment(&storage), start)
    };
    let pristine = fs::read(&segment).unwrap();
    let mut raw = pristine.clone();
    raw[batch_start as usize + 40] ^= 0x10;
    fs::write(&segment, &raw).unwrap();
    {
        let (_, recovered) = open(dir.path());
        assert_eq!(
            recovered.entries,
            entries(1..=2, 3),
            "the log ends before the damage"
        );
        // The exact hard state, read after the damage; commit lowered.
        assert_eq!(recovered.hard_state, term_vote(3, 2, 2));
        assert_eq!(recovered.damaged_up_to_term, Some(Term(3)));
        assert!(
            recovered.warnings.iter().any(|w| w.contains("repair mode")),
            "{:?}",
            recovered.warnings
        );
    }
    // The bytes from the damage on are kept, unchanged.
    let cut: Vec<u8> = side_files(dir.path())
        .into_iter()
        .flat_map(|(_, bytes)| bytes)
        .collect();
    assert_eq!(cut, raw[batch_start as usize..].to_vec());
    // A restart before the repair is still in repair mode (the marker), and
    // the log now reads clean.
    {
        let (mut storage, recovered) = open(dir.path());
        assert_eq!(recovered.damaged_up_to_term, Some(Term(3)));
        assert_eq!(recovered.entries, entries(1..=2, 3));
        // A leader of term 4 repairs the log.
        storage.append(&entries(3..=3, 4)).unwrap();
        storage.set_hard_state(&term_vote(4, 1, 3)).unwrap();
        storage.sync().unwrap();
    }
    let (_, repaired) = open(dir.path());
    assert_eq!(repaired.damaged_up_to_term, None, "{:?}", repaired.warnings);
    assert!(!dir.path().join(repair_marker::REPAIR_MARKER).exists());
    assert!(check(dir.path(), false).unwrap().is_clean());
}

#[test]
fn damage_after_the_last_hard_state_record_is_a_typed_error_and_nothing_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, batch_start) = {
        let (mut storage, _) = open(dir.path());
        let start = append_synced(&mut storage, &entries(1..=2, 1));
        append_synced(&mut storage, &entries(3..=3, 1));
        // A batch without a hard state (as format-2 logs written before
        // every batch carried one): forged.
        let mut record = Vec::new();
        segment::encode(segment::RecordRef::Entry(&entry(4, 1)), &mut record).unwrap();
        storage.wal.push_raw(&record);
        storage.sync().unwrap();
        (active_segment(&storage), start)
    };
    let mut raw = fs::read(&segment).unwrap();
    // Damage the batch holding entry 3 and the last hard state.
    raw[batch_start as usize + 30] ^= 1;
    fs::write(&segment, &raw).unwrap();
    let result = Storage::open(dir.path(), StorageOptions::default());
    assert!(
        matches!(&result, Err(StorageError::HardStateLost { offset, .. }) if *offset == batch_start),
        "{result:?}"
    );
    assert_eq!(fs::read(&segment).unwrap(), raw, "nothing cut");
    assert!(side_files(dir.path()).is_empty());
}

#[test]
fn a_lost_or_zeroed_acknowledged_batch_followed_by_a_later_one_is_repair_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, batch_start) = {
        let (mut storage, _) = open(dir.path());
        let start = append_synced(&mut storage, &entries(1..=2, 1));
        append_synced(&mut storage, &entries(3..=3, 1));
        append_synced(&mut storage, &entries(4..=5, 1));
        (active_segment(&storage), start as usize)
    };
    let mut raw = fs::read(&segment).unwrap();
    raw[batch_start..batch_start + batch::BLOCK_BYTES as usize].fill(0);
    fs::write(&segment, &raw).unwrap();
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.entries, entries(1..=2, 1));
    assert!(recovered.damaged_up_to_term.is_some());
}

#[test]
fn a_client_value_holding_batch_frames_on_block_boundaries_cannot_pass_for_a_batch() {
    // A hostile value: batch frames as they would be written under some
    // salt, placed so that copies start on block boundaries of the file.
    let mut record = Vec::new();
    segment::encode(segment::RecordRef::Entry(&entry(9, 9)), &mut record).unwrap();
    let mut frame = Vec::new();
    batch::encode_batch(0, 2, &record, &mut frame);
    let write_value = |dir: &Path, pad: usize| -> PathBuf {
        let mut value = vec![0xEE; pad];
        value.extend(frame.repeat(4));
        let (mut storage, _) = open(dir);
        append_synced(&mut storage, &entries(1..=1, 1));
        let big = Entry {
            data: Bytes::from(value),
            ..entry(2, 1)
        };
        storage.append(&[big]).unwrap();
        storage.sync().unwrap();
        active_segment(&storage)
    };
    let probe = tempfile::tempdir().unwrap();
    let raw = fs::read(write_value(probe.path(), 0)).unwrap();
    let first_copy = raw.windows(64).position(|w| w == &frame[..64]).unwrap();
    let block = batch::BLOCK_BYTES as usize;
    let pad = (block - first_copy % block) % block;

    let dir = tempfile::tempdir().unwrap();
    let segment_path = write_value(dir.path(), pad);
    let raw = fs::read(&segment_path).unwrap();
    let aligned_copies = (0..raw.len())
        .step_by(block)
        .filter(|&at| raw[at..].starts_with(&frame[..64]))
        .count();
    assert!(
        aligned_copies >= 2,
        "the test places copies on block boundaries"
    );
    // Damage the last batch inside the value, before the copies: a scan
    // that trusted any well-framed batch would call this corruption.
    let last_batch = 3 * block;
    let mut torn = raw.clone();
    torn[last_batch + 100] ^= 0xFF;
    fs::write(&segment_path, &torn).unwrap();
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.entries, entries(1..=1, 1));
    assert_eq!(recovered.warnings.len(), 1, "{:?}", recovered.warnings);
}

#[test]
fn damage_in_a_segment_that_is_not_the_last_cuts_it_and_sets_the_later_segments_aside() {
    let dir = tempfile::tempdir().unwrap();
    let segments = {
        let (mut storage, _) = open_small(dir.path());
        for index in 1..=5 {
            storage.append(&[entry(index, 2)]).unwrap();
            storage.set_hard_state(&term_vote(2, 1, index)).unwrap();
            storage.sync().unwrap();
        }
        storage.wal.segment_paths()
    };
    assert!(segments.len() >= 4, "{segments:?}");
    // Segment 0 holds the opening hard state, segment k entry k.
    let middle = &segments[2];
    let pristine = fs::read(middle).unwrap();
    let mut raw = pristine.clone();
    // Inside the body of its last batch (the entry record).
    let last_batch = raw.len() - batch::BLOCK_BYTES as usize;
    raw[last_batch + batch::BATCH_HEADER_BYTES + 10] ^= 1;
    fs::write(middle, &raw).unwrap();
    let later: Vec<Vec<u8>> = segments[3..].iter().map(|p| fs::read(p).unwrap()).collect();
    let found = check(dir.path(), false).unwrap();
    assert!(
        found
            .damage
            .as_deref()
            .is_some_and(|d| d.contains("not the last")),
        "{found:?}"
    );
    let (_, recovered) = open_small(dir.path());
    let kept = recovered.entries.last().unwrap().index;
    assert_eq!(kept, LogIndex(1), "{:?}", recovered.entries);
    assert_eq!(recovered.hard_state, term_vote(2, 1, kept.0));
    assert_eq!(recovered.damaged_up_to_term, Some(Term(2)));
    // Every byte after the damage is kept: the cut tail and the later segments.
    let cut = side_files(dir.path());
    assert_eq!(
        cut.len(),
        1 + later.len(),
        "{:?}",
        cut.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    for bytes in &later {
        assert!(cut.iter().any(|(_, b)| b == bytes));
    }
    assert!(cut.iter().any(|(_, b)| b[..] == raw[last_batch..]));
}

#[test]
fn a_lost_last_batch_of_a_closed_segment_is_found_by_the_gap_it_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let segments = {
        let (mut storage, _) = open_small(dir.path());
        for index in 1..=5 {
            append_synced(&mut storage, &[entry(index, 1)]);
        }
        storage.wal.segment_paths()
    };
    // Segment 0 holds the opening hard state, segment k entry k.
    let middle = &segments[2];
    let pristine = fs::read(middle).unwrap();
    fs::write(
        middle,
        &pristine[..pristine.len() - batch::BLOCK_BYTES as usize],
    )
    .unwrap();
    let found = check(dir.path(), false).unwrap();
    assert!(
        found
            .damage
            .as_deref()
            .is_some_and(|d| d.contains("missing")),
        "{found:?}"
    );
    let (_, recovered) = open_small(dir.path());
    assert!(recovered.damaged_up_to_term.is_some());
    assert_eq!(recovered.entries, entries(1..=1, 1));
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
            storage.sync().unwrap();
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
        for batch in (1..=100).step_by(10) {
            append_synced(&mut storage, &entries(batch..=batch + 9, 1));
        }
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
        base: None,
    };
    let (newer, bytes) = snapshot_file::write(&StdFs, elsewhere.path(), &header, |w| {
        w.write_all(&[9; 500])
    })
    .unwrap();
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
fn a_batch_torn_in_the_middle_loses_its_hard_state_and_its_entries_together() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, before_batch) = {
        let (mut storage, _) = open(dir.path());
        let before_batch = append_synced(&mut storage, &entries(1..=2, 1));
        storage.append(&entries(3..=4, 1)).unwrap();
        storage
            .set_hard_state(&HardState {
                term: Term(2),
                vote: Some(NodeId(3)),
                commit: LogIndex(4),
            })
            .unwrap();
        storage.sync().unwrap();
        (active_segment(&storage), before_batch)
    };
    let raw = fs::read(&segment).unwrap();
    fs::write(&segment, &raw[..before_batch as usize + 60]).unwrap();
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.entries, entries(1..=2, 1));
    assert_eq!(recovered.hard_state, HardState::default());
    assert_eq!(recovered.warnings.len(), 1, "{:?}", recovered.warnings);
}

#[test]
fn a_hard_state_synced_before_the_entries_it_commits_lowers_the_commit_index_when_they_tear() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, before_batch) = {
        let (mut storage, _) = open(dir.path());
        append_synced(&mut storage, &entries(1..=2, 1));
        // A driver that syncs the hard state before the entries it commits.
        storage
            .set_hard_state(&HardState {
                term: Term(1),
                vote: None,
                commit: LogIndex(4),
            })
            .unwrap();
        storage.sync().unwrap();
        let before_batch = fs::metadata(active_segment(&storage)).unwrap().len();
        storage.append(&entries(3..=4, 1)).unwrap();
        storage.sync().unwrap();
        (active_segment(&storage), before_batch)
    };
    let raw = fs::read(&segment).unwrap();
    fs::write(&segment, &raw[..before_batch as usize + 30]).unwrap();
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
        storage.wal.push_raw(&forged);
        storage.sync().unwrap();
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
    // A directory where the snapshot file goes makes its rename fail.
    fs::create_dir_all(
        dir.path()
            .join(SNAPSHOT_DIR)
            .join(format!("{:020}.snap/x", 2)),
    )
    .unwrap();
    let result = storage.save_snapshot(&meta(2, 1), |w| w.write_all(b"x"));
    assert!(matches!(result, Err(StorageError::Io { .. })), "{result:?}");
    assert!(matches!(storage.sync(), Err(StorageError::Failed)));
    assert!(matches!(
        storage.append(&entries(3..=3, 1)),
        Err(StorageError::Failed)
    ));
}

#[test]
fn a_snapshot_whose_temp_file_cannot_be_written_leaves_the_storage_usable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    storage.append(&entries(1..=2, 1)).unwrap();
    storage.sync().unwrap();
    let result = storage.save_snapshot(&meta(2, 1), |_| {
        Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
    });
    assert!(
        matches!(result, Err(StorageError::SnapshotNotWritten { .. })),
        "{result:?}"
    );
    assert!(
        fs::read_dir(dir.path().join(SNAPSHOT_DIR))
            .unwrap()
            .next()
            .is_none(),
        "temp file removed"
    );
    storage.append(&entries(3..=3, 1)).unwrap();
    storage.sync().unwrap();
    storage
        .save_snapshot(&meta(3, 1), |w| w.write_all(b"x"))
        .expect("a later attempt succeeds");
    drop(storage);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.snapshot.map(|(m, _)| m), Some(meta(3, 1)));
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

/// The files of `dir` as a crash at this moment would leave them: every
/// write of the storage is followed by an fdatasync, so what is in the
/// files now is what a `kill -9` (or, given the syncs, a power loss) keeps.
fn crash_copy(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for sub in [WAL_DIR, SNAPSHOT_DIR] {
        fs::create_dir_all(copy.path().join(sub)).unwrap();
        for item in fs::read_dir(dir.join(sub)).unwrap() {
            let path = item.unwrap().path();
            fs::copy(&path, copy.path().join(sub).join(path.file_name().unwrap())).unwrap();
        }
    }
    copy
}

#[test]
fn a_roll_then_a_snapshot_then_a_crash_keeps_the_term_and_vote() {
    let dir = tempfile::tempdir().unwrap();
    let voted = HardState {
        term: Term(3),
        vote: Some(NodeId(2)),
        commit: LogIndex(0),
    };
    let (mut storage, _) = open_small(dir.path());
    storage.set_hard_state(&voted).unwrap();
    append_synced(&mut storage, &entries(1..=10, 3));
    // A round that only moves the commit index: not synced by the driver.
    let committed = HardState {
        commit: LogIndex(10),
        ..voted
    };
    // (Before format 2 this write rolled the full segment and left the new
    // segment's opening hard state in a buffer; the snapshot then deleted
    // every durable copy of term 3 and the vote.)
    storage.set_hard_state(&committed).unwrap();
    storage
        .save_snapshot(&meta(10, 3), |w| w.write_all(b"state at 10"))
        .unwrap();
    assert_eq!(
        storage.wal.segment_count(),
        1,
        "every older segment deleted"
    );
    let crashed = crash_copy(dir.path());
    drop(storage);
    let (_, recovered) = open_small(crashed.path());
    assert_eq!(recovered.hard_state, committed);
    assert_eq!(recovered.snapshot.map(|(m, _)| m), Some(meta(10, 3)));
}

#[test]
fn a_hard_state_not_yet_synced_is_not_written_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    let before = append_synced(&mut storage, &entries(1..=1, 1));
    storage
        .set_hard_state(&HardState {
            term: Term(1),
            vote: None,
            commit: LogIndex(1),
        })
        .unwrap();
    assert_eq!(
        fs::metadata(active_segment(&storage)).unwrap().len(),
        before
    );
    let crashed = crash_copy(dir.path());
    let (_, recovered) = open(crashed.path());
    assert_eq!(recovered.hard_state, HardState::default());
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
}

#[test]
fn a_snapshot_without_any_hard_state_in_the_wal_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let segment = {
        let (mut storage, _) = open(dir.path());
        append_synced(&mut storage, &entries(1..=3, 2));
        storage
            .save_snapshot(&meta(3, 2), |w| w.write_all(b"x"))
            .unwrap();
        active_segment(&storage)
    };
    // Only a header left: the segment's opening hard state is gone.
    let raw = fs::read(&segment).unwrap();
    fs::write(&segment, &raw[..batch::BLOCK_BYTES as usize]).unwrap();
    let result = Storage::open(dir.path(), StorageOptions::default());
    assert!(
        matches!(result, Err(StorageError::MissingHardState { snapshot_index, .. }) if snapshot_index == LogIndex(3)),
        "{result:?}"
    );
}

#[test]
fn a_format_one_wal_is_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join(WAL_DIR);
    fs::create_dir_all(&wal_dir).unwrap();
    let mut old = Vec::new();
    segment::encode(
        segment::RecordRef::HardState(&HardState::default()),
        &mut old,
    )
    .unwrap();
    segment::encode(segment::RecordRef::Entry(&entry(1, 1)), &mut old).unwrap();
    let path = wal_dir.join("00000000000000000001-00000000000000000001.wal");
    fs::write(&path, &old).unwrap();
    let result = Storage::open(dir.path(), StorageOptions::default());
    assert!(
        matches!(&result, Err(StorageError::UnsupportedFormat { version: 1, file }) if *file == path),
        "{result:?}"
    );
    assert_eq!(fs::read(&path).unwrap(), old, "the old file is left alone");
}

#[test]
fn a_segment_whose_creation_was_torn_is_set_aside_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let next = {
        let (mut storage, _) = open(dir.path());
        append_synced(&mut storage, &entries(1..=2, 1));
        let active = active_segment(&storage);
        let name = active.file_name().unwrap().to_string_lossy().into_owned();
        let seq: u64 = name[..20].parse().unwrap();
        active.with_file_name(format!("{:020}-{:020}.wal", seq + 1, 3))
    };
    fs::write(&next, b"RKVWAL\0\0\x02\0\0\0 half a header").unwrap();
    let (mut storage, recovered) = open(dir.path());
    assert_eq!(recovered.entries, entries(1..=2, 1));
    assert_eq!(recovered.warnings.len(), 1, "{:?}", recovered.warnings);
    let kept = fs::read_dir(dir.path().join(WAL_CUT_DIR)).unwrap().count();
    assert_eq!(kept, 1, "the torn segment's bytes are kept");
    append_synced(&mut storage, &entries(3..=3, 1));
    drop(storage);
    let (_, again) = open(dir.path());
    assert_eq!(again.entries, entries(1..=3, 1));
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
}

#[test]
fn a_failed_fsync_leaves_a_marker_that_stops_the_next_open_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut storage, _) = open(dir.path());
        let result: Result<(), _> = storage.fail_on_error(Err(StorageError::Io {
            op: "fdatasync",
            path: dir.path().join("wal/x"),
            source: std::io::Error::from_raw_os_error(5),
        }));
        assert!(result.is_err());
        assert!(matches!(storage.sync(), Err(StorageError::Failed)));
    }
    let marker = dir.path().join(FSYNC_FAILED_MARKER);
    assert!(marker.exists());
    let result = Storage::open(dir.path(), StorageOptions::default());
    assert!(
        matches!(&result, Err(StorageError::FsyncFailedEarlier { reason, .. }) if reason.contains("fdatasync")),
        "{result:?}"
    );
    fs::remove_file(&marker).unwrap();
    open(dir.path());
}

#[test]
fn open_fsyncs_what_it_replayed_and_reports_sync_bytes_as_whole_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    storage.append(&entries(1..=1, 1)).unwrap();
    let stats = storage.sync().unwrap();
    assert_eq!(
        stats.bytes,
        batch::BLOCK_BYTES,
        "a small batch costs one block"
    );
    assert_eq!(
        storage.sync().unwrap().bytes,
        0,
        "nothing pending, nothing written"
    );
}

#[test]
fn check_reports_a_torn_tail_without_changing_anything_and_repair_cuts_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    let segment = {
        let (mut storage, _) = open(dir.path());
        append_synced(&mut storage, &entries(1..=2, 1));
        append_synced(&mut storage, &entries(3..=3, 1));
        active_segment(&storage)
    };
    let clean = check(dir.path(), false).unwrap();
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.log_range, Some((LogIndex(1), LogIndex(3))));
    let raw = fs::read(&segment).unwrap();
    let torn_len = raw.len() - batch::BLOCK_BYTES as usize + 40;
    fs::write(&segment, &raw[..torn_len]).unwrap();

    let found = check(dir.path(), false).unwrap();
    assert!(!found.is_clean());
    assert_eq!(found.torn_bytes, 40);
    assert_eq!(found.log_range, Some((LogIndex(1), LogIndex(2))));
    assert_eq!(
        fs::metadata(&segment).unwrap().len(),
        torn_len as u64,
        "unchanged"
    );

    let repaired = check(dir.path(), true).unwrap();
    assert!(repaired.repaired, "{repaired:?}");
    assert_eq!(
        fs::read_dir(dir.path().join(WAL_CUT_DIR)).unwrap().count(),
        1
    );
    assert!(check(dir.path(), false).unwrap().is_clean());
}

#[test]
fn check_reports_damage_to_acknowledged_data_and_repair_cuts_it_aside_into_repair_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, batch_start) = {
        let (mut storage, _) = open(dir.path());
        let start = append_synced(&mut storage, &entries(1..=1, 1));
        append_synced(&mut storage, &entries(2..=2, 1));
        append_synced(&mut storage, &entries(3..=3, 1));
        (active_segment(&storage), start as usize)
    };
    let mut raw = fs::read(&segment).unwrap();
    raw[batch_start + 30] ^= 4;
    fs::write(&segment, &raw).unwrap();
    let found = check(dir.path(), false).unwrap();
    assert!(!found.is_clean());
    assert!(found.damage.is_some());
    assert_eq!(found.torn_bytes, (raw.len() - batch_start) as u64);
    assert_eq!(found.log_range, Some((LogIndex(1), LogIndex(1))));
    assert_eq!(fs::read(&segment).unwrap(), raw, "check changes nothing");

    let repaired = check(dir.path(), true).unwrap();
    assert!(repaired.repaired);
    assert_eq!(repaired.damaged_up_to_term, Some(Term(1)));
    assert_eq!(side_files(dir.path()).len(), 1);
    // The log is clean now, but the node is still waiting for its repair.
    let after = check(dir.path(), false).unwrap();
    assert_eq!(after.damage, None);
    assert_eq!(after.damaged_up_to_term, Some(Term(1)));
}

/// Found by the simulator (`blockdisk`, seed 18 of
/// `blockdisk,crash,fsync,loss,partition`): damage to a batch whose entries
/// a snapshot covers, in a segment not yet compacted, cuts the log below the
/// snapshot index. The log then resumes after the snapshot, and the next
/// open must read it so rather than as a gap.
#[test]
fn damage_below_the_snapshot_index_cuts_the_log_and_the_next_open_reads_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, batch_start) = {
        let (mut storage, _) = open(dir.path());
        let start = append_synced(&mut storage, &entries(1..=1, 3));
        storage.set_hard_state(&term_vote(3, 2, 2)).unwrap();
        append_synced(&mut storage, &entries(2..=2, 3));
        append_synced(&mut storage, &entries(3..=3, 3));
        // Entry 3 is in the same segment, so it is not compacted.
        storage
            .save_snapshot(&meta(2, 3), |w| w.write_all(b"state at 2"))
            .unwrap();
        (active_segment(&storage), start)
    };
    let mut raw = fs::read(&segment).unwrap();
    raw[batch_start as usize + 40] ^= 0x10;
    fs::write(&segment, &raw).unwrap();
    {
        let (mut storage, recovered) = open(dir.path());
        assert_eq!(recovered.damaged_up_to_term, Some(Term(3)));
        assert!(recovered.entries.is_empty(), "the snapshot covers 1 and 2");
        assert_eq!(storage.last_index(), LogIndex(2));
        storage.append(&entries(3..=4, 4)).unwrap();
        storage.set_hard_state(&term_vote(4, 1, 4)).unwrap();
        storage.sync().unwrap();
    }
    let (_, recovered) = open(dir.path());
    assert_eq!(index_term(&recovered.entries), [(3, 4), (4, 4)]);
    assert_eq!(recovered.damaged_up_to_term, None, "repaired by term 4");
}

/// Found by the simulator (`blockdisk`): the lost batch held a truncation
/// that overwrote the kept log's last entry. The kept log's tail beyond
/// the commit index read before the damage may be stale, so the commit
/// index must not be lowered only to the log's end.
#[test]
fn damage_to_a_batch_that_truncated_keeps_the_commit_index_read_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, batch_start) = {
        let (mut storage, _) = open(dir.path());
        storage.append(&entries(1..=3, 1)).unwrap();
        storage.set_hard_state(&term_vote(1, 1, 1)).unwrap();
        let start = append_synced(&mut storage, &[]);
        // A leader of term 2 overwrites entry 3 and commits it.
        storage.append(&entries(3..=3, 2)).unwrap();
        storage.set_hard_state(&term_vote(2, 2, 3)).unwrap();
        storage.sync().unwrap();
        storage.append(&entries(4..=4, 2)).unwrap();
        storage.set_hard_state(&term_vote(2, 2, 4)).unwrap();
        storage.sync().unwrap();
        (active_segment(&storage), start)
    };
    let mut raw = fs::read(&segment).unwrap();
    raw[batch_start as usize + 40] ^= 0x10;
    fs::write(&segment, &raw).unwrap();
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.damaged_up_to_term, Some(Term(2)));
    assert_eq!(index_term(&recovered.entries), [(1, 1), (2, 1), (3, 1)]);
    assert_eq!(
        recovered.hard_state,
        term_vote(2, 2, 1),
        "entry 3 of term 1 was overwritten in the lost batch: not committed"
    );
}

/// Issue 13 item 6: another local user can neither read the data nor hold
/// the lock: the directories the node creates are 0700, its files 0600.
#[cfg(unix)]
#[test]
fn data_dir_and_every_file_are_private_to_the_node_user() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let (mut storage, _) = open(&dir);
    append_synced(&mut storage, &entries(1..=3, 1));
    storage
        .save_snapshot(&meta(2, 1), |w| w.write_all(b"state at 2"))
        .unwrap();
    let mut checked = 0;
    let mut pending = vec![dir.clone()];
    while let Some(path) = pending.pop() {
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", path.display());
            pending.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
        }
        checked += 1;
    }
    // The data dir, wal/, snapshots/, LOCK, a segment and the snapshot.
    assert!(checked >= 6, "only {checked} paths found");
}

/// The file names of a chain, for the assertions.
fn names(chain: &[PathBuf]) -> Vec<String> {
    chain
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn snap_name(index: u64) -> String {
    format!("{index:020}.snap")
}

/// Writes a delta at `index` on top of the current snapshot.
fn save_delta(storage: &mut Storage, index: u64, state: &[u8]) -> SnapshotInfo {
    let written = storage
        .prepare_delta_snapshot(&meta(index, 1))
        .unwrap()
        .write(|w| w.write_all(state));
    storage.finish_snapshot(written).unwrap().unwrap()
}

#[test]
fn deltas_keep_their_chain_and_a_whole_snapshot_starts_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open_small(dir.path());
    append_synced(&mut storage, &entries(1..=40, 1));
    storage
        .save_snapshot(&meta(10, 1), |w| w.write_all(b"whole at 10"))
        .unwrap();
    save_delta(&mut storage, 20, b"+delta to 20");
    save_delta(&mut storage, 30, b"+delta to 30");
    assert_eq!(
        names(storage.snapshot_chain()),
        [snap_name(10), snap_name(20), snap_name(30)]
    );
    // The chain is what a follower is sent: the states one after another.
    let chain = storage.snapshot_chain().to_vec();
    let all = read_chain_range_in(&StdFs, &chain, 0, 1000).unwrap();
    assert_eq!(all, b"whole at 10+delta to 20+delta to 30");
    for (offset, len) in [(0, 5), (8, 6), (11, 12), (20, 100), (35, 5), (36, 5)] {
        let part = read_chain_range_in(&StdFs, &chain, offset, len).unwrap();
        let end = (offset + len).min(all.len() as u64) as usize;
        assert_eq!(
            part,
            &all[(offset as usize).min(all.len())..end],
            "{offset} {len}"
        );
    }
    drop(storage);
    let (mut storage, recovered) = open_small(dir.path());
    assert_eq!(recovered.snapshot.as_ref().unwrap().0.index, LogIndex(30));
    assert_eq!(
        names(&recovered.snapshot_chain),
        [snap_name(10), snap_name(20), snap_name(30)]
    );
    assert_eq!(index_term(&recovered.entries).first(), Some(&(31, 1)));
    // A whole snapshot replaces the chain, and its files go.
    storage
        .save_snapshot(&meta(35, 1), |w| w.write_all(b"whole at 35"))
        .unwrap();
    assert_eq!(names(storage.snapshot_chain()), [snap_name(35)]);
    let mut left: Vec<String> = fs::read_dir(dir.path().join(SNAPSHOT_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [snap_name(35)]);
}

#[test]
fn a_delta_needs_a_snapshot_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    append_synced(&mut storage, &entries(1..=5, 1));
    assert!(matches!(
        storage.prepare_delta_snapshot(&meta(5, 1)),
        Err(StorageError::NoSnapshotBase { index: LogIndex(5) })
    ));
    // The storage goes on: a whole one is taken.
    storage
        .save_snapshot(&meta(5, 1), |w| w.write_all(b"5"))
        .unwrap();
}

#[test]
fn a_delta_whose_base_was_replaced_by_an_install_is_refused_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    append_synced(&mut storage, &entries(1..=20, 1));
    storage
        .save_snapshot(&meta(5, 1), |w| w.write_all(b"5"))
        .unwrap();
    let prepared = storage.prepare_delta_snapshot(&meta(15, 1)).unwrap();
    let written = prepared.write(|w| w.write_all(b"+15"));
    // Installed from the leader meanwhile, below the delta's index.
    storage
        .install_snapshot(&meta(12, 2), b"installed at 12")
        .unwrap();
    assert!(matches!(
        storage.finish_snapshot(written),
        Err(StorageError::NoSnapshotBase {
            index: LogIndex(15)
        })
    ));
    assert_eq!(names(storage.snapshot_chain()), [snap_name(12)]);
    assert!(!dir.path().join(SNAPSHOT_DIR).join(snap_name(15)).exists());
    // Usable, and a delta now goes on the installed snapshot.
    append_synced(&mut storage, &entries(13..=16, 2));
    save_delta(&mut storage, 16, b"+16");
    assert_eq!(
        names(storage.snapshot_chain()),
        [snap_name(12), snap_name(16)]
    );
}

#[test]
fn a_chain_missing_a_file_is_skipped_for_the_newest_complete_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    append_synced(&mut storage, &entries(1..=40, 1));
    storage
        .save_snapshot(&meta(10, 1), |w| w.write_all(b"10"))
        .unwrap();
    save_delta(&mut storage, 20, b"+20");
    save_delta(&mut storage, 30, b"+30");
    drop(storage);
    let snapshots = dir.path().join(SNAPSHOT_DIR);
    fs::remove_file(snapshots.join(snap_name(20))).unwrap();
    let mut warnings = Vec::new();
    let chain = snapshot_file::recover_chain(&StdFs, &snapshots, &mut warnings, true)
        .unwrap()
        .unwrap();
    let paths: Vec<PathBuf> = chain.into_iter().map(|(_, p)| p).collect();
    assert_eq!(names(&paths), [snap_name(10)]);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("misses the snapshot at 20")),
        "{warnings:?}"
    );
}

#[test]
fn a_version_1_snapshot_file_is_still_read_as_a_whole_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    append_synced(&mut storage, &entries(1..=5, 1));
    let info = storage
        .save_snapshot(&meta(5, 1), |w| w.write_all(b"five"))
        .unwrap();
    drop(storage);
    // Rewrite its prefix and header as version 1 wrote them: no `base`.
    let bytes = fs::read(&info.path).unwrap();
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let header = &bytes[20..20 + header_len];
    assert_eq!(header.last(), Some(&0), "a header ending in `base: None`");
    let v1_header = &header[..header_len - 1];
    let mut v1 = b"RKVSNAP\0".to_vec();
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&((header_len - 1) as u32).to_le_bytes());
    let crc = crc32c::crc32c(&1u32.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &((header_len - 1) as u32).to_le_bytes());
    v1.extend_from_slice(&crc32c::crc32c_append(crc, v1_header).to_le_bytes());
    v1.extend_from_slice(v1_header);
    v1.extend_from_slice(&bytes[20 + header_len..]);
    fs::write(&info.path, v1).unwrap();
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.snapshot.unwrap().0.index, LogIndex(5));
    assert_eq!(recovered.snapshot_chain.len(), 1);
    assert_eq!(read_snapshot(&info.path).1, b"five");
}
