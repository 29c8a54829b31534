//! WatchNotes in notes.v1 types: the request's filters and token, and each
//! event as a `WatchNotesResponse`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use super::convert;
use crate::domain::watch::{Change, StreamPosition, WatchFilter};
use crate::domain::{ChangeKind, DomainError};
use crate::proto::notes::v1 as pb;
use crate::storage::WatchEvent;

const TOKEN_V1: u8 = 1;
const TOKEN_LEN: usize = 1 + 8 + 16;

/// An opaque resume token: base64url of a version byte, the position's
/// xid (8 bytes, big-endian) and its event id. Not signed: a made-up token
/// names a position in the caller's own tenant's stream, which shows only
/// what the caller may see anyway; one beyond the stream is refused.
pub(crate) fn encode_token(position: StreamPosition) -> String {
    let mut bytes = Vec::with_capacity(TOKEN_LEN);
    bytes.push(TOKEN_V1);
    bytes.extend_from_slice(&position.xid.to_be_bytes());
    bytes.extend_from_slice(position.event.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn decode_token(token: &str) -> Result<Option<StreamPosition>, DomainError> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || DomainError::bad_watch_token("resume_token is malformed");
    let bytes = URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .map_err(|_| malformed())?;
    if bytes.len() != TOKEN_LEN || bytes[0] != TOKEN_V1 {
        return Err(malformed());
    }
    let xid = u64::from_be_bytes(bytes[1..9].try_into().map_err(|_| malformed())?);
    let event = Uuid::from_slice(&bytes[9..]).map_err(|_| malformed())?;
    Ok(Some(StreamPosition { xid, event }))
}

pub(crate) fn parse_filter(request: &pb::WatchNotesRequest) -> Result<WatchFilter, DomainError> {
    convert::parse_scope_filter(
        request.subject.as_ref(),
        &request.subject_type,
        request.related_subject.as_ref(),
        &request.owner_id,
    )
}

/// One event as the stream sends it.
pub(crate) fn event_to_proto(event: WatchEvent) -> pb::WatchNotesResponse {
    match event {
        WatchEvent::Changed(change) => {
            let event_type = match change.kind {
                ChangeKind::Created => pb::WatchEventType::Created,
                ChangeKind::Updated => pb::WatchEventType::Updated,
                ChangeKind::Deleted => pb::WatchEventType::Deleted,
                ChangeKind::Undeleted => pb::WatchEventType::Undeleted,
            };
            let mut response = about(&change, event_type);
            // The change is shared by every watcher of the tenant: each
            // gets its own copy of the note.
            response.note = Some(convert::note_to_proto(change.note.clone()));
            response
        }
        WatchEvent::LeftView(change) => about(&change, pb::WatchEventType::LeftView),
        WatchEvent::Heartbeat(position) => pb::WatchNotesResponse {
            r#type: pb::WatchEventType::Heartbeat as i32,
            resume_token: encode_token(position),
            ..Default::default()
        },
    }
}

/// A response naming the change, without the note.
fn about(change: &Change, event_type: pb::WatchEventType) -> pb::WatchNotesResponse {
    pb::WatchNotesResponse {
        r#type: event_type as i32,
        note: None,
        note_id: change.note.id.to_string(),
        revision: change.revision,
        change_time: Some(convert::timestamp(change.changed_at)),
        resume_token: encode_token(change.position),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        let position = StreamPosition {
            xid: 123_456_789,
            event: Uuid::now_v7(),
        };
        assert_eq!(
            decode_token(&encode_token(position)).unwrap(),
            Some(position)
        );
        assert_eq!(decode_token("").unwrap(), None);
        for bad in [
            "not base64!",
            "AAAA",
            &URL_SAFE_NO_PAD.encode([2u8; TOKEN_LEN]),
        ] {
            let err = decode_token(bad).unwrap_err();
            assert_eq!(err.reason(), "INVALID_WATCH_TOKEN", "{bad}");
        }
    }
}
