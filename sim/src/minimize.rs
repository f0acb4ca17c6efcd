//! Shrinking a failing run: fewer ticks, fewer faults, fewer operations,
//! as long as the same property still breaks.
//!
//! The fault plan and the run-time choices come from separate streams of
//! the seed's generator (see `rng`), so dropping a fault leaves everything
//! before it unchanged and the shrunk run stays close to the original.

use crate::faults::FaultSelection;
use crate::options::SimOptions;
use crate::report::{RunReport, run};

/// The smallest failing run found.
#[derive(Debug)]
pub struct Minimized {
    pub options: SimOptions,
    pub report: RunReport,
    /// How many runs the search took.
    pub runs: u32,
}

impl Minimized {
    /// A command line that replays the shrunk run.
    pub fn command_line(&self) -> String {
        let o = &self.options;
        let mut line = format!(
            "sim --seed {} --nodes {} --clients {} --ticks {} --faults {}",
            o.seed,
            o.nodes,
            o.clients,
            o.ticks,
            faults_arg(&o.faults)
        );
        if let Some(plan) = o.plan_ticks {
            line.push_str(&format!(" --plan-ticks {plan}"));
        }
        if let Some(max) = o.max_ops {
            line.push_str(&format!(" --max-ops {max}"));
        }
        if let Some(keep) = &o.keep_faults {
            let list: Vec<String> = keep.iter().map(|k| k.to_string()).collect();
            line.push_str(&format!(" --keep-faults '{}'", list.join(",")));
        }
        if o.cut_removed_leader && !crate::faults::CUT_REMOVED_LEADER {
            line.push_str(" --cut-removed-leader");
        }
        line
    }
}

/// The `--faults` argument that selects `faults`.
pub fn faults_arg(faults: &FaultSelection) -> String {
    match faults {
        FaultSelection::Swarm => "all".to_string(),
        FaultSelection::Exactly(kinds) if kinds.is_empty() => "none".to_string(),
        FaultSelection::Exactly(kinds) => {
            let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
            names.join(",")
        }
    }
}

/// Shrinks the run of `options`; None if it does not fail.
pub fn minimize(options: SimOptions) -> Option<Minimized> {
    let first = run(options.clone());
    let property = first.violation.as_ref()?.property;
    let mut best = Minimized {
        options,
        report: first,
        runs: 1,
    };
    let attempt = |best: &mut Minimized, candidate: SimOptions| -> bool {
        best.runs += 1;
        let report = run(candidate.clone());
        let same = report
            .violation
            .as_ref()
            .is_some_and(|v| v.property == property);
        if same {
            best.options = candidate;
            best.report = report;
        }
        same
    };

    // Fewer ticks: stop soon after the violation (the final phase follows),
    // with the fault plan still drawn for the original length.
    let violation_tick = best.report.ticks;
    let shorter = violation_tick + best.options.final_phase_ticks() + 1;
    if shorter < best.options.ticks {
        let mut candidate = best.options.clone();
        candidate.plan_ticks = Some(candidate.plan_ticks.unwrap_or(candidate.ticks));
        candidate.ticks = shorter;
        attempt(&mut best, candidate);
    }

    // Fewer faults. Those that start after the violation never fired; then
    // drop chunks of the rest, halving the chunk size (delta debugging).
    let positions: Vec<usize> = match &best.options.keep_faults {
        Some(keep) => keep.clone(),
        None => (0..best.report.schedule.len()).collect(),
    };
    let violation_tick = best.report.ticks;
    let mut keep: Vec<usize> = positions
        .iter()
        .zip(&best.report.schedule)
        .filter(|(_, f)| f.at_tick <= violation_tick)
        .map(|(&p, _)| p)
        .collect();
    let mut candidate = best.options.clone();
    candidate.keep_faults = Some(keep.clone());
    if !attempt(&mut best, candidate) {
        keep = positions;
    }
    let mut chunk = keep.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < keep.len() {
            let end = (start + chunk).min(keep.len());
            let mut fewer = keep.clone();
            fewer.drain(start..end);
            let mut candidate = best.options.clone();
            candidate.keep_faults = Some(fewer.clone());
            if attempt(&mut best, candidate) {
                keep = fewer;
            } else {
                start = end;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    best.options.keep_faults = Some(keep);

    // Fewer operations: halve, then trim by eighths.
    let mut ops = best.report.history.len() as u64;
    loop {
        let target = if ops > 16 {
            ops / 2
        } else {
            ops.saturating_sub(1)
        };
        if target == 0 || target == ops {
            break;
        }
        let mut candidate = best.options.clone();
        candidate.max_ops = Some(target);
        if !attempt(&mut best, candidate) {
            break;
        }
        ops = target;
    }
    while ops > 8 {
        let target = ops - ops.div_ceil(8);
        let mut candidate = best.options.clone();
        candidate.max_ops = Some(target);
        if !attempt(&mut best, candidate) {
            break;
        }
        ops = target;
    }

    // Fewer ticks again, now that the run is smaller.
    let shorter = best.report.ticks + best.options.final_phase_ticks() + 1;
    if shorter < best.options.ticks {
        let mut candidate = best.options.clone();
        candidate.plan_ticks = Some(candidate.plan_ticks.unwrap_or(candidate.ticks));
        candidate.ticks = shorter;
        attempt(&mut best, candidate);
    }
    Some(best)
}
