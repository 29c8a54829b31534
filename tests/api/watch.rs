//! WatchNotes: the change stream, against the real server and database,
//! with writers and watchers on two notesd processes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use notesd::proto::notes::v1 as pb;
use notesd::proto::notes::v1::notes_service_client::NotesServiceClient;
use pb::WatchEventType as Kind;
use rand::Rng as _;
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::*;

type Stream = tonic::Streaming<pb::WatchNotesResponse>;

/// What a watcher was told of one change: (note id, revision, type).
type Seen = (String, i64, i32);

async fn watch(
    client: &mut Client,
    request: pb::WatchNotesRequest,
) -> Result<Stream, tonic::Status> {
    client.watch_notes(request).await.map(|r| r.into_inner())
}

async fn watch_all(client: &mut Client) -> Stream {
    watch(client, pb::WatchNotesRequest::default())
        .await
        .expect("WatchNotes starts")
}

fn from_token(token: &str) -> pb::WatchNotesRequest {
    pb::WatchNotesRequest {
        resume_token: token.to_owned(),
        ..Default::default()
    }
}

/// The next message that is not a heartbeat, within `wait`; `None` if none
/// came.
async fn next_change(stream: &mut Stream, wait: Duration) -> Option<pb::WatchNotesResponse> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .ok()?;
        let message = message
            .expect("the stream goes on")
            .expect("the stream is open");
        if message.r#type != Kind::Heartbeat as i32 {
            return Some(message);
        }
    }
}

/// Reads changes until every one of `expected` arrived (or 60 s passed),
/// then 300 ms more for any extra: everything it got, in order.
async fn collect_until(
    stream: &mut Stream,
    expected: &BTreeSet<Seen>,
) -> Vec<pb::WatchNotesResponse> {
    let mut got = Vec::new();
    let mut missing = expected.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !missing.is_empty() && tokio::time::Instant::now() < deadline {
        if let Some(message) = next_change(stream, Duration::from_secs(1)).await {
            missing.remove(&seen(&message));
            got.push(message);
        }
    }
    while let Some(message) = next_change(stream, Duration::from_millis(300)).await {
        got.push(message);
    }
    got
}

fn seen(message: &pb::WatchNotesResponse) -> Seen {
    (message.note_id.clone(), message.revision, message.r#type)
}

fn process_client(channel: Channel, key: &str) -> Client {
    NotesServiceClient::with_interceptor(channel, Metadata(vec![("x-api-key", key.to_owned())]))
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024)
}

/// A watcher of the randomized test: who it is and what it filters.
struct Viewer {
    member: &'static str,
    admin: bool,
    tenant: &'static str,
    subject: Option<&'static str>,
}

impl Viewer {
    /// The documented rule: the caller may read the note, and the note
    /// matches the filter.
    fn sees(&self, tenant: &str, note: &pb::Note) -> bool {
        tenant == self.tenant
            && (self.admin
                || note.owner_id == self.member
                || (note.visibility == pb::Visibility::Team as i32 && !note.draft))
            && self
                .subject
                .is_none_or(|id| note.subject.as_ref().is_some_and(|s| s.id == id))
    }

    /// What it must be told of a note with these revisions (oldest first).
    fn expected(&self, tenant: &str, history: &[pb::NoteRevision], into: &mut BTreeSet<Seen>) {
        let mut before = false;
        for revision in history {
            let note = revision.note.as_ref().expect("a revision holds its note");
            let after = self.sees(tenant, note);
            let kind = match pb::ChangeKind::try_from(revision.change_kind).unwrap() {
                _ if !after && before => Some(Kind::LeftView),
                _ if !after => None,
                pb::ChangeKind::Created => Some(Kind::Created),
                pb::ChangeKind::Updated => Some(Kind::Updated),
                pb::ChangeKind::Deleted => Some(Kind::Deleted),
                pb::ChangeKind::Undeleted => Some(Kind::Undeleted),
                pb::ChangeKind::Unspecified => unreachable!("never stored"),
            };
            if let Some(kind) = kind {
                into.insert((note.id.clone(), revision.revision, kind as i32));
            }
            before = after;
        }
    }
}

/// Every revision of every note of `tenant`, oldest first, read as an
/// admin: the ground truth the watchers are checked against.
async fn histories(admin: &mut Client) -> Vec<Vec<pb::NoteRevision>> {
    let notes = list_all(
        admin,
        pb::ListNotesRequest {
            show_deleted: true,
            page_size: 1000,
            ..Default::default()
        },
    )
    .await;
    let mut all = Vec::new();
    for note in notes {
        let mut history = Vec::new();
        let mut token = String::new();
        loop {
            let page = revisions(admin, &note.id, 1000, &token).await.unwrap();
            history.extend(page.revisions);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        history.reverse();
        all.push(history);
    }
    all
}

/// What one writer does: random adds, visibility and draft flips, subject
/// moves, handovers, deletes and undeletes of its own notes.
async fn write_randomly(mut client: Client, other: &'static str, ops: usize) {
    // (id, deleted)
    let mut mine: Vec<(String, bool)> = Vec::new();
    for _ in 0..ops {
        let roll = rand::rng().random_range(0..100);
        if mine.is_empty() || roll < 35 {
            let (visibility, draft, subject_id) = {
                let mut rng = rand::rng();
                (
                    if rng.random_bool(0.5) {
                        pb::Visibility::Team
                    } else {
                        pb::Visibility::Private
                    },
                    rng.random_bool(0.15),
                    format!("c-{}", rng.random_range(1..=3)),
                )
            };
            let note = pb::Note {
                visibility: visibility as i32,
                draft,
                ..text_note("customer", &subject_id, "body")
            };
            let added = add(&mut client, note).await;
            mine.push((added.id, false));
            continue;
        }
        let index = rand::rng().random_range(0..mine.len());
        let (id, deleted) = mine[index].clone();
        if deleted {
            undelete(&mut client, &id, "").await.expect("undelete");
            mine[index].1 = false;
            continue;
        }
        match roll {
            35..=54 => {
                let visibility = if rand::rng().random_bool(0.5) {
                    pb::Visibility::Team
                } else {
                    pb::Visibility::Private
                };
                let note = pb::Note {
                    visibility: visibility as i32,
                    ..patch(&id)
                };
                update(&mut client, note, &["visibility"])
                    .await
                    .expect("update");
            }
            55..=64 => {
                let note = pb::Note {
                    draft: rand::rng().random_bool(0.3),
                    ..patch(&id)
                };
                update(&mut client, note, &["draft"]).await.expect("update");
            }
            65..=74 => {
                let subject_id = format!("c-{}", rand::rng().random_range(1..=3));
                let note = pb::Note {
                    subject: subject("customer", &subject_id),
                    ..patch(&id)
                };
                update(&mut client, note, &["subject"])
                    .await
                    .expect("update");
            }
            75..=79 => {
                let note = pb::Note {
                    owner_id: other.to_owned(),
                    ..patch(&id)
                };
                update(&mut client, note, &["owner_id"])
                    .await
                    .expect("hand over");
                mine.swap_remove(index);
            }
            80..=89 => {
                let note = pb::Note {
                    title: format!("t{roll}"),
                    ..patch(&id)
                };
                update(&mut client, note, &["title"]).await.expect("update");
            }
            _ => {
                delete(&mut client, &id, "").await.expect("delete");
                mine[index].1 = true;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watchers_on_two_processes_get_exactly_the_changes_they_may_read_once_in_order() {
    let app = spawn_app().await;
    let (process, channel_b) = NotesdProcess::start(&app, &[], "warn").await;
    let keys: HashMap<&str, String> = HashMap::from([
        ("alice", app.member_key("acme", "alice").await),
        ("bob", app.member_key("acme", "bob").await),
        ("admin", app.admin_key("acme", "root").await),
        ("carol", app.member_key("globex", "carol").await),
        ("carol-admin", app.admin_key("globex", "root").await),
    ]);
    let app = &app;
    let on_a = |key: &str| {
        let key = key.to_owned();
        async move { app.client(&key).await }
    };
    let on_b = |key: &str| process_client(channel_b.clone(), key);

    let viewers = [
        (
            Viewer {
                member: "alice",
                admin: false,
                tenant: "acme",
                subject: None,
            },
            on_a(&keys["alice"]).await,
        ),
        (
            Viewer {
                member: "bob",
                admin: false,
                tenant: "acme",
                subject: None,
            },
            on_b(&keys["bob"]),
        ),
        (
            Viewer {
                member: "root",
                admin: true,
                tenant: "acme",
                subject: None,
            },
            on_a(&keys["admin"]).await,
        ),
        (
            Viewer {
                member: "alice",
                admin: false,
                tenant: "acme",
                subject: Some("c-1"),
            },
            on_b(&keys["alice"]),
        ),
        (
            Viewer {
                member: "carol",
                admin: false,
                tenant: "globex",
                subject: None,
            },
            on_b(&keys["carol"]),
        ),
    ];
    let mut streams = Vec::new();
    for (viewer, mut client) in viewers {
        let request = pb::WatchNotesRequest {
            subject: viewer.subject.and_then(|id| subject("customer", id)),
            ..Default::default()
        };
        let stream = watch(&mut client, request)
            .await
            .expect("WatchNotes starts");
        streams.push((viewer, stream));
    }

    let writers = vec![
        tokio::spawn(write_randomly(on_a(&keys["alice"]).await, "bob", 60)),
        tokio::spawn(write_randomly(on_b(&keys["bob"]), "alice", 60)),
        tokio::spawn(write_randomly(on_b(&keys["alice"]), "bob", 60)),
        tokio::spawn(write_randomly(on_a(&keys["bob"]).await, "alice", 60)),
        tokio::spawn(write_randomly(on_a(&keys["carol"]).await, "dave", 30)),
    ];
    for writer in writers {
        writer.await.expect("the writer finished");
    }

    let acme = histories(&mut on_a(&keys["admin"]).await).await;
    let globex = histories(&mut on_a(&keys["carol-admin"]).await).await;
    assert!(acme.len() > 50, "the writers wrote: {}", acme.len());
    let mut total = 0;
    for (viewer, mut stream) in streams {
        let mut expected = BTreeSet::new();
        for history in &acme {
            viewer.expected("acme", history, &mut expected);
        }
        for history in &globex {
            viewer.expected("globex", history, &mut expected);
        }
        let got = collect_until(&mut stream, &expected).await;
        let received: Vec<Seen> = got.iter().map(seen).collect();
        let unique: BTreeSet<Seen> = received.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            received.len(),
            "{}: a change came twice",
            viewer.member
        );
        let missing: Vec<_> = expected.difference(&unique).collect();
        let extra: Vec<_> = unique.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{} (admin {}, subject {:?}): missing {missing:?}, not theirs {extra:?}",
            viewer.member,
            viewer.admin,
            viewer.subject
        );
        // Commit order per note is revision order.
        let mut last: BTreeMap<&str, i64> = BTreeMap::new();
        for message in &got {
            let previous = last.insert(&message.note_id, message.revision).unwrap_or(0);
            assert!(
                previous < message.revision,
                "{}: out of order on {}",
                viewer.member,
                message.note_id
            );
            if message.r#type == Kind::LeftView as i32 {
                assert!(message.note.is_none(), "a LEFT_VIEW carries no content");
            } else {
                let note = message.note.as_ref().expect("a change carries its note");
                assert_eq!(note.revision, message.revision);
                assert!(!message.resume_token.is_empty());
            }
        }
        total += got.len();
    }
    assert!(total > 100, "the watchers saw {total} changes");
    drop(process);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_that_resumes_from_its_last_token_misses_nothing_and_sees_nothing_twice() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let client = app.client(&key).await;
    let mut stream = watch_all(&mut client.clone()).await;

    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            add_many(&client, 200, 4, |i| {
                text_note("customer", "c-1", &format!("note {i}"))
            })
            .await
        })
    };
    // Read some, then hang up mid-stream while the writes go on.
    let mut got = Vec::new();
    while got.len() < 30 {
        got.push(
            next_change(&mut stream, Duration::from_secs(30))
                .await
                .expect("a change"),
        );
    }
    drop(stream);
    let token = got.last().unwrap().resume_token.clone();
    let written = writer.await.unwrap();

    let expected: BTreeSet<Seen> = written
        .iter()
        .map(|n| (n.id.clone(), 1, Kind::Created as i32))
        .collect();
    let mut resumed = watch(&mut client.clone(), from_token(&token))
        .await
        .unwrap();
    let rest: BTreeSet<Seen> = expected
        .difference(&got.iter().map(seen).collect())
        .cloned()
        .collect();
    got.extend(collect_until(&mut resumed, &rest).await);
    let received: Vec<Seen> = got.iter().map(seen).collect();
    let unique: BTreeSet<Seen> = received.iter().cloned().collect();
    assert_eq!(unique.len(), received.len(), "no change twice");
    assert_eq!(unique, expected, "every change, once");
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_behind_an_open_transaction_arrive_after_it_commits_in_order() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let mut client = app.client(&key).await;
    let held_note = add(&mut client, text_note("customer", "c-1", "held")).await;
    let mut stream = watch_all(&mut client).await;
    // A watch from now may begin with changes committed just before it
    // started (docs/watch.md): here, at most the note's creation. A note
    // written now marks where they end (the stream is in commit order,
    // and another test's open transaction may hold it back a while).
    let sentinel = add(&mut client, text_note("customer", "c-0", "sentinel")).await;
    loop {
        let early = next_change(&mut stream, Duration::from_secs(60))
            .await
            .expect("the sentinel arrives");
        if early.note_id == sentinel.id {
            break;
        }
        assert_eq!(
            seen(&early),
            (held_note.id.clone(), 1, Kind::Created as i32)
        );
    }

    // A transaction that changes the note the way notesd does (the row,
    // its revision, its event), and stays open.
    let mut held = app.pool.begin().await.unwrap();
    let id: uuid::Uuid = held_note.id.parse().unwrap();
    for statement in [
        "update notes set title = 'held', revision = revision + 1, updated_at = now()
         where tenant_id = 'acme' and id = $1",
        "insert into note_revisions (tenant_id, note_id, revision, change_kind, actor_id, changed_at, snapshot)
         select tenant_id, id, revision, 2, owner_id, updated_at, to_jsonb(notes.*)
         from notes where tenant_id = 'acme' and id = $1",
        "insert into note_events (tenant_id, id, note_id, revision, change_kind, created_at)
         select tenant_id, gen_random_uuid(), id, revision, 2, updated_at
         from notes where tenant_id = 'acme' and id = $1",
    ] {
        sqlx::query(statement).bind(id).execute(&mut *held).await.unwrap();
    }
    // Later transactions commit while it is open.
    let later = [
        add(&mut client, text_note("customer", "c-2", "later 1")).await,
        add(&mut client, text_note("customer", "c-3", "later 2")).await,
    ];
    assert!(
        next_change(&mut stream, Duration::from_millis(800))
            .await
            .is_none(),
        "a change behind an open transaction is held back"
    );
    held.commit().await.unwrap();

    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(seen(
            &next_change(&mut stream, Duration::from_secs(30))
                .await
                .expect("a change"),
        ));
    }
    assert_eq!(
        got,
        vec![
            (held_note.id.clone(), 2, Kind::Updated as i32),
            (later[0].id.clone(), 1, Kind::Created as i32),
            (later[1].id.clone(), 1, Kind::Created as i32),
        ],
        "the held change first (its transaction began first), none lost"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_then_watch_from_the_watch_token_misses_nothing_written_in_between() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let mut client = app.client(&key).await;
    let before = add(&mut client, text_note("customer", "c-1", "listed")).await;
    let listed = list(&mut client, pb::ListNotesRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.notes.len(), 1);
    assert!(!listed.watch_token.is_empty());
    // Written after the list, before the watch starts.
    let between = add(&mut client, text_note("customer", "c-1", "between")).await;
    let changed = update(
        &mut client,
        pb::Note {
            title: "changed".into(),
            ..patch(&before.id)
        },
        &["title"],
    )
    .await
    .unwrap();

    let mut stream = watch(&mut client, from_token(&listed.watch_token))
        .await
        .unwrap();
    let expected = BTreeSet::from([
        (between.id.clone(), 1, Kind::Created as i32),
        (changed.id.clone(), 2, Kind::Updated as i32),
    ]);
    let got: BTreeSet<Seen> = collect_until(&mut stream, &expected)
        .await
        .iter()
        .map(seen)
        .collect();
    // The listed note's creation may come again (the documented overlap).
    let got: BTreeSet<Seen> = got
        .into_iter()
        .filter(|s| !(s.0 == before.id && s.1 == 1))
        .collect();
    assert_eq!(got, expected);

    // An empty list gives a token too, and it also misses nothing.
    let empty = list(
        &mut client,
        pb::ListNotesRequest {
            subject: subject("customer", "nobody"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(empty.notes.is_empty());
    let after_empty = add(&mut client, text_note("customer", "nobody", "x")).await;
    let mut stream = watch(&mut client, from_token(&empty.watch_token))
        .await
        .unwrap();
    let expected = BTreeSet::from([(after_empty.id.clone(), 1, Kind::Created as i32)]);
    let got: BTreeSet<Seen> = collect_until(&mut stream, &expected)
        .await
        .iter()
        .map(seen)
        .collect();
    assert!(got.is_superset(&expected), "{got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_note_that_leaves_a_watchers_view_is_announced_once_without_its_content() {
    let app = spawn_app().await;
    let mut alice = app.member("acme", "alice").await;
    let mut bob_stream = watch_all(&mut app.member("acme", "bob").await).await;
    let mut other_tenant = watch_all(&mut app.member("globex", "bob").await).await;

    let note = add(
        &mut alice,
        shared_note("shared", pb::Visibility::Team, pb::EditPolicy::OwnerOnly),
    )
    .await;
    let hidden = pb::Note {
        visibility: pb::Visibility::Private as i32,
        ..patch(&note.id)
    };
    update(&mut alice, hidden, &["visibility"]).await.unwrap();
    let retitled = pb::Note {
        title: "private edit".into(),
        ..patch(&note.id)
    };
    update(&mut alice, retitled, &["title"]).await.unwrap();
    let shown = pb::Note {
        visibility: pb::Visibility::Team as i32,
        ..patch(&note.id)
    };
    update(&mut alice, shown, &["visibility"]).await.unwrap();
    let draft = add(
        &mut alice,
        pb::Note {
            draft: true,
            ..text_note("customer", "c-1", "draft")
        },
    )
    .await;
    let private = add(
        &mut alice,
        shared_note("mine", pb::Visibility::Private, pb::EditPolicy::OwnerOnly),
    )
    .await;

    // A note bob may read, written last: the stream is in commit order,
    // so once it arrives everything before it has (however long another
    // test's open transaction holds the stream's horizon back).
    let sentinel = add(
        &mut alice,
        shared_note("last", pb::Visibility::Team, pb::EditPolicy::OwnerOnly),
    )
    .await;
    let mut got = Vec::new();
    loop {
        let message = next_change(&mut bob_stream, Duration::from_secs(60))
            .await
            .expect("the last note arrives");
        if message.note_id == sentinel.id {
            break;
        }
        got.push(message);
    }
    let kinds: Vec<(i64, i32)> = got.iter().map(|m| (m.revision, m.r#type)).collect();
    assert_eq!(
        kinds,
        vec![
            (1, Kind::Created as i32),
            (2, Kind::LeftView as i32),
            (4, Kind::Updated as i32)
        ],
        "created, left view (not the private edit), back in view as an update"
    );
    assert!(
        got.iter().all(|m| m.note_id == note.id),
        "never the draft nor the private note"
    );
    let left = &got[1];
    assert!(left.note.is_none(), "no content when it leaves the view");
    assert!(
        !got.iter()
            .any(|m| m.note_id == draft.id || m.note_id == private.id)
    );
    assert!(
        next_change(&mut other_tenant, Duration::from_millis(300))
            .await
            .is_none(),
        "nothing crosses tenants"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_watch_gets_heartbeats_whose_token_resumes_without_a_gap() {
    let app = spawn_app_with(|s| s.watch.heartbeat = Duration::from_millis(200)).await;
    let mut client = app.member("acme", "alice").await;
    let mut stream = watch_all(&mut client).await;
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a heartbeat within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(first.r#type, Kind::Heartbeat as i32);
    assert!(first.note_id.is_empty() && first.note.is_none());
    drop(stream);
    let note = add(
        &mut client,
        text_note("customer", "c-1", "after the heartbeat"),
    )
    .await;
    let mut resumed = watch(&mut client, from_token(&first.resume_token))
        .await
        .unwrap();
    let change = next_change(&mut resumed, Duration::from_secs(30))
        .await
        .expect("the change");
    assert_eq!(seen(&change), (note.id, 1, Kind::Created as i32));
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_prunes_old_events_and_request_ids_and_an_expired_token_is_refused() {
    let app = spawn_app_with(|s| {
        s.retention.events = Duration::from_secs(1);
        s.retention.request_ids = Duration::from_secs(1);
        s.retention.interval = Duration::from_millis(300);
    })
    .await;
    let mut client = app.member("acme", "alice").await;
    let mut stream = watch_all(&mut client).await;
    let request_id = uuid::Uuid::now_v7().to_string();
    let first = add_with_request_id(&mut client, &request_id, text_note("customer", "c-1", "x"))
        .await
        .unwrap();
    let token = next_change(&mut stream, Duration::from_secs(30))
        .await
        .unwrap()
        .resume_token;
    drop(stream);

    let pruned = async {
        loop {
            let (events, requests): (i64, i64) = sqlx::query_as(
                "select (select count(*) from note_events), (select count(*) from note_requests)",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            if events == 0 && requests == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), pruned)
        .await
        .expect("retention deletes the outbox event and the request id");
    let horizon: i64 = sqlx::query_scalar("select count(*) from note_event_horizons")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(horizon, 1, "the pruned horizon is recorded");

    assert_status(
        watch(&mut client, from_token(&token)).await,
        Code::OutOfRange,
        "WATCH_TOKEN_EXPIRED",
    );
    // The request id was forgotten: the same request now adds a new note.
    let again = add_with_request_id(&mut client, &request_id, text_note("customer", "c-1", "x"))
        .await
        .unwrap();
    assert_ne!(again.id, first.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_and_too_many_watchers_are_refused_with_their_reasons() {
    let app = spawn_app_with(|s| s.watch.max_watchers = 1).await;
    let mut client = app.member("acme", "alice").await;
    for token in ["garbage!", "AQ", "AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        assert_invalid(
            watch(&mut client, from_token(token)).await,
            "INVALID_WATCH_TOKEN",
            "resume_token",
        );
    }
    // A well-formed token beyond the stream's end.
    let mut beyond = vec![1u8];
    beyond.extend_from_slice(&(i64::MAX as u64).to_be_bytes());
    beyond.extend_from_slice(&[0; 16]);
    use base64::Engine as _;
    let beyond = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(beyond);
    assert_invalid(
        watch(&mut client, from_token(&beyond)).await,
        "INVALID_WATCH_TOKEN",
        "resume_token",
    );
    assert_invalid(
        watch(
            &mut client,
            pb::WatchNotesRequest {
                subject_type: "Not A Type".into(),
                ..Default::default()
            },
        )
        .await,
        "INVALID_FIELD",
        "subject_type",
    );

    let open = watch_all(&mut client).await;
    assert_status(
        watch(&mut client, pb::WatchNotesRequest::default()).await,
        Code::ResourceExhausted,
        "TOO_MANY_WATCHERS",
    );
    drop(open);
    // The permit comes back when the stream ends.
    let mut retried = None;
    for _ in 0..50 {
        match watch(&mut client, pb::WatchNotesRequest::default()).await {
            Ok(stream) => {
                retried = Some(stream);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(
        retried.is_some(),
        "a watch closed by its client frees its place"
    );

    let mut anonymous = app.client_with(Vec::new()).await;
    assert_status(
        watch(&mut anonymous, pb::WatchNotesRequest::default()).await,
        Code::Unauthenticated,
        "MISSING_API_KEY",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_that_stops_reading_is_cut_off_and_the_server_memory_stays_bounded() {
    let app = spawn_app().await;
    let (process, channel) = NotesdProcess::start(&app, &[], "warn").await;
    let key = app.member_key("acme", "alice").await;
    let client = process_client(channel.clone(), &key);
    let mut stream = watch_all(&mut client.clone()).await;
    let baseline = process.peak_rss_kib();

    // 150 MiB of notes while the watcher reads nothing.
    let body = "x".repeat(256 * 1024);
    add_many(&client, 600, 4, |_| text_note("customer", "c-1", &body)).await;
    let peak = process.peak_rss_kib();

    let mut received = 0;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
            Ok(Ok(Some(message))) => {
                if message.r#type != Kind::Heartbeat as i32 {
                    received += 1;
                }
            }
            Ok(Ok(None)) => panic!("the stream ended without a status after {received} changes"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the stream neither ended nor moved after {received} changes"),
        }
    };
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
    assert_eq!(reason(&ended), "WATCH_TOO_SLOW");
    assert!(
        received > 0 && received < 600,
        "it got what was buffered, then the end: {received}"
    );
    let grown_mib = (peak.saturating_sub(baseline)) / 1024;
    assert!(
        grown_mib < 120,
        "notesd grew by {grown_mib} MiB while 150 MiB of changes waited for a reader"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_the_server_ends_its_watches_at_once_with_shutting_down() {
    let app = spawn_app_with(|s| s.shutdown_grace = Duration::from_secs(20)).await;
    let mut client = app.member("acme", "alice").await;
    let mut stream = watch_all(&mut client).await;
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(app.stop());
    let status = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the watch ends")
        .expect_err("with a status");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason(&status), "SHUTTING_DOWN");
    stopping.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the open watch did not hold the shutdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_through_a_vendor_facade_is_an_event_like_any_other() {
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;
    let mut stream = watch_all(&mut app.client(&key).await).await;

    let lead = "lead_s6vHFTK1TSRoH6otXOexWDO9jM4xyb1kELHDoU7Fdsp";
    let request = Auth::Basic(&key).apply(
        reqwest::Client::new()
            .post(app.http_url("/api/v1/activity/note/"))
            .json(&serde_json::json!({"lead_id": lead, "note": "through Close"})),
    );
    let (status, created) = json_answer(request).await;
    assert_eq!(status, 200, "{created}");

    let change = next_change(&mut stream, Duration::from_secs(30))
        .await
        .expect("the change");
    assert_eq!(change.r#type, Kind::Created as i32);
    let note = change.note.expect("with its note");
    assert_eq!(body_text(&note), "through Close");
    assert_eq!(note.subject.unwrap().id, lead);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_ends_when_its_key_is_revoked() {
    let app = spawn_app().await;
    let (id, key) = app
        .issue_key("acme", key_spec(member_kind("alice"), &[]))
        .await;
    let mut stream = watch_all(&mut app.client(&key).await).await;
    let output = app.run_notesd(&["keys", "revoke", &id.to_string()]).await;
    assert!(output.status.success(), "{output:?}");
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the watch ends within seconds of the revocation");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert_eq!(reason(&ended), "INVALID_API_KEY");
}
