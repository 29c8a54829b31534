//! The capillary facade over real HTTP: see docs/compat/capillary.md.
