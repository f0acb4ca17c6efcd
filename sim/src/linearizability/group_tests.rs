//! Transactions in the checker: a transaction is one operation over its
//! key group (`group.rs`).

use super::*;

fn txn(
    span: (u64, u64),
    compare: &[(&str, Option<&str>, bool)],
    success: Vec<TxnStep>,
    ret: Option<Ret>,
) -> Operation {
    Operation {
        client: 9,
        invoke: span.0,
        complete: Some(span.1),
        call: Call::Txn {
            compare: compare
                .iter()
                .map(|(key, value, equal)| TxnCompare {
                    key: key.to_string(),
                    value: value.map(str::to_string),
                    equal: *equal,
                })
                .collect(),
            success,
            failure: Vec::new(),
        },
        ret,
    }
}

fn put(key: &str, value: &str) -> TxnStep {
    TxnStep::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn get(client: u64, span: (u64, u64), key: &str, value: Option<&str>) -> Operation {
    Operation::completed(
        client,
        span.0,
        span.1,
        Call::get(key),
        Ret::Get {
            value: value.map(Into::into),
        },
    )
}

fn both_puts(ret: Option<Ret>) -> Operation {
    txn(
        (0, 10),
        &[("a", None, true)],
        vec![put("a", "1"), put("b", "1")],
        ret,
    )
}

fn answered() -> Option<Ret> {
    Some(Ret::Txn {
        succeeded: true,
        results: vec![None, None],
    })
}

#[test]
fn an_atomic_transaction_seen_whole_is_linearizable() {
    let history = vec![
        both_puts(answered()),
        get(1, (20, 30), "a", Some("1")),
        get(2, (20, 30), "b", Some("1")),
    ];
    assert!(check(&history).is_ok(), "{}", check(&history));
}

#[test]
fn a_transaction_seen_half_applied_is_a_violation() {
    // Each key alone is fine (b's read could precede the put); together,
    // b was read after the transaction completed and misses its put.
    let history = vec![
        both_puts(answered()),
        get(1, (20, 30), "a", Some("1")),
        get(2, (20, 30), "b", None),
    ];
    let result = check(&history);
    assert!(result.is_violation(), "{result}");
    let CheckResult::Violation { key, .. } = result else {
        unreachable!()
    };
    assert_eq!(key, "a,b");
}

#[test]
fn a_torn_read_across_a_transactions_keys_is_a_violation() {
    // Two concurrent readers, one transaction: a reader sees the new a and
    // then the old b, after a reader saw the new b first: no single point
    // of the transaction explains both.
    let history = vec![
        txn(
            (0, 100),
            &[],
            vec![put("a", "1"), put("b", "1")],
            Some(Ret::Txn {
                succeeded: true,
                results: vec![None, None],
            }),
        ),
        get(1, (10, 20), "b", Some("1")),
        get(2, (30, 40), "a", None),
    ];
    assert!(check(&history).is_violation());
}

#[test]
fn a_failed_comparison_must_match_the_state() {
    // a = 1 is known before the transaction, which claims its comparison
    // "a absent" held.
    let history = vec![
        Operation::completed(1, 0, 5, Call::put("a", "1"), Ret::Put { prev: None }),
        txn(
            (10, 20),
            &[("a", None, true)],
            vec![put("b", "2")],
            Some(Ret::Txn {
                succeeded: true,
                results: vec![None],
            }),
        ),
    ];
    assert!(check(&history).is_violation());
}

#[test]
fn an_applied_transaction_without_a_reply_must_take_effect_before_its_completion() {
    let mut applied = both_puts(Some(Ret::Applied));
    applied.complete = Some(15);
    let history = vec![applied.clone(), get(1, (20, 30), "b", None)];
    assert!(check(&history).is_violation());
    // Without a reply and not known to have applied, it may never have.
    let mut unknown = applied;
    unknown.ret = None;
    unknown.complete = None;
    assert!(check(&[unknown, get(1, (20, 30), "b", None)]).is_ok());
}

#[test]
fn keys_tied_by_transactions_form_one_group_and_others_stay_apart() {
    let history = vec![
        txn((0, 1), &[("a", None, true)], vec![put("b", "1")], None),
        txn((0, 1), &[], vec![put("c", "1"), put("b", "2")], None),
        txn((0, 1), &[], vec![put("x", "1")], None),
        Operation::completed(1, 0, 1, Call::put("z", "1"), Ret::PutAck),
    ];
    let groups = group::groups(&history);
    let as_vecs: Vec<Vec<&str>> = groups
        .iter()
        .map(|g| g.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(as_vecs, vec![vec!["a", "b", "c"], vec!["x"]]);
}
