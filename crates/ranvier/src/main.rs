//! The `ranvier` binary: command line, configuration loading, wiring of the services, and
//! startup/shutdown.
//!
//! `ranvier serve` with no arguments writes a commented `ranvier.toml` on first run, keeps its
//! data (SQLite database, signing key) in `ranvier-data/`, and listens on `127.0.0.1:8008`.
//! `ranvier admin …` runs operator commands (registration tokens, accounts) on the same
//! database.

mod admin;
mod listener;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ranvier", version, about = "A Matrix homeserver")]
struct Cli {
    /// The configuration file; created with commented defaults if it does not exist.
    #[arg(long, short, global = true, env = "RANVIER_CONFIG", default_value = "ranvier.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Operator commands on the database: registration tokens, accounts.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
}

/// Keep glibc from holding on to freed memory. By default glibc raises its mmap threshold each
/// time a large block is freed, after which large blocks (argon2's working memory, big sync
/// responses) come from arenas that are never returned to the system; a fixed threshold keeps
/// the resident size close to what is in use.
///
/// glibc also gives threads arenas of their own, up to eight per core, and memory freed in one
/// arena cannot serve another. One arena per two cores (at most four) keeps that waste small;
/// each thread's cache of small blocks (glibc's tcache) spares most allocations the arena's
/// lock. On two cores, one arena took 0.5–2 MB off the benchmark's peaks compared with four.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    let arenas = (ranvier_core::util::cores() / 2).clamp(1, 4);
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, arenas as libc::c_int);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let config = match serve::load_config(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ranvier: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    serve::init_tracing(&config);
    let cores = ranvier_core::util::cores();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads(cores))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ranvier: start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve::serve(config).await.map_err(|e| e.to_string()),
            Command::Migrate => serve::open_store(&config).await.map(|_| ()).map_err(|e| e.to_string()),
            Command::Admin(command) => {
                let store = serve::open_store(&config).await.map_err(|e| e.to_string())?;
                admin::run(&config, &store, command, &mut std::io::stdout().lock()).await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ranvier: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
