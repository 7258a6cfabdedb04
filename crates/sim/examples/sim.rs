//! Runs the simulator without the `pactdb` binary:
//! `cargo run --release -p pactdb-sim --example sim -- --seeds 100`.

use clap::Parser;

fn main() {
    let args = pactdb_sim::SimArgs::parse();
    std::process::exit(pactdb_sim::run_cli(args));
}
