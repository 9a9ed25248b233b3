//! `deltaward`: signed delta updates for medical device images.
#![forbid(unsafe_code)]

mod args;
mod commands;
mod exit;
mod input;
mod keys;
mod progress;
mod synthetic;

use std::process::ExitCode;

use clap::Parser;

use commands::Command;

#[derive(Parser, Debug)]
#[command(
    name = "deltaward",
    version,
    about = "Signed, verified delta updates for device images",
    long_about = "deltaward builds small signed patches between device images (rootfs, kernel, \
firmware) and applies them in bounded memory, verifying the signature, the old image, every \
frame and the final image before anything replaces the destination.",
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 signature rejected, 4 corrupt patch, \
5 wrong old image, 6 over a memory or size limit, 7 key error; check-release: 10 rollback, \
11 freeze (expired), 12 wrong hardware, 13 base mismatch, 14 mix-and-match, 15 unknown key, \
16 threshold not met, 17 bad root rotation; update: 20 no mirror reachable; audit verify: 21 the log does not verify."
)]
struct Cli {
    /// Log verbosity (also RUST_LOG).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.verbose);
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deltaward: error: {e:#}");
            ExitCode::from(exit::code(&e))
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}
