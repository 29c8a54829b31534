//! The zyntro facade over real HTTP: see docs/compat/zyntro.md.
