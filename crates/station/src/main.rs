//! `station`: the command-line front end and the process that wires Station's
//! crates together (`station serve`).

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes, documented in `station --help`.
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// The job ran and failed, or a check found problems.
    pub const FAILED: u8 = 1;
    /// Bad usage, configuration or input.
    pub const USAGE: u8 = 2;
    /// Station could not start (database, data folder).
    pub const UNAVAILABLE: u8 = 3;
    /// Interrupted with Ctrl-C (the job, if any, was left in the queue).
    pub const INTERRUPTED: u8 = 130;
}

fn main() -> ExitCode {
    // reqwest is built without a default crypto provider (ring only, no OpenSSL).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::UNAVAILABLE);
        }
    };
    let code = runtime.block_on(commands::dispatch(args));
    // Don't wait for lingering blocking tasks (stdin readers, file watchers).
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    ExitCode::from(code)
}
