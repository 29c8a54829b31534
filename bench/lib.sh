# The steps bench/run and bench/search share, sourced by them (not run on
# its own) once their knobs are set: BENCH_PG_URL, BENCH_DB,
# BENCH_LOADGEN_THREADS, BENCH_GRPC_PORT, BENCH_HTTP_PORT,
# BENCH_NOTESD_ARGS, BENCH_NOTESD (optional).
#
# bench_init NAME makes the run's work directory and the exit trap; then
# bench_postgres, bench_build, bench_database, bench_seed LIST GET,
# bench_key TENANT, bench_start_notesd, and for each phase loadgen_phase
# NAME ARGS... (CPU counters around it in $WORK/NAME.cpu{0,1}.json, the
# client's CPU in $WORK/NAME.time, its figures in $WORK/NAME.json).
# bench_stop_notesd stops notesd (bench/edge restarts it with TLS: with
# TLS_CERT and TLS_KEY set, bench_start_notesd serves TLS on both ports and
# probes it with TLS_CA; GRPC_URL is then https://).
# A failed step is recorded with `fail` and the run goes on; bench_failed
# tells, at the end, whether any failed.

DB_URL="$BENCH_PG_URL/$BENCH_DB"
read -r PGHOST PGPORT PGUSER <<<"$(python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 5432, p.username or "postgres")' "$BENCH_PG_URL")"
export PGHOST PGPORT PGUSER

step() { printf '\n==> %s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.1f}")' "$1"; }
report() { python3 bench/report.py "$@"; }

FAILURES=()
fail() {
  printf 'FAILED: %s\n' "$*" >&2
  FAILURES+=("$*")
}

NOTESD_PID=""
TLS_CERT="${TLS_CERT:-}"
TLS_KEY="${TLS_KEY:-}"
TLS_CA="${TLS_CA:-}"

# Stops notesd (SIGTERM, then SIGKILL after 5 s) if it runs.
bench_stop_notesd() {
  if [ -n "$NOTESD_PID" ] && kill -0 "$NOTESD_PID" 2>/dev/null; then
    kill -TERM "$NOTESD_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$NOTESD_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$NOTESD_PID" 2>/dev/null || true
    wait "$NOTESD_PID" 2>/dev/null || true
  fi
  NOTESD_PID=""
}

bench_cleanup() {
  bench_stop_notesd
  if [ "${#FAILURES[@]}" -eq 0 ]; then
    rm -rf "$WORK"
  else
    echo "kept the run's files (notesd.log, each phase's output) in $WORK" >&2
  fi
}

# The run's start, its work directory (notesd-NAME.XXXXXX) and the exit trap.
bench_init() {
  RUN_START="$(now)"
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/notesd-$1.XXXXXX")"
  trap bench_cleanup EXIT
}

# Prints the failures and returns 0 when there were any.
bench_failed() {
  [ "${#FAILURES[@]}" -gt 0 ] || return 1
  printf '\n%d step(s) failed:\n' "${#FAILURES[@]}" >&2
  printf '  - %s\n' "${FAILURES[@]}" >&2
}

# Runs a command, recording its CPU (user, system, wall, max RSS) in $1 when
# /usr/bin/time is there.
timed() {
  local out="$1"
  shift
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%U %S %e %M' -o "$out" "$@"
  else
    "$@"
  fi
}

# Starts the local PostgreSQL if it is down; sets PG_VERSION.
bench_postgres() {
  step "PostgreSQL"
  if ! pg_isready -q; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
    for _ in $(seq 1 30); do
      pg_isready -q && break
      sleep 1
    done
  fi
  pg_isready
  PG_VERSION="$(psql -d postgres -Atc 'show server_version')"
}

# Builds the load generator and notesd (unless BENCH_NOTESD names one);
# sets NOTESD and LOADGEN.
bench_build() {
  local target_dir
  target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  LOADGEN="$target_dir/release/examples/loadgen"
  if [ -n "${BENCH_NOTESD:-}" ]; then
    step "build (release): the load generator; notesd is $BENCH_NOTESD"
    cargo build --release --example loadgen
    NOTESD="$BENCH_NOTESD"
  else
    step "build (release): notesd and the load generator"
    cargo build --release --bin notesd --example loadgen
    NOTESD="$target_dir/release/notesd"
  fi
}

bench_database() {
  step "database $BENCH_DB: drop, create, migrate"
  psql -d postgres -v ON_ERROR_STOP=1 -qc "drop database if exists \"$BENCH_DB\" with (force)"
  psql -d postgres -v ON_ERROR_STOP=1 -qc "create database \"$BENCH_DB\""
  RUST_LOG=warn "$NOTESD" migrate --database-url "$DB_URL"
}

# bench/sql/seed.sql with $1 notes in bench-list and $2 in bench-get; sets SEED_SECS.
bench_seed() {
  step "seed: $1 notes in bench-list, $2 in bench-get"
  local start
  start="$(now)"
  psql -d "$BENCH_DB" -v ON_ERROR_STOP=1 -q \
    -v list_notes="$1" -v get_notes="$2" -f bench/sql/seed.sql
  SEED_SECS="$(since "$start")"
  echo "seeding took ${SEED_SECS}s" >&2
}

# A member key (m-bench) of tenant $1: the key, on stdout.
bench_key() {
  RUST_LOG=warn "$NOTESD" keys create --database-url "$DB_URL" --tenant "$1" --member m-bench --label bench | tail -n 1
}

# Starts notesd serve and waits until it answers; sets NOTESD_PID, GRPC_ADDR,
# GRPC_URL, HTTP_PORT, and writes its idle memory to $WORK/rss_idle.json.
# With TLS_CERT and TLS_KEY, both ports speak TLS (the probe trusts TLS_CA).
# Its log goes to $WORK/notesd.log (appended to, when it is started again).
bench_start_notesd() {
  local grpc_port ready="" scheme=http
  local tls=() probe=()
  if [ -n "$TLS_CERT" ]; then
    scheme=https
    tls=(--tls-cert "$TLS_CERT" --tls-key "$TLS_KEY")
    probe=(--cacert "${TLS_CA:-$TLS_CERT}")
  fi
  step "start notesd ($scheme)"
  grpc_port="$(report free-port "$BENCH_GRPC_PORT")"
  HTTP_PORT="$(report free-port "$BENCH_HTTP_PORT")"
  GRPC_ADDR="127.0.0.1:$grpc_port"
  GRPC_URL="$scheme://$GRPC_ADDR"
  # shellcheck disable=SC2086 # BENCH_NOTESD_ARGS is a list of flags
  # The default log level (info), as in production: every call gets its span.
  # One tenant at full speed is what these phases measure: its rate is
  # lifted out of reach (the check still runs on every call) unless
  # NOTESD_TENANT_QUOTA says otherwise (docs/quotas.md).
  NOTESD_TENANT_QUOTA="${NOTESD_TENANT_QUOTA-rate=100000000,burst=100000000}" \
    "$NOTESD" serve --database-url "$DB_URL" \
    --grpc-addr "$GRPC_ADDR" --http-addr "127.0.0.1:$HTTP_PORT" "${tls[@]}" ${BENCH_NOTESD_ARGS:-} \
    >>"$WORK/notesd.log" 2>&1 &
  NOTESD_PID=$!
  for _ in $(seq 1 100); do
    if ! kill -0 "$NOTESD_PID" 2>/dev/null; then
      cat "$WORK/notesd.log" >&2
      echo "notesd exited at start" >&2
      exit 1
    fi
    if curl -fsS "${probe[@]}" "$scheme://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 &&
      (exec 3<>"/dev/tcp/127.0.0.1/$grpc_port") 2>/dev/null; then
      ready=1
      break
    fi
    sleep 0.1
  done
  [ -n "$ready" ] || {
    cat "$WORK/notesd.log" >&2
    echo "notesd did not become ready" >&2
    exit 1
  }
  echo "notesd pid $NOTESD_PID on $GRPC_URL (http :$HTTP_PORT)" >&2
  report proc-mem "$NOTESD_PID" >"$WORK/rss_idle.json"
}

notesd_alive() {
  kill -0 "$NOTESD_PID" 2>/dev/null || {
    fail "notesd died (log: last lines below)"
    tail -n 20 "$WORK/notesd.log" >&2
    return 1
  }
}

# Runs before each phase: settle the database, take the CPU counters.
phase_start() {
  psql -d "$BENCH_DB" -qc checkpoint
  report cpu-snap "$NOTESD_PID" >"$WORK/$1.cpu0.json"
  PHASE_START="$(now)"
}
phase_end() {
  report cpu-snap "$NOTESD_PID" >"$WORK/$1.cpu1.json"
  echo "$1 took $(since "$PHASE_START")s" >&2
}

# loadgen_phase NAME SUBCOMMAND ARGS...: one load generator run.
loadgen_phase() {
  local name="$1"
  shift
  phase_start "$name"
  local rc=0
  timed "$WORK/$name.time" "$LOADGEN" --threads "$BENCH_LOADGEN_THREADS" "$@" >"$WORK/$name.json" || rc=$?
  phase_end "$name"
  cat "$WORK/$name.json" >&2
  [ "$rc" -eq 0 ] || fail "$name: the load generator exited with $rc (failed calls or missing notes; see above)"
  [ -s "$WORK/$name.json" ] || echo '{}' >"$WORK/$name.json"
  notesd_alive || true
}

# Shows the first errors notesd logged, if any.
notesd_errors() {
  if grep -qE ' (ERROR|error)[ :]' "$WORK/notesd.log"; then
    echo "notesd logged errors (first lines):" >&2
    grep -E ' (ERROR|error)[ :]' "$WORK/notesd.log" | head -n 5 >&2
  fi
}

# This checkout's commit, +dirty with uncommitted changes to tracked files.
git_rev() {
  local rev
  rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    rev="$rev+dirty"
  fi
  echo "$rev"
}
