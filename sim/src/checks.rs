//! Safety properties checked after every step, incrementally: each check
//! looks only at what the step changed, against global records of what every
//! node ever logged, committed and applied.

use crate::disk::SimDisk;
use crate::trace::Fnv;
use kv_replica::command::{OpResult, RequestId, TxnOpResult};
use kv_replica::replica::Replica;
use kv_replica::state_machine::Applied;
use raft_core::{Entry, EntryKind, LogIndex, NodeId, Role, Term};
use std::collections::BTreeMap;
use std::fmt;

/// A broken property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub step: u64,
    pub property: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tick {}: {}: {}",
            self.step / crate::faults::STEPS_PER_TICK,
            self.property,
            self.detail
        )
    }
}

/// A log entry as some node held it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Logged {
    term: Term,
    hash: u64,
    /// The term of the entry before it, where known.
    prev_term: Option<Term>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Committed {
    term: Term,
    hash: u64,
    /// The term of the node that first saw it committed: every leader of a
    /// later term must hold it.
    commit_term: Term,
}

/// What the checker last saw of one node (reset when it restarts).
#[derive(Clone, Copy, Debug, Default)]
struct Watch {
    role: Option<Role>,
    term: Term,
    commit: LogIndex,
    applied: u64,
}

/// Who wrote what: the client and seq behind each request id.
pub type Writers = BTreeMap<RequestId, (u64, u64)>;

#[derive(Debug, Default)]
pub struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    /// Nodes that lead a term not yet durable on them: counted in
    /// `leaders` once it is (see `step`).
    undurable_leaders: BTreeMap<NodeId, Term>,
    /// By index - 1: every distinct (term, entry) any node logged there.
    logged: Vec<Vec<Logged>>,
    committed: Vec<Option<Committed>>,
    /// By index - 1: the hash of (request id, result) of the applied entry.
    applied: Vec<Option<(u64, Option<RequestId>)>>,
    /// By applied index: the state machine digest (0: not seen yet).
    digests: Vec<u64>,
    watch: BTreeMap<NodeId, Watch>,
    /// (client, seq) -> index where the write took effect.
    fresh_writes: BTreeMap<(u64, u64), u64>,
}

pub fn entry_hash(entry: &Entry) -> u64 {
    let mut h = Fnv::default();
    h.u64(match entry.kind {
        EntryKind::Normal => 1,
        EntryKind::Noop => 2,
        EntryKind::ConfChange => 3,
    });
    h.bytes(&entry.data);
    h.0
}

fn result_hash(applied: &Applied) -> u64 {
    let mut h = Fnv::default();
    if let Some(r) = applied.request {
        h.u64(r.node);
        h.u64(r.id);
    }
    let opt = |h: &mut Fnv, v: &Option<String>| match v {
        Some(s) => h.str(s),
        None => h.u64(u64::MAX),
    };
    match &applied.result {
        None => h.u64(0),
        Some(OpResult::Put { revision, prev }) | Some(OpResult::Delete { revision, prev }) => {
            h.u64(1);
            h.u64(*revision);
            opt(&mut h, prev);
        }
        Some(OpResult::Cas {
            succeeded,
            revision,
            current,
        }) => {
            h.u64(2 + u64::from(*succeeded));
            h.u64(*revision);
            opt(&mut h, current);
        }
        Some(OpResult::MultiPut { revision }) => {
            h.u64(4);
            h.u64(*revision);
        }
        Some(OpResult::Txn {
            succeeded,
            revision,
            results,
        }) => {
            h.u64(6 + u64::from(*succeeded));
            h.u64(*revision);
            for result in results {
                match result {
                    TxnOpResult::Prev(prev) => opt(&mut h, prev),
                    TxnOpResult::Get(None) => h.u64(u64::MAX - 1),
                    TxnOpResult::Get(Some((key, value, revision))) => {
                        h.str(key);
                        h.str(value);
                        h.u64(*revision);
                    }
                }
            }
        }
        Some(OpResult::StaleSeq { seq, newest, .. }) => {
            h.u64(5);
            h.u64(*seq);
            h.u64(*newest);
        }
        Some(OpResult::LeaseNotFound { lease }) => {
            h.u64(8);
            h.u64(*lease);
        }
        Some(OpResult::LeaseGranted { id, ttl_ms }) => {
            h.u64(9);
            h.u64(*id);
            h.u64(*ttl_ms);
        }
        Some(OpResult::LeaseRevoked { revision, deleted }) => {
            h.u64(10);
            h.u64(*revision);
            h.u64(*deleted);
        }
    }
    h.0
}

fn slot<T: Default + Clone>(v: &mut Vec<T>, index: u64) -> &mut T {
    let i = index as usize - 1;
    if v.len() <= i {
        v.resize(i + 1, T::default());
    }
    &mut v[i]
}

impl Checker {
    /// How many distinct leaders (term, node) the run saw.
    pub fn elections(&self) -> usize {
        self.leaders.len()
    }

    /// The request id of the entry applied at `index`, as every node agrees.
    pub fn applied_request(&self, index: u64) -> Option<Option<RequestId>> {
        let i = usize::try_from(index).ok()?.checked_sub(1)?;
        self.applied.get(i).copied().flatten().map(|(_, r)| r)
    }

    /// A node (re)started: its watch starts over from what it recovered.
    pub fn on_start(&mut self, step: u64, replica: &Replica<SimDisk>) -> Result<(), Violation> {
        let node = &replica.node;
        self.undurable_leaders.remove(&node.id());
        self.watch.insert(
            node.id(),
            Watch {
                role: None,
                term: node.term(),
                commit: node.commit_index(),
                applied: replica.state.applied_index(),
            },
        );
        // What it recovered as committed must match what was committed.
        for i in 1..=node.commit_index().0 {
            let (Some(entry), Some(Some(c))) = (
                node.log_entry(LogIndex(i)),
                self.committed.get(i as usize - 1),
            ) else {
                continue;
            };
            if entry.term != c.term || entry_hash(entry) != c.hash {
                return Err(Violation {
                    step,
                    property: "committed entries survive a restart",
                    detail: format!(
                        "{} recovered entry {i}@{} but {i}@{} was committed",
                        node.id(),
                        entry.term,
                        c.term
                    ),
                });
            }
        }
        Ok(())
    }

    /// Each entry appended with the term of the entry before it in the
    /// node's log now (right after the step that appended them).
    pub fn with_prev_terms(
        replica: &Replica<SimDisk>,
        appended: &[Entry],
    ) -> Vec<(Entry, Option<Term>)> {
        let node = &replica.node;
        appended
            .iter()
            .enumerate()
            .map(|(k, entry)| {
                let prev_term = match k.checked_sub(1).map(|p| &appended[p]) {
                    Some(p) if p.index.next() == entry.index => Some(p.term),
                    _ => node.log_term(entry.index.prev()),
                };
                (entry.clone(), prev_term)
            })
            .collect()
    }

    /// Log matching over entries node `id` logged (each with the term of
    /// its predecessor): one entry per (index, term), with one predecessor
    /// term. A node whose persist stage makes rounds durable later reports
    /// them once durable (`world_nodes.rs`): entries lost to a crash before
    /// then were never logged, as with a failed fsync.
    pub fn logged(
        &mut self,
        step: u64,
        id: NodeId,
        logged: &[(Entry, Option<Term>)],
    ) -> Result<(), Violation> {
        let fail = |property: &'static str, detail: String| {
            Err(Violation {
                step,
                property,
                detail,
            })
        };
        for (entry, prev_term) in logged {
            let prev_term = *prev_term;
            let hash = entry_hash(entry);
            let seen = slot(&mut self.logged, entry.index.0);
            match seen.iter().find(|l| l.term == entry.term) {
                Some(l) if l.hash != hash => {
                    return fail(
                        "log matching",
                        format!(
                            "{id} logged a different entry at {}@{}",
                            entry.index, entry.term
                        ),
                    );
                }
                Some(l)
                    if l.prev_term.is_some() && prev_term.is_some() && l.prev_term != prev_term =>
                {
                    return fail(
                        "log matching",
                        format!(
                            "{id} holds {}@{} after term {:?}, another log after term {:?}",
                            entry.index, entry.term, prev_term, l.prev_term
                        ),
                    );
                }
                Some(_) => {}
                None => seen.push(Logged {
                    term: entry.term,
                    hash,
                    prev_term,
                }),
            }
        }
        Ok(())
    }

    /// Checks everything one step changed on one node: the entries it wrote
    /// and the entries it applied.
    pub fn after_step(
        &mut self,
        step: u64,
        replica: &Replica<SimDisk>,
        appended: &[Entry],
        applied: &[Applied],
        writers: &Writers,
    ) -> Result<(), Violation> {
        let node = &replica.node;
        let id = node.id();
        let fail = |property: &'static str, detail: String| {
            Err(Violation {
                step,
                property,
                detail,
            })
        };
        // Log matching: one entry per (index, term), with one predecessor term.
        let logged = Checker::with_prev_terms(replica, appended);
        self.logged(step, id, &logged)?;
        let watch = self.watch.get(&id).copied().unwrap_or_default();
        // Commit index never goes back within one incarnation.
        let commit = node.commit_index();
        if commit < watch.commit {
            return fail(
                "commit index never decreases",
                format!("{id} commit went from {} to {commit}", watch.commit),
            );
        }
        for i in watch.commit.0 + 1..=commit.0 {
            let Some(entry) = node.log_entry(LogIndex(i)) else {
                continue;
            };
            let (term, hash) = (entry.term, entry_hash(entry));
            match slot(&mut self.committed, i) {
                Some(c) if c.term != term || c.hash != hash => {
                    return fail(
                        "committed entries never change",
                        format!(
                            "{id} committed {i}@{term}, but {i}@{} was committed",
                            c.term
                        ),
                    );
                }
                Some(_) => {}
                empty => {
                    *empty = Some(Committed {
                        term,
                        hash,
                        commit_term: node.term(),
                    })
                }
            }
        }
        // Election safety and leader completeness, when a leader appears,
        // counted once its term is durable: until then it sends nothing of
        // that term and commits nothing (raft-core holds every message of
        // an undurable term), and a crash takes the leadership back with
        // the term. A lone voter wins in the step that raises its term; if
        // that fsync fails, it restarts in the old term and may vote in the
        // new one for a node it never told anything (seed 688, one node
        // grown to three).
        let role = node.role();
        if role == Role::Leader && (watch.role != Some(Role::Leader) || watch.term != node.term()) {
            self.undurable_leaders.insert(id, node.term());
        }
        if role != Role::Leader {
            self.undurable_leaders.remove(&id);
        }
        if role == Role::Leader
            && self.undurable_leaders.get(&id) == Some(&node.term())
            && node.durable_term() >= node.term()
        {
            self.undurable_leaders.remove(&id);
            let term = node.term();
            if let Some(other) = self.leaders.insert(term, id)
                && other != id
            {
                return fail(
                    "at most one leader per term",
                    format!("{other} and {id} both lead term {term}"),
                );
            }
            let snapshot_index = node.status().snapshot_index;
            for (i, c) in self.committed.iter().enumerate() {
                let index = LogIndex(i as u64 + 1);
                let Some(c) = c else { continue };
                if c.commit_term >= term || index <= snapshot_index {
                    continue;
                }
                let holds = node
                    .log_entry(index)
                    .is_some_and(|e| e.term == c.term && entry_hash(e) == c.hash);
                if !holds {
                    return fail(
                        "leader completeness",
                        format!(
                            "{id} leads term {term} without {index}@{}, committed in term {}",
                            c.term, c.commit_term
                        ),
                    );
                }
            }
        }
        // Applied sequences are prefixes of one sequence, each entry once.
        let mut last = watch.applied;
        for a in applied {
            let index = a.index.0;
            if index != last + 1 {
                return fail(
                    "no entry applied twice",
                    format!("{id} applied {index} after {last}"),
                );
            }
            last = index;
            let mine = (result_hash(a), a.request);
            match slot(&mut self.applied, index) {
                Some(canon) if *canon != mine => {
                    return fail(
                        "state machine safety",
                        format!("{id} applied a different entry or result at {index}"),
                    );
                }
                Some(_) => {}
                empty => {
                    *empty = Some(mine);
                    self.note_fresh_write(step, index, a, writers)?;
                }
            }
        }
        // Whole-state agreement at the index the state machine reached.
        let applied_index = replica.state.applied_index();
        if applied_index > 0 && applied_index != watch.applied {
            let digest = replica.state.digest();
            let known = slot(&mut self.digests, applied_index);
            if *known == 0 {
                *known = digest;
            } else if *known != digest {
                return fail(
                    "state machine safety",
                    format!("{id} state at {applied_index} differs from another replica's"),
                );
            }
        }
        self.watch.insert(
            id,
            Watch {
                role: Some(role),
                term: node.term(),
                commit,
                applied: applied_index,
            },
        );
        Ok(())
    }

    /// Deduplication: a (client, seq) takes effect at most once.
    fn note_fresh_write(
        &mut self,
        step: u64,
        index: u64,
        applied: &Applied,
        writers: &Writers,
    ) -> Result<(), Violation> {
        let fresh = applied.result.as_ref().and_then(OpResult::revision) == Some(index);
        let Some(&writer) = applied.request.as_ref().and_then(|r| writers.get(r)) else {
            return Ok(());
        };
        if !fresh {
            return Ok(());
        }
        if let Some(first) = self.fresh_writes.insert(writer, index) {
            return Err(Violation {
                step,
                property: "deduplication",
                detail: format!(
                    "client c{} seq {} took effect at {first} and again at {index}",
                    writer.0, writer.1
                ),
            });
        }
        Ok(())
    }
}
