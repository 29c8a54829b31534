//! Quotas on the gRPC edge (`crate::quotas`, docs/quotas.md): a tower layer
//! behind authentication admits each notes.v1 call under its key's and
//! its tenant's quotas before its body is read, or answers
//! RESOURCE_EXHAUSTED (`RATE_LIMITED`, `TOO_MANY_CALLS`,
//! `TOO_MANY_WATCHERS`, with a QuotaFailure and a RetryInfo), a refusal
//! by a rate once a retry could succeed (at most a second later).
//! Every answer under a rate carries `ratelimit-limit`,
//! `ratelimit-remaining` and `ratelimit-reset` in its response metadata.
//! A call holds its place among its scopes' calls in flight (a watch: its
//! watches open) until its response body is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;

use super::limits::HeldBody;
use crate::domain::Principal;
use crate::quotas::{CallKind, CallQuota, Quotas};

/// The calls under quotas: every notes.v1 call (which all have a caller).
const QUOTA_PREFIX: &str = "/notes.v1.";
/// The change stream's path: a watch counts among the watches open.
const WATCH_PATH: &str = "/notes.v1.NotesService/WatchNotes";

/// The layer; one per server.
#[derive(Debug, Clone)]
pub(crate) struct QuotaLayer {
    quotas: Quotas,
}

impl QuotaLayer {
    pub(crate) fn new(quotas: Quotas) -> Self {
        Self { quotas }
    }
}

impl<S> tower::Layer<S> for QuotaLayer {
    type Service = QuotaChecked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        QuotaChecked {
            inner,
            quotas: self.quotas.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct QuotaChecked<S> {
    inner: S,
    quotas: Quotas,
}

impl<S, B, R> tower::Service<http::Request<B>> for QuotaChecked<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<HeldBody<R, crate::quotas::Admission>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let principal = request.extensions().get::<Principal>();
        let (true, Some(principal)) = (path.starts_with(QUOTA_PREFIX), principal) else {
            let response = self.inner.call(request);
            return Box::pin(async move { Ok(response.await?.map(HeldBody::unheld)) });
        };
        let kind = if path == WATCH_PATH {
            CallKind::Watch
        } else {
            CallKind::Call
        };
        let call = Arc::new(CallQuota::default());
        // Admitted here, inside the call's scope (`storage::calls`), which
        // the layers before this one run it in: its shares of the pool go
        // with it.
        let admitted = self.quotas.admit(principal, kind, Some(&call));
        let admission = match admitted {
            Ok(admission) => admission,
            Err(err) => {
                // The refusal is held (`Quotas::pace`) with the request,
                // body and all, dropped.
                let principal = principal.clone();
                drop(request);
                let quotas = self.quotas.clone();
                return Box::pin(async move {
                    let err = quotas.pace(&principal, err, Some(&call)).await;
                    let mut response = Status::from(err).into_http::<R>();
                    if let Some(headers) = call.headers() {
                        headers.insert_into(response.headers_mut());
                    }
                    Ok(response.map(HeldBody::unheld))
                });
            }
        };
        // The service that was polled ready serves this call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            let response = crate::quotas::run(Arc::clone(&call), inner.call(request)).await?;
            let mut response = response.map(|body| HeldBody::holding(body, admission));
            if let Some(headers) = call.headers() {
                headers.insert_into(response.headers_mut());
            }
            Ok(response)
        })
    }
}
