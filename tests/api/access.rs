//! Who may read and change which note: the owner, another member of the
//! tenant, and a member of another tenant, for PRIVATE, TEAM and draft
//! notes under both edit policies.

use notesd::proto::notes::v1::{self as pb, EditPolicy, Visibility};

use crate::helpers::*;

/// Alice owns the notes; Bob is in her tenant; Eve is in another tenant
/// and, to make the point, is called `alice` there too.
struct Cast {
    alice: Client,
    bob: Client,
    eve: Client,
}

async fn cast(app: &TestApp) -> Cast {
    Cast {
        alice: app.member("acme", "alice").await,
        bob: app.member("acme", "bob").await,
        eve: app.member("globex", "alice").await,
    }
}

fn retitle(note: &pb::Note, title: &str) -> pb::Note {
    pb::Note {
        title: title.to_owned(),
        ..patch(&note.id)
    }
}

/// Asserts that `who` gets NOT_FOUND from every RPC on `note`, and does
/// not see it in ListNotes, exactly as if it did not exist.
async fn assert_invisible(who: &mut Client, note: &pb::Note) {
    assert_fails(get(who, &note.id).await, NOT_FOUND);
    assert_fails(update(who, retitle(note, "x"), &["title"]).await, NOT_FOUND);
    assert_fails(delete(who, &note.id, "").await, NOT_FOUND);
    assert_fails(undelete(who, &note.id, "").await, NOT_FOUND);
    assert_fails(revisions(who, &note.id, 0, "").await, NOT_FOUND);
    let listed = listed_ids(
        who,
        pb::ListNotesRequest {
            show_deleted: true,
            ..Default::default()
        },
    )
    .await;
    assert!(
        !listed.contains(&note.id),
        "{listed:?} holds an invisible note"
    );
}

#[tokio::test]
async fn private_note_is_visible_and_editable_by_its_owner_only() {
    let app = spawn_app().await;
    let Cast {
        mut alice,
        mut bob,
        mut eve,
    } = cast(&app).await;
    let note = add(
        &mut alice,
        shared_note("secret", Visibility::Private, EditPolicy::OwnerOnly),
    )
    .await;

    assert_eq!(get(&mut alice, &note.id).await.unwrap(), note);
    assert_eq!(
        listed_ids(&mut alice, Default::default()).await,
        vec![note.id.clone()]
    );
    assert_invisible(&mut bob, &note).await;
    assert_invisible(&mut eve, &note).await;

    let updated = update(&mut alice, retitle(&note, "mine"), &["title"])
        .await
        .unwrap();
    assert_eq!(updated.title, "mine");
    assert_eq!(
        get(&mut alice, &note.id).await.unwrap(),
        updated,
        "nobody else changed it"
    );
}

#[tokio::test]
async fn private_note_with_team_edit_policy_is_still_invisible_to_others() {
    let app = spawn_app().await;
    let Cast {
        mut alice,
        mut bob,
        mut eve,
    } = cast(&app).await;
    let note = add(
        &mut alice,
        shared_note("secret", Visibility::Private, EditPolicy::Team),
    )
    .await;
    assert_invisible(&mut bob, &note).await;
    assert_invisible(&mut eve, &note).await;
    assert_eq!(get(&mut alice, &note.id).await.unwrap(), note);
}

#[tokio::test]
async fn team_owner_only_note_is_readable_but_not_changeable_by_others() {
    let app = spawn_app().await;
    let Cast {
        mut alice,
        mut bob,
        mut eve,
    } = cast(&app).await;
    let note = add(
        &mut alice,
        shared_note("shared", Visibility::Team, EditPolicy::OwnerOnly),
    )
    .await;

    assert_eq!(get(&mut bob, &note.id).await.unwrap(), note);
    assert_eq!(
        listed_ids(&mut bob, Default::default()).await,
        vec![note.id.clone()]
    );
    assert_eq!(
        revisions(&mut bob, &note.id, 0, "")
            .await
            .unwrap()
            .revisions
            .len(),
        1
    );

    assert_fails(
        update(&mut bob, retitle(&note, "bob's"), &["title"]).await,
        NOT_OWNER,
    );
    assert_fails(delete(&mut bob, &note.id, "").await, NOT_OWNER);
    assert_eq!(
        get(&mut alice, &note.id).await.unwrap(),
        note,
        "bob changed nothing"
    );

    let deleted = delete(&mut alice, &note.id, "").await.unwrap();
    assert_fails(undelete(&mut bob, &note.id, "").await, NOT_OWNER);
    assert_eq!(get(&mut alice, &note.id).await.unwrap(), deleted);

    assert_invisible(&mut eve, &note).await;
}

#[tokio::test]
async fn team_editable_note_can_be_changed_by_other_members() {
    let app = spawn_app().await;
    let Cast {
        mut alice,
        mut bob,
        mut eve,
    } = cast(&app).await;
    let note = add(
        &mut alice,
        shared_note("shared", Visibility::Team, EditPolicy::Team),
    )
    .await;

    let updated = update(
        &mut bob,
        pb::Note {
            title: "bob's".into(),
            body: text_body("edited by bob"),
            ..patch(&note.id)
        },
        &["title", "body"],
    )
    .await
    .expect("a TEAM-editable note is editable by the team");
    assert_eq!(updated.title, "bob's");
    assert_eq!(body_text(&updated), "edited by bob");
    assert_eq!(updated.updater_id, "bob");
    assert_eq!(
        updated.owner_id, "alice",
        "editing does not change the owner"
    );
    assert_eq!(updated.creator_id, "alice");

    let deleted = delete(&mut bob, &note.id, "")
        .await
        .expect("bob may delete it");
    assert!(deleted.delete_time.is_some());
    assert_eq!(deleted.updater_id, "bob");
    let restored = undelete(&mut bob, &note.id, "")
        .await
        .expect("bob may undelete it");
    assert_eq!(restored.delete_time, None);

    assert_invisible(&mut eve, &note).await;
}

#[tokio::test]
async fn draft_is_visible_to_its_owner_only_until_published() {
    let app = spawn_app().await;
    let Cast {
        mut alice,
        mut bob,
        mut eve,
    } = cast(&app).await;
    let draft = add(
        &mut alice,
        pb::Note {
            draft: true,
            ..shared_note("draft", Visibility::Team, EditPolicy::Team)
        },
    )
    .await;
    assert!(draft.draft);

    assert_eq!(get(&mut alice, &draft.id).await.unwrap(), draft);
    assert_invisible(&mut bob, &draft).await;
    assert_invisible(&mut eve, &draft).await;

    let published = update(
        &mut alice,
        pb::Note {
            draft: false,
            ..patch(&draft.id)
        },
        &["draft"],
    )
    .await
    .expect("the owner publishes the draft");
    assert!(!published.draft);
    assert_eq!(get(&mut bob, &draft.id).await.unwrap(), published);
    assert_eq!(
        listed_ids(&mut bob, Default::default()).await,
        vec![draft.id.clone()]
    );
    assert_invisible(&mut eve, &published).await;
}

#[tokio::test]
async fn other_tenant_never_sees_notes_even_with_the_same_member_id() {
    let app = spawn_app().await;
    let Cast {
        mut alice, mut eve, ..
    } = cast(&app).await;
    let note = add(
        &mut alice,
        shared_note("acme only", Visibility::Team, EditPolicy::Team),
    )
    .await;
    let theirs = add(
        &mut eve,
        shared_note("globex only", Visibility::Team, EditPolicy::Team),
    )
    .await;

    assert_invisible(&mut eve, &note).await;
    assert_invisible(&mut alice, &theirs).await;
    assert_eq!(
        listed_ids(&mut alice, Default::default()).await,
        vec![note.id.clone()]
    );
    assert_eq!(
        listed_ids(&mut eve, Default::default()).await,
        vec![theirs.id.clone()]
    );
}

#[tokio::test]
async fn team_editor_may_not_change_owner_fields() {
    let app = spawn_app().await;
    let Cast {
        mut alice, mut bob, ..
    } = cast(&app).await;
    let note = add(
        &mut alice,
        shared_note("shared", Visibility::Team, EditPolicy::Team),
    )
    .await;

    let attempts: Vec<(&str, pb::Note)> = vec![
        (
            "owner_id",
            pb::Note {
                owner_id: "bob".into(),
                ..patch(&note.id)
            },
        ),
        (
            "visibility",
            pb::Note {
                visibility: Visibility::Private as i32,
                ..patch(&note.id)
            },
        ),
        (
            "edit_policy",
            pb::Note {
                edit_policy: EditPolicy::OwnerOnly as i32,
                ..patch(&note.id)
            },
        ),
        (
            "draft",
            pb::Note {
                draft: true,
                ..patch(&note.id)
            },
        ),
    ];
    for (path, change) in attempts {
        assert_fails(update(&mut bob, change.clone(), &[path]).await, NOT_OWNER);
        // Also with the mask left empty, the field being set.
        assert_fails(update(&mut bob, change, &[]).await, NOT_OWNER);
    }
    assert_eq!(
        get(&mut alice, &note.id).await.unwrap(),
        note,
        "nothing changed"
    );
}

#[tokio::test]
async fn team_editor_may_resend_owner_fields_unchanged() {
    let app = spawn_app().await;
    let Cast {
        mut alice, mut bob, ..
    } = cast(&app).await;
    let note = add(
        &mut alice,
        shared_note("shared", Visibility::Team, EditPolicy::Team),
    )
    .await;

    // Read-modify-write of the whole note: the owner fields are sent as
    // they are.
    let updated = update(
        &mut bob,
        pb::Note {
            title: "bob's".into(),
            ..note.clone()
        },
        &["*"],
    )
    .await
    .expect("owner fields at their current values are no change");
    assert_eq!(updated.title, "bob's");
    assert_eq!(updated.owner_id, "alice");
}

#[tokio::test]
async fn owner_may_change_owner_fields() {
    let app = spawn_app().await;
    let Cast {
        mut alice, mut bob, ..
    } = cast(&app).await;
    let note = add(
        &mut alice,
        shared_note("shared", Visibility::Team, EditPolicy::OwnerOnly),
    )
    .await;

    let updated = update(
        &mut alice,
        pb::Note {
            visibility: Visibility::Private as i32,
            edit_policy: EditPolicy::Team as i32,
            ..patch(&note.id)
        },
        &["visibility", "edit_policy"],
    )
    .await
    .unwrap();
    assert_eq!(updated.visibility, Visibility::Private as i32);
    assert_eq!(updated.edit_policy, EditPolicy::Team as i32);
    assert_fails(get(&mut bob, &note.id).await, NOT_FOUND);
}

#[tokio::test]
async fn owner_may_hand_the_note_over_and_then_loses_its_rights() {
    let app = spawn_app().await;
    let Cast {
        mut alice, mut bob, ..
    } = cast(&app).await;
    let note = add(
        &mut alice,
        shared_note("shared", Visibility::Team, EditPolicy::OwnerOnly),
    )
    .await;

    let handed = update(
        &mut alice,
        pb::Note {
            owner_id: "bob".into(),
            ..patch(&note.id)
        },
        &["owner_id"],
    )
    .await
    .expect("the owner hands the note over");
    assert_eq!(handed.owner_id, "bob");
    assert_eq!(handed.creator_id, "alice");

    assert_fails(
        update(&mut alice, retitle(&note, "still mine?"), &["title"]).await,
        NOT_OWNER,
    );
    let retitled = update(&mut bob, retitle(&note, "bob's now"), &["title"])
        .await
        .unwrap();
    assert_eq!(retitled.title, "bob's now");
    let owned_by_bob = listed_ids(
        &mut bob,
        pb::ListNotesRequest {
            owner_id: "bob".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(owned_by_bob, vec![note.id.clone()]);
}

#[tokio::test]
async fn add_note_for_someone_else_is_permission_denied() {
    let app = spawn_app().await;
    let Cast { mut alice, .. } = cast(&app).await;
    let note = pb::Note {
        owner_id: "bob".into(),
        ..text_note("customer", "c-1", "text")
    };
    assert_fails(try_add(&mut alice, note).await, NOT_OWNER);
    assert!(
        listed_ids(&mut alice, Default::default()).await.is_empty(),
        "nothing was created"
    );

    let own = add(
        &mut alice,
        pb::Note {
            owner_id: "alice".into(),
            ..text_note("customer", "c-1", "text")
        },
    )
    .await;
    assert_eq!(own.owner_id, "alice", "naming oneself is allowed");
}

#[tokio::test]
async fn listing_holds_only_what_the_caller_may_read() {
    let app = spawn_app().await;
    let Cast {
        mut alice,
        mut bob,
        mut eve,
    } = cast(&app).await;
    let private = add(
        &mut alice,
        shared_note("private", Visibility::Private, EditPolicy::OwnerOnly),
    )
    .await;
    let team = add(
        &mut alice,
        shared_note("team", Visibility::Team, EditPolicy::OwnerOnly),
    )
    .await;
    let draft = add(
        &mut alice,
        pb::Note {
            draft: true,
            ..shared_note("draft", Visibility::Team, EditPolicy::Team)
        },
    )
    .await;
    let bobs_private = add(
        &mut bob,
        shared_note("bob private", Visibility::Private, EditPolicy::OwnerOnly),
    )
    .await;
    add(
        &mut eve,
        shared_note("other tenant", Visibility::Team, EditPolicy::Team),
    )
    .await;

    let mut seen_by_alice = listed_ids(&mut alice, Default::default()).await;
    seen_by_alice.sort();
    let mut expected = vec![private.id.clone(), team.id.clone(), draft.id.clone()];
    expected.sort();
    assert_eq!(seen_by_alice, expected);

    let mut seen_by_bob = listed_ids(&mut bob, Default::default()).await;
    seen_by_bob.sort();
    let mut expected = vec![team.id.clone(), bobs_private.id.clone()];
    expected.sort();
    assert_eq!(seen_by_bob, expected);
}
