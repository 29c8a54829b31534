//! Clients on other gRPC stacks, generated from `proto/` as another team's
//! would be (docs/clients.md): Python's grpcio over mTLS, and Connect-ES's
//! gRPC-Web transport over HTTP/1.1 from Node. `interop/setup` prepares
//! them (once per run; the first time from PyPI and npm) in the target
//! directory; the scripts are in `interop/`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use crate::helpers::*;
use crate::tls::{Ca, TlsDir};

/// Where `interop/setup` leaves the venv, the stubs and node_modules.
fn workdir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop")
}

/// Runs `interop/setup` once for the whole test run.
async fn set_up() -> PathBuf {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let work = workdir();
    let dir = work.clone();
    let done = tokio::task::spawn_blocking(move || {
        DONE.get_or_init(|| {
            let output = std::process::Command::new(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/setup"),
            )
            .arg(&dir)
            .output()
            .map_err(|e| format!("interop/setup does not run: {e}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&output.stderr).into_owned())
            }
        })
        .clone()
    })
    .await
    .unwrap();
    if let Err(err) = done {
        panic!("interop/setup failed:\n{err}");
    }
    work
}

/// Runs `program script` with `env`, returning its output (printed when it
/// fails).
async fn run(program: PathBuf, script: &str, env: Vec<(&'static str, String)>) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let output = tokio::process::Command::new(&program)
        .arg(&script)
        .envs(env)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{} does not run: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {} failed:\n{}\n{}",
        program.display(),
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The word after `ok <step> ` in a client's output.
fn step_value(stdout: &str, step: &str) -> String {
    let prefix = format!("ok {step} ");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{stdout}"))
        .to_owned()
}

#[tokio::test]
async fn a_python_grpcio_client_calls_notesd_over_mtls() {
    let work = set_up().await;
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let dir = TlsDir::new();
    let settings = dir.mtls_settings(&server_ca.server(), &client_ca, r#"{"identities": []}"#);
    let app = spawn_app_with(|s| s.tls = Some(settings)).await;
    let key = app.member_key("acme", "alice").await;
    let client = client_ca.client("spiffe://acme/python", "python");

    let output = run(
        work.join("venv/bin/python"),
        "interop/python/client.py",
        vec![
            ("NOTESD_TARGET", format!("localhost:{}", app.addr.port())),
            ("NOTESD_API_KEY", key),
            (
                "NOTESD_PYTHON_GEN",
                work.join("python-gen").display().to_string(),
            ),
            (
                "NOTESD_CA",
                dir.write("ca.pem", &server_ca.pem()).display().to_string(),
            ),
            (
                "NOTESD_CLIENT_CERT",
                dir.write("client.crt", &client.cert).display().to_string(),
            ),
            (
                "NOTESD_CLIENT_KEY",
                dir.write("client.key", &client.key).display().to_string(),
            ),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ok list\n"), "{stdout}");
    assert!(stdout.contains("ok watch\n"), "{stdout}");
    // The error it decoded: INVALID_ARGUMENT, its ErrorInfo reason and the
    // BadRequest field.
    assert_eq!(
        step_value(&stdout, "error"),
        "INVALID_ARGUMENT FIELD_TOO_LARGE note.title"
    );
    // What it did is in the database: its note, by alice, updated once.
    let id: uuid::Uuid = step_value(&stdout, "add").parse().unwrap();
    let (creator, revision): (String, i64) =
        sqlx::query_as("select created_by, revision from notes where id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(creator, "alice");
    assert!(revision >= 2, "revision {revision}");
    assert_eq!(step_value(&stdout, "update"), "revision=2");
    app.stop().await;
}

#[tokio::test]
async fn a_connect_es_client_calls_notesd_with_grpc_web_over_http1() {
    let work = set_up().await;
    let app = spawn_app().await;
    let key = app.member_key("acme", "alice").await;

    let output = run(
        PathBuf::from("node"),
        "interop/node/client.mjs",
        vec![
            ("NOTESD_URL", format!("http://{}", app.addr)),
            ("NOTESD_API_KEY", key),
            (
                "NOTESD_NODE_GEN",
                work.join("node/gen").display().to_string(),
            ),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ok get\n"), "{stdout}");
    assert_eq!(step_value(&stdout, "unauthenticated"), "INVALID_API_KEY");
    let id: uuid::Uuid = step_value(&stdout, "add").parse().unwrap();
    let creator: String = sqlx::query_scalar("select created_by from notes where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(creator, "alice");
    app.stop().await;
}
