//! Snapshots while the program runs (periodic, on a signal) and crash dumps.

/// Starts whatever snapshot machinery the configuration asks for.
pub fn start() {}

/// Restarts it in a fork child (threads do not survive fork).
pub fn after_fork_child() {}
