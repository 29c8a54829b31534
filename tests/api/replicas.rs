//! Read replicas (docs/api.md, "Read replicas and consistency tokens"): a
//! hot standby of the run's PostgreSQL (`pg_basebackup`, helpers'
//! `standby`) serves reads that are fresh enough; a write's consistency
//! token makes a read see it. The tests take turns: one pauses the
//! standby's replay, another stops it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use notesd::ReplicaSettings;
use notesd::proto::notes::v1 as pb;
use sqlx::Connection as _;
use uuid::Uuid;

use crate::helpers::*;

const TOKEN: &str = "notesd-consistency-token";
/// The lag a replica may have in most tests: generous, since the test
/// cluster and its standby share the machine with the rest of the suite.
const MAX_LAG: Duration = Duration::from_secs(2);
const TOKEN_WAIT: Duration = Duration::from_millis(300);

/// One replica test at a time: they pause and stop the one standby.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A notesd on a database of the private server, reading from its standby
/// when it is at most `MAX_LAG` behind.
async fn spawn_with_replica() -> TestApp {
    let standby = tokio::task::spawn_blocking(standby).await.unwrap();
    let name = format!("notesd_test_{}", Uuid::now_v7().simple());
    let replica_url = standby.url(&name);
    let app = spawn_app_at(name.clone(), standby.primary_url(&name), |s| {
        s.replicas = ReplicaSettings {
            urls: vec![replica_url],
            max_lag: MAX_LAG,
            token_wait: TOKEN_WAIT,
            check_interval: Duration::from_millis(50),
        };
    })
    .await;
    eventually("the replica serves reads", || async {
        metric(&app, "notesd_replica_up{replica=\"0\"}").await == Some(1.0)
    })
    .await;
    app
}

/// The value of the sample `series` (name and labels) at /metrics.
async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    let text = reqwest::get(app.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

async fn replica_reads(app: &TestApp) -> f64 {
    metric(app, "notesd_db_reads_total{target=\"replica-0\"}")
        .await
        .unwrap_or(0.0)
}

/// Polls `check` until it holds, for at most thirty seconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Adds a note; returns it and the token of the add.
async fn add_with_token(client: &mut Client, text: &str) -> (pb::Note, String) {
    let response = client
        .add_note(pb::AddNoteRequest {
            note: Some(text_note("customer", "42", text)),
            request_id: Uuid::now_v7().to_string(),
        })
        .await
        .unwrap();
    let token = response
        .metadata()
        .get(TOKEN)
        .expect("a write answers with a consistency token")
        .to_str()
        .unwrap()
        .to_owned();
    (response.into_inner().note.unwrap(), token)
}

async fn get_with(
    client: &mut Client,
    id: &str,
    token: Option<&str>,
) -> Result<pb::Note, tonic::Status> {
    let mut request = tonic::Request::new(pb::GetNoteRequest { id: id.to_owned() });
    if let Some(token) = token {
        request.metadata_mut().insert(TOKEN, token.parse().unwrap());
    }
    client
        .get_note(request)
        .await
        .map(|response| response.into_inner().note.unwrap())
}

/// Runs statements on the standby's `postgres` database as its superuser.
async fn on_standby(sql: &str) {
    let url = standby().url("postgres");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
}

/// The standby's replay, paused until this is dropped (a failed test
/// included: the next test needs a standby that replays).
struct ReplayPaused;

impl ReplayPaused {
    /// Pauses replay once `app` sees the replica caught up (else it may
    /// send every read to the primary for lag, whatever the pause), and
    /// returns once the standby has paused (`pg_wal_replay_pause` only
    /// asks: WAL that arrives meanwhile may still be replayed).
    async fn start(app: &TestApp) -> Self {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !metric(app, "notesd_replica_lag_seconds{replica=\"0\"}")
            .await
            .is_some_and(|lag| lag < 0.5)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replica never caught up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        on_standby("select pg_wal_replay_pause()").await;
        let url = standby().url("postgres");
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        loop {
            let state: String = sqlx::query_scalar("select pg_get_wal_replay_pause_state()")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            if state == "paused" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the standby never paused: {state}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self
    }
}

impl Drop for ReplayPaused {
    fn drop(&mut self) {
        let _ = std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(on_standby("select pg_wal_replay_resume()"));
        })
        .join();
    }
}

/// Writes notes until dropped, as other clients would.
struct WriteLoad(Arc<AtomicBool>);

impl WriteLoad {
    fn start(client: &Client, writers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..writers {
            let mut client = client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = try_add(&mut client, text_note("customer", "load", "x")).await;
                }
            });
        }
        Self(stop)
    }
}

impl Drop for WriteLoad {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_the_token_of_a_write_always_sees_it() {
    let _turn = TURN.lock().await;
    let app = spawn_with_replica().await;
    let mut alice = app.member("acme", "alice").await;
    let _load = WriteLoad::start(&alice, 2);

    let before = replica_reads(&app).await;
    for i in 0..1000 {
        let (note, token) = add_with_token(&mut alice, &format!("note {i}")).await;
        let read = get_with(&mut alice, &note.id, Some(&token))
            .await
            .unwrap_or_else(|status| panic!("try {i}: the note just written: {status:?}"));
        assert_eq!(read.id, note.id);
        if i % 10 == 0 {
            // An update's token, and a listing.
            let response = alice
                .update_note(pb::UpdateNoteRequest {
                    note: Some(pb::Note {
                        title: format!("title {i}"),
                        ..patch(&note.id)
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["title".to_owned()],
                    }),
                })
                .await
                .unwrap();
            let token = response.metadata().get(TOKEN).unwrap().clone();
            let mut request = tonic::Request::new(pb::ListNotesRequest {
                subject: subject("customer", "42"),
                ..Default::default()
            });
            request.metadata_mut().insert(TOKEN, token);
            let page = alice.list_notes(request).await.unwrap().into_inner();
            assert_eq!(page.notes[0].title, format!("title {i}"), "try {i}");
        }
    }
    // The replica did serve reads (else this proved nothing of it).
    let served = replica_reads(&app).await - before;
    assert!(served > 100.0, "the replica served {served} of 1100 reads");
    app.stop().await;
}

#[tokio::test]
async fn a_paused_replica_serves_no_read_that_would_be_stale() {
    let _turn = TURN.lock().await;
    let app = spawn_with_replica().await;
    let mut alice = app.member("acme", "alice").await;

    let paused = ReplayPaused::start(&app).await;
    let (note, token) = add_with_token(&mut alice, "after the pause").await;

    // Without a token, a read may be served by the replica while it is
    // within the lag: it does not have the note.
    let stale = get_with(&mut alice, &note.id, None).await;
    assert_eq!(
        stale.map(|n| n.id).map_err(|s| s.code()),
        Err(tonic::Code::NotFound),
        "a read without a token went to the lagging replica"
    );
    // With the token: the replica does not replay it within the wait, so
    // the primary answers.
    let started = Instant::now();
    let fresh = get_with(&mut alice, &note.id, Some(&token)).await.unwrap();
    assert_eq!(fresh.id, note.id);
    let waited = started.elapsed();
    assert!(
        waited >= TOKEN_WAIT - Duration::from_millis(20)
            && waited < TOKEN_WAIT + Duration::from_secs(5),
        "waited {waited:?} for a token the replica never replays"
    );
    // Once the replica lags beyond the maximum, no read goes there.
    tokio::time::sleep(MAX_LAG + Duration::from_millis(200)).await;
    for _ in 0..20 {
        let read = get_with(&mut alice, &note.id, None).await.unwrap();
        assert_eq!(read.id, note.id);
    }

    drop(paused);
    let before = replica_reads(&app).await;
    eventually("reads go to the replica again", || async {
        get_with(&mut alice.clone(), &note.id, None).await.is_ok()
            && replica_reads(&app).await > before
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn reads_go_on_while_the_replica_is_stopped_and_return_to_it() {
    let _turn = TURN.lock().await;
    let app = spawn_with_replica().await;
    let mut alice = app.member("acme", "alice").await;
    let (note, token) = add_with_token(&mut alice, "kept").await;

    let standby = standby();
    tokio::task::spawn_blocking(|| standby.server.halt(&standby.binaries).unwrap())
        .await
        .unwrap();
    for i in 0..50 {
        let token = (i % 2 == 0).then_some(token.as_str());
        let read = get_with(&mut alice, &note.id, token)
            .await
            .unwrap_or_else(|status| panic!("read {i} with the replica down: {status:?}"));
        assert_eq!(read.id, note.id);
    }
    let listed = list(
        &mut alice,
        pb::ListNotesRequest {
            subject: subject("customer", "42"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.notes.len(), 1);
    eventually("the stopped replica is reported down", || async {
        metric(&app, "notesd_replica_up{replica=\"0\"}").await == Some(0.0)
    })
    .await;
    let ready = reqwest::get(app.http_url("/readyz")).await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "a replica down does not make notesd unready"
    );

    tokio::task::spawn_blocking(|| {
        standby
            .server
            .resume(&standby.binaries, &standby.options)
            .unwrap()
    })
    .await
    .unwrap();
    let before = replica_reads(&app).await;
    eventually("reads return to the replica", || async {
        get_with(&mut alice.clone(), &note.id, None).await.is_ok()
            && replica_reads(&app).await > before
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_facade_write_answers_with_a_token_its_reads_take() {
    let _turn = TURN.lock().await;
    let app = spawn_with_replica().await;
    let key = app.member_key("acme", "alice").await;
    let http = reqwest::Client::new();
    let notes = app.http_url("/api/v1/activity/note/");

    let paused = ReplayPaused::start(&app).await;
    let created = http
        .post(&notes)
        .basic_auth(&key, Some(""))
        .json(&serde_json::json!({"lead_id": "lead_1", "note": "via Close"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let token = created
        .headers()
        .get(TOKEN)
        .expect("a facade write answers with a consistency token")
        .clone();
    let id = created.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = |token: Option<reqwest::header::HeaderValue>| {
        let mut request = http.get(format!("{notes}{id}/")).basic_auth(&key, Some(""));
        if let Some(token) = token {
            request = request.header(TOKEN, token);
        }
        request.send()
    };
    // The lagging replica does not have it; with the token, the primary
    // answers.
    assert_eq!(read(None).await.unwrap().status(), 404);
    assert_eq!(read(Some(token)).await.unwrap().status(), 200);
    drop(paused);
    app.stop().await;
}
