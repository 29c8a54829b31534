//! Who is calling, decided before anything of the call is read: a tower
//! layer in front of the notes.v1 services takes the key and actor from the
//! headers, the address (or, behind a trusted proxy, `x-forwarded-for`)
//! and the client certificate from the connection, authenticates, and either puts the
//! [`Principal`] in the request's extensions or answers UNAUTHENTICATED (or
//! PERMISSION_DENIED) at once. The request body (up to 32 MiB) is never
//! polled for a caller who is not known: it is dropped with the request,
//! and HTTP/2 flow control stops the client after one stream window.
//!
//! Handlers read the principal with [`principal`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use tonic::{Request, Status};

use crate::auth::{ACTOR_HEADER, API_KEY_HEADER, Callers, PeerCertificate};
use crate::domain::{DomainError, Principal};
use crate::listener::PeerInfo;

/// The services whose calls need a caller: every notes.v1 path, served or
/// not (an unknown method of notes.v1 is UNAUTHENTICATED without a key,
/// UNIMPLEMENTED with one). Health and reflection stay open.
const AUTHENTICATED_PREFIX: &str = "/notes.v1.";

/// The change stream's path: its calls keep their credentials (see
/// [`Credentials`]).
const WATCH_PATH: &str = "/notes.v1.NotesService/WatchNotes";

/// What authenticated a call, kept in its extensions for a call that stays
/// open (a watch) so that it can check again that its key still holds: a
/// watch must end when its key is revoked or expires, not hours later. No
/// `Debug`: it holds the key.
#[derive(Clone)]
pub(crate) struct Credentials {
    callers: Callers,
    key: Option<String>,
    actor: Option<String>,
    headers: HeaderMap,
    peer: Option<std::net::IpAddr>,
    certificate: Option<std::sync::Arc<PeerCertificate>>,
    /// Who the call started as: it must stay that (a certificate mapped to
    /// another identity since does not carry the watch over).
    principal: Principal,
}

impl Credentials {
    /// Authenticates the call again (from the key cache, which revocation
    /// empties: cheap until the key changes), as the principal it started
    /// as.
    pub(crate) async fn authenticate(&self) -> Result<(), DomainError> {
        let principal = self
            .callers
            .authenticate(
                self.key.as_deref(),
                self.actor.as_deref(),
                &self.headers,
                self.peer,
                self.certificate.as_deref(),
            )
            .await?;
        if principal != self.principal {
            return Err(DomainError::ApiKeyInvalid);
        }
        Ok(())
    }
}

/// The caller of a call that passed [`AuthenticateLayer`].
pub(crate) fn principal<T>(request: &Request<T>) -> Result<&Principal, Status> {
    request.extensions().get::<Principal>().ok_or_else(|| {
        DomainError::Internal(anyhow::anyhow!(
            "a notes.v1 call reached its handler without a caller"
        ))
        .into()
    })
}

fn text<'m>(headers: &'m HeaderMap, name: &str) -> Option<&'m str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The key from `x-api-key`, or else from `authorization: Bearer <key>`.
fn api_key(headers: &HeaderMap) -> Option<&str> {
    text(headers, API_KEY_HEADER).or_else(|| {
        let (scheme, token) = text(headers, "authorization")?.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    })
}

/// The tower layer that authenticates every notes.v1 call before its body
/// is read.
#[derive(Debug, Clone)]
pub(crate) struct AuthenticateLayer {
    callers: Callers,
}

impl AuthenticateLayer {
    pub(crate) fn new(callers: Callers) -> Self {
        Self { callers }
    }
}

impl<S> tower::Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            callers: self.callers.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Authenticate<S> {
    inner: S,
    callers: Callers,
}

impl<S, B, R> tower::Service<http::Request<B>> for Authenticate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !request.uri().path().starts_with(AUTHENTICATED_PREFIX) {
            return Box::pin(self.inner.call(request));
        }
        // The service that was polled ready serves this call; the clone
        // stays for the next one.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let callers = self.callers.clone();
        Box::pin(async move {
            let info = request.extensions().get::<PeerInfo>();
            let peer = info.map(|info| info.remote_addr.ip());
            let certificate = info.and_then(|info| info.certificate.clone());
            let headers = request.headers();
            let principal = callers
                .authenticate(
                    api_key(headers),
                    text(headers, ACTOR_HEADER),
                    headers,
                    peer,
                    certificate.as_deref(),
                )
                .await;
            match principal {
                Ok(principal) => {
                    if request.uri().path() == WATCH_PATH {
                        let credentials = Credentials {
                            key: api_key(headers).map(str::to_owned),
                            actor: text(headers, ACTOR_HEADER).map(str::to_owned),
                            headers: headers.clone(),
                            peer,
                            certificate,
                            principal: principal.clone(),
                            callers,
                        };
                        request.extensions_mut().insert(credentials);
                    }
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(err) => Ok(Status::from(err).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_from_x_api_key_or_a_bearer_token() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer  nk_abc ".parse().unwrap());
        assert_eq!(api_key(&headers), Some("nk_abc"));
        headers.insert(API_KEY_HEADER, "nk_def".parse().unwrap());
        assert_eq!(api_key(&headers), Some("nk_def"));
        let mut basic = HeaderMap::new();
        basic.insert("authorization", "Basic bms6".parse().unwrap());
        assert_eq!(api_key(&basic), None);
    }
}
