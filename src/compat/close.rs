//! close: see docs/compat/close.md.

use axum::Router;

use super::CompatState;

pub fn routes() -> Router<CompatState> {
    Router::new()
}
