//! Admin keys: every note of their tenant, recorded as their member; no
//! note of another tenant.

use notesd::proto::notes::v1 as pb;

use crate::helpers::*;

/// Bob's notes that nobody else in acme may see: a private one and a
/// (team-visible) draft.
struct Hidden {
    private: pb::Note,
    draft: pb::Note,
}

async fn bobs_hidden_notes(app: &TestApp) -> Hidden {
    let mut bob = app.member("acme", "bob").await;
    let private = add(
        &mut bob,
        pb::Note {
            visibility: pb::Visibility::Private as i32,
            ..text_note("customer", "c-1", "bob's private note")
        },
    )
    .await;
    let draft = add(
        &mut bob,
        pb::Note {
            visibility: pb::Visibility::Team as i32,
            draft: true,
            ..text_note("customer", "c-1", "bob's draft")
        },
    )
    .await;
    Hidden { private, draft }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_key_reads_others_private_notes_and_drafts() {
    let app = spawn_app().await;
    let hidden = bobs_hidden_notes(&app).await;
    let mut carol = app.member("acme", "carol").await;
    let carols = add(&mut carol, text_note("customer", "c-2", "carol's")).await;
    let mut admin = app.client(&app.admin_key("acme", "root").await).await;

    for note in [&hidden.private, &hidden.draft] {
        assert_eq!(&get(&mut admin, &note.id).await.unwrap(), note);
        let history = revisions(&mut admin, &note.id, 0, "").await.unwrap();
        assert_eq!(history.revisions.len(), 1);
        assert_eq!(history.revisions[0].note.as_ref(), Some(note));
    }

    assert_eq!(
        sorted(listed_ids(&mut admin, Default::default()).await),
        sorted(vec![
            hidden.private.id.clone(),
            hidden.draft.id.clone(),
            carols.id.clone()
        ]),
        "the admin lists every note of the tenant"
    );
    assert_eq!(
        sorted(
            listed_ids(
                &mut admin,
                pb::ListNotesRequest {
                    owner_id: "bob".to_owned(),
                    ..Default::default()
                },
            )
            .await
        ),
        sorted(vec![hidden.private.id, hidden.draft.id]),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_key_updates_deletes_and_undeletes_others_notes_as_its_member() {
    let app = spawn_app().await;
    let hidden = bobs_hidden_notes(&app).await;
    let mut admin = app.client(&app.admin_key("acme", "root").await).await;
    let id = hidden.private.id.clone();

    let updated = update(
        &mut admin,
        pb::Note {
            title: "reviewed".to_owned(),
            etag: hidden.private.etag.clone(),
            ..patch(&id)
        },
        &["title"],
    )
    .await
    .expect("the admin updates bob's private note");
    assert_eq!(updated.title, "reviewed");
    assert_eq!(updated.updater_id, "root");
    assert_eq!(updated.owner_id, "bob", "the owner stays bob");
    assert_eq!(updated.creator_id, "bob");

    let deleted = delete(&mut admin, &id, &updated.etag)
        .await
        .expect("the admin deletes it");
    assert!(deleted.delete_time.is_some());
    assert_eq!(deleted.updater_id, "root");

    let restored = undelete(&mut admin, &id, &deleted.etag)
        .await
        .expect("the admin restores it");
    assert!(restored.delete_time.is_none());
    assert_eq!(restored.updater_id, "root");

    // The history records the admin's member as the actor of each change.
    let history = revisions(&mut admin, &id, 0, "").await.unwrap().revisions;
    let actors: Vec<&str> = history.iter().map(|r| r.actor_id.as_str()).collect();
    assert_eq!(actors, ["root", "root", "root", "bob"]);

    // And bob sees what the admin did.
    let mut bob = app.member("acme", "bob").await;
    assert_eq!(get(&mut bob, &id).await.unwrap(), restored);

    // The draft too.
    let published = update(
        &mut admin,
        pb::Note {
            body: text_body("edited by support"),
            ..patch(&hidden.draft.id)
        },
        &["body"],
    )
    .await
    .expect("the admin edits bob's draft");
    assert_eq!(published.updater_id, "root");
    assert!(published.draft, "still a draft");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_key_changes_owner_only_fields() {
    let app = spawn_app().await;
    let hidden = bobs_hidden_notes(&app).await;
    let mut admin = app.client(&app.admin_key("acme", "root").await).await;

    let changed = update(
        &mut admin,
        pb::Note {
            visibility: pb::Visibility::Team as i32,
            edit_policy: pb::EditPolicy::Team as i32,
            owner_id: "carol".to_owned(),
            ..patch(&hidden.private.id)
        },
        &["visibility", "edit_policy", "owner_id"],
    )
    .await
    .expect("the admin changes owner-only fields");
    assert_eq!(changed.visibility, pb::Visibility::Team as i32);
    assert_eq!(changed.edit_policy, pb::EditPolicy::Team as i32);
    assert_eq!(changed.owner_id, "carol");
    assert_eq!(changed.updater_id, "root");

    let published = update(
        &mut admin,
        pb::Note {
            draft: false,
            ..patch(&hidden.draft.id)
        },
        &["draft"],
    )
    .await
    .expect("the admin publishes bob's draft");
    assert!(!published.draft);

    // Both are now visible to another member.
    let mut dave = app.member("acme", "dave").await;
    assert_eq!(get(&mut dave, &hidden.private.id).await.unwrap(), changed);
    assert_eq!(get(&mut dave, &hidden.draft.id).await.unwrap(), published);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_key_creates_a_note_for_another_member() {
    let app = spawn_app().await;
    let mut admin = app.client(&app.admin_key("acme", "root").await).await;

    let imported = add(
        &mut admin,
        pb::Note {
            owner_id: "bob".to_owned(),
            visibility: pb::Visibility::Private as i32,
            ..text_note("customer", "c-1", "imported for bob")
        },
    )
    .await;
    assert_eq!(imported.owner_id, "bob");
    assert_eq!(imported.creator_id, "root");
    assert_eq!(imported.updater_id, "root");

    // It is bob's: he reads and changes it; carol does not see it.
    let mut bob = app.member("acme", "bob").await;
    assert_eq!(get(&mut bob, &imported.id).await.unwrap(), imported);
    update(
        &mut bob,
        pb::Note {
            title: "mine".to_owned(),
            ..patch(&imported.id)
        },
        &["title"],
    )
    .await
    .expect("the owner changes it");
    let mut carol = app.member("acme", "carol").await;
    assert_fails(get(&mut carol, &imported.id).await, NOT_FOUND);

    // Without owner_id the admin's own member owns it.
    let own = add(&mut admin, text_note("customer", "c-1", "the admin's own")).await;
    assert_eq!(own.owner_id, "root");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_key_of_another_tenant_gets_not_found() {
    let app = spawn_app().await;
    let hidden = bobs_hidden_notes(&app).await;
    let mut bob = app.member("acme", "bob").await;
    let team = add(&mut bob, text_note("customer", "c-1", "bob's team note")).await;
    // Recorded as a member id that also exists in acme.
    let mut globex_admin = app.client(&app.admin_key("globex", "bob").await).await;

    for note in [&hidden.private, &hidden.draft, &team] {
        assert_fails(get(&mut globex_admin, &note.id).await, NOT_FOUND);
        assert_fails(
            update(
                &mut globex_admin,
                pb::Note {
                    title: "x".to_owned(),
                    ..patch(&note.id)
                },
                &["title"],
            )
            .await,
            NOT_FOUND,
        );
        assert_fails(delete(&mut globex_admin, &note.id, "").await, NOT_FOUND);
        assert_fails(undelete(&mut globex_admin, &note.id, "").await, NOT_FOUND);
        assert_fails(
            revisions(&mut globex_admin, &note.id, 0, "").await,
            NOT_FOUND,
        );
    }
    assert!(
        listed_ids(&mut globex_admin, Default::default())
            .await
            .is_empty()
    );
    // Nothing changed.
    assert_eq!(get(&mut bob, &team.id).await.unwrap(), team);
    assert_eq!(
        get(&mut bob, &hidden.private.id).await.unwrap(),
        hidden.private
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn member_key_of_the_same_tenant_still_cannot() {
    let app = spawn_app().await;
    let hidden = bobs_hidden_notes(&app).await;
    let mut carol = app.member("acme", "carol").await;

    for note in [&hidden.private, &hidden.draft] {
        assert_fails(get(&mut carol, &note.id).await, NOT_FOUND);
        assert_fails(
            update(
                &mut carol,
                pb::Note {
                    title: "x".to_owned(),
                    ..patch(&note.id)
                },
                &["title"],
            )
            .await,
            NOT_FOUND,
        );
        assert_fails(delete(&mut carol, &note.id, "").await, NOT_FOUND);
        assert_fails(revisions(&mut carol, &note.id, 0, "").await, NOT_FOUND);
    }
    assert!(listed_ids(&mut carol, Default::default()).await.is_empty());
    assert_fails(
        try_add(
            &mut carol,
            pb::Note {
                owner_id: "bob".to_owned(),
                ..text_note("customer", "c-1", "for bob")
            },
        )
        .await,
        NOT_OWNER,
    );
    // A service key acting as the admin's member is no admin.
    app.admin_key("acme", "root").await;
    let mut service_as_root = app
        .client_with(vec![
            ("x-api-key", app.service_key("acme").await),
            ("x-actor-id", "root".to_owned()),
        ])
        .await;
    assert_fails(
        get(&mut service_as_root, &hidden.private.id).await,
        NOT_FOUND,
    );
}
