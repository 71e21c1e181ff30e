//! User-interactive authentication sessions.
