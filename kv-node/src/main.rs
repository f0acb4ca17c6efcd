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
    // No transparent huge pages for this process. mimalloc asks for them
    // (MADV_HUGEPAGE) and returns freed memory to the kernel after a few
    // milliseconds, so the driver thread kept faulting fresh 2 MiB pages
    // back in and zeroing them: 18 % of its CPU at 64 connections, turns of
    // its loop of 20-65 ms, and a put p999 of 27 ms at p99 8 ms. With 4 KiB
    // pages: p999 8-10 ms, no turn over 12 ms (BENCHMARKS.md, stop 28).
    // A kernel without the call keeps huge pages; nothing else changes.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    kv_node::server::main_with_args(std::env::args_os())
}
