//! Stored sync filters.
