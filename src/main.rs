//! The `pactdb` command: run a node, run a local demo cluster, talk to a
//! cluster (put/get/delete/cas, txn/txn-status, status), and run the
//! simulator.

mod admin;
mod bootstrap;
mod certs;
mod chaos;
mod cli;
mod demo;
mod membership;
mod rebalance;
mod workload;

use clap::Parser;

/// mimalloc rather than glibc's malloc: a node allocates and frees every
/// entry's keys and values several times, and under load glibc's malloc and
/// free took about a tenth of a node's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option `purge_delay` (index 15 in both its v2 and v3 option
/// enums, which only ever grow at the end).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before it gives it back to the OS.
/// Its default of 10 ms made a node under load return pages and fault them
/// back in, zeroed by the kernel, all the time: clearing pages took 7.1 % of
/// a node's profile under load, 3.8 % with a second's delay. Idle memory
/// still goes back after that second. `MIMALLOC_PURGE_DELAY`
/// in the environment overrides this.
const ALLOCATOR_PURGE_DELAY_MS: std::ffi::c_long = 1_000;

fn main() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` only stores an option's value; the option
        // index is checked above to mean the purge delay.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS) };
    }
    let cli = cli::Cli::parse();
    let code = cli::run(cli);
    std::process::exit(code);
}
