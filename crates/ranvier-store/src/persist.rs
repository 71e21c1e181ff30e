//! The write path of the room graph: persisting an event with its DAG edges, auth edges,
//! state group, current state, membership and forward extremities in one transaction.
