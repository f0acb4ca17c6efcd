//! kvctl: the command-line client for kv-node clusters.

fn main() {
    eprintln!("kvctl: no command given");
    std::process::exit(2);
}
