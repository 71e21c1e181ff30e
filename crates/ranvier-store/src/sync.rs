//! Queries that `/sync` needs beyond the shared event reads.
