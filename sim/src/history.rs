//! The client history in the linearizability checker's terms, and the
//! end-of-run check.

use crate::client::{ClientCall, ClientRet, Outcome, Recorded};
use crate::linearizability::{Call, CheckResult, Operation, Ret, check_with_budget};
use crate::world::World;
use kv_replica::command::{Op, OpResult};

/// Search steps per key: generous for the few thousand operations of a run,
/// bounded so that a pathological history cannot stall a sweep.
pub const STEP_BUDGET_PER_KEY: u64 = 2_000_000;

fn call_of(call: &ClientCall) -> Call {
    match call {
        ClientCall::Get { key } => Call::Get { key: key.clone() },
        ClientCall::Write(Op::Put { key, value }) => Call::Put {
            key: key.clone(),
            value: value.clone(),
        },
        ClientCall::Write(Op::Delete { key }) => Call::Delete { key: key.clone() },
        ClientCall::Write(Op::Cas {
            key,
            expected,
            value,
        }) => Call::Cas {
            key: key.clone(),
            expected: expected.clone(),
            value: value.clone(),
        },
        ClientCall::Write(Op::MultiPut { entries }) => Call::MultiPut {
            entries: entries.clone(),
        },
        // The checker is per key; a transaction over several keys needs the
        // model of a key set first, so the clients do not issue one yet.
        ClientCall::Write(Op::Txn(_)) => {
            unreachable!("the simulator's clients issue no transactions")
        }
        // Lease operations are checked by the lease client's own check.
        ClientCall::Write(
            Op::PutWithLease { .. }
            | Op::LeaseGrant { .. }
            | Op::LeaseRevoke { .. }
            | Op::LeaseExpire { .. },
        ) => unreachable!("the checked clients issue no lease operations"),
    }
}

fn ret_of(ret: &ClientRet) -> Option<Ret> {
    Some(match ret {
        ClientRet::Get(value) => Ret::Get {
            value: value.clone(),
        },
        ClientRet::Write(OpResult::Put { prev, .. }) => Ret::Put { prev: prev.clone() },
        ClientRet::Write(OpResult::Delete { prev, .. }) => Ret::Delete { prev: prev.clone() },
        ClientRet::Write(OpResult::Cas {
            succeeded, current, ..
        }) => Ret::Cas {
            succeeded: *succeeded,
            current: current.clone(),
        },
        ClientRet::Write(OpResult::MultiPut { .. }) => Ret::MultiPut,
        ClientRet::Write(OpResult::Txn { .. }) => {
            unreachable!("the simulator's clients issue no transactions")
        }
        ClientRet::Write(
            OpResult::StaleSeq { .. }
            | OpResult::LeaseNotFound { .. }
            | OpResult::LeaseGranted { .. }
            | OpResult::LeaseRevoked { .. },
        ) => return None,
    })
}

/// The operations that may have had an effect, in the checker's terms
/// (times in simulator steps). Failed operations had none and are left out.
pub fn to_operations(history: &[Recorded]) -> Vec<Operation> {
    history
        .iter()
        .filter_map(|op| {
            let call = call_of(&op.call);
            match op.outcome {
                Outcome::Ok => Some(Operation {
                    client: op.client,
                    invoke: op.invoke_step,
                    complete: op.complete_step,
                    call,
                    ret: op.ret.as_ref().and_then(ret_of),
                }),
                Outcome::Unknown | Outcome::Pending => {
                    Some(Operation::unknown(op.client, op.invoke_step, call))
                }
                Outcome::Failed => None,
            }
        })
        .collect()
}

impl World {
    pub(crate) fn check_history(&mut self) {
        if !self.opts.check_linearizability {
            return;
        }
        let operations = to_operations(&self.history);
        match check_with_budget(&operations, STEP_BUDGET_PER_KEY) {
            CheckResult::Ok { .. } => {}
            CheckResult::Unknown { key, reason } => {
                self.linearizability_unknown = Some(format!("key {key}: {reason}"));
            }
            violation => self.fail("linearizability", violation.to_string()),
        }
    }
}
