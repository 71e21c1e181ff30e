//! Events, the room DAG, state groups, current state and memberships (the tables of
//! `0001_init.sql` under "Rooms and the event graph").
