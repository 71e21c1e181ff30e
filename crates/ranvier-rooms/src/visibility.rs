//! History visibility: which events a user may see (`m.room.history_visibility`).
