//! The `pactdb` command: run a node, run a local demo cluster, talk to a
//! cluster (put/get/delete/cas/status), and run the simulator.

mod cli;
mod demo;
mod workload;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = cli::run(cli);
    std::process::exit(code);
}
