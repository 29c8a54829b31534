//! zyntro: see docs/compat/zyntro.md.

use axum::Router;

use super::CompatState;

pub fn routes() -> Router<CompatState> {
    Router::new()
}
