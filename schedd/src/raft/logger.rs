//! raft-rs logs through slog; this routes it into tracing, where it arrives under the
//! target `slog` (filter with `RUST_LOG=slog=debug`), not `raft`.

/// A slog logger for a `RawNode`, tagged with the replica's raft id.
pub fn raft_logger(raft_id: u64) -> slog::Logger {
    slog::Logger::root(
        tracing_slog::TracingSlogDrain,
        slog::o!("raft_id" => raft_id),
    )
}
