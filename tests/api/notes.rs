//! The life of one note: create, read, update (masks, etags, times), soft
//! delete and undelete, and the validation of what is sent.

use notesd::proto::notes::v1 as pb;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn add_note_applies_defaults_and_returns_the_stored_note() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;

    let note = add(
        &mut alice,
        text_note("customer", "c-42", "called about the invoice"),
    )
    .await;

    assert!(
        uuid::Uuid::try_parse(&note.id).is_ok(),
        "id {:?} is a UUID",
        note.id
    );
    assert_eq!(note.subject, subject("customer", "c-42"));
    assert_eq!(body_text(&note), "called about the invoice");
    assert_eq!(note.body.as_ref().unwrap().html, "");
    assert_eq!(note.owner_id, "alice");
    assert_eq!(note.creator_id, "alice");
    assert_eq!(note.updater_id, "alice");
    assert_eq!(note.visibility, pb::Visibility::Team as i32);
    assert_eq!(note.edit_policy, pb::EditPolicy::OwnerOnly as i32);
    assert_eq!(note.revision, 1);
    assert!(!note.etag.is_empty());
    assert!(note.create_time.is_some());
    assert_eq!(note.update_time, note.create_time);
    assert_eq!(
        note.occur_time, note.create_time,
        "occur_time defaults to create_time"
    );
    assert_eq!(note.edit_time, None);
    assert_eq!(note.delete_time, None);
    assert_eq!(note.pin_time, None);
    assert!(!note.pinned);
    assert!(!note.draft);

    let fetched = get(&mut alice, &note.id).await.expect("GetNote succeeds");
    assert_eq!(fetched, note);
}

#[tokio::test]
async fn add_note_keeps_every_field_it_is_given() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let action: prost_types::Struct = json_struct(serde_json::json!({
        "type": "call", "outcome": "reached", "attempts": 2.0, "tags": ["a", "b"], "done": true
    }));
    let sent = pb::Note {
        subject: subject("conversation", "conv-1"),
        related_subjects: vec![
            pb::Subject {
                r#type: "customer".into(),
                id: "c-1".into(),
            },
            pb::Subject {
                r#type: "lead".into(),
                id: "l-9".into(),
            },
        ],
        owner_id: "alice".into(),
        visibility: pb::Visibility::Private as i32,
        edit_policy: pb::EditPolicy::Team as i32,
        body: text_body("hello"),
        title: "First call".into(),
        mentions: vec!["bob".into(), "everyone".into()],
        actions: vec![action.clone()],
        attachments: vec![pb::Attachment {
            url: "https://files.example.com/a.gif".into(),
            filename: "a.gif".into(),
            content_type: "image/gif".into(),
            size_bytes: 1234,
            thumbnail_url: "https://files.example.com/a-thumb.gif".into(),
        }],
        pinned: true,
        occur_time: timestamp(at_minute(30)),
        source: Some(pb::Source {
            system: "close".into(),
            id: "acti_1".into(),
        }),
        client_reference: "ref-7".into(),
        ..Default::default()
    };

    let note = add(&mut alice, sent.clone()).await;

    assert_eq!(note.related_subjects, sent.related_subjects);
    assert_eq!(note.visibility, pb::Visibility::Private as i32);
    assert_eq!(note.edit_policy, pb::EditPolicy::Team as i32);
    assert_eq!(note.title, "First call");
    assert_eq!(note.mentions, sent.mentions);
    assert_eq!(note.actions, vec![action]);
    assert_eq!(note.attachments, sent.attachments);
    assert!(note.pinned);
    assert!(
        note.pin_time.is_some(),
        "a note pinned on create has a pin_time"
    );
    assert_eq!(
        note.occur_time,
        timestamp(at_minute(30)),
        "occur_time may be backdated"
    );
    assert_eq!(note.source, sent.source);
    assert_eq!(note.client_reference, "ref-7");
    assert_eq!(get(&mut alice, &note.id).await.unwrap(), note);
}

#[tokio::test]
async fn add_note_ignores_output_only_fields() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let forged_id = uuid::Uuid::now_v7().to_string();
    let note = add(
        &mut alice,
        pb::Note {
            id: forged_id.clone(),
            creator_id: "mallory".into(),
            updater_id: "mallory".into(),
            revision: 42,
            etag: "forged".into(),
            delete_time: timestamp(at_minute(1)),
            edit_time: timestamp(at_minute(1)),
            create_time: timestamp(at_minute(1)),
            ..text_note("customer", "c-1", "text")
        },
    )
    .await;
    assert_ne!(note.id, forged_id);
    assert_eq!(note.creator_id, "alice");
    assert_eq!(note.updater_id, "alice");
    assert_eq!(note.revision, 1);
    assert_ne!(note.etag, "forged");
    assert_eq!(note.delete_time, None);
    assert_eq!(note.edit_time, None);
    assert_ne!(note.create_time, timestamp(at_minute(1)));
}

#[tokio::test]
async fn add_note_without_subject_is_missing_fields() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = pb::Note {
        subject: None,
        ..text_note("customer", "c-1", "text")
    };
    assert_invalid(
        try_add(&mut alice, note).await,
        "MISSING_FIELDS",
        "note.subject",
    );
}

#[tokio::test]
async fn add_note_with_malformed_subject_type_names_the_field() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    assert_invalid(
        try_add(&mut alice, text_note("Customer!", "c-1", "text")).await,
        "INVALID_FIELD",
        "note.subject.type",
    );
    assert_invalid(
        try_add(&mut alice, text_note("", "c-1", "text")).await,
        "MISSING_FIELDS",
        "note.subject.type",
    );
    assert_invalid(
        try_add(&mut alice, text_note("customer", "", "text")).await,
        "MISSING_FIELDS",
        "note.subject.id",
    );
}

#[tokio::test]
async fn add_note_with_non_https_attachment_is_invalid() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = pb::Note {
        attachments: vec![pb::Attachment {
            url: "http://files.example.com/a.gif".into(),
            ..Default::default()
        }],
        ..text_note("customer", "c-1", "text")
    };
    let status = try_add(&mut alice, note).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "INVALID_FIELD");
    assert!(
        violated_fields(&status)
            .iter()
            .any(|f| f.starts_with("note.attachments")),
        "{status:?}"
    );
}

#[tokio::test]
async fn add_note_with_title_over_1024_characters_is_too_large() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let ok = pb::Note {
        title: "é".repeat(1024),
        ..text_note("customer", "c-1", "text")
    };
    assert_eq!(add(&mut alice, ok).await.title, "é".repeat(1024));
    let too_long = pb::Note {
        title: "é".repeat(1025),
        ..text_note("customer", "c-1", "text")
    };
    assert_invalid(
        try_add(&mut alice, too_long).await,
        "FIELD_TOO_LARGE",
        "note.title",
    );
}

#[tokio::test]
async fn get_note_with_malformed_id_is_invalid_argument() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    assert_invalid(get(&mut alice, "abc").await, "INVALID_FIELD", "id");
}

#[tokio::test]
async fn get_note_with_unknown_id_is_not_found() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    add(&mut alice, text_note("customer", "c-1", "text")).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_fails(get(&mut alice, &unknown).await, NOT_FOUND);
}

#[tokio::test]
async fn malformed_ids_are_refused_by_every_rpc() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    assert_invalid(
        update(
            &mut alice,
            pb::Note {
                title: "t".into(),
                ..patch("abc")
            },
            &["title"],
        )
        .await,
        "INVALID_FIELD",
        "note.id",
    );
    assert_invalid(delete(&mut alice, "abc", "").await, "INVALID_FIELD", "id");
    assert_invalid(undelete(&mut alice, "abc", "").await, "INVALID_FIELD", "id");
    assert_invalid(
        revisions(&mut alice, "abc", 0, "").await,
        "INVALID_FIELD",
        "note_id",
    );
}

#[tokio::test]
async fn unknown_ids_are_not_found_for_every_rpc() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_fails(
        update(
            &mut alice,
            pb::Note {
                title: "t".into(),
                ..patch(&unknown)
            },
            &["title"],
        )
        .await,
        NOT_FOUND,
    );
    assert_fails(delete(&mut alice, &unknown, "").await, NOT_FOUND);
    assert_fails(undelete(&mut alice, &unknown, "").await, NOT_FOUND);
    assert_fails(revisions(&mut alice, &unknown, 0, "").await, NOT_FOUND);
}

// --- UpdateNote -------------------------------------------------------------

#[tokio::test]
async fn update_changes_only_the_masked_fields() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(
        &mut alice,
        pb::Note {
            title: "old title".into(),
            ..text_note("customer", "c-1", "old body")
        },
    )
    .await;

    let updated = update(
        &mut alice,
        pb::Note {
            title: "new title".into(),
            body: text_body("new body"),
            client_reference: "new-ref".into(),
            ..patch(&note.id)
        },
        &["title"],
    )
    .await
    .expect("UpdateNote succeeds");

    assert_eq!(updated.title, "new title");
    assert_eq!(body_text(&updated), "old body", "body was not in the mask");
    assert_eq!(
        updated.client_reference, "",
        "client_reference was not in the mask"
    );
    assert_eq!(updated.subject, note.subject);
    assert_eq!(get(&mut alice, &note.id).await.unwrap(), updated);
}

#[tokio::test]
async fn update_with_masked_field_left_empty_clears_it() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(
        &mut alice,
        pb::Note {
            title: "a title".into(),
            mentions: vec!["bob".into()],
            ..text_note("customer", "c-1", "body")
        },
    )
    .await;
    let updated = update(&mut alice, patch(&note.id), &["title", "mentions"])
        .await
        .expect("UpdateNote succeeds");
    assert_eq!(updated.title, "");
    assert!(updated.mentions.is_empty());
    assert_eq!(body_text(&updated), "body");
}

#[tokio::test]
async fn update_with_empty_mask_changes_the_fields_set_to_non_default_values() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(
        &mut alice,
        pb::Note {
            title: "old title".into(),
            mentions: vec!["bob".into()],
            client_reference: "ref".into(),
            ..text_note("customer", "c-1", "old body")
        },
    )
    .await;

    let updated = update(
        &mut alice,
        pb::Note {
            title: "new title".into(),
            pinned: true,
            ..patch(&note.id)
        },
        &[],
    )
    .await
    .expect("UpdateNote succeeds");

    assert_eq!(updated.title, "new title");
    assert!(updated.pinned);
    assert_eq!(body_text(&updated), "old body");
    assert_eq!(updated.mentions, vec!["bob".to_owned()]);
    assert_eq!(updated.client_reference, "ref");
    assert_eq!(updated.subject, note.subject);
    assert_eq!(updated.visibility, note.visibility);
    assert_eq!(updated.edit_policy, note.edit_policy);
}

#[tokio::test]
async fn update_with_star_mask_replaces_every_field() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(
        &mut alice,
        pb::Note {
            title: "old title".into(),
            mentions: vec!["bob".into()],
            client_reference: "ref".into(),
            ..text_note("customer", "c-1", "old body")
        },
    )
    .await;

    let replacement = pb::Note {
        title: String::new(),
        mentions: vec![],
        client_reference: String::new(),
        body: text_body("new body"),
        subject: subject("lead", "l-1"),
        ..note.clone()
    };
    let updated = update(&mut alice, replacement, &["*"])
        .await
        .expect("UpdateNote succeeds");

    assert_eq!(updated.title, "");
    assert!(updated.mentions.is_empty());
    assert_eq!(updated.client_reference, "");
    assert_eq!(body_text(&updated), "new body");
    assert_eq!(updated.subject, subject("lead", "l-1"));
    assert_eq!(updated.owner_id, "alice");
}

#[tokio::test]
async fn update_with_unknown_mask_path_is_invalid_argument() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;
    for path in ["no_such_field", "creator_id", "revision"] {
        assert_invalid(
            update(
                &mut alice,
                pb::Note {
                    title: "t".into(),
                    ..patch(&note.id)
                },
                &["title", path],
            )
            .await,
            "INVALID_FIELD",
            "update_mask",
        );
    }
    assert_eq!(
        get(&mut alice, &note.id).await.unwrap(),
        note,
        "nothing changed"
    );
}

#[tokio::test]
async fn update_with_invalid_value_names_the_field() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;
    assert_invalid(
        update(
            &mut alice,
            pb::Note {
                subject: subject("BAD TYPE", "x"),
                ..patch(&note.id)
            },
            &["subject"],
        )
        .await,
        "INVALID_FIELD",
        "note.subject.type",
    );
    assert_invalid(
        update(&mut alice, patch(&note.id), &["body"]).await,
        "MISSING_FIELDS",
        "note.body",
    );
}

#[tokio::test]
async fn content_change_sets_edit_time_and_bumps_etag_and_revision() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;

    let updated = update(
        &mut alice,
        pb::Note {
            body: text_body("edited"),
            ..patch(&note.id)
        },
        &["body"],
    )
    .await
    .unwrap();

    assert!(updated.edit_time.is_some(), "a body change sets edit_time");
    assert_eq!(updated.edit_time, updated.update_time);
    assert_ne!(updated.update_time, note.update_time);
    assert_eq!(updated.revision, 2);
    assert_ne!(updated.etag, note.etag);
    assert_eq!(updated.create_time, note.create_time);
}

#[tokio::test]
async fn every_content_field_sets_edit_time() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let changes: Vec<(&str, pb::Note)> = vec![
        (
            "body",
            pb::Note {
                body: text_body("edited"),
                ..Default::default()
            },
        ),
        (
            "title",
            pb::Note {
                title: "a title".into(),
                ..Default::default()
            },
        ),
        (
            "mentions",
            pb::Note {
                mentions: vec!["bob".into()],
                ..Default::default()
            },
        ),
        (
            "actions",
            pb::Note {
                actions: vec![json_struct(serde_json::json!({"k": "v"}))],
                ..Default::default()
            },
        ),
        (
            "attachments",
            pb::Note {
                attachments: vec![pb::Attachment {
                    url: "https://x.example.com/f".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ),
    ];
    for (path, change) in changes {
        let note = add(&mut alice, text_note("customer", "c-1", "body")).await;
        let updated = update(
            &mut alice,
            pb::Note {
                id: note.id.clone(),
                ..change
            },
            &[path],
        )
        .await
        .unwrap();
        assert!(
            updated.edit_time.is_some(),
            "changing {path} sets edit_time"
        );
        assert_eq!(updated.revision, 2, "changing {path} bumps the revision");
    }
}

#[tokio::test]
async fn non_content_change_leaves_edit_time_unset() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;
    let updated = update(
        &mut alice,
        pb::Note {
            client_reference: "ref".into(),
            occur_time: timestamp(at_minute(5)),
            subject: subject("lead", "l-1"),
            ..patch(&note.id)
        },
        &["client_reference", "occur_time", "subject"],
    )
    .await
    .unwrap();
    assert_eq!(updated.client_reference, "ref");
    assert_eq!(updated.occur_time, timestamp(at_minute(5)));
    assert_eq!(updated.subject, subject("lead", "l-1"));
    assert_eq!(updated.edit_time, None);
    assert_eq!(updated.revision, 2);
    assert_ne!(updated.etag, note.etag);
    assert_ne!(updated.update_time, note.update_time);
}

#[tokio::test]
async fn pinning_sets_pin_time_and_unpinning_clears_it() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;

    let pinned = update(
        &mut alice,
        pb::Note {
            pinned: true,
            ..patch(&note.id)
        },
        &["pinned"],
    )
    .await
    .unwrap();
    assert!(pinned.pinned);
    assert!(pinned.pin_time.is_some());
    assert_eq!(pinned.pin_time, pinned.update_time);
    assert_eq!(pinned.edit_time, None, "pinning is not a content edit");
    assert_eq!(pinned.revision, 2);
    assert_ne!(pinned.etag, note.etag);

    let unpinned = update(
        &mut alice,
        pb::Note {
            pinned: false,
            ..patch(&note.id)
        },
        &["pinned"],
    )
    .await
    .unwrap();
    assert!(!unpinned.pinned);
    assert_eq!(unpinned.pin_time, None);
    assert_eq!(unpinned.revision, 3);
    assert_ne!(unpinned.etag, pinned.etag);
}

#[tokio::test]
async fn update_that_changes_nothing_bumps_nothing() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(
        &mut alice,
        pb::Note {
            title: "same".into(),
            ..text_note("customer", "c-1", "body")
        },
    )
    .await;

    let updated = update(
        &mut alice,
        pb::Note {
            title: "same".into(),
            body: text_body("body"),
            ..patch(&note.id)
        },
        &["title", "body"],
    )
    .await
    .unwrap();

    assert_eq!(updated, note, "the note is returned unchanged");
    assert_eq!(get(&mut alice, &note.id).await.unwrap(), note);
    let history = revisions(&mut alice, &note.id, 0, "").await.unwrap();
    assert_eq!(history.revisions.len(), 1, "no revision was written");
}

#[tokio::test]
async fn update_with_current_etag_succeeds() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;
    let updated = update(
        &mut alice,
        pb::Note {
            title: "t".into(),
            etag: note.etag.clone(),
            ..patch(&note.id)
        },
        &["title"],
    )
    .await
    .expect("the current etag is accepted");
    assert_eq!(updated.title, "t");
}

#[tokio::test]
async fn update_with_stale_etag_is_aborted() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;
    let first = update(
        &mut alice,
        pb::Note {
            title: "first".into(),
            ..patch(&note.id)
        },
        &["title"],
    )
    .await
    .unwrap();

    assert_status(
        update(
            &mut alice,
            pb::Note {
                title: "second".into(),
                etag: note.etag.clone(),
                ..patch(&note.id)
            },
            &["title"],
        )
        .await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    assert_eq!(
        get(&mut alice, &note.id).await.unwrap(),
        first,
        "the note kept the first update"
    );
}

#[tokio::test]
async fn delete_with_stale_etag_is_aborted() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;
    update(
        &mut alice,
        pb::Note {
            title: "changed".into(),
            ..patch(&note.id)
        },
        &["title"],
    )
    .await
    .unwrap();

    assert_status(
        delete(&mut alice, &note.id, &note.etag).await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    assert_eq!(get(&mut alice, &note.id).await.unwrap().delete_time, None);
}

#[tokio::test]
async fn undelete_with_stale_etag_is_aborted() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;
    delete(&mut alice, &note.id, "").await.unwrap();

    assert_status(
        undelete(&mut alice, &note.id, &note.etag).await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    assert!(
        get(&mut alice, &note.id)
            .await
            .unwrap()
            .delete_time
            .is_some()
    );
}

// --- Soft delete --------------------------------------------------------------

#[tokio::test]
async fn delete_is_soft_and_get_still_returns_the_note() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "keep me")).await;

    let deleted = delete(&mut alice, &note.id, &note.etag)
        .await
        .expect("DeleteNote succeeds");

    assert!(deleted.delete_time.is_some());
    assert_eq!(deleted.revision, 2);
    assert_ne!(deleted.etag, note.etag);
    assert_eq!(body_text(&deleted), "keep me");
    assert_eq!(get(&mut alice, &note.id).await.unwrap(), deleted);
}

#[tokio::test]
async fn deleted_note_leaves_list_unless_show_deleted() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let kept = add(&mut alice, text_note("customer", "c-1", "kept")).await;
    let gone = add(&mut alice, text_note("customer", "c-1", "gone")).await;
    delete(&mut alice, &gone.id, "").await.unwrap();

    assert_eq!(
        listed_ids(&mut alice, Default::default()).await,
        vec![kept.id.clone()]
    );
    let with_deleted = listed_ids(
        &mut alice,
        pb::ListNotesRequest {
            show_deleted: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(with_deleted, vec![gone.id.clone(), kept.id.clone()]);
}

#[tokio::test]
async fn update_of_deleted_note_is_failed_precondition() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;
    let deleted = delete(&mut alice, &note.id, "").await.unwrap();
    assert_status(
        update(
            &mut alice,
            pb::Note {
                title: "t".into(),
                ..patch(&note.id)
            },
            &["title"],
        )
        .await,
        Code::FailedPrecondition,
        "NOTE_DELETED",
    );
    assert_eq!(get(&mut alice, &note.id).await.unwrap(), deleted);
}

#[tokio::test]
async fn deleting_a_deleted_note_is_failed_precondition() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;
    let deleted = delete(&mut alice, &note.id, "").await.unwrap();
    assert_status(
        delete(&mut alice, &note.id, "").await,
        Code::FailedPrecondition,
        "NOTE_DELETED",
    );
    assert_eq!(get(&mut alice, &note.id).await.unwrap(), deleted);
}

#[tokio::test]
async fn undelete_restores_the_note() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;
    let deleted = delete(&mut alice, &note.id, "").await.unwrap();

    let restored = undelete(&mut alice, &note.id, &deleted.etag)
        .await
        .expect("UndeleteNote succeeds");

    assert_eq!(restored.delete_time, None);
    assert_eq!(restored.revision, 3);
    assert_ne!(restored.etag, deleted.etag);
    assert_eq!(body_text(&restored), "body");
    assert_eq!(
        listed_ids(&mut alice, Default::default()).await,
        vec![note.id.clone()]
    );
    let updated = update(
        &mut alice,
        pb::Note {
            title: "alive".into(),
            ..patch(&note.id)
        },
        &["title"],
    )
    .await;
    assert_eq!(
        updated.unwrap().title,
        "alive",
        "a restored note can be updated"
    );
}

#[tokio::test]
async fn undelete_of_live_note_is_failed_precondition() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;
    assert_status(
        undelete(&mut alice, &note.id, "").await,
        Code::FailedPrecondition,
        "NOTE_NOT_DELETED",
    );
    assert_eq!(get(&mut alice, &note.id).await.unwrap(), note);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_with_the_same_etag_let_exactly_one_win() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let note = add(&mut alice, text_note("customer", "c-1", "body")).await;

    let racers = (0..6).map(|i| {
        let mut client = alice.clone();
        let change = pb::Note {
            title: format!("racer {i}"),
            etag: note.etag.clone(),
            ..patch(&note.id)
        };
        tokio::spawn(async move { update(&mut client, change, &["title"]).await })
    });
    let results: Vec<_> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();

    let winners: Vec<&pb::Note> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one update wins: {results:?}");
    for loser in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(loser.code(), Code::Aborted, "{loser:?}");
        assert_eq!(reason(loser), "ETAG_MISMATCH");
    }
    let stored = get(&mut alice, &note.id).await.unwrap();
    assert_eq!(&stored, winners[0]);
    assert_eq!(stored.revision, 2);
}
