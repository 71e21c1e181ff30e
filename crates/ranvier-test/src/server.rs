//! [`TestServer`]: a real `ranvier serve` process on a loopback port with its own data.
//!
//! Each server gets a temporary directory holding its configuration file, its data directory
//! and one stderr log per process start. The database is SQLite in the data directory or a
//! fresh PostgreSQL database. When a test panics while a server is alive, the server's log is
//! printed and its directory is kept, so the failure can be diagnosed from the test output.

use std::{
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use sqlx::{Connection, SqliteConnection, postgres::PgConnection, sqlite::SqliteConnectOptions};
use tempfile::TempDir;

use crate::backend::{Backend, PostgresDatabase};

/// How long a server may take to answer `/versions` after it is spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times to try another port when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: u32 = 5;
/// How many lines of the server log a failing test prints.
const LOG_TAIL_LINES: usize = 80;

/// Options for a [`TestServer`], set before it starts.
pub struct TestServerBuilder {
    binary: PathBuf,
    backend: Backend,
    server_name: String,
    rate_limits: bool,
    env: Vec<(String, String)>,
}

impl TestServerBuilder {
    /// Enable the configured rate limits (they are off by default in tests).
    pub fn rate_limits(mut self, enabled: bool) -> Self {
        self.rate_limits = enabled;
        self
    }

    /// Set the server name (default `localhost`).
    pub fn server_name(mut self, name: &str) -> Self {
        self.server_name = name.to_owned();
        self
    }

    /// Pass an extra environment variable, typically a `RANVIER_*` configuration override.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Create the data (and database) and start the server; returns once it answers.
    pub async fn start(self) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("ranvier-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("create temporary directory: {e}"));
        let database = match self.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PostgresDatabase::create().await),
        };
        let mut server = TestServer {
            binary: self.binary,
            backend: self.backend,
            server_name: self.server_name,
            rate_limits: self.rate_limits,
            extra_env: self.env,
            port: 0,
            child: None,
            starts: 0,
            database,
            dir: Some(dir),
            // No connection reuse: a server that did not read a (malformed) body closes the
            // connection after answering, and a restarted server has none of the old ones, so
            // a pooled connection could fail a request that the server would have answered.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap_or_else(|e| panic!("build HTTP client: {e}")),
        };
        server.spawn_until_ready().await;
        server
    }
}

/// A running (or stopped) `ranvier` process and the data it owns.
pub struct TestServer {
    binary: PathBuf,
    backend: Backend,
    server_name: String,
    rate_limits: bool,
    extra_env: Vec<(String, String)>,
    port: u16,
    child: Option<Child>,
    /// How many processes have been started; names the log files.
    starts: u32,
    // Field order matters for drop: the process is killed in `Drop::drop`, then the database
    // is dropped, then the directory is removed.
    database: Option<PostgresDatabase>,
    dir: Option<TempDir>,
    pub(crate) http: reqwest::Client,
}

impl TestServer {
    /// Start `binary` (normally `env!("CARGO_BIN_EXE_ranvier")`) on `backend` with default
    /// test settings: loopback, a free port, rate limits off.
    pub async fn start(binary: &Path, backend: Backend) -> TestServer {
        TestServer::builder(binary, backend).start().await
    }

    /// A builder for a server with other settings.
    pub fn builder(binary: &Path, backend: Backend) -> TestServerBuilder {
        TestServerBuilder {
            binary: binary.to_owned(),
            backend,
            server_name: "localhost".to_owned(),
            rate_limits: false,
            env: Vec::new(),
        }
    }

    /// The backend this server stores its data in.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The server name (the part after the colon in user ids).
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The full user id for a localpart on this server.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// The temporary directory holding the configuration, the data and the logs.
    pub fn dir(&self) -> &Path {
        match &self.dir {
            Some(dir) => dir.path(),
            None => Path::new("."),
        }
    }

    /// The data directory (`RANVIER_DATA_DIR`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// The PostgreSQL database URL, when the backend is PostgreSQL.
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(|db| db.url())
    }

    /// Run one SQL statement on the server's database, for setting up what no API offers yet
    /// (for example a registration token). Safe while the server runs: SQLite waits for the
    /// server's writer, PostgreSQL serialises as usual.
    pub async fn execute_sql(&self, statement: &str) {
        let statement = sqlx::AssertSqlSafe(statement.to_owned());
        let result = match &self.database {
            Some(db) => match PgConnection::connect(db.url()).await {
                Ok(mut conn) => sqlx::raw_sql(statement).execute(&mut conn).await.map(|_| ()),
                Err(e) => Err(e),
            },
            None => {
                let options = SqliteConnectOptions::new()
                    .filename(self.data_dir().join("ranvier.db"))
                    .busy_timeout(Duration::from_secs(30));
                match SqliteConnection::connect_with(&options).await {
                    Ok(mut conn) => sqlx::raw_sql(statement).execute(&mut conn).await.map(|_| ()),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = result {
            panic!("SQL on the {} test database failed: {e}", self.backend.name());
        }
    }

    /// The stderr log of the current (or last) process.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join(format!("stderr-{}.log", self.starts))
    }

    /// Everything the current (or last) process wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kill the process with SIGKILL, as a crash would, and wait for it to go. Also reaps a
    /// process already killed through a [`KillSwitch`].
    pub fn kill_9(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("kill_9: the server is not running");
        };
        // `Child::kill` sends SIGKILL on Unix: no shutdown code runs in the server. It fails
        // only when the process is already gone, which `wait` then confirms.
        let _ = child.kill();
        let status = child.wait().unwrap_or_else(|e| panic!("wait for the killed server: {e}"));
        assert!(!status.success(), "a SIGKILLed server cannot exit cleanly, got {status}");
    }

    /// A handle that SIGKILLs the current process from anywhere (for example from inside a
    /// request loop, the moment a response arrives). Call [`kill_9`](Self::kill_9) afterwards
    /// to reap the process.
    pub fn kill_switch(&self) -> KillSwitch {
        match &self.child {
            Some(child) => KillSwitch { pid: child.id() },
            None => panic!("kill_switch: the server is not running"),
        }
    }

    /// Ask the process to shut down (SIGTERM) and wait for it; returns its exit status.
    pub async fn stop(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("stop: the server is not running");
        };
        let terminated = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        if !matches!(terminated, Ok(status) if status.success()) {
            let _ = child.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(None) => {
                    let _ = child.kill();
                    panic!("the server did not stop within 30 s of SIGTERM\n{}", self.log_report());
                }
                Err(e) => panic!("wait for the server: {e}"),
            }
        }
    }

    /// Start the server again on the same data (stopping it first if it still runs).
    pub async fn restart(&mut self) {
        if self.is_running() {
            self.stop().await;
        }
        self.child = None;
        self.spawn_until_ready().await;
    }

    /// Spawn the process and wait until it answers `/versions`, retrying on another port if
    /// the chosen one was taken between choosing and binding.
    async fn spawn_until_ready(&mut self) {
        // Keep the port across restarts so that clients holding the base URL keep working.
        if self.port == 0 {
            self.port = free_port();
        }
        for attempt in 1..=PORT_ATTEMPTS {
            self.spawn();
            match self.wait_ready().await {
                Ok(()) => return,
                Err(exited) => {
                    let log = self.log();
                    let port_taken = log.contains("Address already in use") || log.contains("AddrInUse");
                    if port_taken && attempt < PORT_ATTEMPTS {
                        self.port = free_port();
                        continue;
                    }
                    panic!("the server exited during startup ({exited})\n{}", self.log_report());
                }
            }
        }
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let dir = self.dir().to_owned();
        let log_path = self.log_path();
        let log = File::create(&log_path).unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let log_for_stdout = log.try_clone().unwrap_or_else(|e| panic!("duplicate log file handle: {e}"));
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(dir.join("ranvier.toml"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log_for_stdout)
            .stderr(log);
        // The server reads every RANVIER_* variable as configuration, so the test process's own
        // (RANVIER_TEST_BACKENDS and the like) must not leak into it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RANVIER_") {
                command.env_remove(&key);
            }
        }
        command
            .env("RANVIER_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("RANVIER_DATA_DIR", self.data_dir())
            .env("RANVIER_SERVER_NAME", &self.server_name)
            .env("RANVIER_RATE_LIMITS__ENABLED", if self.rate_limits { "true" } else { "false" });
        // Plain text logs: they are read in files and test output, not on a terminal.
        command.env("NO_COLOR", "1");
        if let Some(db) = &self.database {
            command.env("RANVIER_DATABASE__URL", db.url());
        }
        for (key, value) in &self.extra_env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// Poll `/versions` until it answers 200; `Err` with the exit status if the process died.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let url = format!("{}/_matrix/client/versions", self.base_url());
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(status.to_string());
            }
            if let Ok(response) = self.http.get(&url).timeout(Duration::from_secs(5)).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                if let Some(child) = &mut self.child {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                self.child = None;
                panic!("the server did not answer {url} within {STARTUP_TIMEOUT:?}\n{}", self.log_report());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The tail of the current log, framed for a test failure message.
    pub fn log_report(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        // A panic's backtrace can push its message out of the tail; show panics separately.
        let mut panics = String::new();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("panicked at") {
                panics.push_str(line);
                panics.push('\n');
                if let Some(message) = lines.get(i + 1) {
                    panics.push_str(message);
                    panics.push('\n');
                }
            }
        }
        if !panics.is_empty() {
            panics = format!("---- the server panicked ----\n{panics}");
        }
        format!(
            "{panics}---- {} server log ({}, last {} lines) ----\n{}\n---- end of server log ----",
            self.backend.name(),
            self.log_path().display(),
            tail.len(),
            tail.join("\n")
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_report());
            // Keep the data and every log of this server for a closer look.
            if let Some(dir) = self.dir.take() {
                eprintln!("server files kept in {}", dir.keep().display());
            }
        }
    }
}

/// SIGKILLs one server process; see [`TestServer::kill_switch`].
#[derive(Clone, Copy, Debug)]
pub struct KillSwitch {
    pid: u32,
}

impl KillSwitch {
    /// Send SIGKILL now. The process is reaped later by [`TestServer::kill_9`], so the pid
    /// cannot be reused by another process in between.
    pub fn fire(&self) {
        let status = Command::new("kill").arg("-KILL").arg(self.pid.to_string()).status();
        assert!(matches!(status, Ok(status) if status.success()), "kill -KILL {} failed: {status:?}", self.pid);
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind a free port: {e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("read the free port: {e}")).port()
}
