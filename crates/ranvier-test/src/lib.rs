//! Test harness for Ranvier: real `ranvier serve` processes on loopback ports, each with its
//! own temporary data and database, and helpers that make tests read like their scenario.
//!
//! # Layout
//! - [`backend`]: [`Backend`], the backends chosen by `RANVIER_TEST_BACKENDS`, throwaway
//!   PostgreSQL databases ([`PostgresDatabase`]) and [`TestDatabase`] for storage tests.
//! - [`server`]: [`TestServer`] spawns the binary, waits for `/versions`, captures its stderr,
//!   and can `kill_9()` and `restart()` it on the same data.
//! - [`client`]: raw HTTP helpers on [`TestServer`] (`register`, `login`, `create_room`, `join`,
//!   `invite`, `send_text`, `get_state`, `sync`, `messages`, and the generic `request`).
//! - [`backend_tests!`]: one test per configured backend for each scenario function.
//!
//! # Example
//! ```ignore
//! async fn messages_arrive(backend: Backend) {
//!     let server = TestServer::start(Path::new(env!("CARGO_BIN_EXE_ranvier")), backend).await;
//!     let alice = server.register("alice").await;
//!     let room = server.create_room(&alice, json!({})).await;
//!     server.send_text(&alice, &room, "hello").await;
//! }
//! backend_tests!(messages_arrive);
//! ```

pub mod backend;
pub mod client;
pub mod server;

pub use backend::{Backend, PostgresDatabase, TestDatabase, configured_backends, run_on};
pub use client::{Dir, MessagesQuery, Reply, User, encode, password_for, txn_id};
pub use reqwest::Method;
pub use server::{KillSwitch, TestServer, TestServerBuilder};

/// For each named `async fn name(backend: Backend)`, define a module `name` with one test per
/// backend (`name::sqlite`, `name::postgres`). A backend missing from `RANVIER_TEST_BACKENDS`
/// makes its test print that it was skipped and pass.
///
/// The calling crate needs `tokio` (with the `macros` and `rt-multi-thread` features).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::run_on($crate::Backend::Sqlite, super::$name).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::run_on($crate::Backend::Postgres, super::$name).await;
                }
            }
        )+
    };
}
