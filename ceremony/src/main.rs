//! The `medtech-ceremony` command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use medtech_ceremony::bench::{self, BenchConfig};

#[derive(Parser)]
#[command(
    name = "medtech-ceremony",
    version,
    about = "The dealer-free key ceremony of a MedTech Chain committee"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark the key generation: every party in this process, real message encoding.
    Bench {
        /// Number of parties n.
        #[arg(long, default_value_t = 5)]
        parties: u16,
        /// Threshold t (2t − 1 ≤ n).
        #[arg(long, default_value_t = 3)]
        threshold: u16,
        /// Modulus size in bits.
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        /// Repetitions; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench {
            parties,
            threshold,
            bits,
            runs,
            json,
        } => bench::run(
            BenchConfig {
                bits,
                parties,
                threshold,
                runs,
            },
            |line| eprintln!("{line}"),
        )
        .map(|report| {
            if json {
                println!("{report}");
            } else {
                println!(
                    "{}-bit, n = {parties}, t = {threshold}: median {} s over {runs} runs, {} candidates; peak RSS {} MiB (process)",
                    bits, report["seconds"], report["candidates_tried"], report["peak_rss_mb_process"]
                );
                println!("phases (s): {}", report["phases"]);
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
