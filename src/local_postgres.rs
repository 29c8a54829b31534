//! A PostgreSQL server of notesd's own, for a machine where PostgreSQL is
//! installed but no server is configured: what `notesd` runs when it is
//! given no database URL and nothing answers at the default address, and
//! the test suite's private server (docs/local-postgres.md).
//!
//! The server listens only on a Unix socket inside its data directory (no
//! TCP port). That directory is private to the server's user (mode 0700),
//! so only that user (and root) can reach the socket, which is why the
//! cluster trusts connections on it without a password (TCP lines refuse).
//!
//! Everything here blocks (std processes and sleeps): the test suite starts
//! its server from whichever test comes first, and the server must not
//! depend on that test's runtime.

use std::fs;
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};

/// Where distributions (Debian, Ubuntu) install each PostgreSQL version's
/// server binaries: `<root>/<version>/bin`.
const INSTALL_ROOT: &str = "/usr/lib/postgresql";

/// The server's port: with no TCP listener it only names the socket file,
/// `.s.PGSQL.5432`.
const PORT: u16 = 5432;

/// The longest path a Unix socket may have (`sun_path` holds 108 bytes,
/// the last one a NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The server's log (and the stop's), in the data directory.
const LOG_FILE: &str = "notesd-postgres.log";

/// How long the server may take to start (crash recovery included).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    dir: PathBuf,
}

impl PgBinaries {
    /// Finds the server binaries in `dir` when given; else in `pg_config
    /// --bindir` (pg_config from PATH), then in the newest
    /// `/usr/lib/postgresql/<version>/bin`. The error says where it looked.
    pub fn find(dir: Option<&Path>) -> anyhow::Result<Self> {
        let (candidates, searched) = match dir {
            Some(dir) => (vec![dir.to_owned()], format!("in {}", dir.display())),
            None => {
                let mut candidates: Vec<PathBuf> = pg_config_bindir().into_iter().collect();
                candidates.extend(installed_bin_dirs());
                let searched = format!(
                    "in `pg_config --bindir` (pg_config on PATH) or {INSTALL_ROOT}/<version>/bin"
                );
                (candidates, searched)
            }
        };
        candidates
            .into_iter()
            .map(|dir| Self { dir })
            .find(Self::complete)
            .ok_or_else(|| {
                anyhow!("no PostgreSQL server binaries (initdb, pg_ctl, postgres) {searched}")
            })
    }

    fn complete(&self) -> bool {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|name| self.dir.join(name).is_file())
    }

    fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    output.status.success().then(|| PathBuf::from(dir.trim()))
}

/// `/usr/lib/postgresql/<version>/bin`, newest version first.
fn installed_bin_dirs() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(INSTALL_ROOT) else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry
                .file_name()
                .to_str()?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

#[derive(Debug, Clone)]
pub struct LocalPostgresOptions {
    /// The cluster's data directory, created (with `initdb`) on first use.
    /// The socket lives in it too, so its path must stay short.
    pub data_dir: PathBuf,
    pub max_connections: u32,
    /// A throwaway server (the test suite's): a fresh data directory, no
    /// fsync, and when the process that started it exits, the server is
    /// stopped at once and its data directory removed.
    pub scratch: bool,
    /// The data directory of a server of this machine to make this one a
    /// hot standby of, streaming its changes (`pg_basebackup -R` on first
    /// use), instead of a cluster of its own.
    pub standby_of: Option<PathBuf>,
}

/// A PostgreSQL server running on a data directory of notesd's.
///
/// The server is stopped when the process that started it exits, however
/// it exits: a reaper child (`sh`) waits for the end of its standard input,
/// a pipe only this process holds, then runs `pg_ctl stop`. [`stop`] closes
/// the pipe and waits for it; dropping this value, a crash or SIGKILL
/// closes it too.
///
/// [`stop`]: LocalPostgres::stop
#[derive(Debug)]
pub struct LocalPostgres {
    data_dir: PathBuf,
    /// `None` when the server was already running (started by another
    /// notesd on the same data directory, which stops it).
    reaper: Option<Child>,
}

impl LocalPostgres {
    /// Creates the cluster when the data directory holds none, and starts
    /// the server unless one already runs there; returns once it accepts
    /// connections.
    pub fn start(binaries: &PgBinaries, options: &LocalPostgresOptions) -> anyhow::Result<Self> {
        let user = ServerUser::choose()?;
        let data_dir = std::path::absolute(&options.data_dir)
            .with_context(|| format!("bad data directory {}", options.data_dir.display()))?;
        let socket = data_dir.join(format!(".s.PGSQL.{PORT}"));
        ensure!(
            socket.as_os_str().len() <= MAX_SOCKET_PATH,
            "the data directory {} is too long a path for the socket PostgreSQL makes in it \
             (at most {} bytes): choose a shorter one",
            data_dir.display(),
            MAX_SOCKET_PATH - ".s.PGSQL.5432/".len(),
        );
        if options.scratch && data_dir.exists() {
            fs::remove_dir_all(&data_dir)
                .with_context(|| format!("cannot empty {}", data_dir.display()))?;
        }
        if !data_dir.join("PG_VERSION").exists() {
            match &options.standby_of {
                Some(primary) => base_backup(binaries, user, primary, &data_dir)?,
                None => create_cluster(binaries, user, &data_dir)?,
            }
        }
        if is_running(binaries, user, &data_dir)? {
            return Ok(Self {
                data_dir,
                reaper: None,
            });
        }

        let log_path = data_dir.join(LOG_FILE);
        let log = open_log(&log_path, user)?;
        // The reaper comes first, so no moment exists in which a server
        // runs that nothing would stop. Both get process groups of their
        // own: a Ctrl-C at the terminal is notesd's to handle (it drains
        // its calls before the database goes), not theirs.
        let reaper = spawn_reaper(binaries, user, &data_dir, options.scratch, &log)?;
        let mut server = spawn_server(binaries, user, &data_dir, options, log)?;
        // On failure the reaper is dropped with `this`, its pipe closes,
        // and it stops whatever did start.
        let this = Self {
            data_dir,
            reaper: Some(reaper),
        };
        wait_until_ready(&mut server, &this.data_dir, &log_path)?;
        Ok(this)
    }

    /// Stops the server at once (`pg_ctl stop -m fast`), keeping its data
    /// directory, so that [`resume`](Self::resume) can start it again: for
    /// a test that takes a server away.
    pub fn halt(&self, binaries: &PgBinaries) -> anyhow::Result<()> {
        let status = ServerUser::choose()?
            .command(&binaries.program("pg_ctl"))
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run pg_ctl")?;
        ensure!(status.success(), "pg_ctl stop failed ({status})");
        Ok(())
    }

    /// Starts the server again after [`halt`](Self::halt), with the
    /// options it was started with; returns once it accepts connections.
    pub fn resume(
        &self,
        binaries: &PgBinaries,
        options: &LocalPostgresOptions,
    ) -> anyhow::Result<()> {
        let user = ServerUser::choose()?;
        let log_path = self.data_dir.join(LOG_FILE);
        let log = fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut server = spawn_server(binaries, user, &self.data_dir, options, log)?;
        wait_until_ready(&mut server, &self.data_dir, &log_path)
    }

    /// The data directory (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether this process started the server (and stops it), rather than
    /// finding it running.
    pub fn started_here(&self) -> bool {
        self.reaper.is_some()
    }

    /// The URL of `database` on this server, as user `postgres`, through
    /// its socket.
    pub fn url(&self, database: &str) -> String {
        let mut url = url::Url::parse("postgres://postgres@localhost").expect("a valid URL");
        url.set_path(&format!("/{database}"));
        url.query_pairs_mut()
            .append_pair("host", &self.data_dir.to_string_lossy())
            .append_pair("port", &PORT.to_string());
        url.to_string()
    }

    /// Stops the server (if this process started it) and waits until it
    /// has stopped.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut reaper) = self.reaper.take() else {
            return Ok(());
        };
        drop(reaper.stdin.take());
        let status = reaper.wait().context("cannot wait for pg_ctl stop")?;
        ensure!(
            status.success(),
            "pg_ctl could not stop the server ({status}); see {}",
            self.data_dir.join(LOG_FILE).display()
        );
        Ok(())
    }
}

/// The user the server runs as. PostgreSQL refuses to run as root, so a
/// root notesd runs it as the `postgres` system user, which then owns the
/// data directory; anyone else runs it as themselves.
#[derive(Debug, Clone, Copy)]
enum ServerUser {
    Current,
    System { uid: u32, gid: u32 },
}

impl ServerUser {
    fn choose() -> anyhow::Result<Self> {
        if !is_root() {
            return Ok(Self::Current);
        }
        let passwd = fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
        passwd
            .lines()
            .find_map(|line| {
                let mut fields = line.split(':');
                if fields.next()? != "postgres" {
                    return None;
                }
                let uid = fields.nth(1)?.parse().ok()?;
                let gid = fields.next()?.parse().ok()?;
                Some(Self::System { uid, gid })
            })
            .ok_or_else(|| {
                anyhow!(
                    "notesd runs as root, which PostgreSQL refuses to run as, and there is no \
                     `postgres` user to run it as instead"
                )
            })
    }

    /// `program` run as this user, from `/`: the server's user may not be
    /// allowed into our working directory.
    fn command(self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir("/");
        if let Self::System { uid, gid } = self {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn take_ownership(self, path: &Path) -> anyhow::Result<()> {
        if let Self::System { uid, gid } = self {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to the postgres user", path.display()))?;
        }
        Ok(())
    }
}

/// Opens (creating it) the server's log in its data directory, which the
/// server's user owns: that user could have put a symbolic link there, so
/// the log is never opened through one (to root, that link could name
/// `/etc/shadow`, and handing the file to the server's user would hand it
/// that file), and it is given to the server's user by its descriptor.
fn open_log(path: &Path, user: ServerUser) -> anyhow::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| {
            format!(
                "cannot open {} (it must be a plain file, not a symbolic link)",
                path.display()
            )
        })?;
    // A hard link to another file is no plain log either (where the
    // kernel does not protect hard links, anyone may make one).
    let metadata = log.metadata()?;
    ensure!(
        metadata.is_file() && std::os::unix::fs::MetadataExt::nlink(&metadata) == 1,
        "{} is not a plain file of its own",
        path.display()
    );
    if let ServerUser::System { uid, gid } = user {
        std::os::unix::fs::fchown(&log, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to the postgres user", path.display()))?;
    }
    Ok(log)
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn create_cluster(binaries: &PgBinaries, user: ServerUser, data_dir: &Path) -> anyhow::Result<()> {
    if let Some(parent) = data_dir.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(data_dir) {
        Ok(()) => {}
        // initdb takes an existing directory only when it is empty, and
        // says so otherwise.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => {
            return Err(err).with_context(|| format!("cannot create {}", data_dir.display()));
        }
    }
    user.take_ownership(data_dir)?;
    tracing::info!(data_dir = %data_dir.display(), "creating a PostgreSQL cluster");
    let output = user
        .command(&binaries.program("initdb"))
        .arg("-D")
        .arg(data_dir)
        // The socket, in a directory only the server's user may enter, is
        // trusted; TCP is refused, should anyone ever turn a port on.
        .args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=reject",
            "-E",
            "UTF8",
        ])
        .arg("--locale=C.UTF-8")
        .stdin(Stdio::null())
        .output()
        .context("cannot run initdb")?;
    ensure!(
        output.status.success(),
        "initdb failed on {}: {}",
        data_dir.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Runs `postgres` on `data_dir`, listening on its socket only.
fn spawn_server(
    binaries: &PgBinaries,
    user: ServerUser,
    data_dir: &Path,
    options: &LocalPostgresOptions,
    log: fs::File,
) -> anyhow::Result<Child> {
    let mut server = user.command(&binaries.program("postgres"));
    server
        .arg("-D")
        .arg(data_dir)
        .arg("-k")
        .arg(data_dir)
        .args(["-h", "", "-p", &PORT.to_string()])
        .args([
            "-c",
            &format!("max_connections={}", options.max_connections),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    if options.scratch {
        server.args(["-c", "fsync=off"]);
    }
    server.spawn().context("cannot run postgres")
}

/// Copies the cluster of the server on `primary` (its data directory and
/// socket) into `data_dir` as a standby of it: `pg_basebackup -R`, which
/// writes `standby.signal` and the connection to stream from.
fn base_backup(
    binaries: &PgBinaries,
    user: ServerUser,
    primary: &Path,
    data_dir: &Path,
) -> anyhow::Result<()> {
    if let Some(parent) = data_dir.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        user.take_ownership(parent)?;
    }
    tracing::info!(data_dir = %data_dir.display(), primary = %primary.display(), "making a standby");
    let output = user
        .command(&binaries.program("pg_basebackup"))
        .arg("-D")
        .arg(data_dir)
        .arg("-h")
        .arg(primary)
        .args([
            "-p",
            &PORT.to_string(),
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        ])
        .stdin(Stdio::null())
        .output()
        .context("cannot run pg_basebackup")?;
    ensure!(
        output.status.success(),
        "pg_basebackup failed into {}: {}",
        data_dir.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    // The primary's socket lives in its data directory, and the copy has
    // its lock file, which would stop the standby from making its own.
    let lock = data_dir.join(format!(".s.PGSQL.{PORT}.lock"));
    match fs::remove_file(&lock) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot remove {}", lock.display())),
    }
    Ok(())
}

/// Whether a server runs on `data_dir` (`pg_ctl status`, which sees through
/// a `postmaster.pid` left by a crash).
fn is_running(binaries: &PgBinaries, user: ServerUser, data_dir: &Path) -> anyhow::Result<bool> {
    let status = user
        .command(&binaries.program("pg_ctl"))
        .arg("status")
        .arg("-D")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run pg_ctl")?;
    Ok(status.success())
}

fn spawn_reaper(
    binaries: &PgBinaries,
    user: ServerUser,
    data_dir: &Path,
    scratch: bool,
    log: &fs::File,
) -> anyhow::Result<Child> {
    // `read` returns at the end of input: nothing is ever written to the
    // pipe, so that is when this process has exited or called `stop`.
    let script = if scratch {
        r#"read -r _; "$0" stop -D "$1" -m immediate -s; rm -rf "$1""#
    } else {
        r#"read -r _; exec "$0" stop -D "$1" -m fast -s"#
    };
    let (stdout, stderr) = if scratch {
        (Stdio::null(), Stdio::null())
    } else {
        (log.try_clone()?.into(), log.try_clone()?.into())
    };
    user.command(Path::new("/bin/sh"))
        .args(["-c", script])
        .arg(binaries.program("pg_ctl"))
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .context("cannot run /bin/sh")
}

/// Waits until the server started as `server` reports itself ready in its
/// `postmaster.pid` (as `pg_ctl start -w` does), or fails with the end of
/// its log.
fn wait_until_ready(server: &mut Child, data_dir: &Path, log_path: &Path) -> anyhow::Result<()> {
    let pid_file = data_dir.join("postmaster.pid");
    let deadline = Instant::now() + START_TIMEOUT;
    let log_tail = || {
        let log = fs::read_to_string(log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    };
    loop {
        if let Some(status) = server.try_wait()? {
            bail!(
                "postgres stopped at start ({status}); the end of {}:\n{}",
                log_path.display(),
                log_tail()
            );
        }
        // Line 1 is the server's pid (a file left by a crashed server
        // names another), line 8 its status.
        if let Ok(contents) = fs::read_to_string(&pid_file) {
            let lines: Vec<&str> = contents.lines().collect();
            let pid = server.id().to_string();
            let ours = lines.first().map(|line| line.trim()) == Some(pid.as_str());
            // A hot standby says `standby` once it accepts connections.
            let status = lines.get(7).map(|status| status.trim());
            if ours && matches!(status, Some("ready" | "standby")) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "postgres is not ready after {} s; the end of {}:\n{}",
                START_TIMEOUT.as_secs(),
                log_path.display(),
                log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use sqlx::postgres::PgConnectOptions;

    use super::*;

    #[test]
    fn the_url_reaches_the_socket_in_the_data_directory() {
        let server = LocalPostgres {
            data_dir: PathBuf::from("/var/lib/notes d/postgres"),
            reaper: None,
        };
        let options = PgConnectOptions::from_str(&server.url("notesd")).unwrap();
        assert_eq!(
            options.get_socket(),
            Some(Path::new("/var/lib/notes d/postgres").to_path_buf()).as_ref()
        );
        assert_eq!(options.get_port(), PORT);
        assert_eq!(options.get_database(), Some("notesd"));
        assert_eq!(options.get_username(), "postgres");
    }
}
