//! The fernand facade over real HTTP: see docs/compat/fernand.md.
