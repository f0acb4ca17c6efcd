//! The map's operations: writes, reads, dedup, apply order, the address
//! book; and the digest.

use super::*;
use raft_core::Term;
use std::collections::BTreeSet;

#[test]
fn the_address_book_is_applied_and_survives_a_snapshot() {
    let mut machine = KvStateMachine::new();
    let set = |index, name: &str, url: &str| Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: ClusterCommand::SetAddress {
            name: name.into(),
            url: url.into(),
        }
        .encode(),
    };
    let applied = machine.apply_entry(&set(1, "node4", "http://127.0.0.1:1"));
    assert_eq!((applied.request, applied.result), (None, None));
    machine.apply_entry(&set(2, "node2", "http://127.0.0.1:2"));
    machine.apply_entry(&set(3, "node4", "http://127.0.0.1:4"));
    let expected: BTreeMap<String, String> = [
        ("node2".to_string(), "http://127.0.0.1:2".to_string()),
        ("node4".to_string(), "http://127.0.0.1:4".to_string()),
    ]
    .into();
    assert_eq!(machine.addresses(), &expected);
    let restored = KvStateMachine::restore_from_bytes(&machine.snapshot_bytes()).unwrap();
    assert_eq!(restored, machine);
    assert_eq!(restored.digest(), machine.digest());
}

pub(super) fn normal(index: u64, command: &Command) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: command.encode(),
    }
}

pub(super) fn command(client: Option<(&str, u64)>, op: Op) -> Command {
    Command {
        request: None,
        client: client.map(|(client_id, seq)| ClientSeq {
            client_id: client_id.to_owned(),
            seq,
        }),
        op,
    }
}

/// Applies `op` as the next entry, without dedup.
pub(super) fn apply(machine: &mut KvStateMachine, op: Op) -> OpResult {
    apply_as(machine, None, op)
}

pub(super) fn apply_as(
    machine: &mut KvStateMachine,
    client: Option<(&str, u64)>,
    op: Op,
) -> OpResult {
    let index = machine.applied_index() + 1;
    let applied = machine.apply_entry(&normal(index, &command(client, op)));
    assert_eq!(applied.index, LogIndex(index));
    applied.result.expect("a normal entry has a result")
}

pub(super) fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
    }
}

pub(super) fn cas(key: &str, expected: Option<&str>, value: Option<&str>) -> Op {
    Op::Cas {
        key: key.into(),
        expected: expected.map(Into::into),
        value: value.map(Into::into),
    }
}

#[test]
fn put_returns_the_previous_value() {
    let mut machine = KvStateMachine::new();
    let first = apply(&mut machine, put("k", "v1"));
    assert_eq!(
        first,
        OpResult::Put {
            revision: 1,
            prev: None
        }
    );
    let second = apply(&mut machine, put("k", "v2"));
    assert_eq!(
        second,
        OpResult::Put {
            revision: 2,
            prev: Some("v1".into())
        }
    );
    assert_eq!(machine.get("k"), Some(("v2", 2)));
}

#[test]
fn delete_of_a_missing_key_succeeds_with_prev_none() {
    let mut machine = KvStateMachine::new();
    let result = apply(&mut machine, Op::Delete { key: "k".into() });
    assert_eq!(
        result,
        OpResult::Delete {
            revision: 1,
            prev: None
        }
    );
    apply(&mut machine, put("k", "v"));
    let result = apply(&mut machine, Op::Delete { key: "k".into() });
    let prev = Some("v".into());
    assert_eq!(result, OpResult::Delete { revision: 3, prev });
    assert_eq!(machine.get("k"), None);
    assert!(machine.is_empty());
}

#[test]
fn cas_with_the_right_expected_value_swaps_and_returns_the_new_value() {
    let mut machine = KvStateMachine::new();
    apply(&mut machine, put("k", "old"));
    let result = apply(&mut machine, cas("k", Some("old"), Some("new")));
    let current = Some("new".into());
    let expected_result = OpResult::Cas {
        succeeded: true,
        revision: 2,
        current,
    };
    assert_eq!(result, expected_result);
    assert_eq!(machine.get("k"), Some(("new", 2)));
}

#[test]
fn cas_with_a_wrong_expected_value_fails_returns_the_actual_value_and_changes_nothing() {
    let mut machine = KvStateMachine::new();
    apply(&mut machine, put("k", "actual"));
    let result = apply(&mut machine, cas("k", Some("other"), Some("new")));
    let current = Some("actual".into());
    let expected_result = OpResult::Cas {
        succeeded: false,
        revision: 2,
        current,
    };
    assert_eq!(result, expected_result);
    assert_eq!(machine.get("k"), Some(("actual", 1)));
    // Expecting a value of a missing key fails with current None.
    let result = apply(&mut machine, cas("missing", Some("x"), Some("y")));
    let expected_result = OpResult::Cas {
        succeeded: false,
        revision: 3,
        current: None,
    };
    assert_eq!(result, expected_result);
    assert_eq!(machine.get("missing"), None);
}

#[test]
fn cas_expecting_absence_creates_a_missing_key_and_fails_on_a_present_one() {
    let mut machine = KvStateMachine::new();
    let created = apply(&mut machine, cas("k", None, Some("v")));
    let current = Some("v".into());
    let expected_result = OpResult::Cas {
        succeeded: true,
        revision: 1,
        current,
    };
    assert_eq!(created, expected_result);
    let refused = apply(&mut machine, cas("k", None, Some("w")));
    let current = Some("v".into());
    let expected_result = OpResult::Cas {
        succeeded: false,
        revision: 2,
        current,
    };
    assert_eq!(refused, expected_result);
    assert_eq!(machine.get("k"), Some(("v", 1)));
}

#[test]
fn cas_with_value_none_deletes_the_key_when_the_comparison_holds() {
    let mut machine = KvStateMachine::new();
    apply(&mut machine, put("k", "v"));
    let result = apply(&mut machine, cas("k", Some("v"), None));
    let expected_result = OpResult::Cas {
        succeeded: true,
        revision: 2,
        current: None,
    };
    assert_eq!(result, expected_result);
    assert_eq!(machine.get("k"), None);
}

#[test]
fn multi_put_applies_every_entry_at_one_revision_and_the_last_duplicate_wins() {
    let mut machine = KvStateMachine::new();
    apply(&mut machine, put("a", "old"));
    let entries = vec![
        ("a".into(), "1".into()),
        ("b".into(), "2".into()),
        ("a".into(), "3".into()),
    ];
    let result = apply(&mut machine, Op::MultiPut { entries });
    assert_eq!(result, OpResult::MultiPut { revision: 2 });
    assert_eq!(machine.get("a"), Some(("3", 2)));
    assert_eq!(machine.get("b"), Some(("2", 2)));
    assert_eq!(machine.len(), 2);
}

#[test]
fn revision_of_a_key_is_the_index_of_the_last_write_that_changed_it() {
    let mut machine = KvStateMachine::new();
    apply(&mut machine, put("a", "1"));
    apply(&mut machine, put("b", "1"));
    let noop = Entry {
        term: Term(2),
        index: LogIndex(3),
        kind: EntryKind::Noop,
        data: Default::default(),
    };
    assert_eq!(machine.apply_entry(&noop).result, None);
    apply(&mut machine, put("a", "2"));
    apply(&mut machine, cas("b", Some("nope"), Some("x")));
    apply(&mut machine, Op::Delete { key: "zz".into() });
    assert_eq!(machine.get("a"), Some(("2", 4)));
    assert_eq!(machine.get("b"), Some(("1", 2)));
    assert_eq!(machine.applied_index(), 6);
}

#[test]
fn scan_returns_keys_with_the_prefix_in_byte_order_up_to_the_limit() {
    let mut machine = KvStateMachine::new();
    for key in ["p/b", "p/a", "p/\u{e9}", "p/Z", "q", "p", "o/x", "p/a/1"] {
        apply(&mut machine, put(key, key));
    }
    let (all, more) = machine.scan("p/", 100, SCAN_BUDGET_BYTES);
    let keys: Vec<&str> = all.iter().map(|(key, _, _)| &**key).collect();
    assert_eq!(keys, ["p/Z", "p/a", "p/a/1", "p/b", "p/\u{e9}"]);
    assert!(!more);
    let (first_two, more) = machine.scan("p/", 2, SCAN_BUDGET_BYTES);
    assert_eq!(
        first_two,
        [
            ("p/Z".into(), "p/Z".into(), 4),
            ("p/a".into(), "p/a".into(), 2)
        ]
    );
    assert!(more);
    let (exactly_five, more) = machine.scan("p/", 5, SCAN_BUDGET_BYTES);
    assert_eq!(exactly_five.len(), 5);
    assert!(!more, "no sixth key matches");
    let (none, more) = machine.scan("p/", 0, SCAN_BUDGET_BYTES);
    assert!(none.is_empty() && more);
    let (everything, more) = machine.scan("", 100, SCAN_BUDGET_BYTES);
    assert_eq!(everything.len(), 8);
    assert!(!more);
    assert_eq!(machine.scan("r", 10, SCAN_BUDGET_BYTES), (vec![], false));
}

#[test]
fn scan_stops_at_its_byte_budget_and_says_more_but_always_returns_one_entry() {
    let mut machine = KvStateMachine::new();
    for key in ["s/a", "s/b", "s/c", "s/d"] {
        apply(&mut machine, put(key, &"v".repeat(100)));
    }
    let per_entry = 3 + 100 + SCAN_ENTRY_OVERHEAD_BYTES;
    let (two, more) = machine.scan("s/", 100, 2 * per_entry + per_entry / 2);
    let keys: Vec<&str> = two.iter().map(|(key, _, _)| &**key).collect();
    assert_eq!(keys, ["s/a", "s/b"]);
    assert!(more, "the budget cut the answer short");
    let (exact, more) = machine.scan("s/", 100, 4 * per_entry);
    assert_eq!((exact.len(), more), (4, false), "a budget that fits all");
    let (one, more) = machine.scan("s/", 100, 1);
    assert_eq!(
        (one.len(), more),
        (1, true),
        "a client paging on progresses"
    );
}

#[test]
fn live_bytes_counts_keys_and_values_through_puts_overwrites_deletes_and_cas() {
    let mut machine = KvStateMachine::new();
    apply(&mut machine, put("ab", "xyz"));
    assert_eq!(machine.live_bytes(), 5);
    apply(&mut machine, put("ab", "x"));
    assert_eq!(
        machine.live_bytes(),
        3,
        "an overwrite replaces the value's bytes"
    );
    apply(&mut machine, cas("c", None, Some("1234")));
    assert_eq!(machine.live_bytes(), 8);
    apply(&mut machine, cas("c", Some("1234"), None));
    assert_eq!(machine.live_bytes(), 3);
    apply(
        &mut machine,
        Op::MultiPut {
            entries: vec![("m".into(), "12".into()), ("m".into(), "1".into())],
        },
    );
    assert_eq!(
        machine.live_bytes(),
        5,
        "the last value of a repeated key wins"
    );
    apply(&mut machine, Op::Delete { key: "ab".into() });
    apply(&mut machine, Op::Delete { key: "ab".into() });
    assert_eq!(machine.live_bytes(), 2);
    let restored = KvStateMachine::restore_from_bytes(&machine.snapshot_bytes()).unwrap();
    assert_eq!(restored.live_bytes(), 2, "recomputed on restore");
}

/// Every key a write touches counts once, batched or not, whether or not
/// it changed anything; reads, failed comparisons and no-ops count nothing.
/// A restored machine starts from 0, and the count is not compared.
#[test]
fn key_writes_count_each_key_written_by_any_op() {
    let mut machine = KvStateMachine::new();
    apply(&mut machine, put("a", "1"));
    assert_eq!(machine.key_writes(), 1);
    apply(
        &mut machine,
        Op::MultiPut {
            entries: vec![("b".into(), "1".into()), ("c".into(), "1".into())],
        },
    );
    assert_eq!(machine.key_writes(), 3, "each key of a batch");
    apply(&mut machine, cas("a", Some("wrong"), Some("2")));
    assert_eq!(
        machine.key_writes(),
        3,
        "a failed comparison writes nothing"
    );
    apply(&mut machine, cas("a", Some("1"), None));
    apply(
        &mut machine,
        Op::Delete {
            key: "missing".into(),
        },
    );
    assert_eq!(machine.key_writes(), 5, "a delete, found or not");
    let restored = KvStateMachine::restore_from_bytes(&machine.snapshot_bytes()).unwrap();
    assert_eq!(restored.key_writes(), 0);
    assert_eq!(restored, machine, "not part of the state");
}

#[test]
fn a_clone_is_a_frozen_capture_that_later_writes_do_not_reach() {
    let mut machine = KvStateMachine::new();
    for i in 0..2000 {
        apply(&mut machine, put(&format!("k{i:05}"), "before"));
    }
    let captured = machine.clone();
    let captured_bytes = captured.snapshot_bytes();
    let captured_digest = captured.digest();
    for i in (0..2000).step_by(7) {
        apply(&mut machine, put(&format!("k{i:05}"), "after"));
    }
    apply(
        &mut machine,
        Op::Delete {
            key: "k00001".into(),
        },
    );
    assert_eq!(captured.snapshot_bytes(), captured_bytes);
    assert_eq!(captured.digest(), captured_digest);
    assert_eq!(captured.get("k00000"), Some(("before", 1)));
    assert_eq!(machine.get("k00000"), Some(("after", 2001)));
    assert_eq!(captured.len(), 2000);
    assert_eq!(machine.len(), 1999);
}

#[test]
fn a_retried_seq_returns_the_first_result_and_applies_once() {
    let mut machine = KvStateMachine::new();
    let first = apply_as(&mut machine, Some(("c1", 7)), put("k", "v1"));
    apply(&mut machine, put("k", "v2"));
    let retry = apply_as(&mut machine, Some(("c1", 7)), put("k", "v1"));
    assert_eq!(retry, first);
    assert_eq!(
        retry,
        OpResult::Put {
            revision: 1,
            prev: None
        }
    );
    assert_eq!(
        machine.get("k"),
        Some(("v2", 2)),
        "the retry changed nothing"
    );
    assert_eq!(machine.applied_index(), 3);
    let next = apply_as(&mut machine, Some(("c1", 8)), put("k", "v3"));
    let prev = Some("v2".into());
    assert_eq!(next, OpResult::Put { revision: 4, prev });
    assert_eq!(machine.newest_seq("c1"), Some(8));
}

#[test]
fn a_stale_seq_is_rejected_and_nothing_is_applied() {
    let mut machine = KvStateMachine::new();
    apply_as(&mut machine, Some(("c1", 5)), put("k", "v5"));
    let digest_before = {
        let mut copy = machine.clone();
        copy.applied_index += 1;
        copy.digest()
    };
    let stale = apply_as(&mut machine, Some(("c1", 4)), put("k", "v4"));
    let expected_result = OpResult::StaleSeq {
        client_id: "c1".into(),
        seq: 4,
        newest: 5,
    };
    assert_eq!(stale, expected_result);
    assert_eq!(machine.get("k"), Some(("v5", 1)));
    assert_eq!(machine.newest_seq("c1"), Some(5));
    assert_eq!(machine.digest(), digest_before, "only the index moved");
}

#[test]
fn dedup_evicts_the_client_whose_last_write_is_oldest() {
    let mut machine = KvStateMachine::with_dedup_limit(2);
    apply_as(&mut machine, Some(("a", 1)), put("k", "a1")); // index 1
    apply_as(&mut machine, Some(("b", 1)), put("k", "b1")); // index 2
    apply_as(&mut machine, Some(("a", 2)), put("k", "a2")); // index 3
    apply_as(&mut machine, Some(("c", 1)), put("k", "c1")); // index 4: evicts b
    assert_eq!(machine.dedup_len(), 2);
    assert_eq!(machine.newest_seq("a"), Some(2));
    assert_eq!(machine.newest_seq("b"), None);
    assert_eq!(machine.newest_seq("c"), Some(1));
    // The documented consequence: b's retry is applied a second time.
    let retry = apply_as(&mut machine, Some(("b", 1)), put("k", "b1"));
    let prev = Some("c1".into());
    assert_eq!(retry, OpResult::Put { revision: 5, prev });
    assert_eq!(machine.newest_seq("a"), None, "a was now the oldest");
}

#[test]
fn dedup_eviction_is_the_same_on_every_replica() {
    let run = || {
        let mut machine = KvStateMachine::with_dedup_limit(3);
        for round in 0..40u64 {
            let client = format!("client-{}", (round * 7) % 5);
            apply_as(&mut machine, Some((&client, round)), put("k", &client));
        }
        machine
    };
    let (one, two) = (run(), run());
    assert_eq!(one, two);
    assert_eq!(one.digest(), two.digest());
    assert_eq!(one.dedup_len(), 3);
}

#[test]
fn a_dedup_limit_of_zero_applies_every_retry() {
    let mut machine = KvStateMachine::with_dedup_limit(0);
    apply_as(&mut machine, Some(("c", 1)), put("k", "v"));
    let retry = apply_as(&mut machine, Some(("c", 1)), put("k", "v"));
    let prev = Some("v".into());
    assert_eq!(retry, OpResult::Put { revision: 2, prev });
    assert_eq!(machine.dedup_len(), 0);
}

#[test]
fn noop_conf_change_and_undecodable_entries_only_advance_the_index() {
    let mut machine = KvStateMachine::new();
    apply(&mut machine, put("k", "v"));
    let digest_of = |machine: &KvStateMachine, index| {
        let mut copy = machine.clone();
        copy.applied_index = index;
        copy.digest()
    };
    let kinds = [EntryKind::Noop, EntryKind::ConfChange, EntryKind::Normal];
    for (offset, kind) in kinds.into_iter().enumerate() {
        let index = 2 + offset as u64;
        let entry = Entry {
            term: Term(1),
            index: LogIndex(index),
            kind,
            data: bytes::Bytes::from_static(&[0xff, 0xff, 0xff]),
        };
        let expected_digest = digest_of(&machine, index);
        let applied = machine.apply_entry(&entry);
        let expected_applied = Applied {
            index: LogIndex(index),
            request: None,
            result: None,
        };
        assert_eq!(applied, expected_applied);
        assert_eq!(machine.digest(), expected_digest);
    }
    assert_eq!(machine.applied_index(), 4);
}

#[test]
fn applied_carries_the_request_id_of_the_command() {
    let mut machine = KvStateMachine::new();
    let request = Some(RequestId { node: 2, id: 41 });
    let command = Command {
        request,
        client: None,
        op: put("k", "v"),
    };
    assert_eq!(machine.apply_entry(&normal(1, &command)).request, request);
}

#[test]
#[should_panic(expected = "entry 3 applied out of order: applied index is 1, expected entry 2")]
fn applying_an_entry_out_of_order_panics_with_the_numbers() {
    let mut machine = KvStateMachine::new();
    apply(&mut machine, put("k", "v"));
    machine.apply_entry(&normal(3, &command(None, put("k", "w"))));
}

#[test]
#[should_panic(expected = "entry 5 applied out of order: applied index is 0, expected entry 1")]
fn the_first_entry_applied_must_be_index_one() {
    KvStateMachine::new().apply_entry(&normal(5, &command(None, put("k", "v"))));
}

/// A small state with keys, an overwritten key, a deleted key and dedup
/// entries, including a stored CAS failure.
pub(super) fn small_machine() -> KvStateMachine {
    let mut machine = KvStateMachine::with_dedup_limit(10);
    apply_as(&mut machine, Some(("c1", 1)), put("alpha", "1"));
    apply(&mut machine, put("beta", "2"));
    apply_as(&mut machine, Some(("c2", 9)), cas("alpha", Some("x"), None));
    apply(&mut machine, put("gone", "x"));
    apply(&mut machine, Op::Delete { key: "gone".into() });
    apply_as(&mut machine, Some(("c1", 2)), put("beta", "3"));
    machine
}
#[test]
fn digest_changes_with_values_revisions_and_the_applied_index() {
    let base = small_machine();
    let mut other_value = base.clone();
    other_value.data.get_mut("beta").unwrap().value = "4".into();
    let mut other_revision = base.clone();
    other_revision.data.get_mut("beta").unwrap().revision = 5;
    let mut other_index = base.clone();
    other_index.applied_index += 1;
    let digests = [
        base.digest(),
        other_value.digest(),
        other_revision.digest(),
        other_index.digest(),
    ];
    let distinct: BTreeSet<u64> = digests.into_iter().collect();
    assert_eq!(distinct.len(), 4);
}

mod transactions {
    use super::*;
    use crate::command::{Compare, CompareOp, CompareTest, Txn, TxnOp, TxnOpResult};

    fn value_is(key: &str, op: CompareOp, value: &str) -> Compare {
        Compare {
            key: key.into(),
            test: CompareTest::Value {
                op,
                value: value.into(),
            },
        }
    }

    fn revision_is(key: &str, op: CompareOp, revision: u64) -> Compare {
        Compare {
            key: key.into(),
            test: CompareTest::Revision { op, revision },
        }
    }

    fn tput(key: &str, value: &str) -> TxnOp {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn tget(key: &str) -> TxnOp {
        TxnOp::Get { key: key.into() }
    }

    fn txn(compare: Vec<Compare>, success: Vec<TxnOp>, failure: Vec<TxnOp>) -> Op {
        Op::Txn(Txn {
            compare,
            success,
            failure,
        })
    }

    #[test]
    fn all_comparisons_hold_so_the_success_ops_run_in_order_at_one_revision() {
        let mut machine = KvStateMachine::new();
        apply(&mut machine, put("a", "1")); // revision 1
        apply(&mut machine, put("b", "x")); // revision 2
        let result = apply(
            &mut machine,
            txn(
                vec![
                    value_is("a", CompareOp::Equal, "1"),
                    revision_is("b", CompareOp::Less, 3),
                    revision_is("b", CompareOp::Greater, 1),
                    revision_is("absent", CompareOp::Equal, 0),
                    value_is("absent", CompareOp::NotEqual, "1"),
                ],
                vec![
                    tput("a", "2"),
                    tget("a"),
                    TxnOp::Delete { key: "b".into() },
                    tget("b"),
                ],
                vec![tget("a")],
            ),
        );
        assert_eq!(
            result,
            OpResult::Txn {
                succeeded: true,
                revision: 3,
                results: vec![
                    TxnOpResult::Prev(Some("1".into())),
                    TxnOpResult::Get(Some(("a".into(), "2".into(), 3))),
                    TxnOpResult::Prev(Some("x".into())),
                    TxnOpResult::Get(None),
                ],
            }
        );
        assert_eq!(machine.get("a"), Some(("2", 3)));
        assert_eq!(machine.get("b"), None);
    }

    #[test]
    fn one_failing_comparison_runs_the_failure_ops_and_writes_nothing_else() {
        let mut machine = KvStateMachine::new();
        apply(&mut machine, put("a", "1"));
        let result = apply(
            &mut machine,
            txn(
                vec![
                    value_is("a", CompareOp::Equal, "1"),
                    value_is("missing", CompareOp::Equal, "1"),
                ],
                vec![tput("a", "never")],
                vec![tget("a"), tget("missing")],
            ),
        );
        assert_eq!(
            result,
            OpResult::Txn {
                succeeded: false,
                revision: 2,
                results: vec![
                    TxnOpResult::Get(Some(("a".into(), "1".into(), 1))),
                    TxnOpResult::Get(None),
                ],
            }
        );
        assert_eq!(machine.get("a"), Some(("1", 1)));
    }

    #[test]
    fn a_retried_transaction_answers_its_first_result_and_survives_a_snapshot() {
        let mut machine = KvStateMachine::new();
        let op = txn(
            vec![revision_is("lock", CompareOp::Equal, 0)],
            vec![tput("lock", "me")],
            vec![tget("lock")],
        );
        let first = apply_as(&mut machine, Some(("c1", 1)), op.clone());
        assert!(matches!(
            first,
            OpResult::Txn {
                succeeded: true,
                ..
            }
        ));
        let restored = KvStateMachine::restore_from_bytes(&machine.snapshot_bytes()).unwrap();
        assert_eq!(restored, machine);
        let mut machine = restored;
        // The retry finds the lock taken, but is answered as the first try.
        assert_eq!(apply_as(&mut machine, Some(("c1", 1)), op.clone()), first);
        let other = apply_as(&mut machine, Some(("c2", 1)), op);
        assert!(matches!(
            other,
            OpResult::Txn {
                succeeded: false,
                ..
            }
        ));
    }
}
