//! Hand-written scenarios for the checker, one behaviour each.

use super::*;

fn get(client: u64, invoke: u64, complete: u64, key: &str, value: Option<&str>) -> Operation {
    let ret = Ret::Get {
        value: value.map(Into::into),
    };
    Operation::completed(client, invoke, complete, Call::get(key), ret)
}

fn put(client: u64, span: (u64, u64), key: &str, value: &str, prev: Option<&str>) -> Operation {
    let ret = Ret::Put {
        prev: prev.map(Into::into),
    };
    Operation::completed(client, span.0, span.1, Call::put(key, value), ret)
}

fn put_ack(client: u64, invoke: u64, complete: u64, key: &str, value: &str) -> Operation {
    Operation::completed(client, invoke, complete, Call::put(key, value), Ret::PutAck)
}

fn delete(client: u64, invoke: u64, complete: u64, key: &str, prev: Option<&str>) -> Operation {
    let ret = Ret::Delete {
        prev: prev.map(Into::into),
    };
    Operation::completed(client, invoke, complete, Call::delete(key), ret)
}

/// A CAS `expected -> value` on `key` that replied `(succeeded, current)`.
fn cas(
    client: u64,
    span: (u64, u64),
    key: &str,
    change: (Option<&str>, Option<&str>),
    reply: (bool, Option<&str>),
) -> Operation {
    let ret = Ret::Cas {
        succeeded: reply.0,
        current: reply.1.map(Into::into),
    };
    let call = Call::cas(key, change.0, change.1);
    Operation::completed(client, span.0, span.1, call, ret)
}

fn multi_put(client: u64, invoke: u64, complete: u64, entries: &[(&str, &str)]) -> Operation {
    let entries = entries
        .iter()
        .map(|&(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    let call = Call::MultiPut { entries };
    Operation::completed(client, invoke, complete, call, Ret::MultiPut)
}

fn assert_ok(history: &[Operation]) {
    let result = check(history);
    assert!(result.is_ok(), "expected linearizable, got {result}");
}

fn assert_violation(history: &[Operation]) -> String {
    match check(history) {
        CheckResult::Violation { explanation, .. } => explanation,
        other => panic!("expected a violation, got {other}"),
    }
}

#[test]
fn an_empty_history_is_linearizable() {
    assert_eq!(check(&[]), CheckResult::Ok { keys: 0, ops: 0 });
}

#[test]
fn a_sequential_history_is_linearizable() {
    let history = [
        get(1, 0, 1, "k", None),
        put(1, (2, 3), "k", "a", None),
        get(2, 4, 5, "k", Some("a")),
        put(2, (6, 7), "k", "b", Some("a")),
        delete(1, 8, 9, "k", Some("b")),
        get(1, 10, 11, "k", None),
    ];
    assert_eq!(check(&history), CheckResult::Ok { keys: 1, ops: 6 });
}

#[test]
fn a_stale_read_after_a_completed_write_is_a_violation() {
    let history = [
        put(1, (0, 10), "k", "a", None),
        put(1, (20, 30), "k", "b", Some("a")),
        get(2, 40, 50, "k", Some("a")),
    ];
    assert_violation(&history);
}

#[test]
fn the_violation_names_the_key_its_operations_and_the_stuck_read() {
    let history = [
        put(1, (0, 10), "k", "a", None),
        put(1, (0, 10), "other", "x", None),
        put(1, (20, 30), "k", "b", Some("a")),
        get(2, 40, 50, "k", Some("a")),
    ];
    let CheckResult::Violation {
        key,
        ops_in_key,
        explanation,
    } = check(&history)
    else {
        panic!("expected a violation");
    };
    assert_eq!(key, "k");
    assert_eq!(
        ops_in_key,
        vec![history[0].clone(), history[2].clone(), history[3].clone()]
    );
    assert!(
        explanation.contains("Longest linearizable prefix found: 2 operations"),
        "{explanation}"
    );
    assert!(
        explanation.contains("State after that prefix: \"b\""),
        "{explanation}"
    );
    assert!(
        explanation
            .contains("#2 client 2 [40, 50] get -> \"a\": read \"a\" but the key held \"b\""),
        "{explanation}"
    );
}

#[test]
fn concurrent_writes_with_a_read_seeing_either_value_are_linearizable() {
    for seen in ["a", "b"] {
        let history = [
            put_ack(1, 0, 10, "k", "a"),
            put_ack(2, 0, 10, "k", "b"),
            get(3, 20, 30, "k", Some(seen)),
            get(3, 40, 50, "k", Some(seen)),
        ];
        assert_ok(&history);
    }
}

#[test]
fn reads_that_disagree_after_concurrent_writes_have_finished_are_a_violation() {
    let history = [
        put_ack(1, 0, 10, "k", "a"),
        put_ack(2, 0, 10, "k", "b"),
        get(3, 20, 30, "k", Some("a")),
        get(3, 40, 50, "k", Some("b")),
    ];
    assert_violation(&history);
}

#[test]
fn a_read_overlapping_a_write_may_see_the_old_or_the_new_value() {
    for seen in [None, Some("a")] {
        let history = [put(1, (0, 10), "k", "a", None), get(2, 5, 15, "k", seen)];
        assert_ok(&history);
    }
}

#[test]
fn operations_touching_at_one_instant_count_as_overlapping() {
    let history = [put(1, (0, 10), "k", "a", None), get(2, 10, 20, "k", None)];
    assert_ok(&history);
}

#[test]
fn a_read_seeing_a_value_never_written_is_a_violation() {
    let history = [
        put(1, (0, 10), "k", "a", None),
        get(2, 5, 15, "k", Some("zzz")),
    ];
    let explanation = assert_violation(&history);
    assert!(
        explanation.contains("no operation on key \"k\" ever wrote"),
        "{explanation}"
    );
}

#[test]
fn a_read_seeing_a_value_written_to_another_key_is_a_violation() {
    let history = [
        put(1, (0, 10), "a", "x", None),
        get(2, 20, 30, "b", Some("x")),
    ];
    assert_violation(&history);
}

#[test]
fn an_unknown_outcome_put_may_have_taken_effect() {
    let history = [
        Operation::unknown(1, 0, Call::put("k", "a")),
        get(2, 100, 110, "k", Some("a")),
    ];
    assert_ok(&history);
}

#[test]
fn an_unknown_outcome_put_may_never_have_taken_effect() {
    let history = [
        Operation::unknown(1, 0, Call::put("k", "a")),
        get(2, 100, 110, "k", None),
        get(2, 120, 130, "k", None),
    ];
    assert_ok(&history);
}

#[test]
fn an_unknown_outcome_put_may_take_effect_long_after_the_client_gave_up() {
    let mut timed_out = Operation::unknown(1, 0, Call::put("k", "a"));
    timed_out.complete = Some(10);
    let history = [
        timed_out,
        get(2, 100, 110, "k", None),
        get(2, 120, 130, "k", Some("a")),
    ];
    assert_ok(&history);
}

#[test]
fn a_value_from_an_unknown_outcome_put_cannot_appear_before_its_invoke() {
    let history = [
        get(2, 0, 10, "k", Some("a")),
        Operation::unknown(1, 20, Call::put("k", "a")),
    ];
    assert_violation(&history);
}

#[test]
fn an_unknown_outcome_put_takes_effect_at_most_once() {
    let history = [
        Operation::unknown(1, 0, Call::put("k", "a")),
        get(2, 10, 20, "k", Some("a")),
        put(3, (30, 40), "k", "b", Some("a")),
        get(2, 50, 60, "k", Some("a")),
    ];
    assert_violation(&history);
}

#[test]
fn an_unknown_outcome_read_constrains_nothing() {
    let history = [
        put(1, (0, 10), "k", "a", None),
        Operation::unknown(2, 20, Call::get("k")),
        get(2, 30, 40, "k", Some("a")),
    ];
    assert_ok(&history);
}

#[test]
fn many_unobserved_unknown_writes_do_not_blow_up_the_search() {
    let mut history: Vec<Operation> = (0..200)
        .map(|i| Operation::unknown(i, i, Call::put("k", &format!("lost{i}"))))
        .collect();
    history.push(put(500, (300, 310), "k", "kept", None));
    history.push(get(501, 400, 410, "k", Some("kept")));
    assert!(check_with_budget(&history, 10_000).is_ok());
}

#[test]
fn two_concurrent_cas_from_the_same_expected_value_cannot_both_succeed() {
    let history = [
        put(1, (0, 10), "k", "a", None),
        cas(2, (20, 40), "k", (Some("a"), Some("b")), (true, Some("b"))),
        cas(3, (20, 40), "k", (Some("a"), Some("c")), (true, Some("c"))),
    ];
    assert_violation(&history);
}

#[test]
fn of_two_concurrent_cas_one_succeeds_and_the_other_sees_its_value() {
    let history = [
        put(1, (0, 10), "k", "a", None),
        cas(2, (20, 40), "k", (Some("a"), Some("b")), (true, Some("b"))),
        cas(3, (20, 40), "k", (Some("a"), Some("c")), (false, Some("b"))),
        get(1, 50, 60, "k", Some("b")),
    ];
    assert_ok(&history);
}

#[test]
fn a_cas_expecting_absence_succeeds_only_on_an_absent_key() {
    let create = (None, Some("a"));
    assert_ok(&[cas(1, (0, 10), "k", create, (true, Some("a")))]);
    let history = [
        put(1, (0, 10), "k", "x", None),
        cas(2, (20, 30), "k", create, (true, Some("a"))),
    ];
    assert_violation(&history);
    let history = [
        put(1, (0, 10), "k", "x", None),
        cas(2, (20, 30), "k", create, (false, Some("x"))),
    ];
    assert_ok(&history);
}

#[test]
fn a_cas_to_no_value_deletes_the_key() {
    let history = [
        put(1, (0, 10), "k", "a", None),
        cas(2, (20, 30), "k", (Some("a"), None), (true, None)),
        get(1, 40, 50, "k", None),
    ];
    assert_ok(&history);
}

#[test]
fn a_failed_cas_must_report_the_actual_value() {
    let history = [
        put(1, (0, 10), "k", "a", None),
        cas(2, (20, 30), "k", (Some("z"), Some("b")), (false, None)),
    ];
    assert_violation(&history);
}

#[test]
fn put_and_delete_must_report_the_previous_value() {
    let history = [
        put(1, (0, 10), "k", "a", None),
        put(1, (20, 30), "k", "b", Some("a")),
        delete(1, 40, 50, "k", Some("b")),
        delete(1, 60, 70, "k", None),
    ];
    assert_ok(&history);
    let wrong_prev = [
        put(1, (0, 10), "k", "a", None),
        put(1, (20, 30), "k", "b", None),
    ];
    assert_violation(&wrong_prev);
    let wrong_delete = [
        put(1, (0, 10), "k", "a", None),
        delete(1, 20, 30, "k", None),
    ];
    assert_violation(&wrong_delete);
}

#[test]
fn a_put_ack_does_not_constrain_the_previous_value() {
    let history = [
        put(1, (0, 10), "k", "a", None),
        put_ack(1, 20, 30, "k", "b"),
        Operation::completed(1, 40, 50, Call::delete("k"), Ret::DeleteAck),
        get(1, 60, 70, "k", None),
    ];
    assert_ok(&history);
}

#[test]
fn a_multi_put_is_checked_as_one_put_per_key() {
    let history = [
        multi_put(1, 0, 10, &[("a", "1"), ("b", "2")]),
        get(2, 20, 30, "a", Some("1")),
        get(2, 20, 30, "b", Some("2")),
    ];
    assert_eq!(check(&history), CheckResult::Ok { keys: 2, ops: 3 });
    let stale = [
        multi_put(1, 0, 10, &[("a", "1"), ("b", "2")]),
        get(2, 20, 30, "b", None),
    ];
    assert_violation(&stale);
}

#[test]
fn a_multi_put_repeating_a_key_keeps_the_last_value() {
    let history = [
        multi_put(1, 0, 10, &[("a", "1"), ("a", "2")]),
        get(2, 20, 30, "a", Some("2")),
    ];
    assert_ok(&history);
}

#[test]
fn cross_key_atomicity_of_a_multi_put_is_not_checked() {
    // Readers disagree on whether the multi-put happened: atomicity is
    // broken, but each key on its own is linearizable, which is all we check.
    let history = [
        multi_put(1, 0, 100, &[("a", "1"), ("b", "2")]),
        get(2, 10, 20, "a", Some("1")),
        get(2, 30, 40, "b", None),
    ];
    assert_ok(&history);
}

#[test]
fn a_reply_that_does_not_answer_its_call_is_malformed() {
    let bad = Operation::completed(1, 0, 10, Call::get("k"), Ret::PutAck);
    let history = [put(1, (0, 10), "k", "a", None), bad];
    assert!(matches!(
        check(&history),
        CheckResult::Malformed { op_index: 1, .. }
    ));
}

#[test]
fn a_completion_before_the_invoke_is_malformed() {
    let history = [get(1, 10, 5, "k", None)];
    assert!(matches!(
        check(&history),
        CheckResult::Malformed { op_index: 0, .. }
    ));
}

#[test]
fn histories_and_verdicts_round_trip_through_json() {
    let history = vec![
        put(1, (0, 10), "k", "a", None),
        Operation::unknown(2, 5, Call::cas("k", Some("a"), None)),
        multi_put(3, 7, 9, &[("a", "1")]),
        put_ack(1, 20, 30, "k", "b"),
    ];
    let json = serde_json::to_string(&history).unwrap();
    let back: Vec<Operation> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, history);
    let verdict = check(&history);
    let json = serde_json::to_string(&verdict).unwrap();
    assert_eq!(serde_json::from_str::<CheckResult>(&json).unwrap(), verdict);
}

/// 25 puts that all overlap, then two reads after them that disagree: proving
/// that no order works means trying every subset of the puts.
fn exponential_history(key: &str) -> Vec<Operation> {
    let mut history: Vec<Operation> = (0..25)
        .map(|i| put_ack(i, 0, 100, key, &format!("p{i}")))
        .collect();
    history.push(get(100, 200, 210, key, Some("p0")));
    history.push(get(100, 220, 230, key, Some("p1")));
    history
}

#[test]
fn budget_exhaustion_returns_unknown_rather_than_hanging() {
    let history = exponential_history("k");
    let result = check_with_budget(&history, 10_000);
    assert!(
        matches!(&result, CheckResult::Unknown { key, .. } if key == "k"),
        "{result}"
    );
}

#[test]
fn a_violation_on_one_key_outranks_an_exhausted_budget_on_another() {
    let mut history = exponential_history("a");
    history.push(put(1, (0, 10), "b", "x", None));
    history.push(get(2, 20, 30, "b", None));
    let result = check_with_budget(&history, 10_000);
    assert!(
        matches!(&result, CheckResult::Violation { key, .. } if key == "b"),
        "{result}"
    );
}
