//! Leadership transfers asked for through the API: the request is answered
//! when the transfer ends, not when it starts, so that a client learns
//! whether it worked. raft-core ends a transfer when the target takes over,
//! an election timeout after it was first asked for (the target is
//! unreachable or cannot catch up), when it is cancelled by a transfer to
//! the leader itself, or when the target stops being a voter. Proposals are
//! refused only while it is pending.

use super::DriverError;
use super::handle::Reply;
use raft_core::{Node, NodeId, Role};

/// Clients waiting for the outcome of a transfer to `to`.
pub(super) struct TransferWaiter {
    pub to: NodeId,
    pub reply: Reply<()>,
}

/// What became of a pending transfer to `to`, as the core shows it now;
/// None while it is still undecided.
pub(super) fn outcome(node: &Node, to: NodeId) -> Option<Result<(), DriverError>> {
    if node.leader() == Some(to) {
        return Some(Ok(()));
    }
    match node.role() {
        Role::Leader if node.lead_transferee() == Some(to) => None,
        Role::Leader => Some(Err(DriverError::Unavailable(format!(
            "leadership transfer to {to} did not complete within the election timeout \
             ({to} is unreachable, not caught up, or no longer a voter); this node still \
             leads and accepts writes"
        )))),
        // We stepped down: the target is campaigning, or someone else won.
        _ => node.leader().map(|other| {
            Err(DriverError::Unavailable(format!(
                "leadership went to {other}, not to {to}"
            )))
        }),
    }
}

/// Answers the waiters whose transfer ended; keeps the others.
pub(super) fn settle(node: &Node, waiters: &mut Vec<TransferWaiter>) {
    waiters.retain(|w| !w.reply.is_closed());
    let mut keep = Vec::new();
    for w in std::mem::take(waiters) {
        match outcome(node, w.to) {
            Some(result) => {
                let _ = w.reply.send(result);
            }
            None => keep.push(w),
        }
    }
    *waiters = keep;
}

/// A new transfer (to `to`) replaced any other pending one: those who
/// waited for a different target are told so.
pub(super) fn supersede(waiters: &mut Vec<TransferWaiter>, to: NodeId) {
    let mut keep = Vec::new();
    for w in std::mem::take(waiters) {
        if w.to == to {
            keep.push(w);
        } else {
            let _ = w.reply.send(Err(DriverError::Unavailable(format!(
                "leadership transfer to {} cancelled by a transfer to {to}",
                w.to
            ))));
        }
    }
    *waiters = keep;
}
