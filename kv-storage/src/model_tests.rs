//! A property test: any sequence of appends (with truncations), hard state
//! changes, syncs, snapshots and reopens reads back like a plain in-memory log.

use super::*;
use bytes::Bytes;
use proptest::prelude::*;
use raft_core::{EntryKind, Membership, NodeId, Term};

/// Operations with raw numbers, interpreted against the model's state so that
/// every generated sequence is one a correct Raft node could issue.
#[derive(Clone, Debug)]
enum Op {
    /// Append `count` entries, starting `back` entries before the end (a
    /// truncation when `back > 0`), never below the commit index.
    Append {
        back: u64,
        count: u64,
        data_len: usize,
    },
    SetHardState {
        vote: bool,
        commit_pick: u64,
    },
    Sync,
    Reopen,
    SaveSnapshot {
        pick: u64,
    },
    InstallSnapshot {
        ahead: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..6u64, 1..8u64, 0..60usize)
            .prop_map(|(back, count, data_len)| Op::Append { back, count, data_len }),
        2 => (any::<bool>(), any::<u64>())
            .prop_map(|(vote, commit_pick)| Op::SetHardState { vote, commit_pick }),
        2 => Just(Op::Sync),
        2 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(|pick| Op::SaveSnapshot { pick }),
        1 => (1..6u64).prop_map(|ahead| Op::InstallSnapshot { ahead }),
    ]
}

#[derive(Default)]
struct Model {
    snapshot_index: u64,
    /// The log after the snapshot.
    entries: Vec<Entry>,
    hard_state: HardState,
    term: u64,
}

impl Model {
    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index, |e| e.index.0)
    }

    /// Entries at or below this index are never rewritten.
    fn fixed_index(&self) -> u64 {
        self.snapshot_index.max(self.hard_state.commit.0)
    }
}

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(index),
        term: Term(term),
        membership: Membership::new([NodeId(1)]),
    }
}

fn run(ops: Vec<Op>, segment_size_bytes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let options = StorageOptions {
        segment_size_bytes,
        preallocate: false,
        ..StorageOptions::default()
    };
    let (mut storage, _) = Storage::open(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append {
                back,
                count,
                data_len,
            } => {
                let start = model
                    .last_index()
                    .saturating_sub(back)
                    .max(model.fixed_index())
                    + 1;
                model.term += 1;
                let batch: Vec<Entry> = (start..start + count)
                    .map(|index| Entry {
                        term: Term(model.term),
                        index: LogIndex(index),
                        kind: EntryKind::Normal,
                        data: Bytes::from(vec![(index % 251) as u8; data_len]),
                    })
                    .collect();
                storage.append(&batch).unwrap();
                model.entries.retain(|e| e.index.0 < start);
                model.entries.extend(batch);
            }
            Op::SetHardState { vote, commit_pick } => {
                let fixed = model.fixed_index();
                let commit = fixed + commit_pick % (model.last_index() - fixed + 1);
                model.hard_state = HardState {
                    term: Term(model.term),
                    vote: vote.then_some(NodeId(model.term % 3 + 1)),
                    commit: LogIndex(commit),
                };
                storage.set_hard_state(&model.hard_state).unwrap();
            }
            Op::Sync => {
                storage.sync().unwrap();
            }
            Op::Reopen => {
                drop(storage);
                let (reopened, recovered) = Storage::open(dir.path(), options.clone()).unwrap();
                storage = reopened;
                assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
                assert_eq!(recovered.entries, model.entries);
                assert_eq!(recovered.hard_state, model.hard_state);
                let snapshot_index = recovered.snapshot.map_or(0, |(meta, _)| meta.index.0);
                assert_eq!(snapshot_index, model.snapshot_index);
            }
            Op::SaveSnapshot { pick } => {
                if model.last_index() == model.snapshot_index {
                    continue;
                }
                let index =
                    model.snapshot_index + 1 + pick % (model.last_index() - model.snapshot_index);
                storage
                    .save_snapshot(&meta(index, model.term), |w| {
                        w.write_all(&index.to_le_bytes())
                    })
                    .unwrap();
                model.entries.retain(|e| e.index.0 > index);
                model.snapshot_index = index;
            }
            Op::InstallSnapshot { ahead } => {
                let index = model.fixed_index() + ahead;
                storage
                    .install_snapshot(&meta(index, model.term), b"leader")
                    .unwrap();
                model.entries.clear();
                model.snapshot_index = index;
            }
        }
        assert_eq!(storage.last_index(), LogIndex(model.last_index()));
        assert_eq!(storage.hard_state(), model.hard_state);
    }
}

proptest! {
    // Failing cases are kept next to this file (model_tests.regressions).
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_appends_truncations_hard_states_snapshots_and_reopens_match_a_model(
        ops in prop::collection::vec(op(), 1..60),
        segment_size_bytes in prop_oneof![Just(200u64), Just(1000), Just(1 << 20)],
    ) {
        run(ops, segment_size_bytes);
    }
}
