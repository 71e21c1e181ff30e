//! Link options for the `ranvier` binary.
//!
//! On Linux with glibc:
//! - Relative relocations are packed (`DT_RELR`): the dynamic loader then reads a table of
//!   some kilobytes at start-up instead of one of about a megabyte, which the process would
//!   otherwise keep resident for its whole life. Loaders older than glibc 2.36 refuse the
//!   binary by name.
//! - On x86-64, where Rust links with its own LLD, the functions listed in `code-order.txt`
//!   come first in the code, in that order. The kernel maps a binary's code into memory in
//!   blocks around each page the process runs (64 KiB, or a whole cached folio of up to some
//!   megabytes on recent kernels), and the functions a server runs are spread over all of
//!   its 21 MB of code: laid out as compiled, running the benchmark scenarios left 12 to
//!   17 MB of code resident. The list holds every function the scenarios run (about 4.5 MB),
//!   the code both databases run first, then SQLite's own, then PostgreSQL's own, each part
//!   in the order the server first runs it: start-up first, then each scenario's new code.
//!   With them together, 6 to 7.5 MB stays resident at the end of a run, and the code of
//!   work the server has not done yet stays out of memory until it does (at start-up about 4
//!   instead of 6.4 MB).
//!   `scripts/bench/code-order.sh` regenerates the list from a profile. A name the build does
//!   not define (after almost any change of code, compiler or dependency: a function made
//!   local to one of a crate's code units carries a number derived from the unit's code) is
//!   skipped without a word; its function then lies where the compiler put it, which costs
//!   memory, never correctness.
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        if arch == "x86_64" {
            let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
            println!("cargo:rerun-if-changed=code-order.txt");
            println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={dir}/code-order.txt");
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
    }
}
