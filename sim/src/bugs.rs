//! The protocol bugs of `raft_core::bugs::Bugs` by name, for `sim --bug`
//! and the bug-catalogue tests.

use raft_core::bugs::Bugs;

/// Every bug flag, by the name `--bug` takes.
pub const BUG_NAMES: [&str; 8] = [
    "commit_previous_term",
    "vote_before_persist",
    "vote_for_stale_log",
    "read_without_quorum",
    "apply_twice",
    "skip_prev_term_check",
    "joint_new_majority_only",
    "concurrent_conf_changes",
];

/// A `Bugs` with exactly the named flag on.
pub fn bugs_named(name: &str) -> Result<Bugs, String> {
    let mut bugs = Bugs::default();
    match name {
        "commit_previous_term" => bugs.commit_previous_term = true,
        "vote_before_persist" => bugs.vote_before_persist = true,
        "vote_for_stale_log" => bugs.vote_for_stale_log = true,
        "read_without_quorum" => bugs.read_without_quorum = true,
        "apply_twice" => bugs.apply_twice = true,
        "skip_prev_term_check" => bugs.skip_prev_term_check = true,
        "joint_new_majority_only" => bugs.joint_new_majority_only = true,
        "concurrent_conf_changes" => bugs.concurrent_conf_changes = true,
        _ => {
            return Err(format!(
                "unknown bug {name:?}; known: {}",
                BUG_NAMES.join(", ")
            ));
        }
    }
    Ok(bugs)
}

/// A configuration hook that switches the named bug on in every node.
pub fn bug_hook(name: &str) -> Result<crate::ConfigHook, String> {
    let bugs = bugs_named(name)?;
    Ok(std::sync::Arc::new(move |c: &mut raft_core::Config| {
        c.bugs = bugs
    }))
}
