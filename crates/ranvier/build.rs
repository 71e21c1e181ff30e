//! Link options for the `ranvier` binary.
//!
//! On Linux with glibc, relative relocations are packed (`DT_RELR`): the dynamic loader then
//! reads a table of some kilobytes at start-up instead of one of about a megabyte, which the
//! process would otherwise keep resident for its whole life. Linkers that do not know the
//! option ignore it with a warning; loaders older than glibc 2.36 refuse the binary by name.
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
