//! Human-readable explanations of violations. Operations are named `#n` by
//! their position in the violation's `ops_in_key`.

use std::fmt::Write as _;

use super::model::{ABSENT, KeyHistory, KeyOp, ModelRet, ValueId};
use super::{Call, Operation, Ret};

/// Listing more than this many operations helps no one; `ops_in_key` has all.
const MAX_LISTED: usize = 20;
const MAX_VALUE_CHARS: usize = 40;

/// Explains that `ops[op]` observed a value that no operation wrote.
pub(super) fn unwritten_value(history: &[Operation], key: &KeyHistory<'_>, op: usize) -> String {
    format!(
        "{} observed a value that no operation on key {:?} ever wrote",
        describe(history, key, &key.ops[op]),
        key.key
    )
}

/// Explains a failed search from the deepest prefix it reached.
pub(super) fn no_linearization(
    history: &[Operation],
    key: &KeyHistory<'_>,
    deepest_prefix: &[u32],
) -> String {
    let ops = &key.ops;
    let mut text = String::new();
    let unknown = key.unknown_outcome_count();
    let _ = write!(
        text,
        "no order of the {} operations on this key is linearizable",
        ops.len()
    );
    if unknown > 0 {
        let _ = write!(text, " ({unknown} of unknown outcome may be left out)");
    }
    if key.pruned > 0 {
        let _ = write!(
            text,
            "; {} unknown-outcome operations that no reply observes were set aside",
            key.pruned
        );
    }
    text.push_str(". (#n is an operation's position in ops_in_key.)\n");

    let mut state = ABSENT;
    let mut placed = vec![false; ops.len()];
    let skipped = deepest_prefix.len().saturating_sub(MAX_LISTED);
    let _ = writeln!(
        text,
        "Longest linearizable prefix found: {} operations{}:",
        deepest_prefix.len(),
        if skipped > 0 {
            " (the last ones shown)"
        } else {
            ""
        }
    );
    for (step, &index) in deepest_prefix.iter().enumerate() {
        let op = &ops[index as usize];
        state = op
            .step(state)
            .expect("the deepest prefix replays from an absent key");
        placed[index as usize] = true;
        if step >= skipped {
            let _ = writeln!(
                text,
                "  {:>4}. {}  => {}",
                step + 1,
                describe(history, key, op),
                show(key.value(state))
            );
        }
    }
    let _ = writeln!(text, "State after that prefix: {}.", show(key.value(state)));

    // The ops that could come next: invoked no later than the first
    // completion of a required op still to place (ties overlap).
    let deadline = (0..ops.len())
        .filter(|&i| !placed[i] && !ops[i].optional)
        .map(|i| ops[i].complete)
        .min()
        .unwrap_or(u64::MAX);
    let next: Vec<usize> = (0..ops.len())
        .filter(|&i| !placed[i] && ops[i].invoke <= deadline)
        .collect();
    let _ = writeln!(
        text,
        "Operations that could come next ({}), none of which leads to a full linearization:",
        next.len()
    );
    for &i in next.iter().take(MAX_LISTED) {
        let op = &ops[i];
        let why = match op.step(state) {
            None => mismatch(key, op, state),
            Some(_) => "fits here, but nothing linearizable follows".to_owned(),
        };
        let _ = writeln!(text, "  {}: {why}", describe(history, key, op));
    }
    if next.len() > MAX_LISTED {
        let _ = writeln!(text, "  ... and {} more", next.len() - MAX_LISTED);
    }
    text
}

/// Why `op` cannot produce its reply on `state`.
fn mismatch(key: &KeyHistory<'_>, op: &KeyOp, state: ValueId) -> String {
    let held = show(key.value(state));
    match op.ret {
        ModelRet::Get { value } => {
            format!("read {} but the key held {held}", show(key.value(value)))
        }
        ModelRet::Prev { prev } => {
            format!(
                "reported prev {} but the key held {held}",
                show(key.value(prev))
            )
        }
        ModelRet::Cas { succeeded, current } => {
            let would = if op.cas_holds(state) {
                "succeeded"
            } else {
                "failed"
            };
            format!(
                "reported succeeded={succeeded}, current={}, but on {held} it would have {would} \
                 leaving {}",
                show(key.value(current)),
                show(key.value(op.next_state(state)))
            )
        }
        // Never reached: an unconstrained reply fits every state.
        ModelRet::Unconstrained => "fits here, but nothing linearizable follows".to_owned(),
    }
}

/// `#3 client 2 [10, 25] put "a" -> prev absent`, for this key only.
fn describe(history: &[Operation], key: &KeyHistory<'_>, op: &KeyOp) -> String {
    let original = &history[key.positions[op.position as usize]];
    let complete = match original.complete {
        Some(complete) => complete.to_string(),
        None => "?".to_owned(),
    };
    let call = match &original.call {
        Call::Get { .. } => "get".to_owned(),
        Call::Put { value, .. } => format!("put {}", show(Some(value))),
        Call::Delete { .. } => "delete".to_owned(),
        Call::Cas {
            expected, value, ..
        } => format!(
            "cas {} -> {}",
            show(expected.as_deref()),
            show(value.as_deref())
        ),
        Call::MultiPut { entries } => {
            let value = entries
                .iter()
                .rev()
                .find(|(k, _)| k == key.key)
                .map(|(_, v)| v.as_str());
            format!(
                "multi_put {} (with {} entries in all)",
                show(value),
                entries.len()
            )
        }
        // Transactions are checked by `group`, never per key.
        Call::Txn { .. } => format!("{:?}", original.call),
    };
    let ret = match &original.ret {
        None => "? (unknown outcome)".to_owned(),
        Some(Ret::Get { value }) => show(value.as_deref()),
        Some(Ret::Put { prev } | Ret::Delete { prev }) => {
            format!("prev {}", show(prev.as_deref()))
        }
        Some(Ret::PutAck | Ret::DeleteAck | Ret::MultiPut) => "ok".to_owned(),
        Some(Ret::Cas { succeeded, current }) => format!(
            "{} (current {})",
            if *succeeded { "succeeded" } else { "failed" },
            show(current.as_deref())
        ),
        Some(ret @ (Ret::Txn { .. } | Ret::Applied)) => format!("{ret:?}"),
    };
    format!(
        "#{} client {} [{}, {complete}] {call} -> {ret}",
        op.position, original.client, original.invoke
    )
}

fn show(value: Option<&str>) -> String {
    match value {
        None => "absent".to_owned(),
        Some(value) if value.chars().count() > MAX_VALUE_CHARS => {
            let cut: String = value.chars().take(MAX_VALUE_CHARS).collect();
            format!("{cut:?}...")
        }
        Some(value) => format!("{value:?}"),
    }
}
