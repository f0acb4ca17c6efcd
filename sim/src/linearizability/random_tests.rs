//! Randomized checks: generated histories that are linearizable by
//! construction must pass and fail once a read is corrupted, and small random
//! histories must get the verdict of a brute-force search over all orders.

use std::collections::BTreeMap;
use std::time::Instant;

use super::*;

/// splitmix64: small, seedable and good enough for tests.
struct TestRng(u64);

impl TestRng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    fn percent(&mut self, chance: u64) -> bool {
        self.below(100) < chance
    }
}

struct Workload {
    ops: usize,
    keys: u64,
    clients: u64,
    unknown_percent: u64,
}

/// Runs a real sequential execution and wraps each operation in an interval
/// around its point in that execution, so the history is linearizable by
/// construction. Each client's operations are sequential in time. Values are
/// unique per write. Unknown-outcome writes took effect half of the time.
fn generate(seed: u64, workload: &Workload) -> Vec<Operation> {
    let mut rng = TestRng(seed);
    let mut next_free = vec![0u64; workload.clients as usize];
    // (linearization point, invoke, complete, client)
    let mut slots: Vec<(u64, u64, u64, u64)> = (0..workload.ops)
        .map(|_| {
            let client = rng.below(workload.clients);
            let invoke = next_free[client as usize] + rng.below(20);
            let point = invoke + rng.below(30);
            let complete = point + rng.below(30);
            next_free[client as usize] = complete + 1;
            (point, invoke, complete, client)
        })
        .collect();
    slots.sort_unstable();

    let mut store: BTreeMap<String, String> = BTreeMap::new();
    let mut history = Vec::with_capacity(workload.ops);
    for (i, &(_, invoke, complete, client)) in slots.iter().enumerate() {
        let key = format!("k{}", rng.below(workload.keys));
        let value = format!("v{i}");
        let unknown = rng.percent(workload.unknown_percent);
        let mut effect = store.clone();
        let roll = rng.below(100);
        let (call, ret) = if roll < 40 {
            let ret = Ret::Get {
                value: store.get(&key).cloned(),
            };
            (Call::get(&key), ret)
        } else if roll < 62 {
            let prev = effect.insert(key.clone(), value.clone());
            (Call::put(&key, &value), Ret::Put { prev })
        } else if roll < 70 {
            let prev = effect.remove(&key);
            (Call::delete(&key), Ret::Delete { prev })
        } else if roll < 88 || workload.keys == 1 {
            let expected = match rng.below(10) {
                0..6 => store.get(&key).cloned(),
                6..8 => None,
                _ => Some(format!("v{}", rng.below(i as u64 + 1))),
            };
            let new = rng.percent(85).then(|| value.clone());
            let succeeded = store.get(&key) == expected.as_ref();
            if succeeded {
                match &new {
                    Some(new) => effect.insert(key.clone(), new.clone()),
                    None => effect.remove(&key),
                };
            }
            let current = effect.get(&key).cloned();
            let call = Call::Cas {
                key: key.clone(),
                expected,
                value: new,
            };
            (call, Ret::Cas { succeeded, current })
        } else {
            let entries: Vec<(String, String)> = (0..1 + rng.below(3))
                .map(|j| {
                    (
                        format!("k{}", rng.below(workload.keys)),
                        format!("v{i}.{j}"),
                    )
                })
                .collect();
            for (key, value) in &entries {
                effect.insert(key.clone(), value.clone());
            }
            (Call::MultiPut { entries }, Ret::MultiPut)
        };
        if !unknown || rng.percent(50) {
            store = effect;
        }
        history.push(if unknown {
            Operation {
                client,
                invoke,
                complete: rng.percent(50).then_some(complete),
                call,
                ret: None,
            }
        } else {
            Operation::completed(client, invoke, complete, call, ret)
        });
    }
    history.sort_by_key(|op| op.invoke);
    history
}

/// The value a write of `op` puts on `key`, if any.
fn written_value<'a>(op: &'a Operation, key: &str) -> Option<&'a str> {
    match &op.call {
        Call::Put { key: k, value } if k == key => Some(value),
        Call::Cas { key: k, value, .. } if k == key => value.as_deref(),
        Call::MultiPut { entries } => entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str()),
        _ => None,
    }
}

/// Makes one completed read return a value that is only written after the
/// read completed: with unique values, certainly not linearizable.
fn corrupt_one_read(history: &mut [Operation], rng: &mut TestRng) -> bool {
    let start = rng.below(history.len() as u64) as usize;
    for offset in 0..history.len() {
        let read = (start + offset) % history.len();
        let (Call::Get { key }, Some(Ret::Get { .. }), Some(done)) = (
            &history[read].call,
            &history[read].ret,
            history[read].complete,
        ) else {
            continue;
        };
        let future = history
            .iter()
            .filter(|op| op.invoke > done)
            .find_map(|op| written_value(op, key));
        if let Some(future) = future {
            history[read].ret = Some(Ret::Get {
                value: Some(future.to_owned()),
            });
            return true;
        }
    }
    false
}

#[test]
fn random_linearizable_histories_pass_and_fail_once_a_read_is_corrupted() {
    let workload = Workload {
        ops: 300,
        keys: 3,
        clients: 6,
        unknown_percent: 10,
    };
    for seed in 0..60 {
        let mut history = generate(seed, &workload);
        let result = check(&history);
        assert!(result.is_ok(), "seed {seed}: {result}");
        let mut rng = TestRng(seed ^ 0xC0FFEE);
        assert!(corrupt_one_read(&mut history, &mut rng), "seed {seed}");
        let result = check(&history);
        assert!(result.is_violation(), "seed {seed} corrupted: {result}");
    }
}

#[test]
fn a_busy_key_with_ten_concurrent_clients_checks() {
    let workload = Workload {
        ops: 600,
        keys: 1,
        clients: 10,
        unknown_percent: 5,
    };
    for seed in 0..5 {
        let history = generate(seed, &workload);
        let result = check(&history);
        assert!(result.is_ok(), "seed {seed}: {result}");
    }
}

#[test]
fn twenty_four_clients_hammering_one_key_check_quickly() {
    let workload = Workload {
        ops: 1_000,
        keys: 1,
        clients: 24,
        unknown_percent: 0,
    };
    for seed in 0..3 {
        let mut history = generate(seed, &workload);
        assert!(
            check_with_budget(&history, 1_000_000).is_ok(),
            "seed {seed}"
        );
        assert!(corrupt_one_read(&mut history, &mut TestRng(seed)));
        let result = check_with_budget(&history, 1_000_000);
        assert!(result.is_violation(), "seed {seed}: {result}");
    }
}

#[test]
fn a_history_where_a_fifth_of_the_operations_timed_out_still_gets_a_verdict() {
    let workload = Workload {
        ops: 1_000,
        keys: 1,
        clients: 10,
        unknown_percent: 20,
    };
    for seed in 0..3 {
        let mut history = generate(seed, &workload);
        let result = check(&history);
        assert!(result.is_ok(), "seed {seed}: {result}");
        assert!(corrupt_one_read(&mut history, &mut TestRng(seed)));
        let result = check(&history);
        assert!(result.is_violation(), "seed {seed}: {result}");
    }
}

#[test]
fn a_two_thousand_operation_history_on_five_keys_checks() {
    let workload = Workload {
        ops: 2_000,
        keys: 5,
        clients: 8,
        unknown_percent: 5,
    };
    let mut history = generate(7, &workload);
    let started = Instant::now();
    let result = check(&history);
    let elapsed = started.elapsed();
    assert_eq!(
        result,
        CheckResult::Ok {
            keys: 5,
            ops: 2_000
        }
    );
    eprintln!(
        "checked 2000 ops in {elapsed:?}: {:.0} ops/s",
        2_000.0 / elapsed.as_secs_f64()
    );
    assert!(corrupt_one_read(&mut history, &mut TestRng(7)));
    assert!(check(&history).is_violation());
}

/// The sequential spec, written independently of the checker's model:
/// the state of `key` after `op`, if `op` may produce its reply on `state`.
fn reference_step(op: &Operation, key: &str, state: &Option<String>) -> Option<Option<String>> {
    let (next, reply_ok) = match (&op.call, &op.ret) {
        (Call::Get { .. }, ret) => {
            let ok = match ret {
                Some(Ret::Get { value }) => value == state,
                _ => true,
            };
            (state.clone(), ok)
        }
        (Call::Put { value, .. }, ret) => {
            let ok = !matches!(ret, Some(Ret::Put { prev }) if prev != state);
            (Some(value.clone()), ok)
        }
        (Call::Delete { .. }, ret) => {
            let ok = !matches!(ret, Some(Ret::Delete { prev }) if prev != state);
            (None, ok)
        }
        (
            Call::Cas {
                expected, value, ..
            },
            ret,
        ) => {
            let holds = expected == state;
            let next = if holds { value.clone() } else { state.clone() };
            let ok = match ret {
                Some(Ret::Cas { succeeded, current }) => *succeeded == holds && *current == next,
                _ => true,
            };
            (next, ok)
        }
        (Call::MultiPut { .. }, _) => (written_value(op, key).map(Into::into), true),
        (Call::Txn { .. }, _) => unreachable!("the random histories hold no transactions"),
    };
    reply_ok.then_some(next)
}

/// Tries every order (and every subset of unknown-outcome ops).
fn reference_linearizable(ops: &[Operation], key: &str) -> bool {
    fn search(ops: &[Operation], key: &str, placed: &mut [bool], state: &Option<String>) -> bool {
        let required_left = (0..ops.len()).any(|i| !placed[i] && ops[i].ret.is_some());
        if !required_left {
            return true;
        }
        for i in 0..ops.len() {
            if placed[i] {
                continue;
            }
            let must_wait = (0..ops.len()).any(|j| {
                !placed[j]
                    && ops[j].ret.is_some()
                    && ops[j].complete.is_some_and(|done| done < ops[i].invoke)
            });
            if must_wait {
                continue;
            }
            if let Some(next) = reference_step(&ops[i], key, state) {
                placed[i] = true;
                if search(ops, key, placed, &next) {
                    return true;
                }
                placed[i] = false;
            }
        }
        false
    }
    search(ops, key, &mut vec![false; ops.len()], &None)
}

#[test]
fn small_generated_histories_with_one_reply_altered_get_the_same_verdict_as_brute_force() {
    let (mut linearizable, mut not) = (0, 0);
    for seed in 0..3_000u64 {
        let workload = Workload {
            ops: 4 + (seed % 7) as usize,
            keys: 1,
            clients: 1 + seed % 5,
            unknown_percent: 35,
        };
        let mut history = generate(seed, &workload);
        let mut rng = TestRng(seed);
        if seed % 4 != 0 {
            alter_one_reply(&mut history, &mut rng);
        }
        let expected = reference_linearizable(&history, "k0");
        let result = check(&history);
        assert_eq!(
            result.is_ok(),
            expected,
            "seed {seed}: {result}\n{history:#?}"
        );
        if expected {
            linearizable += 1;
        } else {
            not += 1;
        }
    }
    assert!(linearizable > 300 && not > 300, "{linearizable} vs {not}");
}

/// Changes one reply to another plausible one: a value written in the
/// history, absence, or the opposite CAS outcome.
fn alter_one_reply(history: &mut [Operation], rng: &mut TestRng) {
    let mut values: Vec<Option<String>> = history
        .iter()
        .filter_map(|op| written_value(op, "k0").map(|value| Some(value.to_owned())))
        .collect();
    values.push(None);
    let pick = |rng: &mut TestRng| values[rng.below(values.len() as u64) as usize].clone();
    let op = rng.below(history.len() as u64) as usize;
    match &mut history[op].ret {
        Some(Ret::Get { value }) => *value = pick(rng),
        Some(Ret::Put { prev } | Ret::Delete { prev }) => *prev = pick(rng),
        Some(Ret::Cas { succeeded, current }) => {
            if rng.percent(50) {
                *succeeded = !*succeeded;
            } else {
                *current = pick(rng);
            }
        }
        _ => {}
    }
}

fn tiny_history(rng: &mut TestRng) -> Vec<Operation> {
    let pick = |rng: &mut TestRng| -> Option<String> {
        ["a", "b", "c"]
            .get(rng.below(4) as usize)
            .map(|v| (*v).to_owned())
    };
    let count = 1 + rng.below(7);
    (0..count)
        .map(|client| {
            let invoke = rng.below(20);
            let complete = invoke + rng.below(10);
            let value = pick(rng).unwrap_or_else(|| "a".into());
            let (call, ret) = match rng.below(5) {
                0 => (Call::get("k"), Ret::Get { value: pick(rng) }),
                1 => (Call::put("k", &value), Ret::Put { prev: pick(rng) }),
                2 => (Call::delete("k"), Ret::Delete { prev: pick(rng) }),
                3 => {
                    let call = Call::Cas {
                        key: "k".into(),
                        expected: pick(rng),
                        value: pick(rng),
                    };
                    let ret = Ret::Cas {
                        succeeded: rng.percent(50),
                        current: pick(rng),
                    };
                    (call, ret)
                }
                _ => {
                    let entries = vec![("k".into(), value), ("other".into(), "x".into())];
                    (Call::MultiPut { entries }, Ret::MultiPut)
                }
            };
            let unknown = rng.percent(25);
            Operation {
                client,
                invoke,
                complete: (!unknown || rng.percent(50)).then_some(complete),
                call,
                ret: (!unknown).then_some(ret),
            }
        })
        .collect()
}

#[test]
fn tiny_random_histories_get_the_same_verdict_as_brute_force() {
    let mut rng = TestRng(2024);
    let (mut linearizable, mut not) = (0, 0);
    for case in 0..5_000 {
        let history = tiny_history(&mut rng);
        let expected = reference_linearizable(&history, "k");
        let result = check(&history);
        assert_eq!(
            result.is_ok(),
            expected,
            "case {case}: checker says {result}\nhistory: {history:#?}"
        );
        if expected {
            linearizable += 1;
        } else {
            not += 1;
        }
    }
    assert!(linearizable > 500 && not > 500, "{linearizable} vs {not}");
}
