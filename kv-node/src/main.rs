//! The `kv-node` binary. Everything lives in the library so that examples
//! and tests can start nodes the same way; see `kv_node::server`.

fn main() -> std::process::ExitCode {
    kv_node::server::main_with_args(std::env::args_os())
}
