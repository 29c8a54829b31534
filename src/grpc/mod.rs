//! The gRPC edge, tonic glue only: the layers that bound calls and
//! authenticate them before a body is read, the services that hand each
//! call to [`NotesApi`], and the one mapping of errors to statuses.

mod callers;
mod limits;
mod quota;
mod scope;
mod status;
mod subjects;

pub(crate) use callers::AuthenticateLayer;

pub(crate) use limits::CallLimitsLayer;
pub(crate) use quota::QuotaLayer;
pub(crate) use scope::CallScopeLayer;
use std::time::Duration;
pub(crate) use subjects::SubjectsGrpc;

use std::pin::Pin;

use futures_util::{Stream, TryStreamExt as _};
use tonic::{Request, Response, Status};

use crate::api::NotesApi;
use crate::proto::notes::v1 as pb;
use crate::proto::notes::v1::notes_service_server::NotesService;

/// NotesService: hands each call, authenticated by [`AuthenticateLayer`],
/// to [`NotesApi`].
#[derive(Debug, Clone)]
pub(crate) struct NotesGrpc {
    api: NotesApi,
}

impl NotesGrpc {
    pub(crate) fn new(api: NotesApi) -> Self {
        Self { api }
    }
}

#[tonic::async_trait]
impl NotesService for NotesGrpc {
    type WatchNotesStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchNotesResponse, Status>> + Send>>;

    async fn watch_notes(
        &self,
        request: Request<pb::WatchNotesRequest>,
    ) -> Result<Response<Self::WatchNotesStream>, Status> {
        let principal = callers::principal(&request)?;
        let credentials = request
            .extensions()
            .get::<callers::Credentials>()
            .cloned()
            .ok_or_else(|| {
                Status::from(crate::domain::DomainError::Internal(anyhow::anyhow!(
                    "a watch reached its handler without its credentials"
                )))
            })?;
        let stream = self.api.watch_notes(principal, request.get_ref()).await?;
        Ok(Response::new(Box::pin(until_unauthenticated(
            stream.map_err(Status::from),
            credentials,
        ))))
    }

    async fn add_note(
        &self,
        request: Request<pb::AddNoteRequest>,
    ) -> Result<Response<pb::AddNoteResponse>, Status> {
        let principal = callers::principal(&request)?;
        let note = self.api.add_note(principal, request.get_ref()).await?;
        Ok(Response::new(pb::AddNoteResponse { note: Some(note) }))
    }

    async fn update_note(
        &self,
        request: Request<pb::UpdateNoteRequest>,
    ) -> Result<Response<pb::UpdateNoteResponse>, Status> {
        let principal = callers::principal(&request)?;
        let note = self.api.update_note(principal, request.get_ref()).await?;
        Ok(Response::new(pb::UpdateNoteResponse { note: Some(note) }))
    }

    async fn get_note(
        &self,
        request: Request<pb::GetNoteRequest>,
    ) -> Result<Response<pb::GetNoteResponse>, Status> {
        let principal = callers::principal(&request)?;
        let note = self.api.get_note(principal, request.get_ref()).await?;
        Ok(Response::new(pb::GetNoteResponse { note: Some(note) }))
    }

    async fn list_notes(
        &self,
        request: Request<pb::ListNotesRequest>,
    ) -> Result<Response<pb::ListNotesResponse>, Status> {
        let principal = callers::principal(&request)?;
        Ok(Response::new(
            self.api.list_notes(principal, request.get_ref()).await?,
        ))
    }

    async fn delete_note(
        &self,
        request: Request<pb::DeleteNoteRequest>,
    ) -> Result<Response<pb::DeleteNoteResponse>, Status> {
        let principal = callers::principal(&request)?;
        let note = self.api.delete_note(principal, request.get_ref()).await?;
        Ok(Response::new(pb::DeleteNoteResponse { note: Some(note) }))
    }

    async fn undelete_note(
        &self,
        request: Request<pb::UndeleteNoteRequest>,
    ) -> Result<Response<pb::UndeleteNoteResponse>, Status> {
        let principal = callers::principal(&request)?;
        let note = self.api.undelete_note(principal, request.get_ref()).await?;
        Ok(Response::new(pb::UndeleteNoteResponse { note: Some(note) }))
    }

    async fn search_notes(
        &self,
        request: Request<pb::SearchNotesRequest>,
    ) -> Result<Response<pb::SearchNotesResponse>, Status> {
        let principal = callers::principal(&request)?;
        Ok(Response::new(
            self.api.search_notes(principal, request.get_ref()).await?,
        ))
    }

    async fn batch_get_notes(
        &self,
        request: Request<pb::BatchGetNotesRequest>,
    ) -> Result<Response<pb::BatchGetNotesResponse>, Status> {
        let principal = callers::principal(&request)?;
        Ok(Response::new(
            self.api
                .batch_get_notes(principal, request.get_ref())
                .await?,
        ))
    }

    async fn batch_add_notes(
        &self,
        request: Request<pb::BatchAddNotesRequest>,
    ) -> Result<Response<pb::BatchAddNotesResponse>, Status> {
        let principal = callers::principal(&request)?;
        Ok(Response::new(
            self.api
                .batch_add_notes(principal, request.get_ref())
                .await?,
        ))
    }

    async fn batch_delete_notes(
        &self,
        request: Request<pb::BatchDeleteNotesRequest>,
    ) -> Result<Response<pb::BatchDeleteNotesResponse>, Status> {
        let principal = callers::principal(&request)?;
        Ok(Response::new(
            self.api
                .batch_delete_notes(principal, request.get_ref())
                .await?,
        ))
    }

    async fn purge_notes(
        &self,
        request: Request<pb::PurgeNotesRequest>,
    ) -> Result<Response<pb::PurgeNotesResponse>, Status> {
        let principal = callers::principal(&request)?;
        Ok(Response::new(
            self.api.purge_notes(principal, request.get_ref()).await?,
        ))
    }

    async fn list_note_revisions(
        &self,
        request: Request<pb::ListNoteRevisionsRequest>,
    ) -> Result<Response<pb::ListNoteRevisionsResponse>, Status> {
        let principal = callers::principal(&request)?;
        Ok(Response::new(
            self.api
                .list_note_revisions(principal, request.get_ref())
                .await?,
        ))
    }
}

/// How often an open watch checks that its key still holds.
const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// `stream`, ended with the authentication error as soon as its caller's
/// credentials stop authenticating (a key revoked, expired, rotated past
/// its grace), checked every `RECHECK_EVERY`.
fn until_unauthenticated(
    stream: impl Stream<Item = Result<pb::WatchNotesResponse, Status>> + Send + Unpin + 'static,
    credentials: callers::Credentials,
) -> impl Stream<Item = Result<pb::WatchNotesResponse, Status>> + Send + 'static {
    use futures_util::StreamExt as _;
    let start = tokio::time::Instant::now() + RECHECK_EVERY;
    let recheck = tokio::time::interval_at(start, RECHECK_EVERY);
    futures_util::stream::unfold(Some((stream, recheck, credentials)), |state| async move {
        let (mut stream, mut recheck, credentials) = state?;
        loop {
            tokio::select! {
                item = stream.next() => {
                    return item.map(|item| (item, Some((stream, recheck, credentials))));
                }
                _ = recheck.tick() => {
                    if let Err(err) = credentials.authenticate().await {
                        return Some((Err(Status::from(err)), None));
                    }
                }
            }
        }
    })
}
