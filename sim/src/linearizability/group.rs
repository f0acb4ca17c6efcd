//! Transactions: the keys a transaction touches are checked together.
//!
//! Linearizability is compositional per *object*; a transaction over keys
//! `a` and `b` is one operation on the object `{a, b}`, so splitting it per
//! key would lose exactly what makes it a transaction (atomicity across
//! keys). [`groups`] therefore merges the keys of each transaction with a
//! union-find: every key a transaction touches joins its group, and keys
//! touched by a common transaction (directly or through a chain) end in
//! one group. Each group is checked as one object whose state is the value
//! of every key in it, with every operation that touches one of its keys
//! (transactions, and the gets, puts, deletes, CAS and multi-put shares on
//! those keys); keys no transaction touches keep the per-key search of
//! `search.rs`, with its pruning rules. We chose union-find over "all
//! transaction keys in one group" because it keeps independent
//! transactions' key sets apart, which is as precise and costs less; the
//! simulator's transaction clients use a key set of their own, so in
//! practice that set is one group and the other keys stay per key.
//!
//! The search is Wing & Gong's with a memo of (linearized set, state): the
//! next operation is any one not yet linearized that was invoked no later
//! than every other pending operation's completion. Unknown-outcome
//! operations may be placed anywhere after their invoke, or never; one that
//! would change nothing is never placed (dropping it from an order keeps
//! the order valid). A required operation that leaves the state as it is
//! and whose reply fits is placed at once without branching (the "reads
//! first" rule of `search.rs`, by the same exchange argument).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::model::NEVER;
use super::{Call, Operation, Ret, TxnStep};

/// Groups of keys that transactions tie together, each in byte order, in
/// the order of their first key.
pub(super) fn groups(history: &[Operation]) -> Vec<BTreeSet<String>> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    fn find<'a>(parent: &mut BTreeMap<&'a str, &'a str>, key: &'a str) -> &'a str {
        let mut root = key;
        while let Some(&up) = parent.get(root)
            && up != root
        {
            root = up;
        }
        parent.insert(key, root);
        root
    }
    for op in history {
        let Call::Txn { .. } = &op.call else {
            continue;
        };
        let keys = op.call.keys();
        for key in &keys {
            parent.entry(key).or_insert(key);
        }
        for pair in keys.windows(2) {
            let (a, b) = (find(&mut parent, pair[0]), find(&mut parent, pair[1]));
            if a != b {
                parent.insert(a.max(b), a.min(b));
            }
        }
    }
    let keys: Vec<&str> = parent.keys().copied().collect();
    let mut by_root: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for key in keys {
        let root = find(&mut parent, key);
        by_root.entry(root).or_default().insert(key.to_string());
    }
    by_root.into_values().collect()
}

/// The value of a key in the group's state: 0 is absent, `v` is
/// `values[v - 1]`.
type Value = u32;

#[derive(Clone, Debug)]
enum Step {
    Put(usize, Value),
    Delete(usize),
    Get(usize),
}

#[derive(Clone, Debug)]
enum GroupCall {
    Get(usize),
    Put(usize, Value),
    Delete(usize),
    Cas(usize, Value, Value),
    /// The group's share of a multi-put.
    MultiPut(Vec<(usize, Value)>),
    Txn {
        checks: Vec<(usize, Value, bool)>,
        success: Vec<Step>,
        failure: Vec<Step>,
    },
}

#[derive(Clone, Debug)]
enum GroupRet {
    Unconstrained,
    /// A get's value, or a put's or delete's previous value.
    Value(Value),
    Cas(bool, Value),
    Txn(bool, Vec<Value>),
}

#[derive(Clone, Debug)]
struct GroupOp {
    position: usize,
    invoke: u64,
    complete: u64,
    optional: bool,
    call: GroupCall,
    ret: GroupRet,
}

fn run_steps(state: &mut [Value], steps: &[Step]) -> Vec<Value> {
    steps
        .iter()
        .map(|step| match *step {
            Step::Put(k, v) => std::mem::replace(&mut state[k], v),
            Step::Delete(k) => std::mem::replace(&mut state[k], 0),
            Step::Get(k) => state[k],
        })
        .collect()
}

impl GroupOp {
    /// The state after this op runs on `state`, if its reply fits.
    fn apply(&self, state: &[Value]) -> Option<Vec<Value>> {
        let mut next = state.to_vec();
        let fits = match (&self.call, &self.ret) {
            (GroupCall::Get(k), GroupRet::Value(v)) => state[*k] == *v,
            (GroupCall::Get(_), _) => true,
            (GroupCall::Put(k, v), ret) => {
                next[*k] = *v;
                !matches!(ret, GroupRet::Value(prev) if *prev != state[*k])
            }
            (GroupCall::Delete(k), ret) => {
                next[*k] = 0;
                !matches!(ret, GroupRet::Value(prev) if *prev != state[*k])
            }
            (GroupCall::Cas(k, expected, value), ret) => {
                let holds = state[*k] == *expected;
                if holds {
                    next[*k] = *value;
                }
                match ret {
                    GroupRet::Cas(succeeded, current) => {
                        *succeeded == holds && *current == next[*k]
                    }
                    _ => true,
                }
            }
            (GroupCall::MultiPut(entries), _) => {
                for (k, v) in entries {
                    next[*k] = *v;
                }
                true
            }
            (
                GroupCall::Txn {
                    checks,
                    success,
                    failure,
                },
                ret,
            ) => {
                let holds = checks
                    .iter()
                    .all(|(k, v, equal)| (state[*k] == *v) == *equal);
                let results = run_steps(&mut next, if holds { success } else { failure });
                match ret {
                    GroupRet::Txn(succeeded, answered) => {
                        *succeeded == holds && *answered == results
                    }
                    _ => true,
                }
            }
        };
        fits.then_some(next)
    }
}

pub(super) enum GroupVerdict {
    Linearizable,
    Violation(String),
    OutOfBudget(String),
}

struct Builder<'h> {
    keys: Vec<&'h str>,
    interned: HashMap<&'h str, Value>,
    values: Vec<&'h str>,
}

impl<'h> Builder<'h> {
    fn key(&self, key: &str) -> Option<usize> {
        self.keys.iter().position(|k| *k == key)
    }

    fn value(&mut self, value: Option<&'h str>) -> Value {
        let Some(value) = value else { return 0 };
        let next = self.values.len() as Value + 1;
        let id = *self.interned.entry(value).or_insert(next);
        if id == next {
            self.values.push(value);
        }
        id
    }

    fn steps(&mut self, steps: &'h [TxnStep]) -> Vec<Step> {
        steps
            .iter()
            .map(|step| match step {
                TxnStep::Put { key, value } => {
                    Step::Put(self.key(key).expect("in group"), self.value(Some(value)))
                }
                TxnStep::Delete { key } => Step::Delete(self.key(key).expect("in group")),
                TxnStep::Get { key } => Step::Get(self.key(key).expect("in group")),
            })
            .collect()
    }

    /// The group's view of `op`, if it touches the group.
    fn op(&mut self, position: usize, op: &'h Operation) -> Option<GroupOp> {
        let call = match &op.call {
            Call::Get { key } => GroupCall::Get(self.key(key)?),
            Call::Put { key, value } => GroupCall::Put(self.key(key)?, self.value(Some(value))),
            Call::Delete { key } => GroupCall::Delete(self.key(key)?),
            Call::Cas {
                key,
                expected,
                value,
            } => {
                let k = self.key(key)?;
                GroupCall::Cas(
                    k,
                    self.value(expected.as_deref()),
                    self.value(value.as_deref()),
                )
            }
            Call::MultiPut { entries } => {
                let mut last: BTreeMap<usize, Value> = BTreeMap::new();
                for (key, value) in entries {
                    if let Some(k) = self.key(key) {
                        let v = self.value(Some(value));
                        last.insert(k, v);
                    }
                }
                if last.is_empty() {
                    return None;
                }
                GroupCall::MultiPut(last.into_iter().collect())
            }
            Call::Txn {
                compare,
                success,
                failure,
            } => {
                // `groups` put every key of a transaction in one group.
                self.key(compare.first().map_or_else(
                    || success.iter().chain(failure).next().map_or("", |s| s.key()),
                    |c| c.key.as_str(),
                ))?;
                let checks = compare
                    .iter()
                    .map(|c| {
                        let k = self.key(&c.key).expect("in group");
                        (k, self.value(c.value.as_deref()), c.equal)
                    })
                    .collect();
                GroupCall::Txn {
                    checks,
                    success: self.steps(success),
                    failure: self.steps(failure),
                }
            }
        };
        let ret = match (&op.ret, &op.call) {
            (Some(Ret::Get { value }), _) => GroupRet::Value(self.value(value.as_deref())),
            (Some(Ret::Put { prev } | Ret::Delete { prev }), _) => {
                GroupRet::Value(self.value(prev.as_deref()))
            }
            (Some(Ret::Cas { succeeded, current }), _) => {
                GroupRet::Cas(*succeeded, self.value(current.as_deref()))
            }
            (Some(Ret::Txn { succeeded, results }), _) => GroupRet::Txn(
                *succeeded,
                results.iter().map(|r| self.value(r.as_deref())).collect(),
            ),
            _ => GroupRet::Unconstrained,
        };
        let optional = op.ret.is_none();
        Some(GroupOp {
            position,
            invoke: op.invoke,
            complete: match op.complete {
                Some(complete) if !optional => complete,
                _ => NEVER,
            },
            optional,
            call,
            ret,
        })
    }
}

/// Checks the operations of `history` that touch `keys` as operations on
/// one object. Returns the verdict and the positions checked.
pub(super) fn check_group(
    history: &[Operation],
    keys: &BTreeSet<String>,
    step_budget: u64,
) -> (GroupVerdict, Vec<usize>) {
    let mut builder = Builder {
        keys: keys.iter().map(String::as_str).collect(),
        interned: HashMap::new(),
        values: Vec::new(),
    };
    let ops: Vec<GroupOp> = history
        .iter()
        .enumerate()
        .filter_map(|(i, op)| builder.op(i, op))
        .collect();
    let positions = ops.iter().map(|op| op.position).collect();
    let verdict = match search(&ops, keys.len(), step_budget, keys) {
        Ok(verdict) => verdict,
        Err((explanation, deepest)) => {
            // The required operations the longest prefix could not place,
            // earliest invoked first.
            let mut stuck: Vec<&GroupOp> = (0..ops.len())
                .filter(|&i| !ops[i].optional && deepest[i / 64] & (1 << (i % 64)) == 0)
                .map(|i| &ops[i])
                .collect();
            stuck.sort_by_key(|op| op.invoke);
            let lines: Vec<String> = stuck
                .iter()
                .take(4)
                .map(|op| {
                    format!(
                        "\n  not placed: #{} {:?}",
                        op.position, history[op.position]
                    )
                })
                .collect();
            GroupVerdict::Violation(format!("{explanation}{}", lines.join("")))
        }
    };
    (verdict, positions)
}

/// The verdict, or a violation's explanation with the longest prefix's set.
fn search(
    ops: &[GroupOp],
    key_count: usize,
    budget: u64,
    keys: &BTreeSet<String>,
) -> Result<GroupVerdict, (String, Vec<u64>)> {
    let words = ops.len().div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let is_set = |bits: &[u64], i: usize| bits[i / 64] & (1 << (i % 64)) != 0;
    let mut state: Vec<Value> = vec![0; key_count];
    let mut required_left = ops.iter().filter(|op| !op.optional).count();
    let mut memo: HashSet<(Vec<u64>, Vec<Value>)> = HashSet::new();
    // Frames: the candidates at each depth and the next one to try; the op
    // that led to each frame and the state before it.
    let mut frames: Vec<(Vec<usize>, usize)> = Vec::new();
    let mut chosen: Vec<(usize, Vec<Value>)> = Vec::new();
    let mut deepest = 0usize;
    let mut deepest_set = linearized.clone();
    let mut steps = 0u64;
    let candidates = |bits: &[u64], state: &[Value]| -> Vec<usize> {
        let min_complete = (0..ops.len())
            .filter(|&i| !is_set(bits, i))
            .map(|i| ops[i].complete)
            .min()
            .unwrap_or(NEVER);
        let eligible: Vec<usize> = (0..ops.len())
            .filter(|&i| !is_set(bits, i) && ops[i].invoke <= min_complete)
            .collect();
        for &i in &eligible {
            if !ops[i].optional && ops[i].apply(state).as_deref() == Some(state) {
                return vec![i];
            }
        }
        eligible
            .into_iter()
            .filter(|&i| !ops[i].optional || ops[i].apply(state).as_deref() != Some(state))
            .collect()
    };
    frames.push((candidates(&linearized, &state), 0));
    while required_left > 0 {
        steps += 1;
        if steps > budget {
            return Ok(GroupVerdict::OutOfBudget(format!(
                "the search over {} operations of keys {keys:?} used its budget of {budget} steps",
                ops.len()
            )));
        }
        let (list, next) = frames.last_mut().expect("a frame");
        if *next >= list.len() {
            frames.pop();
            let Some((i, before)) = chosen.pop() else {
                return Err((
                    format!(
                        "no order of the {} operations on keys {keys:?} (transactions and the \
                         operations on their keys) is a legal sequential history; the longest \
                         linearizable prefix has {deepest} operations",
                        ops.len(),
                    ),
                    deepest_set,
                ));
            };
            linearized[i / 64] ^= 1 << (i % 64);
            state = before;
            required_left += usize::from(!ops[i].optional);
            continue;
        }
        let i = list[*next];
        *next += 1;
        let Some(after) = ops[i].apply(&state) else {
            continue;
        };
        linearized[i / 64] ^= 1 << (i % 64);
        if !memo.insert((linearized.clone(), after.clone())) {
            linearized[i / 64] ^= 1 << (i % 64);
            continue;
        }
        chosen.push((i, std::mem::replace(&mut state, after)));
        required_left -= usize::from(!ops[i].optional);
        if chosen.len() > deepest {
            deepest = chosen.len();
            deepest_set.clone_from(&linearized);
        }
        frames.push((candidates(&linearized, &state), 0));
    }
    Ok(GroupVerdict::Linearizable)
}
