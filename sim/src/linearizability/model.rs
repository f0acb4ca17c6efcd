//! The sequential model of one key, and the split of a history into per-key
//! sub-histories of model operations.
//!
//! Values are interned per key into small integers so that the search state
//! is a `u32` and comparing states is one instruction.

use std::collections::{BTreeMap, HashMap};

use super::{Call, Operation, Ret};

/// An interned value of one key. [`ABSENT`] is the key being absent; value
/// `id` stands for `KeyHistory::values[id - 1]`.
pub(super) type ValueId = u32;

/// The key is absent: the initial state of every key.
pub(super) const ABSENT: ValueId = 0;

/// Time of the return event of an operation that has none.
pub(super) const NEVER: u64 = u64::MAX;

/// A call as the per-key model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum ModelCall {
    Get,
    /// Also one key's share of a multi-put.
    Put {
        value: ValueId,
    },
    Delete,
    Cas {
        expected: ValueId,
        value: ValueId,
    },
}

/// What the reply constrains.
#[derive(Clone, Copy, Debug)]
pub(super) enum ModelRet {
    /// Nothing: an unknown outcome, an `*Ack`, or a multi-put.
    Unconstrained,
    /// A read saw this value.
    Get {
        value: ValueId,
    },
    /// A put or delete replaced this value.
    Prev {
        prev: ValueId,
    },
    Cas {
        succeeded: bool,
        current: ValueId,
    },
}

/// One operation of one key's sub-history.
#[derive(Clone, Copy, Debug)]
pub(super) struct KeyOp {
    /// Position of the originating operation in `KeyHistory::positions`.
    pub position: u32,
    pub call: ModelCall,
    pub ret: ModelRet,
    pub invoke: u64,
    /// Time of the return event; [`NEVER`] if the outcome is unknown or the
    /// completion time was not recorded.
    pub complete: u64,
    /// The outcome is unknown, so the operation may also never take effect.
    pub optional: bool,
}

impl KeyOp {
    /// The key's state after this operation, if the operation may run on
    /// `state` and produce its recorded reply.
    #[inline]
    pub fn step(&self, state: ValueId) -> Option<ValueId> {
        let next = self.next_state(state);
        let reply_matches = match self.ret {
            ModelRet::Unconstrained => true,
            ModelRet::Get { value } => value == state,
            ModelRet::Prev { prev } => prev == state,
            ModelRet::Cas { succeeded, current } => {
                succeeded == self.cas_holds(state) && current == next
            }
        };
        reply_matches.then_some(next)
    }

    /// The key's state after this operation runs on `state`, whatever its reply.
    #[inline]
    pub fn next_state(&self, state: ValueId) -> ValueId {
        match self.call {
            ModelCall::Get => state,
            ModelCall::Put { value } => value,
            ModelCall::Delete => ABSENT,
            ModelCall::Cas { expected, value } => {
                if state == expected {
                    value
                } else {
                    state
                }
            }
        }
    }

    /// Whether a CAS's comparison holds on `state` (false for other calls).
    pub fn cas_holds(&self, state: ValueId) -> bool {
        matches!(self.call, ModelCall::Cas { expected, .. } if expected == state)
    }

    /// The value of the key that the reply reports, if any.
    pub fn observed_value(&self) -> Option<ValueId> {
        match self.ret {
            ModelRet::Unconstrained => None,
            ModelRet::Get { value } => Some(value),
            ModelRet::Prev { prev } => Some(prev),
            ModelRet::Cas { current, .. } => Some(current),
        }
    }

    /// The values whose presence in the key this op can tell apart from
    /// others: the one its reply reports and the one a CAS compares against.
    pub fn mentions(&self) -> [Option<ValueId>; 2] {
        let expected = match self.call {
            ModelCall::Cas { expected, .. } => Some(expected),
            _ => None,
        };
        [self.observed_value(), expected]
    }
}

/// The sub-history of one key, ready to search.
#[derive(Debug)]
pub(super) struct KeyHistory<'h> {
    pub key: &'h str,
    /// Indices into the full history of the operations touching this key, in
    /// history order.
    pub positions: Vec<usize>,
    /// The operations to search, in history order. Excludes the pruned ones.
    pub ops: Vec<KeyOp>,
    /// Interned values: id `v` is `values[v - 1]`.
    pub values: Vec<&'h str>,
    /// Unknown-outcome operations dropped because they cannot matter.
    pub pruned: usize,
    /// Index into `ops` of the first operation whose reply observed a value
    /// that no operation of the key writes.
    unwritten_observation: Option<usize>,
}

impl KeyHistory<'_> {
    pub fn original_ops(&self, history: &[Operation]) -> Vec<Operation> {
        self.positions.iter().map(|&i| history[i].clone()).collect()
    }

    pub fn first_observation_of_unwritten_value(&self) -> Option<usize> {
        self.unwritten_observation
    }

    pub fn unknown_outcome_count(&self) -> usize {
        self.ops.iter().filter(|op| op.optional).count()
    }

    pub fn value(&self, id: ValueId) -> Option<&str> {
        (id != ABSENT).then(|| self.values[id as usize - 1])
    }
}

/// Why a history cannot be checked.
#[derive(Debug)]
pub(super) struct Malformed {
    pub op_index: usize,
    pub reason: String,
}

/// Splits `history` into per-key sub-histories, in key byte order,
/// leaving out the keys of `grouped` (checked by `group`).
pub(super) fn partition<'h>(
    history: &'h [Operation],
    grouped: &std::collections::BTreeSet<&str>,
) -> Result<Vec<KeyHistory<'h>>, Malformed> {
    let mut builders: BTreeMap<&str, KeyBuilder<'_>> = BTreeMap::new();
    for (op_index, op) in history.iter().enumerate() {
        validate(op).map_err(|reason| Malformed { op_index, reason })?;
        let optional = op.ret.is_none();
        let complete = match op.complete {
            Some(complete) if !optional => complete,
            _ => NEVER,
        };
        for (key, call, ret) in split_per_key(op) {
            if grouped.contains(key) {
                continue;
            }
            let builder = builders.entry(key).or_default();
            builder.add(op_index, call, ret, op.invoke, complete, optional);
        }
    }
    Ok(builders
        .into_iter()
        .map(|(key, builder)| builder.finish(key))
        .collect())
}

type KeyShare<'h> = (&'h str, BuilderCall<'h>, BuilderRet<'h>);

/// The share of `op` on each key it touches. `op` has passed [`validate`].
fn split_per_key(op: &Operation) -> Vec<KeyShare<'_>> {
    let ret = op.ret.as_ref();
    let share = match &op.call {
        Call::Get { key } => {
            let ret = match ret {
                Some(Ret::Get { value }) => BuilderRet::Get(value.as_deref()),
                _ => BuilderRet::Unconstrained,
            };
            (key.as_str(), BuilderCall::Get, ret)
        }
        Call::Put { key, value } => {
            let ret = match ret {
                Some(Ret::Put { prev }) => BuilderRet::Prev(prev.as_deref()),
                _ => BuilderRet::Unconstrained,
            };
            (key.as_str(), BuilderCall::Put(value), ret)
        }
        Call::Delete { key } => {
            let ret = match ret {
                Some(Ret::Delete { prev }) => BuilderRet::Prev(prev.as_deref()),
                _ => BuilderRet::Unconstrained,
            };
            (key.as_str(), BuilderCall::Delete, ret)
        }
        Call::Cas {
            key,
            expected,
            value,
        } => {
            let ret = match ret {
                Some(Ret::Cas { succeeded, current }) => {
                    BuilderRet::Cas(*succeeded, current.as_deref())
                }
                _ => BuilderRet::Unconstrained,
            };
            let call = BuilderCall::Cas(expected.as_deref(), value.as_deref());
            (key.as_str(), call, ret)
        }
        Call::MultiPut { entries } => {
            // The last entry for a key wins, as in one atomic application.
            let last_per_key: BTreeMap<&str, &str> = entries
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str()))
                .collect();
            return last_per_key
                .into_iter()
                .map(|(key, value)| (key, BuilderCall::Put(value), BuilderRet::Unconstrained))
                .collect();
        }
        // Every key of a transaction is in a group (`group::groups`).
        Call::Txn { .. } => return Vec::new(),
    };
    vec![share]
}

fn validate(op: &Operation) -> Result<(), String> {
    if let Some(complete) = op.complete
        && complete < op.invoke
    {
        return Err(format!(
            "completed at {complete} before its invoke at {}",
            op.invoke
        ));
    }
    let Some(ret) = &op.ret else {
        return Ok(());
    };
    let matches = matches!(
        (&op.call, ret),
        (Call::Get { .. }, Ret::Get { .. })
            | (Call::Put { .. }, Ret::Put { .. } | Ret::PutAck)
            | (Call::Delete { .. }, Ret::Delete { .. } | Ret::DeleteAck)
            | (Call::Cas { .. }, Ret::Cas { .. })
            | (Call::MultiPut { .. }, Ret::MultiPut)
            | (Call::Txn { .. }, Ret::Txn { .. } | Ret::Applied)
    );
    if matches {
        Ok(())
    } else {
        Err(format!("reply {ret:?} does not answer call {:?}", op.call))
    }
}

enum BuilderCall<'h> {
    Get,
    Put(&'h str),
    Delete,
    Cas(Option<&'h str>, Option<&'h str>),
}

enum BuilderRet<'h> {
    Unconstrained,
    Get(Option<&'h str>),
    Prev(Option<&'h str>),
    Cas(bool, Option<&'h str>),
}

#[derive(Default)]
struct KeyBuilder<'h> {
    positions: Vec<usize>,
    ops: Vec<KeyOp>,
    interned: HashMap<&'h str, ValueId>,
    values: Vec<&'h str>,
}

impl<'h> KeyBuilder<'h> {
    fn intern(&mut self, value: Option<&'h str>) -> ValueId {
        let Some(value) = value else {
            return ABSENT;
        };
        let next_id = ValueId::try_from(self.values.len() + 1).expect("fewer than 2^32 values");
        let id = *self.interned.entry(value).or_insert(next_id);
        if id == next_id {
            self.values.push(value);
        }
        id
    }

    fn add(
        &mut self,
        op_index: usize,
        call: BuilderCall<'h>,
        ret: BuilderRet<'h>,
        invoke: u64,
        complete: u64,
        optional: bool,
    ) {
        let call = match call {
            BuilderCall::Get => ModelCall::Get,
            BuilderCall::Put(value) => ModelCall::Put {
                value: self.intern(Some(value)),
            },
            BuilderCall::Delete => ModelCall::Delete,
            BuilderCall::Cas(expected, value) => ModelCall::Cas {
                expected: self.intern(expected),
                value: self.intern(value),
            },
        };
        let ret = match ret {
            BuilderRet::Unconstrained => ModelRet::Unconstrained,
            BuilderRet::Get(value) => ModelRet::Get {
                value: self.intern(value),
            },
            BuilderRet::Prev(prev) => ModelRet::Prev {
                prev: self.intern(prev),
            },
            BuilderRet::Cas(succeeded, current) => ModelRet::Cas {
                succeeded,
                current: self.intern(current),
            },
        };
        let position = u32::try_from(self.positions.len()).expect("fewer than 2^32 ops per key");
        self.positions.push(op_index);
        self.ops.push(KeyOp {
            position,
            call,
            ret,
            invoke,
            complete,
            optional,
        });
    }

    fn finish(self, key: &'h str) -> KeyHistory<'h> {
        let value_count = self.values.len() + 1;
        let mut written = vec![false; value_count];
        let mut mentioned = vec![false; value_count];
        written[ABSENT as usize] = true;
        mentioned[ABSENT as usize] = true;
        for op in &self.ops {
            match op.call {
                ModelCall::Put { value } => written[value as usize] = true,
                ModelCall::Cas { value, .. } => written[value as usize] = true,
                ModelCall::Get | ModelCall::Delete => {}
            }
            for value in op.mentions().into_iter().flatten() {
                mentioned[value as usize] = true;
            }
        }
        // An unknown-outcome op that reads, or writes a value nobody observes
        // or compares against, can be left out: in any valid order that
        // includes it, the ops up to the next write cannot observe its value,
        // so removing it (and any unknown CAS it made fail) keeps the order
        // valid. Dropping these keeps 504-heavy histories tractable.
        let matters = |op: &KeyOp| {
            !op.optional
                || match op.call {
                    ModelCall::Get => false,
                    ModelCall::Put { value } | ModelCall::Cas { value, .. } => {
                        mentioned[value as usize]
                    }
                    ModelCall::Delete => true,
                }
        };
        let total = self.ops.len();
        let ops: Vec<KeyOp> = self.ops.into_iter().filter(matters).collect();
        let unwritten_observation = ops.iter().position(|op| {
            op.observed_value()
                .is_some_and(|value| !written[value as usize])
        });
        KeyHistory {
            key,
            positions: self.positions,
            pruned: total - ops.len(),
            ops,
            values: self.values,
            unwritten_observation,
        }
    }
}
