//! Depth-first search for a linearization of one key's sub-history.
//!
//! This is Porcupine's `checkSingle` (after Lowe's improvement of Wing &
//! Gong): the call and return events of all operations sit in one doubly
//! linked list in time order. The candidates to linearize next are the calls
//! before the first return still in the list; linearizing one unlinks its call
//! and its return ("lift"), and backtracking links them back in LIFO order, so
//! both are O(1). Meeting a return event means its operation was not
//! linearized before it completed: undo the last choice and try the next.
//! Every (linearized set, state) configuration is expanded at most once.
//!
//! Unknown-outcome ("optional") operations stay candidates forever, which
//! multiplies configurations by every subset of them. Four rules, each a
//! function of the configuration (so the memo stays sound), keep only the
//! placements that can matter. Each rests on an exchange argument: any valid
//! order can be rewritten into one that obeys the rule.
//!
//! - **No-ops.** An optional op that would leave the state unchanged is not
//!   linearized: dropping it from a valid order leaves the order valid.
//! - **Observed at once.** An optional op is linearized only if the very next
//!   op mentions (observes, or compares against) the value it wrote. In a
//!   valid order, whatever follows an optional write `w` either mentions `w`,
//!   or is a write whose reply does not depend on the state, or an optional
//!   CAS that fails on `w`; the first makes `w` useful, the other two mean
//!   that `w` (or the failed CAS) can be dropped. The head of the search
//!   records whether such an observer is awaited.
//! - **Dead values.** Following from the previous rule, an optional op whose
//!   written value no remaining op mentions is not linearized.
//! - **Identical twins.** Among optional ops with the same call, one may be
//!   linearized only after the twin invoked before it: a valid order that uses
//!   the later twin alone stays valid with the earlier one in its place, as
//!   the earlier one was invoked before and its return never constrains.
//!
//! One more rule spares branching on reads, which would otherwise make every
//! subset of concurrent reads a configuration of its own:
//!
//! - **Reads first.** When a required op that observes the current value and
//!   keeps it (a read, a CAS failing with the right `current`) may come next,
//!   it is placed at once and no alternative is tried at that point: in any
//!   valid continuation it can be moved to the front.
//!
//! The brute-force cross-checks in the tests back these arguments.

use std::collections::HashMap;

use super::events::{EventList, NIL};
use super::memo::{Memo, splitmix64};
use super::model::{ABSENT, KeyOp, ValueId};

pub(super) enum SearchOutcome {
    Linearizable,
    /// `deepest_prefix` is the longest sequence of operations (indices into
    /// the searched slice) that the search managed to linearize.
    NotLinearizable {
        deepest_prefix: Vec<u32>,
    },
    OutOfBudget,
}

/// Searches for a linearization of `ops`, whose value ids are below
/// `value_count`, giving up after `step_budget` steps.
pub(super) fn search(ops: &[KeyOp], value_count: usize, step_budget: u64) -> SearchOutcome {
    let mut search = Search::new(ops, value_count);
    let mut steps = 0u64;
    let mut entry = search.events.first();
    let mut progressed = false;
    while search.required_left > 0 {
        steps += 1;
        if steps > step_budget {
            return SearchOutcome::OutOfBudget;
        }
        let event = search.events.entries[entry as usize];
        let next_entry = if progressed && let Some(read) = search.forced_candidate() {
            // Placing `read` now loses nothing, so it is the only choice.
            progressed = search.try_linearize(read, true);
            progressed.then(|| search.events.first())
        } else if event.is_call {
            progressed = search.try_linearize(event.op, false);
            Some(if progressed {
                search.events.first()
            } else {
                event.next
            })
        } else {
            // The op closing here was not linearized in time. All returns of
            // unknown-outcome ops sort after the required ones, and a required
            // return is still listed, so this one is required.
            debug_assert!(
                !ops[event.op as usize].optional,
                "met an unknown-outcome return"
            );
            None
        };
        entry = match next_entry {
            Some(entry) => entry,
            None => match search.backtrack() {
                Some(entry) => {
                    progressed = false;
                    entry
                }
                None => {
                    return SearchOutcome::NotLinearizable {
                        deepest_prefix: search.deepest_prefix,
                    };
                }
            },
        };
    }
    SearchOutcome::Linearizable
}

/// What the rest of the search depends on besides the linearized set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    /// The key's state after the linearized ops.
    state: ValueId,
    /// The last op linearized is an optional write: the next op must observe
    /// its value, or it would have been pointless (see the module docs).
    awaiting_observer: bool,
}

impl Head {
    fn memo_key(self) -> u64 {
        u64::from(self.state) << 1 | u64::from(self.awaiting_observer)
    }
}

struct Search<'o> {
    ops: &'o [KeyOp],
    events: EventList,
    memo: Memo,
    zobrist: Vec<u64>,
    earlier_twin: Vec<u32>,
    /// Bit `i` is set when `ops[i]` is linearized.
    linearized: Vec<u64>,
    /// XOR of the Zobrist keys of the linearized ops.
    linearized_hash: u64,
    head: Head,
    /// Linearized ops, innermost last, with the head before each and whether
    /// it was forced (the only choice, so there is no alternative to try).
    stack: Vec<(u32, Head, bool)>,
    /// For each value, how many ops not yet linearized mention it.
    mentions_left: Vec<u32>,
    required_left: usize,
    deepest_prefix: Vec<u32>,
    /// How much of `deepest_prefix` is still a prefix of `stack`.
    deepest_shared: usize,
}

impl<'o> Search<'o> {
    fn new(ops: &'o [KeyOp], value_count: usize) -> Self {
        let memo = Memo::new(ops.len());
        Search {
            ops,
            events: EventList::new(ops),
            zobrist: (0..ops.len() as u64)
                .map(|i| splitmix64(i ^ 0x5EED_0F11_4EA2))
                .collect(),
            earlier_twin: earlier_twins(ops),
            linearized: vec![0u64; memo.words],
            memo,
            linearized_hash: 0,
            head: Head {
                state: ABSENT,
                awaiting_observer: false,
            },
            stack: Vec::with_capacity(ops.len()),
            mentions_left: mention_counts(ops, value_count),
            required_left: ops.iter().filter(|op| !op.optional).count(),
            deepest_prefix: Vec::new(),
            deepest_shared: 0,
        }
    }

    fn is_linearized(&self, index: usize) -> bool {
        self.linearized[index / 64] & (1u64 << (index % 64)) != 0
    }

    fn flip(&mut self, index: usize) {
        self.linearized[index / 64] ^= 1u64 << (index % 64);
        self.linearized_hash ^= self.zobrist[index];
    }

    /// Whether placing `ops[index]` next could be needed by some
    /// linearization (the pruning rules of the module docs).
    fn may_help(&self, index: usize) -> bool {
        let op = &self.ops[index];
        let state = self.head.state;
        if self.head.awaiting_observer && !op.mentions().contains(&Some(state)) {
            return false;
        }
        if !op.optional {
            return true;
        }
        let written = op.next_state(state);
        let twin = self.earlier_twin[index];
        written != state
            && self.mentions_left[written as usize] > 0
            && (twin == NIL || self.is_linearized(twin as usize))
    }

    /// A required op in the frontier that observes the current state and
    /// leaves it unchanged (a read, say). Placing it right away loses nothing:
    /// in any valid continuation it can move to the front, as it is already
    /// invoked and its reply holds here. So it need not be branched on.
    fn forced_candidate(&self) -> Option<u32> {
        let state = self.head.state;
        let mut entry = self.events.first();
        while entry != NIL {
            let event = self.events.entries[entry as usize];
            if !event.is_call {
                return None;
            }
            let op = &self.ops[event.op as usize];
            if !op.optional && op.observed_value() == Some(state) && op.step(state) == Some(state) {
                return Some(event.op);
            }
            entry = event.next;
        }
        None
    }

    /// Linearizes `op` next if it may help, fits the state and leads to an
    /// unexplored configuration.
    fn try_linearize(&mut self, op: u32, forced: bool) -> bool {
        let index = op as usize;
        if !self.may_help(index) {
            return false;
        }
        let Some(state) = self.ops[index].step(self.head.state) else {
            return false;
        };
        let head = Head {
            state,
            awaiting_observer: self.ops[index].optional,
        };
        self.flip(index);
        let memo_hash = self.linearized_hash ^ splitmix64(head.memo_key());
        if !self
            .memo
            .insert(memo_hash, &self.linearized, head.memo_key())
        {
            self.flip(index);
            return false;
        }
        self.stack.push((op, self.head, forced));
        self.head = head;
        self.events.lift(op);
        for value in self.ops[index].mentions().into_iter().flatten() {
            self.mentions_left[value as usize] -= 1;
        }
        if !self.ops[index].optional {
            self.required_left -= 1;
        }
        if self.stack.len() > self.deepest_prefix.len() {
            let shared = self.deepest_shared;
            self.deepest_prefix.truncate(shared);
            self.deepest_prefix
                .extend(self.stack[shared..].iter().map(|&(op, _, _)| op));
            self.deepest_shared = self.stack.len();
        }
        true
    }

    /// Undoes linearized ops up to and including the innermost one that was
    /// a choice, and returns the entry after its call: the next alternative.
    /// `None` when no choice is left.
    fn backtrack(&mut self) -> Option<u32> {
        loop {
            let (op, head, forced) = self.stack.pop()?;
            let index = op as usize;
            self.deepest_shared = self.deepest_shared.min(self.stack.len());
            self.flip(index);
            self.head = head;
            self.events.unlift(op);
            for value in self.ops[index].mentions().into_iter().flatten() {
                self.mentions_left[value as usize] += 1;
            }
            if !self.ops[index].optional {
                self.required_left += 1;
            }
            if !forced {
                return Some(self.events.entries[self.events.call_of[index] as usize].next);
            }
        }
    }
}

/// For each optional op, the optional op with the same call invoked just
/// before it (ties by index), or `NIL`.
fn earlier_twins(ops: &[KeyOp]) -> Vec<u32> {
    let mut optional: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].optional).collect();
    optional.sort_by_key(|&i| (ops[i].invoke, i));
    let mut latest_with_call = HashMap::new();
    let mut earlier_twin = vec![NIL; ops.len()];
    for i in optional {
        if let Some(twin) = latest_with_call.insert(ops[i].call, i as u32) {
            earlier_twin[i] = twin;
        }
    }
    earlier_twin
}

/// For each of the `value_count` values, how many ops observe it or compare
/// against it.
fn mention_counts(ops: &[KeyOp], value_count: usize) -> Vec<u32> {
    let mut counts = vec![0u32; value_count];
    for op in ops {
        for value in op.mentions().into_iter().flatten() {
            counts[value as usize] += 1;
        }
    }
    counts
}
