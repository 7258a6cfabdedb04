//! The `pactdb` command: run a node, run a local demo cluster, talk to a
//! cluster (put/get/delete/cas/status), and run the simulator.

mod cli;
mod demo;
mod workload;

use clap::Parser;

/// mimalloc rather than glibc's malloc: a node allocates and frees every
/// entry's keys and values several times, and under load glibc's malloc and
/// free took about a tenth of a node's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = cli::Cli::parse();
    let code = cli::run(cli);
    std::process::exit(code);
}
