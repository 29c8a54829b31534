//! What a call's database work must know of the call, given by a tower
//! layer that runs every notes.v1 call inside a [`CallScope`]
//! (`storage::calls`):
//!
//! - its deadline (docs/api.md, "Deadlines and cancellation"), from its
//!   `grpc-timeout`, which bounds its database work. A call still running
//!   at its deadline is answered DEADLINE_EXCEEDED (reason
//!   `DEADLINE_EXCEEDED`) here, and dropped; a call whose client went away
//!   is dropped by the HTTP/2 server. Either way, a statement it left
//!   running is cancelled;
//! - whether it only reads, so that its reads may go to a replica, and the
//!   consistency token it sent for them (docs/api.md, "Read replicas and
//!   consistency tokens"). A call that writes answers with the token of
//!   its writes, when replicas are configured.
//!
//! tonic also reads `grpc-timeout`, around every layer, and would answer
//! CANCELLED: this layer's deadline is set [`MARGIN`] earlier, so it always
//! answers first.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;

use crate::api::{add_consistency_token, call_scope};
use crate::domain::DomainError;
use crate::storage::{CallScope, Canceller, ReadRouter};

/// The calls that get a scope: notes.v1's.
const SCOPED_PREFIX: &str = "/notes.v1.";

/// How much sooner than the client's deadline a call is answered.
const MARGIN: Duration = Duration::from_millis(5);

/// The layer; its canceller stops the statements of calls that ended,
/// and its router gives the tokens of writes.
#[derive(Debug, Clone)]
pub(crate) struct CallScopeLayer {
    canceller: Canceller,
    reads: ReadRouter,
}

impl CallScopeLayer {
    pub(crate) fn new(canceller: Canceller, reads: ReadRouter) -> Self {
        Self { canceller, reads }
    }
}

impl<S> tower::Layer<S> for CallScopeLayer {
    type Service = Scoped<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Scoped {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Scoped<S> {
    inner: S,
    layer: CallScopeLayer,
}

/// Whether the method at `path` only reads (its reads may go to a
/// replica): notes.v1's Get*, BatchGet*, List*, Search* and Watch*.
fn only_reads(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or_default();
    ["Get", "BatchGet", "List", "Search", "Watch"]
        .iter()
        .any(|prefix| method.starts_with(prefix))
}

/// Cancels the call's statement if the call is dropped (or ends at its
/// deadline) before its work is done.
struct CancelUnlessDone {
    call: CallScope,
    canceller: Canceller,
    done: bool,
}

impl CancelUnlessDone {
    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for CancelUnlessDone {
    fn drop(&mut self) {
        if !self.done && self.call.began_work() {
            self.canceller.cancel(&self.call);
        }
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Scoped<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !request.uri().path().starts_with(SCOPED_PREFIX) {
            return Box::pin(self.inner.call(request));
        }
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| parse_grpc_timeout(value.as_bytes()))
            .map(|timeout| Instant::now() + timeout.saturating_sub(MARGIN));
        let reads_only = only_reads(request.uri().path());
        let call = call_scope(deadline, reads_only, request.headers());
        let guard = CancelUnlessDone {
            call: call.clone(),
            canceller: self.layer.canceller.clone(),
            done: false,
        };
        let reads = self.layer.reads.clone();
        let work = call.run(self.inner.call(request));
        Box::pin(async move {
            let response = match deadline {
                None => work.await,
                Some(deadline) => match tokio::time::timeout_at(deadline, work).await {
                    Ok(response) => response,
                    // The work is dropped; the guard cancels its statement.
                    Err(_) => return Ok(Status::from(DomainError::DeadlineExceeded).into_http()),
                },
            };
            guard.done();
            let mut response = response?;
            // A write that succeeded (a failure is all in its headers).
            if !reads_only && !response.headers().contains_key("grpc-status") {
                add_consistency_token(&reads, response.headers_mut(), "grpc").await;
            }
            Ok(response)
        })
    }
}

/// A `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u, n),
/// as gRPC over HTTP/2 has it. Anything else is no deadline (as tonic reads
/// it).
fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_is_read_as_grpc_over_http2_says() {
        assert_eq!(parse_grpc_timeout(b"50m"), Some(Duration::from_millis(50)));
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [
            &b""[..],
            b"m",
            b"123456789m",
            b"10x",
            b"-5m",
            b"1.5S",
            b" 5m",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
