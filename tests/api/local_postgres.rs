//! notesd as a new user runs it, with no database URL and nothing answering
//! at the default address: it runs a PostgreSQL of its own in its data
//! directory, and stops it when it stops.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use notesd::proto::notes::v1::notes_service_client::NotesServiceClient;
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::helpers::*;

/// A data directory of the test's own, removed at its end.
struct DataDir(PathBuf);

impl DataDir {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("notesd-own-{}", Uuid::now_v7().simple())))
    }

    /// The pid of the server running on it, from its `postmaster.pid`.
    fn server_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.0.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `notesd` with no database URL, the default address on a port nobody
/// listens on, and `data_dir` as its own PostgreSQL's.
fn notesd_without_database(data_dir: &DataDir, closed_port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_notesd"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("RUST_BACKTRACE")
        .env(
            "NOTESD_DEFAULT_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{closed_port}/notesd"),
        )
        .env("NOTESD_DATA_DIR", &data_dir.0)
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    command
}

/// Starts `notesd serve` and waits until it serves gRPC (bounded: creating
/// the cluster takes a few seconds).
async fn serve(data_dir: &DataDir, closed_port: u16) -> (Child, Channel) {
    let grpc_addr = format!("127.0.0.1:{}", free_port());
    let http_addr = format!("127.0.0.1:{}", free_port());
    let mut child = notesd_without_database(data_dir, closed_port)
        .args([
            "serve",
            "--grpc-addr",
            &grpc_addr,
            "--http-addr",
            &http_addr,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("notesd starts");
    for _ in 0..1200 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("notesd exited with {status}: {}", logs(&mut child).await);
        }
        if let Ok(channel) = Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect()
            .await
        {
            return (child, channel);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("notesd never listened on {grpc_addr}");
}

/// What the exited `child` wrote to standard error.
async fn logs(child: &mut Child) -> String {
    let mut logs = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut logs).await.unwrap();
    }
    logs
}

/// Sends SIGTERM, waits for a clean exit, and returns the logs.
async fn terminate(mut child: Child) -> String {
    let status = sigterm(&mut child, Duration::from_secs(60)).await;
    let logs = logs(&mut child).await;
    assert!(status.success(), "notesd exited with {status}: {logs}");
    logs
}

/// Waits (bounded) until no process has the pid `pid`.
async fn assert_gone(pid: u32, what: &str) {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    for _ in 0..300 {
        if !proc.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: postgres (pid {pid}) still runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_database_url_notesd_runs_its_own_postgres_stops_it_and_keeps_its_data() {
    let data_dir = DataDir::new();
    let closed_port = free_port();

    let (server, channel) = serve(&data_dir, closed_port).await;
    let postgres = data_dir
        .server_pid()
        .expect("a server runs on the data dir");
    // A second notesd (the CLI) uses the server the first one runs.
    let created = notesd_without_database(&data_dir, closed_port)
        .args(["keys", "create", "--tenant", "acme", "--member", "alice"])
        .output()
        .await
        .unwrap();
    assert!(
        created.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    let key = String::from_utf8(created.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("the key")
        .to_owned();
    let metadata = Metadata(vec![("x-api-key", key)]);
    let mut client = NotesServiceClient::with_interceptor(channel, metadata.clone());
    let note = add(&mut client, text_note("customer", "42", "kept across runs")).await;

    let first_logs = terminate(server).await;
    let data_dir_shown = data_dir.0.display().to_string();
    assert!(
        first_logs.contains("started notesd's own PostgreSQL")
            && first_logs.contains(&data_dir_shown),
        "{first_logs}"
    );
    assert!(
        first_logs.contains("stopped notesd's own PostgreSQL"),
        "{first_logs}"
    );
    assert_gone(postgres, "after SIGTERM").await;
    assert_eq!(data_dir.server_pid(), None, "postmaster.pid is left");

    // The second run finds the cluster and the note; a crash of notesd
    // (SIGKILL) still stops its server.
    let (mut server, channel) = serve(&data_dir, closed_port).await;
    let postgres = data_dir
        .server_pid()
        .expect("a server runs on the data dir");
    let mut client = NotesServiceClient::with_interceptor(channel, metadata.clone());
    assert_eq!(get(&mut client, &note.id).await.unwrap(), note);
    server.kill().await.unwrap();
    let second_logs = logs(&mut server).await;
    assert!(
        !second_logs.contains("creating a PostgreSQL cluster"),
        "{second_logs}"
    );
    assert_gone(postgres, "after SIGKILL of notesd").await;

    let (server, channel) = serve(&data_dir, closed_port).await;
    let mut client = NotesServiceClient::with_interceptor(channel, metadata);
    assert_eq!(get(&mut client, &note.id).await.unwrap(), note);
    terminate(server).await;

    // Only the socket is trusted: a TCP line, should a port ever be
    // turned on, refuses.
    let hba = std::fs::read_to_string(data_dir.0.join("pg_hba.conf")).unwrap();
    for line in hba.lines().map(str::trim) {
        if line.starts_with("host") {
            assert!(line.ends_with("reject"), "{line}");
        }
    }

    // The server's user owns the data directory, and could put a link
    // where the log goes: notesd (root, here) never opens the log through
    // it, nor hands what it names to the server's user.
    let victim = std::env::temp_dir().join(format!("notesd-victim-{}", Uuid::now_v7().simple()));
    std::fs::write(&victim, "root's own").unwrap();
    let owner =
        |path: &Path| std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(path).unwrap());
    let owner_before = owner(&victim);
    let log = data_dir.0.join("notesd-postgres.log");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    let refused = notesd_without_database(&data_dir, closed_port)
        .arg("migrate")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(
        owner(&victim),
        owner_before,
        "the link's target changed hands"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's own");
    std::fs::remove_file(&victim).unwrap();
}

/// The default database is reached through a socket, and only in a
/// directory no other user may write to: a socket any user could have
/// made (here a fake server's, in a world-writable directory) is never
/// connected to. (The default was 127.0.0.1:5432, a port any local user
/// may listen on while no server does.)
#[tokio::test]
async fn the_default_database_is_never_a_socket_anyone_could_have_made() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("notesd-open-{}", Uuid::now_v7().simple()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fake = tokio::net::UnixListener::bind(dir.join(".s.PGSQL.5432")).unwrap();
    let data_dir = DataDir::new();
    let nowhere = Path::new("/nonexistent/notesd-test");
    let output = notesd_without_database(&data_dir, 1)
        .env(
            "NOTESD_DEFAULT_DATABASE_URL",
            format!("postgres:///notesd?host={}&user=postgres", dir.display()),
        )
        .env("NOTESD_POSTGRES_BIN_DIR", nowhere)
        .arg("migrate")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("writable by every user"), "{stderr}");
    let connected = tokio::time::timeout(Duration::from_millis(200), fake.accept()).await;
    assert!(connected.is_err(), "notesd connected to the fake server");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn without_a_database_or_postgres_binaries_the_error_names_both_ways_out() {
    let data_dir = DataDir::new();
    let closed_port = free_port();
    let nowhere = Path::new("/nonexistent/notesd-test");
    let output = notesd_without_database(&data_dir, closed_port)
        .env("PATH", nowhere)
        .env("NOTESD_POSTGRES_BIN_DIR", nowhere)
        .arg("serve")
        .output()
        .await
        .unwrap();

    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let error = stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"));
    for tried in [
        format!("127.0.0.1:{closed_port}"),
        nowhere.display().to_string(),
    ] {
        assert!(error.contains(&tried), "{error:?} does not name {tried}");
    }
    for way_out in ["install PostgreSQL", "set DATABASE_URL"] {
        assert!(
            error.contains(way_out),
            "{error:?} does not say {way_out:?}"
        );
    }
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert!(!data_dir.0.exists(), "a data directory was created");
}
