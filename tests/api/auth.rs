//! API keys: `x-api-key` and `authorization: Bearer`, member and service
//! keys, and the acting member.

use notesd::proto::notes::v1 as pb;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn call_without_a_key_is_unauthenticated() {
    let app = spawn_app().await;
    let mut anonymous = app.client_with(vec![]).await;
    assert_status(
        try_add(&mut anonymous, text_note("customer", "c-1", "text")).await,
        Code::Unauthenticated,
        "MISSING_API_KEY",
    );
    assert_status(
        list(&mut anonymous, Default::default()).await,
        Code::Unauthenticated,
        "MISSING_API_KEY",
    );
}

#[tokio::test]
async fn call_with_an_unknown_key_is_unauthenticated() {
    let app = spawn_app().await;
    let well_formed_but_unknown = format!(
        "nk_{}_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0cw",
        uuid::Uuid::now_v7().simple()
    );
    for key in ["garbage".to_owned(), well_formed_but_unknown] {
        let mut client = app.client(&key).await;
        assert_status(
            try_add(&mut client, text_note("customer", "c-1", "text")).await,
            Code::Unauthenticated,
            "INVALID_API_KEY",
        );
    }
}

#[tokio::test]
async fn key_with_a_wrong_secret_is_unauthenticated() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let (prefix, _secret) = key.rsplit_once('_').expect("nk_<id>_<secret>");
    let forged = format!("{prefix}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_ne!(forged, key);
    let mut client = app.client(&forged).await;
    assert_status(
        get(&mut client, &uuid::Uuid::now_v7().to_string()).await,
        Code::Unauthenticated,
        "INVALID_API_KEY",
    );
}

#[tokio::test]
async fn member_key_acts_as_its_member() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "text")).await;
    assert_eq!(note.owner_id, "alice");
    assert_eq!(note.creator_id, "alice");
}

#[tokio::test]
async fn bearer_authorization_works_like_x_api_key() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let mut bearer = app
        .client_with(vec![("authorization", format!("Bearer {key}"))])
        .await;

    let note = add(&mut bearer, text_note("customer", "c-1", "text")).await;
    assert_eq!(note.owner_id, "alice");

    let mut plain = app.client(&key).await;
    assert_eq!(get(&mut plain, &note.id).await.unwrap(), note);

    let mut bad_bearer = app
        .client_with(vec![("authorization", "Bearer nope".to_owned())])
        .await;
    assert_status(
        get(&mut bad_bearer, &note.id).await,
        Code::Unauthenticated,
        "INVALID_API_KEY",
    );
}

#[tokio::test]
async fn service_key_without_actor_is_unauthenticated() {
    let app = spawn_app().await;
    let key = app.service_key("acme").await;
    let mut service = app.client(&key).await;
    assert_status(
        try_add(&mut service, text_note("customer", "c-1", "text")).await,
        Code::Unauthenticated,
        "MISSING_ACTOR",
    );
}

#[tokio::test]
async fn service_key_with_actor_acts_as_that_member() {
    let app = spawn_app().await;
    let key = app.service_key("acme").await;
    let mut as_carol = app
        .client_with(vec![
            ("x-api-key", key.clone()),
            ("x-actor-id", "carol".to_owned()),
        ])
        .await;

    let note = add(
        &mut as_carol,
        shared_note(
            "by the integration",
            pb::Visibility::Private,
            pb::EditPolicy::OwnerOnly,
        ),
    )
    .await;
    assert_eq!(note.owner_id, "carol");
    assert_eq!(note.creator_id, "carol");
    assert_eq!(note.updater_id, "carol");

    // It is carol's note: carol's own key sees the private note, dave does not.
    let mut carol = app.member("acme", "carol").await;
    assert_eq!(get(&mut carol, &note.id).await.unwrap(), note);
    let mut as_dave = app
        .client_with(vec![("x-api-key", key), ("x-actor-id", "dave".to_owned())])
        .await;
    assert_fails(get(&mut as_dave, &note.id).await, NOT_FOUND);
}

#[tokio::test]
async fn service_key_works_with_bearer_authorization() {
    let app = spawn_app().await;
    let key = app.service_key("acme").await;
    let mut client = app
        .client_with(vec![
            ("authorization", format!("Bearer {key}")),
            ("x-actor-id", "carol".to_owned()),
        ])
        .await;
    assert_eq!(
        add(&mut client, text_note("customer", "c-1", "text"))
            .await
            .owner_id,
        "carol"
    );
}

#[tokio::test]
async fn member_key_naming_another_actor_is_permission_denied() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let mut impostor = app
        .client_with(vec![
            ("x-api-key", key.clone()),
            ("x-actor-id", "bob".to_owned()),
        ])
        .await;
    assert_status(
        try_add(&mut impostor, text_note("customer", "c-1", "text")).await,
        Code::PermissionDenied,
        "ACTOR_MISMATCH",
    );

    let mut honest = app
        .client_with(vec![("x-api-key", key), ("x-actor-id", "alice".to_owned())])
        .await;
    let note = add(&mut honest, text_note("customer", "c-1", "text")).await;
    assert_eq!(note.owner_id, "alice", "naming its own member is allowed");
}

#[tokio::test]
async fn key_of_one_tenant_reaches_only_that_tenant() {
    let app = spawn_app().await;
    let mut acme = app.member("acme", "alice").await;
    let mut globex_service = app
        .client_with(vec![
            ("x-api-key", app.service_key("globex").await),
            ("x-actor-id", "alice".to_owned()),
        ])
        .await;
    let note = add(&mut acme, text_note("customer", "c-1", "text")).await;
    assert_fails(get(&mut globex_service, &note.id).await, NOT_FOUND);
    assert!(
        listed_ids(&mut globex_service, Default::default())
            .await
            .is_empty()
    );
}
