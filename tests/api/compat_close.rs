//! The close facade over real HTTP: see docs/compat/close.md.
