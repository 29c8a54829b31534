//! The subject registry: owners, owner-only notes, and tenants.

use notesd::proto::notes::v1 as pb;
use tonic::Code;

use crate::helpers::*;

const SUBJECT_NOT_FOUND: (Code, &str) = (Code::NotFound, "SUBJECT_NOT_FOUND");

/// Member keys of acme: alice, bob; and an admin key recorded as root.
struct Cast {
    alice: String,
    bob: String,
    admin: String,
}

async fn cast(app: &TestApp) -> Cast {
    Cast {
        alice: app.member_key("acme", "alice").await,
        bob: app.member_key("acme", "bob").await,
        admin: app.admin_key("acme", "root").await,
    }
}

/// Alice registers contact/k-1 for herself with owner-only notes.
async fn alices_owner_only_contact(app: &TestApp, cast: &Cast) -> pb::SubjectRegistration {
    register_subject(
        &mut app.subjects(&cast.alice).await,
        registration("contact", "k-1", "", true),
    )
    .await
    .expect("alice registers her contact")
}

/// Notes about contact/k-1, as the admin lists them.
async fn notes_about_k1(app: &TestApp, cast: &Cast) -> Vec<pb::Note> {
    list_all(
        &mut app.client(&cast.admin).await,
        pb::ListNotesRequest {
            subject: subject("contact", "k-1"),
            ..Default::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn register_subject_defaults_the_owner_to_the_caller_and_get_subject_reads_it_back() {
    let app = spawn_app().await;
    let cast = cast(&app).await;
    let mut alice = app.subjects(&cast.alice).await;

    let stored = register_subject(&mut alice, registration("contact", "k-1", "", true))
        .await
        .unwrap();
    assert_eq!(stored.subject, subject("contact", "k-1"));
    assert_eq!(stored.owner_id, "alice");
    assert!(stored.owner_only_notes);
    let create_time = stored.create_time.expect("a create time");
    let update_time = stored.update_time.expect("an update time");
    assert_eq!(create_time, update_time);

    // Any member of the tenant reads it.
    let mut bob = app.subjects(&cast.bob).await;
    assert_eq!(
        get_subject(&mut bob, "contact", "k-1").await.unwrap(),
        stored
    );

    // A change keeps the create time and moves the update time.
    let changed = register_subject(&mut alice, registration("contact", "k-1", "", false))
        .await
        .unwrap();
    assert!(!changed.owner_only_notes);
    assert_eq!(changed.create_time, Some(create_time));
    assert!(to_chrono(&changed.update_time.unwrap()) >= to_chrono(&update_time));
    assert_eq!(
        get_subject(&mut bob, "contact", "k-1").await.unwrap(),
        changed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn get_subject_of_an_unregistered_subject_is_subject_not_found() {
    let app = spawn_app().await;
    let cast = cast(&app).await;
    let mut alice = app.subjects(&cast.alice).await;
    register_subject(&mut alice, registration("contact", "k-1", "", false))
        .await
        .unwrap();

    assert_fails(
        get_subject(&mut alice, "contact", "k-2").await,
        SUBJECT_NOT_FOUND,
    );
    assert_fails(
        get_subject(&mut alice, "customer", "k-1").await,
        SUBJECT_NOT_FOUND,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn member_may_not_register_a_subject_for_another_owner_but_an_admin_may() {
    let app = spawn_app().await;
    let cast = cast(&app).await;

    assert_fails(
        register_subject(
            &mut app.subjects(&cast.bob).await,
            registration("contact", "k-1", "alice", true),
        )
        .await,
        NOT_OWNER,
    );
    assert_fails(
        get_subject(&mut app.subjects(&cast.alice).await, "contact", "k-1").await,
        SUBJECT_NOT_FOUND,
    );

    let stored = register_subject(
        &mut app.subjects(&cast.admin).await,
        registration("contact", "k-1", "alice", true),
    )
    .await
    .expect("an admin registers for anyone");
    assert_eq!(stored.owner_id, "alice");
    assert_eq!(
        get_subject(&mut app.subjects(&cast.bob).await, "contact", "k-1")
            .await
            .unwrap()
            .owner_id,
        "alice"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_owner_or_an_admin_may_change_a_registration() {
    let app = spawn_app().await;
    let cast = cast(&app).await;
    let original = alices_owner_only_contact(&app, &cast).await;
    let mut bob = app.subjects(&cast.bob).await;

    // Not even to take it for himself, nor merely to open it up.
    assert_fails(
        register_subject(&mut bob, registration("contact", "k-1", "", false)).await,
        NOT_OWNER,
    );
    assert_fails(
        register_subject(&mut bob, registration("contact", "k-1", "alice", false)).await,
        NOT_OWNER,
    );
    assert_eq!(
        get_subject(&mut bob, "contact", "k-1").await.unwrap(),
        original,
        "the registration is unchanged"
    );

    let by_admin = register_subject(
        &mut app.subjects(&cast.admin).await,
        registration("contact", "k-1", "bob", false),
    )
    .await
    .expect("an admin changes any registration");
    assert_eq!(by_admin.owner_id, "bob");
    assert!(!by_admin.owner_only_notes);
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_may_hand_a_subject_over_and_then_loses_it() {
    let app = spawn_app().await;
    let cast = cast(&app).await;
    alices_owner_only_contact(&app, &cast).await;
    let mut alice = app.subjects(&cast.alice).await;

    let handed = register_subject(&mut alice, registration("contact", "k-1", "bob", true))
        .await
        .expect("the owner hands it over");
    assert_eq!(handed.owner_id, "bob");

    // Now bob's: alice may neither change it back nor add notes to it.
    assert_fails(
        register_subject(&mut alice, registration("contact", "k-1", "", true)).await,
        NOT_OWNER,
    );
    assert_fails(
        try_add(
            &mut app.client(&cast.alice).await,
            text_note("contact", "k-1", "x"),
        )
        .await,
        NOT_OWNER,
    );
    add(
        &mut app.client(&cast.bob).await,
        text_note("contact", "k-1", "bob's now"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_only_subject_takes_notes_from_its_owner_and_admins_only() {
    let app = spawn_app().await;
    let cast = cast(&app).await;
    alices_owner_only_contact(&app, &cast).await;

    assert_fails(
        try_add(
            &mut app.client(&cast.bob).await,
            text_note("contact", "k-1", "bob's attempt"),
        )
        .await,
        NOT_OWNER,
    );
    // A service key acting as bob is bob.
    let mut service_as_bob = app
        .client_with(vec![
            ("x-api-key", app.service_key("acme").await),
            ("x-actor-id", "bob".to_owned()),
        ])
        .await;
    assert_fails(
        try_add(
            &mut service_as_bob,
            text_note("contact", "k-1", "bob's attempt"),
        )
        .await,
        NOT_OWNER,
    );
    assert!(
        notes_about_k1(&app, &cast).await.is_empty(),
        "nothing was written"
    );

    let by_alice = add(
        &mut app.client(&cast.alice).await,
        text_note("contact", "k-1", "alice's"),
    )
    .await;
    let by_admin = add(
        &mut app.client(&cast.admin).await,
        text_note("contact", "k-1", "the admin's"),
    )
    .await;
    assert_eq!(by_admin.owner_id, "root");

    let mut ids: Vec<String> = notes_about_k1(&app, &cast)
        .await
        .into_iter()
        .map(|n| n.id)
        .collect();
    ids.sort();
    let mut expected = vec![by_alice.id, by_admin.id];
    expected.sort();
    assert_eq!(ids, expected);

    // Other subjects, and the same id under another type, are unaffected.
    add(
        &mut app.client(&cast.bob).await,
        text_note("contact", "k-2", "x"),
    )
    .await;
    add(
        &mut app.client(&cast.bob).await,
        text_note("customer", "k-1", "x"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn subject_without_owner_only_notes_takes_notes_from_anyone() {
    let app = spawn_app().await;
    let cast = cast(&app).await;
    register_subject(
        &mut app.subjects(&cast.alice).await,
        registration("contact", "k-1", "", false),
    )
    .await
    .unwrap();

    let by_bob = add(
        &mut app.client(&cast.bob).await,
        text_note("contact", "k-1", "bob's"),
    )
    .await;
    assert_eq!(by_bob.owner_id, "bob");

    // Turning owner-only on stops bob from then on.
    register_subject(
        &mut app.subjects(&cast.alice).await,
        registration("contact", "k-1", "", true),
    )
    .await
    .unwrap();
    assert_fails(
        try_add(
            &mut app.client(&cast.bob).await,
            text_note("contact", "k-1", "again"),
        )
        .await,
        NOT_OWNER,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn moving_a_note_onto_an_owner_only_subject_is_for_its_owner_only() {
    let app = spawn_app().await;
    let cast = cast(&app).await;
    alices_owner_only_contact(&app, &cast).await;
    let mut bob = app.client(&cast.bob).await;
    let bobs = add(&mut bob, text_note("customer", "c-1", "bob's note")).await;

    assert_fails(
        update(
            &mut bob,
            pb::Note {
                subject: subject("contact", "k-1"),
                ..patch(&bobs.id)
            },
            &["subject"],
        )
        .await,
        NOT_OWNER,
    );
    assert_eq!(
        get(&mut bob, &bobs.id).await.unwrap(),
        bobs,
        "the note is unchanged"
    );

    // With the mask left empty, the subject sent is still the change.
    assert_fails(
        update(
            &mut bob,
            pb::Note {
                subject: subject("contact", "k-1"),
                ..patch(&bobs.id)
            },
            &[],
        )
        .await,
        NOT_OWNER,
    );

    let mut alice = app.client(&cast.alice).await;
    let alices = add(&mut alice, text_note("customer", "c-1", "alice's note")).await;
    let moved = update(
        &mut alice,
        pb::Note {
            subject: subject("contact", "k-1"),
            ..patch(&alices.id)
        },
        &["subject"],
    )
    .await
    .expect("the subject's owner moves her note onto it");
    assert_eq!(moved.subject, subject("contact", "k-1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn registrations_are_per_tenant() {
    let app = spawn_app().await;
    let cast = cast(&app).await;
    let acme = alices_owner_only_contact(&app, &cast).await;

    let globex_key = app.member_key("globex", "gina").await;
    let mut gina = app.subjects(&globex_key).await;
    assert_fails(
        get_subject(&mut gina, "contact", "k-1").await,
        SUBJECT_NOT_FOUND,
    );
    // The same member id in another tenant is someone else.
    let globex_alice = app.member_key("globex", "alice").await;
    assert_fails(
        get_subject(&mut app.subjects(&globex_alice).await, "contact", "k-1").await,
        SUBJECT_NOT_FOUND,
    );
    // acme's owner-only rule does not reach globex.
    add(
        &mut app.client(&globex_key).await,
        text_note("contact", "k-1", "globex's note"),
    )
    .await;

    let globex = register_subject(&mut gina, registration("contact", "k-1", "", true))
        .await
        .expect("globex registers the same subject for itself");
    assert_eq!(globex.owner_id, "gina");
    assert_eq!(
        get_subject(&mut app.subjects(&cast.bob).await, "contact", "k-1")
            .await
            .unwrap(),
        acme,
        "acme's registration is untouched"
    );
    assert_eq!(
        get_subject(&mut gina, "contact", "k-1").await.unwrap(),
        globex
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_subject_fields_are_invalid_argument() {
    let app = spawn_app().await;
    let cast = cast(&app).await;
    let mut alice = app.subjects(&cast.alice).await;

    let no_registration = alice
        .register_subject(pb::RegisterSubjectRequest { registration: None })
        .await
        .map(|r| r.into_inner());
    assert_invalid(no_registration, "MISSING_FIELDS", "registration");
    assert_invalid(
        register_subject(
            &mut alice,
            pb::SubjectRegistration {
                subject: None,
                ..registration("contact", "k-1", "", true)
            },
        )
        .await,
        "MISSING_FIELDS",
        "registration.subject",
    );
    assert_invalid(
        register_subject(&mut alice, registration("", "k-1", "", true)).await,
        "MISSING_FIELDS",
        "registration.subject.type",
    );
    assert_invalid(
        register_subject(&mut alice, registration("contact", "", "", true)).await,
        "MISSING_FIELDS",
        "registration.subject.id",
    );
    assert_invalid(
        register_subject(&mut alice, registration("Contact!", "k-1", "", true)).await,
        "INVALID_FIELD",
        "registration.subject.type",
    );
    assert_invalid(
        register_subject(&mut alice, registration("contact", "k-1", "al ice", true)).await,
        "INVALID_FIELD",
        "registration.owner_id",
    );

    let no_subject = alice
        .get_subject(pb::GetSubjectRequest { subject: None })
        .await
        .map(|r| r.into_inner());
    assert_invalid(no_subject, "MISSING_FIELDS", "subject");
    assert_invalid(
        get_subject(&mut alice, "", "k-1").await,
        "MISSING_FIELDS",
        "subject.type",
    );

    let registered: i64 = sqlx::query_scalar("select count(*) from subjects")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(registered, 0, "nothing was registered");
}
