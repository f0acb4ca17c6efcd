//! The `kv-node` binary. Everything lives in the library so that examples
//! and tests can start nodes the same way; see `kv_node::server`.

/// mimalloc rather than glibc's malloc: applying writes into a 10M-key
/// persistent map copies tree nodes on every insert while a snapshot
/// holds the old ones, and with glibc a third of the driver thread's time
/// went to `_int_malloc`, growing its arena (`mprotect`) and page faults
/// (BENCHMARKS.md, "Staying up as the data grows").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kv_node::server::main_with_args(std::env::args_os())
}
