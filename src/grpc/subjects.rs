//! SubjectsService: the subject registry over gRPC.

use tonic::{Request, Response, Status};

use super::callers;
use crate::api::convert::{parse_owner, parse_subject, timestamp};
use crate::domain::SubjectRegistration;
use crate::proto::notes::v1 as pb;
use crate::proto::notes::v1::subjects_service_server::SubjectsService;
use crate::service::Subjects;

/// SubjectsService: calls authenticated by the callers layer.
#[derive(Debug, Clone)]
pub(crate) struct SubjectsGrpc {
    subjects: Subjects,
}

impl SubjectsGrpc {
    pub(crate) fn new(subjects: Subjects) -> Self {
        Self { subjects }
    }
}

fn registration_to_proto(registration: &SubjectRegistration) -> pb::SubjectRegistration {
    pb::SubjectRegistration {
        subject: Some(pb::Subject {
            r#type: registration.subject.kind.clone(),
            id: registration.subject.id.clone(),
        }),
        owner_id: registration.owner.to_string(),
        owner_only_notes: registration.owner_only_notes,
        create_time: Some(timestamp(registration.created_at)),
        update_time: Some(timestamp(registration.updated_at)),
    }
}

#[tonic::async_trait]
impl SubjectsService for SubjectsGrpc {
    async fn register_subject(
        &self,
        request: Request<pb::RegisterSubjectRequest>,
    ) -> Result<Response<pb::RegisterSubjectResponse>, Status> {
        let principal = callers::principal(&request)?;
        let registration = request
            .get_ref()
            .registration
            .as_ref()
            .ok_or_else(|| crate::domain::DomainError::missing("registration"))?;
        let subject = parse_subject("registration.subject", registration.subject.as_ref())?;
        let owner = parse_owner("registration.owner_id", &registration.owner_id)?;
        let stored = self
            .subjects
            .register(principal, subject, owner, registration.owner_only_notes)
            .await?;
        Ok(Response::new(pb::RegisterSubjectResponse {
            registration: Some(registration_to_proto(&stored)),
        }))
    }

    async fn get_subject(
        &self,
        request: Request<pb::GetSubjectRequest>,
    ) -> Result<Response<pb::GetSubjectResponse>, Status> {
        let principal = callers::principal(&request)?;
        let subject = parse_subject("subject", request.get_ref().subject.as_ref())?;
        let registration = self.subjects.get(principal, &subject).await?;
        Ok(Response::new(pb::GetSubjectResponse {
            registration: Some(registration_to_proto(&registration)),
        }))
    }
}
