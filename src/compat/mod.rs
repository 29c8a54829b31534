//! Vendor compatibility: the note APIs of Capillary, Fernand, Close and
//! Zyntro, served over HTTP at the vendors' own paths and in their own
//! shapes, so a client built against a vendor moves to notesd by changing
//! its base URL.
//!
//! Each vendor module holds serde types shaped exactly like the vendor's
//! JSON, one function from the vendor's request to the notes.v1 request
//! type(s), one from a `pb::Note` to the vendor's response, its error
//! rendering, and the axum handlers. Handlers take their caller from the
//! vendor's key source ([`common::Caller`], headers only; Zyntro's key is
//! in its body), read the body after, and call [`NotesApi`]: the same
//! parsing, rules and storage as gRPC. `common` holds what the vendors
//! share: the framework's refusals in each vendor's shape, bounded body
//! reads, read-modify-writes with etags. `docs/compat.md` maps every
//! field.

pub(crate) mod capillary;
pub(crate) mod close;
mod common;
pub(crate) mod fernand;
pub(crate) mod zyntro;

use std::sync::Arc;

use axum::Router;

use crate::api::NotesApi;
use crate::auth::Callers;
use crate::service::Subjects;
use crate::storage::ReadRouter;

/// What every facade handler works with.
#[derive(Debug, Clone)]
pub(crate) struct CompatState {
    pub api: NotesApi,
    pub subjects: Subjects,
    /// Who calls: the same authentication as gRPC.
    pub callers: Callers,
    /// The budget of calls in flight, shared with gRPC.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Where reads go; the tokens of writes.
    pub reads: ReadRouter,
    /// The budget of bodies read before their caller is known.
    pub pre_auth: Arc<common::PreAuth>,
    /// Quotas per tenant and key, the same as on gRPC.
    pub quotas: crate::quotas::Quotas,
}

/// Every facade, at its vendor's paths.
pub(crate) fn router(state: CompatState) -> Router {
    Router::new()
        .merge(capillary::routes())
        .merge(fernand::routes())
        .merge(close::routes())
        .merge(zyntro::routes())
        .fallback(common::unknown_route)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            common::scope_call,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            common::shed_load,
        ))
        .with_state(state)
}
