//! fernand: see docs/compat/fernand.md.

use axum::Router;

use super::CompatState;

pub fn routes() -> Router<CompatState> {
    Router::new()
}
