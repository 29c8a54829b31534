//! What the vendor facades share: the framework's refusals (no route, a
//! wrong method, a path segment that is not UTF-8, a body over the
//! vendor's limit or cut short) rendered in each vendor's own error shape,
//! never as the framework's plain text; the path extractor and the bounded
//! body read that produce them.
//!
//! A handler takes its caller as a [`Caller`], an extractor that reads the
//! vendor's key from the headers alone and authenticates; the body comes
//! after, read with [`read_body`] (axum runs extractors in order, the body
//! last). A caller without a key never makes notesd buffer a body.

use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::CompatState;
use crate::api::{NotesApi, add_consistency_token, call_scope};
use crate::auth::ACTOR_HEADER;
use crate::domain::{DomainError, Principal};
use crate::listener::{AddressSlot, PerAddress};
use crate::proto::notes::v1 as pb;
use crate::quotas::{CallKind, CallQuota};

/// How many times a facade's read-modify-write of a note runs when a
/// concurrent change makes its write fail with ETAG_MISMATCH, before that
/// error is answered.
const WRITE_ATTEMPTS: usize = 3;

/// A facade's read-modify-write of one note, that loses no concurrent
/// change: `read_and_change` reads the note, checks or merges, and answers
/// the note as read with the change to make (`None`: nothing to change,
/// the note is answered as read). The change is written only if the note
/// still has the etag read; if it changed in between, all of it runs again
/// from a fresh read, [`WRITE_ATTEMPTS`] times at most.
pub(crate) async fn update_as_read<E, F>(
    api: &NotesApi,
    principal: &Principal,
    mut read_and_change: impl FnMut() -> F,
) -> Result<pb::Note, E>
where
    E: From<DomainError>,
    F: Future<Output = Result<(pb::Note, Option<pb::UpdateNoteRequest>), E>>,
{
    let mut attempt = 1;
    loop {
        let (current, change) = read_and_change().await?;
        let Some(mut request) = change else {
            return Ok(current);
        };
        if let Some(note) = request.note.as_mut() {
            note.etag = current.etag;
        }
        match api.update_note(principal, &request).await {
            Err(DomainError::EtagMismatch) if attempt < WRITE_ATTEMPTS => attempt += 1,
            written => return written.map_err(E::from),
        }
    }
}

/// Times between a vendor's wire and notes.v1, one policy for every
/// facade: every vendor time is UTC; a notes.v1 timestamp converts exactly
/// (nanoseconds kept), and one that names no instant reads as absent.
/// Each vendor's own text format stays with the vendor.
pub(crate) fn from_timestamp(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(crate::api::convert::instant)
}

pub(crate) use crate::api::convert::timestamp as to_timestamp;

/// How a vendor names a notes.v1 field its requests fill.
pub(crate) struct FieldName {
    /// The notes.v1 path (`note.body.html`).
    pub(crate) notesd: &'static str,
    /// The vendor's name for it (`content`).
    pub(crate) vendor: &'static str,
    /// Whether what follows the path (`[2].url`) is kept after the name.
    pub(crate) keep_rest: bool,
}

impl FieldName {
    pub(crate) const fn new(notesd: &'static str, vendor: &'static str, keep_rest: bool) -> Self {
        Self {
            notesd,
            vendor,
            keep_rest,
        }
    }
}

/// A notes.v1 field path in a vendor's words: the first of `names` whose
/// path is the field's, or a whole leading part of it (followed by `.` or
/// `[`), names it; a path no name covers stays as it is. `names` lists
/// longer paths first.
pub(crate) fn vendor_field(path: &str, names: &[FieldName]) -> String {
    for name in names {
        let Some(rest) = path.strip_prefix(name.notesd) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')) {
            continue;
        }
        return if name.keep_rest {
            format!("{}{rest}", name.vendor)
        } else {
            name.vendor.to_owned()
        };
    }
    path.to_owned()
}

/// Where a vendor's clients present their notesd key, and how the vendor
/// answers a caller it does not accept.
pub(crate) trait KeySource: Vendor {
    /// The key, from the headers alone (`Ok(None)`: none was sent).
    fn key(headers: &HeaderMap) -> Result<Option<String>, DomainError>;

    /// An authentication failure (or an unreachable database), the
    /// vendor's way.
    fn refuse(err: DomainError) -> Self::Error;
}

/// The authenticated caller of a facade call: the key the vendor's way,
/// the acting member from `x-actor-id` (for a service key), the address
/// from the connection or a trusted proxy; admitted under its quotas
/// (`crate::quotas`) before the body is read, and holding its place
/// among its scopes' calls in flight for as long as the handler runs.
pub(crate) struct Caller<V>(
    pub Principal,
    // Held, not read: dropped when the handler returns.
    #[allow(dead_code)] pub Admitted<V>,
);

/// What a [`Caller`] holds under its quotas.
pub(crate) struct Admitted<V> {
    _admission: crate::quotas::Admission,
    _vendor: PhantomData<V>,
}

/// Admits `principal`'s call under its quotas, or says which refused it
/// (for the vendor's 429), a refusal by a rate once a retry could succeed
/// (`Quotas::pace`).
pub(crate) async fn admit_under_quotas<V>(
    state: &CompatState,
    principal: &Principal,
) -> Result<Admitted<V>, DomainError> {
    let call = crate::quotas::current();
    let admission = match state.quotas.admit(principal, CallKind::Call, call.as_ref()) {
        Ok(admission) => admission,
        Err(err) => return Err(state.quotas.pace(principal, err, call.as_deref()).await),
    };
    Ok(Admitted {
        _admission: admission,
        _vendor: PhantomData,
    })
}

impl<V: KeySource> FromRequestParts<CompatState> for Caller<V> {
    type Rejection = V::Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &CompatState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer)
            .ok_or_else(|| {
                V::refuse(DomainError::Internal(anyhow::anyhow!(
                    "the HTTP server gave no peer address"
                )))
            })?;
        let key = V::key(&parts.headers).map_err(V::refuse)?;
        let actor = parts
            .headers
            .get(ACTOR_HEADER)
            .and_then(|v| v.to_str().ok());
        let principal = state
            .callers
            .authenticate(
                key.as_deref(),
                actor,
                &parts.headers,
                Some(peer.ip()),
                // The facades keep their vendor's keys (docs/access.md,
                // "Client certificates").
                None,
            )
            .await
            .map_err(V::refuse)?;
        let admitted = admit_under_quotas(state, &principal)
            .await
            .map_err(V::refuse)?;
        Ok(Self(principal, admitted))
    }
}

/// A refusal made before (or instead of) a vendor's handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Nothing is served at this path.
    UnknownRoute,
    /// The path is served, not with this method.
    MethodNotAllowed,
    /// A path segment is not UTF-8 (`%FF`), so it names nothing.
    BadPathSegment,
    /// The body is larger than the vendor's limit, in bytes.
    BodyTooLarge(usize),
    /// The body could not be read: the client stopped sending mid-body.
    BodyUnreadable,
    /// The body did not arrive within [`BODY_READ_TIMEOUT`].
    BodyTooSlow,
    /// Too many calls in flight: shed before anything is read.
    Overloaded,
}

impl Rejection {
    /// The HTTP status a vendor answers the refusal with, unless its
    /// conventions say otherwise.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::UnknownRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadPathSegment | Self::BodyUnreadable => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTooSlow => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable machine-readable code, for vendors whose errors carry one.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::UnknownRoute => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::BadPathSegment => "INVALID_FIELD",
            Self::BodyTooLarge(_) => "FIELD_TOO_LARGE",
            Self::BodyUnreadable => "INVALID_BODY",
            Self::BodyTooSlow => "BODY_TIMEOUT",
            Self::Overloaded => "OVERLOADED",
        }
    }

    /// What went wrong, in a sentence.
    pub(crate) fn message(self) -> String {
        match self {
            Self::UnknownRoute => "no such path".to_owned(),
            Self::MethodNotAllowed => "this path does not take this method".to_owned(),
            Self::BadPathSegment => "a path segment is not valid UTF-8".to_owned(),
            Self::BodyTooLarge(limit) => {
                format!("the request body is larger than {limit} bytes")
            }
            Self::BodyUnreadable => "the request body could not be read".to_owned(),
            Self::BodyTooSlow => format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
            Self::Overloaded => {
                "the server has too many requests in flight; retry with backoff".to_owned()
            }
        }
    }
}

/// A vendor facade: its error type, and how it renders a refusal.
pub(crate) trait Vendor: Send + Sync + 'static {
    type Error: IntoResponse;

    fn reject(rejection: Rejection) -> Self::Error;
}

/// A request body must arrive whole within this, however large: a client
/// that trickles its bytes holds memory and a slot of the budget it is
/// under, and is cut off (408 in its vendor's shape).
pub(crate) const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a body of at most `limit` bytes within [`BODY_READ_TIMEOUT`], or
/// refuses it the vendor's way.
pub(crate) async fn read_body<V: Vendor>(body: Body, limit: usize) -> Result<Bytes, V::Error> {
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit));
    let Ok(read) = read.await else {
        return Err(V::reject(Rejection::BodyTooSlow));
    };
    read.map_err(|err| {
        let too_large = std::error::Error::source(&err)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        V::reject(if too_large {
            Rejection::BodyTooLarge(limit)
        } else {
            Rejection::BodyUnreadable
        })
    })
}

/// The path parameters, or the vendor's refusal of a segment that is not
/// UTF-8 (or not of the expected shape).
pub(crate) struct VendorPath<V, T>(pub T, pub PhantomData<V>);

impl<S, V, T> FromRequestParts<S> for VendorPath<V, T>
where
    S: Send + Sync,
    V: Vendor,
    T: DeserializeOwned + Send,
{
    type Rejection = V::Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value, PhantomData)),
            Err(_) => Err(V::reject(Rejection::BadPathSegment)),
        }
    }
}

/// The handler of a method a vendor path does not take.
pub(crate) async fn method_not_allowed<V: Vendor>() -> Response {
    V::reject(Rejection::MethodNotAllowed).into_response()
}

/// A refusal of a request to `path`, in the shape of the vendor whose
/// paths it is under, else a small JSON error.
fn refuse_at(path: &str, rejection: Rejection) -> Response {
    if path.starts_with(super::capillary::PATH_PREFIX) {
        super::capillary::Capillary::reject(rejection).into_response()
    } else if path.starts_with(super::fernand::PATH_PREFIX) {
        super::fernand::Fernand::reject(rejection).into_response()
    } else if path.starts_with(super::close::PATH_PREFIX) {
        super::close::Close::reject(rejection).into_response()
    } else if path.starts_with(super::zyntro::PATH_PREFIX) {
        super::zyntro::Zyntro::reject(rejection).into_response()
    } else {
        (
            rejection.status(),
            axum::Json(json!({ "error": rejection.message(), "code": rejection.code() })),
        )
            .into_response()
    }
}

/// The answer to a path nothing serves.
pub(crate) async fn unknown_route(uri: Uri) -> Response {
    refuse_at(uri.path(), Rejection::UnknownRoute)
}

/// Takes a permit of the budget of calls in flight for the whole of a
/// facade request, or refuses it at once, before anything of it is read,
/// in its vendor's shape (503 `OVERLOADED`). Zyntro's requests are not
/// known to be anyone's until their body is read: they take the budget of
/// [`PreAuth`] first, and this one once authenticated ([`admit`]).
pub(crate) async fn shed_load(
    axum::extract::State(state): axum::extract::State<CompatState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.uri().path() == super::zyntro::PATH {
        return next.run(request).await;
    }
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        return refuse_at(request.uri().path(), Rejection::Overloaded);
    };
    next.run(request).await
}

/// A permit of the budget of calls in flight, taken by a request whose
/// caller is known only once its body is read, or the vendor's refusal.
pub(crate) fn admit<V: Vendor>(
    state: &CompatState,
) -> Result<tokio::sync::OwnedSemaphorePermit, V::Error> {
    state
        .in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| V::reject(Rejection::Overloaded))
}

/// The budget of bodies read before their caller is known (Zyntro's
/// credentials are in its body): its own, so that nothing a caller without
/// credentials sends takes what authenticated calls use. Each such body
/// holds, while it is read and handled, as many bytes of
/// [`PRE_AUTH_BYTES`] as it announces (its limit when it announces none),
/// and one of [`PRE_AUTH_PER_ADDRESS`] slots of its address (an IPv6 /64
/// counts as one); a request
/// beyond either is refused at once, before a byte of its body is read.
#[derive(Debug)]
pub(crate) struct PreAuth {
    /// In KiB.
    bytes: Arc<tokio::sync::Semaphore>,
    per_address: Arc<PerAddress>,
}

/// Bytes of bodies read before their caller is known, at once.
const PRE_AUTH_BYTES: usize = 64 * 1024 * 1024;

/// Such bodies read at once from one address.
const PRE_AUTH_PER_ADDRESS: usize = 4;

impl Default for PreAuth {
    fn default() -> Self {
        Self {
            bytes: Arc::new(tokio::sync::Semaphore::new(PRE_AUTH_BYTES / 1024)),
            per_address: PerAddress::new(PRE_AUTH_PER_ADDRESS),
        }
    }
}

/// A body's share of [`PreAuth`], given back when dropped.
pub(crate) struct PreAuthSlot {
    _bytes: tokio::sync::OwnedSemaphorePermit,
    _address: AddressSlot,
}

impl PreAuth {
    /// A share for a body of at most `limit` bytes from `peer` with these
    /// `headers` (its `Content-Length`), or the vendor's refusal.
    pub(crate) fn admit<V: Vendor>(
        &self,
        peer: std::net::IpAddr,
        headers: &HeaderMap,
        limit: usize,
    ) -> Result<PreAuthSlot, V::Error> {
        let announced = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok())
            .unwrap_or(limit)
            .min(limit);
        if announced > PRE_AUTH_BYTES {
            return Err(V::reject(Rejection::BodyTooLarge(PRE_AUTH_BYTES)));
        }
        let kib = u32::try_from(announced.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let bytes = self
            .bytes
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| V::reject(Rejection::Overloaded))?;
        let address = self
            .per_address
            .take(peer)
            .ok_or_else(|| V::reject(Rejection::Overloaded))?;
        Ok(PreAuthSlot {
            _bytes: bytes,
            _address: address,
        })
    }
}

/// Runs a facade request as a call (`storage::calls`): a GET only reads,
/// so its reads may go to a replica that has the writes of the
/// `Notesd-Consistency-Token` it sends; any other request writes, and,
/// when replicas are configured, a success answers with the token of its
/// writes in the same header (docs/api.md, "Read replicas and consistency
/// tokens"). Facades have no deadline.
pub(crate) async fn scope_call(
    axum::extract::State(state): axum::extract::State<CompatState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let reads_only = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let call = call_scope(None, reads_only, request.headers());
    let quota = Arc::new(CallQuota::default());
    let path = request.uri().path().to_owned();
    let mut response = call
        .run(crate::quotas::run(Arc::clone(&quota), next.run(request)))
        .await;
    if !reads_only && response.status().is_success() {
        add_consistency_token(&state.reads, response.headers_mut(), "compat").await;
    }
    add_quota_headers(&path, &quota, response.headers_mut());
    response
}

/// The state of the caller's bucket on every answer under a rate (the IETF
/// RateLimit header fields), `Retry-After` on a refusal by a quota, and
/// the headers each vendor's own clients read: Close's one `RateLimit`
/// field (`limit=…, remaining=…, reset=…`), Fernand's `X-RateLimit-Limit`,
/// `-Remaining` and `-Reset` (a Unix time).
fn add_quota_headers(path: &str, quota: &CallQuota, headers: &mut HeaderMap) {
    use axum::http::HeaderValue;
    if let Some(retry_after) = quota.retry_after() {
        headers.insert(
            axum::http::header::RETRY_AFTER,
            crate::quotas::retry_after_secs(retry_after).into(),
        );
    }
    let Some(rate) = quota.headers() else {
        return;
    };
    rate.insert_into(headers);
    if path.starts_with(super::close::PATH_PREFIX) {
        let field = format!(
            "limit={}, remaining={}, reset={}",
            rate.limit, rate.remaining, rate.reset_secs
        );
        if let Ok(value) = HeaderValue::try_from(field) {
            headers.insert("ratelimit", value);
        }
    } else if path.starts_with(super::fernand::PATH_PREFIX) {
        let reset_at = Utc::now().timestamp().max(0) as u64 + rate.reset_secs;
        headers.insert("x-ratelimit-limit", rate.limit.into());
        headers.insert("x-ratelimit-remaining", rate.remaining.into());
        headers.insert("x-ratelimit-reset", reset_at.into());
    }
}
