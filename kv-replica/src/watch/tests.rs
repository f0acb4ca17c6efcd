//! The hub (history window, compaction, replay, matching, cut-off) and the
//! events the state machine records.

use super::*;
use crate::command::{ClientSeq, Command, Compare, CompareTest, Op, Txn, TxnOp};
use crate::state_machine::KvStateMachine;
use raft_core::{Entry, EntryKind, LogIndex, Term};

fn config(history_revisions: u64) -> WatchConfig {
    WatchConfig {
        history_revisions,
        ..WatchConfig::default()
    }
}

fn put(revision: u64, key: &str, value: &str) -> WatchEvent {
    WatchEvent::put(revision, key, value)
}

fn del(revision: u64, key: &str) -> WatchEvent {
    WatchEvent::delete(revision, key)
}

/// Polls until idle (bounded), returning everything delivered.
fn drain(hub: &mut WatchHub, id: WatchId) -> Vec<WatchEvent> {
    let mut all = Vec::new();
    for _ in 0..10_000 {
        match hub.poll(id) {
            Delivery::Events(events) => all.extend(events),
            Delivery::Idle { .. } => return all,
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("poll never went idle");
}

fn prefix(p: &str) -> WatchFilter {
    WatchFilter::Prefix(p.into())
}

#[test]
fn a_watch_delivers_only_events_after_it_started_and_matching_it() {
    let mut hub = WatchHub::new(WatchConfig::default(), 0);
    hub.apply(1, vec![put(1, "a/1", "x")]);
    let started = hub.watch(prefix("a/"), None).unwrap();
    assert_eq!(started.revision, 1);
    let key = hub.watch(WatchFilter::Key("b".into()), None).unwrap();
    let wake = hub.apply(3, vec![put(2, "a/2", "y"), put(2, "b", "z"), del(3, "a/1")]);
    assert_eq!(wake, vec![started.id, key.id]);
    assert_eq!(
        drain(&mut hub, started.id),
        vec![put(2, "a/2", "y"), del(3, "a/1")]
    );
    assert_eq!(drain(&mut hub, key.id), vec![put(2, "b", "z")]);
    assert_eq!(hub.poll(key.id), Delivery::Idle { progress: 3 });
    // "a/" does not match "a" or "ab"; the empty prefix matches everything.
    assert!(!prefix("a/").matches("a") && !prefix("a/").matches("ab"));
    assert!(prefix("").matches("anything"));
}

#[test]
fn a_watcher_with_nothing_to_read_is_not_woken_and_stays_caught_up() {
    let mut hub = WatchHub::new(config(10), 0);
    let w = hub.watch(WatchFilter::Key("k".into()), None).unwrap();
    for revision in 1..=100 {
        let wake = hub.apply(revision, vec![put(revision, "other", "v")]);
        assert!(wake.is_empty(), "woken at {revision}");
    }
    // The history moved far past its start, yet it was never cut off.
    assert_eq!(hub.compact_revision(), 91);
    assert_eq!(hub.poll(w.id), Delivery::Idle { progress: 100 });
    hub.apply(101, vec![put(101, "k", "v")]);
    assert_eq!(drain(&mut hub, w.id), vec![put(101, "k", "v")]);
}

#[test]
fn from_revision_replays_exactly_the_rest_and_older_is_compacted() {
    let mut hub = WatchHub::new(config(5), 0);
    for revision in 1..=8 {
        hub.apply(revision, vec![put(revision, "k", &revision.to_string())]);
    }
    // The last 5 revisions are kept: 4..=8.
    assert_eq!(hub.compact_revision(), 4);
    assert_eq!(hub.history_len(), 5);
    assert_eq!(
        hub.watch(prefix(""), Some(3)),
        Err(WatchError::Compacted {
            from_revision: 3,
            compact_revision: 4
        })
    );
    let w = hub.watch(prefix(""), Some(6)).unwrap();
    assert_eq!(w.revision, 8);
    let got: Vec<u64> = drain(&mut hub, w.id).iter().map(|e| e.revision).collect();
    assert_eq!(got, vec![6, 7, 8]);
    // A future revision waits for it.
    let future = hub.watch(prefix(""), Some(10)).unwrap();
    hub.apply(9, vec![put(9, "k", "9")]);
    assert_eq!(hub.poll(future.id), Delivery::Idle { progress: 9 });
    hub.apply(10, vec![put(10, "k", "10")]);
    assert_eq!(drain(&mut hub, future.id), vec![put(10, "k", "10")]);
}

#[test]
fn revision_zero_on_a_fresh_hub_replays_everything_and_noops_advance_revision() {
    let mut hub = WatchHub::new(WatchConfig::default(), 0);
    hub.apply(2, vec![put(2, "k", "v")]); // 1 was a no-op entry
    let w = hub.watch(prefix(""), Some(0)).unwrap();
    assert_eq!(drain(&mut hub, w.id), vec![put(2, "k", "v")]);
    // A hub restarted over a snapshot at 50 has nothing before 51.
    let mut restarted = WatchHub::new(WatchConfig::default(), 50);
    assert!(matches!(
        restarted.watch(prefix(""), Some(0)),
        Err(WatchError::Compacted {
            compact_revision: 51,
            ..
        })
    ));
    assert!(restarted.watch(prefix(""), Some(51)).is_ok());
}

#[test]
fn the_byte_bound_drops_whole_revisions() {
    let mut hub = WatchHub::new(
        WatchConfig {
            history_bytes: 3 * (EVENT_OVERHEAD_BYTES + 2),
            ..WatchConfig::default()
        },
        0,
    );
    hub.apply(1, vec![put(1, "a", "1"), put(1, "b", "1")]);
    hub.apply(2, vec![put(2, "a", "2"), put(2, "b", "2")]);
    // 4 events over a bound of 3: revision 1 goes whole.
    assert_eq!(hub.compact_revision(), 2);
    assert_eq!(hub.history_len(), 2);
    assert!(hub.history_bytes() <= 3 * (EVENT_OVERHEAD_BYTES + 2));
}

#[test]
fn a_slow_consumer_is_cut_off_when_the_history_passes_it() {
    let mut hub = WatchHub::new(config(4), 0);
    let slow = hub.watch(prefix(""), None).unwrap();
    let fast = hub.watch(prefix(""), None).unwrap();
    for revision in 1..=10 {
        let wake = hub.apply(revision, vec![put(revision, "k", "v")]);
        // Woken while it has events to read, and once more when cut off
        // (at revision 5, when revision 1 leaves the history); then never.
        assert_eq!(wake.contains(&slow.id), revision <= 5, "at {revision}");
        assert_eq!(drain(&mut hub, fast.id).len(), 1);
    }
    match hub.poll(slow.id) {
        Delivery::SlowConsumer { message } => assert!(message.contains("from revision 2")),
        other => panic!("expected a cut-off, got {other:?}"),
    }
    // It stays cut off (and counted) until cancelled.
    assert!(matches!(hub.poll(slow.id), Delivery::SlowConsumer { .. }));
    assert_eq!(hub.watch_count(), 2);
    hub.cancel(slow.id);
    assert_eq!(hub.poll(slow.id), Delivery::Gone);
    assert_eq!(hub.watch_count(), 1);
}

#[test]
fn a_snapshot_install_cuts_off_watchers_behind_it() {
    let mut hub = WatchHub::new(WatchConfig::default(), 0);
    let w = hub.watch(prefix(""), None).unwrap();
    hub.apply(3, vec![put(3, "k", "v")]);
    assert_eq!(hub.snapshot_installed(20), vec![w.id]);
    assert!(matches!(hub.poll(w.id), Delivery::SlowConsumer { .. }));
    assert_eq!(hub.revision(), 20);
    assert!(matches!(
        hub.watch(prefix(""), Some(5)),
        Err(WatchError::Compacted {
            compact_revision: 21,
            ..
        })
    ));
    let after = hub.watch(prefix(""), Some(21)).unwrap();
    hub.apply(21, vec![del(21, "k")]);
    assert_eq!(drain(&mut hub, after.id), vec![del(21, "k")]);
}

#[test]
fn batches_hold_whole_revisions_and_the_watch_limit_holds() {
    let mut hub = WatchHub::new(
        WatchConfig {
            batch_bytes: 1,
            max_watches: 2,
            ..WatchConfig::default()
        },
        0,
    );
    let w = hub.watch(prefix(""), None).unwrap();
    let many: Vec<WatchEvent> = (0..50).map(|i| put(1, &format!("k{i}"), "v")).collect();
    hub.apply(1, many.clone());
    hub.apply(2, vec![put(2, "x", "v")]);
    // One poll takes revision 1 whole (50 events) despite the tiny batch bound.
    assert_eq!(hub.poll(w.id), Delivery::Events(many));
    assert_eq!(hub.poll(w.id), Delivery::Events(vec![put(2, "x", "v")]));
    hub.watch(prefix(""), None).unwrap();
    assert_eq!(
        hub.watch(prefix(""), None),
        Err(WatchError::TooManyWatches { limit: 2 })
    );
}

#[test]
fn a_key_watch_behind_a_flood_is_served_with_bounded_scans() {
    let mut hub = WatchHub::new(config(1_000_000), 0);
    let events: Vec<WatchEvent> = (1..=40_000).map(|r| put(r, "other", "v")).collect();
    hub.apply(40_000, events);
    hub.apply(40_001, vec![put(40_001, "k", "v")]);
    let w = hub.watch(WatchFilter::Key("k".into()), Some(1)).unwrap();
    // Empty batches while scanning, then the one event, then idle.
    assert_eq!(hub.poll(w.id), Delivery::Events(Vec::new()));
    assert_eq!(drain(&mut hub, w.id), vec![put(40_001, "k", "v")]);
}

fn entry(index: u64, op: Op) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: Command {
            request: None,
            client: Some(ClientSeq {
                client_id: "c".into(),
                seq: index,
            }),
            op,
        }
        .encode(),
    }
}

#[test]
fn the_state_machine_records_one_event_per_change_when_asked() {
    let mut off = KvStateMachine::new();
    let mut on = KvStateMachine::new();
    on.record_events(true);
    let p = |k: &str, v: &str| Op::Put {
        key: k.into(),
        value: v.into(),
    };
    let ops = vec![
        p("a", "1"),
        Op::MultiPut {
            entries: vec![("b".into(), "2".into()), ("c".into(), "3".into())],
        },
        Op::Delete { key: "b".into() },
        // Deleting a missing key changes nothing: no event.
        Op::Delete { key: "zz".into() },
        Op::Cas {
            key: "a".into(),
            expected: Some("1".into()),
            value: Some("4".into()),
        },
        // A failed CAS changes nothing.
        Op::Cas {
            key: "a".into(),
            expected: Some("1".into()),
            value: Some("5".into()),
        },
        Op::Cas {
            key: "c".into(),
            expected: Some("3".into()),
            value: None,
        },
        Op::Txn(Txn {
            compare: vec![Compare {
                key: "a".into(),
                test: CompareTest::Value {
                    op: crate::command::CompareOp::Equal,
                    value: "4".into(),
                },
            }],
            success: vec![
                TxnOp::Put {
                    key: "t".into(),
                    value: "1".into(),
                },
                TxnOp::Delete { key: "a".into() },
                TxnOp::Get { key: "t".into() },
            ],
            failure: vec![],
        }),
    ];
    for (i, op) in ops.into_iter().enumerate() {
        let e = entry(i as u64 + 1, op);
        off.apply_entry(&e);
        on.apply_entry(&e);
    }
    assert_eq!(off.take_events(), Vec::new());
    assert_eq!(
        on.take_events(),
        vec![
            put(1, "a", "1"),
            put(2, "b", "2"),
            put(2, "c", "3"),
            del(3, "b"),
            put(5, "a", "4"),
            del(7, "c"),
            put(8, "t", "1"),
            del(8, "a"),
        ]
    );
    assert!(on.take_events().is_empty());
    // Recording is not replicated state.
    assert_eq!(on, off);
    assert_eq!(on.digest(), off.digest());
}
