//! The protocol bugs of `raft_core::bugs::Bugs` by name, for `sim --bug`
//! and the bug-catalogue tests.

use raft_core::bugs::Bugs;

/// Lists every flag once: the names `--bug` takes and the setter follow.
/// Adding a flag of `raft_core::bugs::Bugs` to the catalogue is one word
/// here, one line in `sim/tests/bug_catalogue.rs` and one row in
/// `sim/BUG_CATALOGUE.md`.
macro_rules! bug_flags {
    ($($flag:ident),* $(,)?) => {
        /// Every bug flag, by the name `--bug` takes.
        pub const BUG_NAMES: &[&str] = &[$(stringify!($flag)),*];

        /// A `Bugs` with exactly the named flag on.
        pub fn bugs_named(name: &str) -> Result<Bugs, String> {
            let mut bugs = Bugs::default();
            match name {
                $(stringify!($flag) => bugs.$flag = true,)*
                _ => {
                    return Err(format!(
                        "unknown bug {name:?}; known: {}, the storage bugs {} and the replica bugs {}",
                        BUG_NAMES.join(", "),
                        kv_storage::StorageBugs::NAMES.join(", "),
                        kv_replica::bugs::ReplicaBugs::NAMES.join(", ")
                    ));
                }
            }
            Ok(bugs)
        }
    };
}

bug_flags!(
    commit_previous_term,
    vote_before_persist,
    vote_for_stale_log,
    read_without_quorum,
    apply_twice,
    skip_prev_term_check,
    joint_new_majority_only,
    concurrent_conf_changes,
    removed_leader_gives_up,
    lead_before_term_durable,
    lease_after_aborted_transfer,
    vote_at_once_after_restart,
    vote_while_damaged,
    resend_chunk_per_answer,
);

/// A configuration hook that switches the named bug on in every node.
pub fn bug_hook(name: &str) -> Result<crate::ConfigHook, String> {
    let bugs = bugs_named(name)?;
    Ok(std::sync::Arc::new(move |c: &mut raft_core::Config| {
        c.bugs = bugs
    }))
}
