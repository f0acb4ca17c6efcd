//! `sim`: replay one seed, sweep many, or shrink a failing one.

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use sim::faults::FaultSelection;
use sim::minimize::minimize;
use sim::{SimOptions, run};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

/// Seeded deterministic chaos simulator for raft-core and the KV store.
#[derive(Parser, Debug)]
#[command(name = "sim", version)]
struct Args {
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Sweep a range of seeds, `A..B` (B excluded) or `A..=B`.
    #[arg(long)]
    seeds: Option<String>,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Simulated ticks per seed, final heal phase included.
    #[arg(long, default_value_t = 10_000)]
    ticks: u64,
    /// Concurrent simulated clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Transaction clients (over keys t0..t2 of their own), besides
    /// `--clients`.
    #[arg(long, default_value_t = 1)]
    txn_clients: usize,
    /// Lease clients: grant, attach keys, keep alive, stop.
    #[arg(long, default_value_t = 1)]
    lease_clients: usize,
    /// Watchers of a key or prefix, resuming across cut-offs.
    #[arg(long, default_value_t = 3)]
    watchers: usize,
    /// Every node syncs each round at once: no node persists through a
    /// stage that makes rounds durable later (by default three node
    /// incarnations in four do, as kv-node does).
    #[arg(long)]
    no_persist_stage: bool,
    /// `all` (each seed picks a random mix), `none`, or a list such as
    /// `partition,loss,dup,reorder,crash,fsync,pause,skew,diverge,figure8,membership`.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Print every trace line.
    #[arg(long)]
    trace: bool,
    /// Shrink a failing seed and print the smallest failing schedule.
    #[arg(long, requires = "seed")]
    minimize: bool,
    /// Stop issuing client operations after this many.
    #[arg(long)]
    max_ops: Option<u64>,
    /// Draw the fault plan as for a run of this many ticks (set by
    /// `--minimize` when it shortens a run).
    #[arg(long)]
    plan_ticks: Option<u64>,
    /// Keep only these positions of the seed's fault schedule (`1,4,7`).
    #[arg(long, value_delimiter = ',')]
    keep_faults: Option<Vec<usize>>,
    /// Skip the end-of-run linearizability check.
    #[arg(long)]
    no_linearizability: bool,
    /// Cut a removed leader off one way once its removal commits (on by
    /// default; see `faults::CUT_REMOVED_LEADER`).
    #[arg(long)]
    cut_removed_leader: bool,
    /// Switch on a known protocol bug, a storage bug of kv-storage's
    /// catalogue (`blockdisk` runs only), or a replica bug of kv-replica's
    /// (watches, leases, transactions), by name (needs the `buggy` feature).
    #[arg(long)]
    bug: Option<String>,
}

fn options(args: &Args, seed: u64) -> Result<SimOptions, String> {
    let mut o = SimOptions::new(seed);
    if !(1..=9).contains(&args.nodes) {
        return Err(format!("--nodes {} is not in 1..=9", args.nodes));
    }
    o.nodes = args.nodes;
    o.ticks = args.ticks;
    o.clients = args.clients;
    o.txn_clients = args.txn_clients;
    o.lease_clients = args.lease_clients;
    o.watchers = args.watchers;
    o.persist_stage = !args.no_persist_stage;
    o.faults = FaultSelection::parse(&args.faults)?;
    o.print_trace = args.trace;
    o.max_ops = args.max_ops;
    o.keep_faults = args.keep_faults.clone();
    o.plan_ticks = args.plan_ticks;
    o.check_linearizability = !args.no_linearizability;
    o.cut_removed_leader |= args.cut_removed_leader;
    if let Some(bug) = &args.bug {
        if let Some(bugs) = kv_replica::bugs::ReplicaBugs::named(bug)
            && cfg!(feature = "buggy")
        {
            o.replica_bugs = bugs;
        } else {
            match kv_storage::StorageBugs::named(bug) {
                Some(bugs) if cfg!(feature = "buggy") => o.storage_bugs = bugs,
                _ => o.config_hook = Some(bug_hook(bug)?),
            }
        }
    }
    Ok(o)
}

#[cfg(feature = "buggy")]
fn bug_hook(name: &str) -> Result<sim::ConfigHook, String> {
    sim::bugs::bug_hook(name)
}

#[cfg(not(feature = "buggy"))]
fn bug_hook(name: &str) -> Result<sim::ConfigHook, String> {
    Err(format!(
        "--bug {name} needs a build with `--features buggy`"
    ))
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let bad = || format!("--seeds {text:?} is not A..B or A..=B");
    let (a, b, inclusive) = if let Some((a, b)) = text.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = text.split_once("..") {
        (a, b, false)
    } else {
        return Err(bad());
    };
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    Ok((a, if inclusive { b + 1 } else { b }))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match real_main(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main(args: &Args) -> Result<ExitCode, String> {
    // Panics inside node code are caught and reported as violations; any
    // other panic is the simulator's own and is printed with its location.
    sim::panics::install_hook();
    if let Some(seed) = args.seed {
        let opts = options(args, seed)?;
        if args.minimize {
            return Ok(run_minimize(opts));
        }
        let Some(report) = run_or_report_panic(opts) else {
            return Ok(ExitCode::from(SIM_PANIC_EXIT));
        };
        println!("{report}");
        if let Some(text) = report.violation_report() {
            println!("{text}");
            return Ok(ExitCode::from(1));
        }
        if let Some(why) = &report.inconclusive {
            println!("linearizability check inconclusive: {why}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (from, to) = parse_range(args.seeds.as_deref().unwrap_or("0..100"))?;
    sweep(args, from, to)
}

/// The exit status of a run in which the simulator itself panicked.
const SIM_PANIC_EXIT: u8 = 101;

/// Runs one seed; None (after saying so) if the simulator itself panicked.
/// The panic hook has already printed the message and its location.
fn run_or_report_panic(opts: SimOptions) -> Option<sim::RunReport> {
    let seed = opts.seed;
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || run(opts)));
    if run.is_err() {
        eprintln!(
            "sim: seed {seed}: the simulator itself panicked (message and location above); \
             this is a bug in sim, not a protocol violation"
        );
    }
    run.ok()
}

fn run_minimize(opts: SimOptions) -> ExitCode {
    let Some(m) = minimize(opts) else {
        println!("the run does not fail: nothing to shrink");
        return ExitCode::SUCCESS;
    };
    println!("smallest failing run after {} runs:", m.runs);
    println!("  {}", m.command_line());
    println!("{}", m.report);
    if let Some(text) = m.report.violation_report() {
        println!("{text}");
    }
    ExitCode::from(1)
}

fn sweep(args: &Args, from: u64, to: u64) -> Result<ExitCode, String> {
    let terminal = std::io::stdout().is_terminal();
    let bar = terminal.then(|| {
        let bar = ProgressBar::new(to.saturating_sub(from));
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} seeds {per_sec} eta {eta} {msg}")
                .expect("valid template"),
        );
        bar
    });
    let started = Instant::now();
    let (mut failed, mut ticks, mut inconclusive) = (Vec::new(), 0u64, 0u64);
    let mut recycled = 0u64;
    let (mut deltas, mut chains) = (0u64, 0u64);
    let mut panicked = Vec::new();
    for seed in from..to {
        let Some(report) = run_or_report_panic(options(args, seed)?) else {
            failed.push(seed);
            panicked.push(seed);
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            continue;
        };
        ticks += report.ticks;
        recycled += report.wal_segments_recycled;
        deltas += report.snapshot_writes.deltas_durable;
        chains += report.snapshot_writes.chains_restored;
        let mut text = report.to_string();
        if let Some(v) = report.violation_report() {
            failed.push(seed);
            text = format!("{text}\n{v}");
        }
        inconclusive += u64::from(report.inconclusive.is_some());
        match &bar {
            Some(bar) => {
                if !report.passed() {
                    bar.println(text);
                }
                bar.set_message(format!("{} failed", failed.len()));
                bar.inc(1);
            }
            None => println!("{text}"),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let seeds = to.saturating_sub(from);
    println!(
        "{seeds} seeds, {} failed, {inconclusive} inconclusive, {ticks} ticks in {seconds:.2}s: {:.1} seeds/s, {:.0} ticks/s",
        failed.len(),
        seeds as f64 / seconds,
        ticks as f64 / seconds,
    );
    if recycled > 0 {
        println!("{recycled} WAL segments recycled (block disks)");
    }
    if deltas > 0 || chains > 0 {
        println!(
            "{deltas} delta snapshots made durable, {chains} restarts from a snapshot chain (block disks)"
        );
    }
    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(|s| s.to_string()).collect();
        println!("failing seeds: {}", list.join(" "));
        if !panicked.is_empty() {
            let list: Vec<String> = panicked.iter().map(|s| s.to_string()).collect();
            println!(
                "seeds where the simulator itself panicked: {}",
                list.join(" ")
            );
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
