//! Clock, random identifiers and the machine's core count.

use rand::{Rng, distr::Alphanumeric};

/// Milliseconds since the Unix epoch, as Matrix timestamps are.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A random alphanumeric string of `len` characters (access tokens, device ids, session ids).
pub fn random_string(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// The cores this process may run on (1 when that cannot be told), which sizes its threads,
/// connections and bounds of work at once.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
