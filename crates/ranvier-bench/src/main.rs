//! `ranvier-bench`: a load generator that drives any Matrix homeserver through the plain
//! Client-Server API and prints one JSON line of figures per scenario case.

mod api;
mod bench;
mod resources;
mod scenarios;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::{Map, json};

use crate::api::Api;
use crate::bench::Bench;

#[derive(Parser, Debug)]
#[command(name = "ranvier-bench", about = "Load generator for Matrix homeservers over the Client-Server API")]
struct Cli {
    /// Base URL of the homeserver (loopback), e.g. http://127.0.0.1:8008.
    #[arg(long, env = "RANVIER_BENCH_URL")]
    url: String,

    /// Comma-separated scenarios to run, in order: register, login, create_rooms, send,
    /// fanout, initial_sync, join_large, or `all`.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    scenarios: Vec<String>,

    /// Multiplies the sizes of every scenario (1 = small, finishes quickly).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,

    /// PID of the server process, to report its CPU time and peak memory per case.
    #[arg(long)]
    server_pid: Option<u32>,

    /// Name of the server under test, copied into every JSON line.
    #[arg(long, default_value = "server")]
    label: String,

    /// Time limit for each case, setup included, in seconds.
    #[arg(long, default_value_t = 900)]
    case_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if !(cli.scale > 0.0 && cli.scale.is_finite()) {
        eprintln!("--scale must be a positive number");
        return ExitCode::FAILURE;
    }
    let api = match Api::new(&cli.url) {
        Ok(api) => api,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = api.versions().await {
        eprintln!("server at {} does not answer: {e}", cli.url);
        return ExitCode::FAILURE;
    }
    let names: Vec<String> = if cli.scenarios.iter().any(|s| s == "all") {
        scenarios::ALL.iter().map(|s| s.to_string()).collect()
    } else {
        cli.scenarios.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
    };
    let bench = Bench::new(api, cli.label, cli.scale, cli.server_pid, Duration::from_secs(cli.case_timeout_secs));
    if let Some(pid) = cli.server_pid {
        let mut f = Map::new();
        match resources::status_kb(pid, "VmRSS") {
            Some(rss) => {
                f.insert("idle_rss_kb".into(), json!(rss));
                bench.emit("idle", "-", json!({"pid": pid}), Ok(f));
            }
            None => bench.emit("idle", "-", json!({"pid": pid}), Err(format!("cannot read /proc/{pid}/status"))),
        }
    }
    for name in &names {
        scenarios::run(&bench, name).await;
    }
    ExitCode::SUCCESS
}
