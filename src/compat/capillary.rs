//! capillary: see docs/compat/capillary.md.

use axum::Router;

use super::CompatState;

pub fn routes() -> Router<CompatState> {
    Router::new()
}
