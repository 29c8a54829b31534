#!/usr/bin/env python3
"""Helpers of bench/run and bench/search (standard library only).

  free-port PREFERRED            the preferred TCP port if free on 127.0.0.1, else a free one
  proc-mem PID                   VmHWM and VmRSS of a process, as JSON (KiB and MiB)
  cpu-snap PID                   CPU counters (machine, the process, all postgres processes) as JSON
  pgbench-stats OUT LOGDIR TIME  TPS from pgbench's output, latency percentiles from its
                                 per-transaction logs, client CPU from /usr/bin/time
  summary --work DIR ...         the report: a table on stdout, markdown and JSON files
  search-summary --work DIR ...  bench/search's report, the same way
  edge-summary --work DIR ...    bench/edge's report: CPU a call of TLS and compression
  replica-summary --work DIR ... bench/replica's report: reads with and without a replica
"""

import argparse
import datetime
import json
import math
import os
import re
import socket
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def free_port(preferred):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_mem(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                kib = int(value.split()[0])
                out[key + "_kib"] = kib
                out[key + "_mib"] = round(kib / 1024, 1)
    return out


def proc_ticks(pid, children=False):
    """utime + stime (and cutime + cstime) of a process, in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def parent_of(pid):
    """The parent's pid of a process, as a string ("" when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return ""
    return stat[stat.rfind(")") + 2 :].split()[1]


def cpu_snap(pid):
    """CPU counters, in clock ticks, of every process of the machine.

    Each process counts with the CPU of the children it has reaped (cutime),
    so processes that come and go between two snapshots are counted (the
    backends of pgbench's connections, a compiler run by a build).
    Per-process times are precise where /proc/stat's counters are sampled
    at each timer tick, which misses tasks that wake and sleep between two
    ticks: this workload has many.
    """
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    idle = cpu[3] + cpu[4]  # idle + iowait
    total = sum(cpu[:8])  # guest time is already in user
    everything = 0
    postgres = 0
    # bench/replica's standby: its postmaster and its children (BENCH_STANDBY_PID).
    standby = os.environ.get("BENCH_STANDBY_PID", "")
    standby_ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        ticks = proc_ticks(entry, children=True)
        everything += ticks
        if comm == "postgres":
            postgres += ticks
            if standby and (entry == standby or parent_of(entry) == standby):
                standby_ticks += ticks
    return {
        "time": time.time(),
        "all_processes_ticks": everything,
        "proc_stat_busy_ticks": total - idle,
        "proc_stat_total_ticks": total,
        "notesd_ticks": proc_ticks(pid),
        "postgres_ticks": postgres,
        **({"standby_ticks": standby_ticks} if standby else {}),
        "ticks_per_sec": TICKS,
        "cpus": os.cpu_count(),
    }


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def read_time(path):
    """/usr/bin/time -f '%U %S %e %M' output: user, sys, wall seconds, max RSS KiB."""
    try:
        with open(path) as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        user, system, wall, maxrss = lines[-1].split()
        user, system, wall = float(user), float(system), float(wall)
        return {
            "client_cpu_secs": round(user + system, 2),
            "client_wall_secs": wall,
            "client_cpu_cores": round((user + system) / wall, 2) if wall else 0.0,
            "client_max_rss_mib": round(int(maxrss) / 1024, 1),
        }
    except (OSError, ValueError, IndexError):
        return {}


def pgbench_stats(out_path, log_dir, time_path):
    with open(out_path) as f:
        out = f.read()
    stats = {}
    m = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", out, re.M)
    if m:
        stats["tps"] = round(float(m.group(1)), 1)
    m = re.search(r"^number of transactions actually processed: (\d+)", out, re.M)
    if m:
        stats["transactions"] = int(m.group(1))
    m = re.search(r"^number of failed transactions: (\d+)", out, re.M)
    stats["failed"] = int(m.group(1)) if m else 0
    latencies = []
    for name in os.listdir(log_dir):
        with open(os.path.join(log_dir, name)) as f:
            for line in f:
                fields = line.split()
                # client_id transaction_no time script_no time_epoch time_us;
                # "time" is the latency in microseconds.
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]))
    latencies.sort()
    n = len(latencies)
    stats["logged"] = n
    for name, p in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99)):
        stats[name] = round(percentile(latencies, p) / 1000, 3)
    stats["max_ms"] = round(latencies[-1] / 1000, 3) if n else 0.0
    stats["mean_ms"] = round(sum(latencies) / n / 1000, 3) if n else 0.0
    stats.update(read_time(time_path))
    return stats


def load(path, default=None):
    try:
        with open(path) as f:
            text = f.read().strip()
        return json.loads(text) if text else default
    except (OSError, ValueError):
        return default


def cpu_use(work, phase):
    """Cores used during a phase: every process, notesd, postgres."""
    a = load(os.path.join(work, f"{phase}.cpu0.json"))
    b = load(os.path.join(work, f"{phase}.cpu1.json"))
    if not a or not b:
        return {}
    wall = (b["time"] - a["time"]) * b["ticks_per_sec"]  # ticks of wall time
    if wall <= 0:
        return {}
    cpus = b["cpus"] or 1
    stat_total = b["proc_stat_total_ticks"] - a["proc_stat_total_ticks"]
    busy = (b["all_processes_ticks"] - a["all_processes_ticks"]) / wall
    return {
        "machine_busy_pct": round(100 * busy / cpus, 1),
        "machine_busy_pct_proc_stat": round(
            100 * (b["proc_stat_busy_ticks"] - a["proc_stat_busy_ticks"]) / stat_total, 1
        )
        if stat_total > 0
        else None,
        "all_cores": round(busy, 2),
        "notesd_cores": round((b["notesd_ticks"] - a["notesd_ticks"]) / wall, 2),
        "postgres_cores": round((b["postgres_ticks"] - a["postgres_ticks"]) / wall, 2),
        **(
            {"standby_cores": round((b["standby_ticks"] - a["standby_ticks"]) / wall, 2)}
            if "standby_ticks" in a and "standby_ticks" in b
            else {}
        ),
    }


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def fmt(value, unit="", digits=2):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.1f}" if abs(value) >= 100 else f"{value:.{digits}f}"
    else:
        text = f"{value:,}"
    return f"{text}{unit}"


def met(ok):
    return "n/a" if ok is None else ("yes" if ok else "NO")


def at_most(value, limit):
    return None if value is None else value <= limit


def at_least(value, limit):
    return None if value is None else value >= limit


def p50_p99(phase):
    return f"{fmt(phase.get('p50_ms'))} / {fmt(phase.get('p99_ms'), ' ms')}"


def table(header, body):
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def aligned(header, body):
    """The same table for the terminal, aligned."""
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(out)


def knobs_of(names):
    return {k: os.environ.get(k, "") for k in names}


def load_avg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def run_meta(args):
    """When, what and where: the head of each report."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_rev": args.git_rev,
        "nproc": os.cpu_count(),
        "postgres": args.pg_version,
        "seed_secs": float(args.seed_secs),
        "total_secs": float(args.total_secs),
        "load_average_at_end": load_avg(),
        "note": os.environ.get("BENCH_NOTE", ""),
    }


def meta_lines(meta, knobs):
    """The report's opening lines, under its title."""
    lines = [
        f"{meta['date']}, commit `{meta['git_rev']}`, {meta['nproc']} CPUs, PostgreSQL {meta['postgres']}. "
        f"Seeding took {meta['seed_secs']:.0f} s, the whole run {meta['total_secs']:.0f} s; "
        f"load average at the end: {meta['load_average_at_end']}.",
        "",
        "Knobs: " + ", ".join(f"`{k}={v}`" for k, v in knobs.items() if v != "") + ".",
    ]
    if meta["note"]:
        lines += ["", f"Note: {meta['note']}"]
    return lines


def cpu_row(label, cpu, client, notesd=True):
    """A phase's row of the CPU table (notesd idle for a pgbench phase); fills in cpu["other_cores"]."""
    other = None
    if cpu and client.get("client_cpu_cores") is not None:
        other = round(
            max(0.0, cpu["all_cores"] - cpu["postgres_cores"] - cpu["notesd_cores"] - client["client_cpu_cores"]), 2
        )
        cpu["other_cores"] = other
    return (
        label,
        fmt(cpu.get("machine_busy_pct"), " %", digits=1),
        fmt(cpu.get("postgres_cores")),
        fmt(cpu.get("notesd_cores")) if notesd else "idle",
        fmt(client.get("client_cpu_cores")),
        fmt(other),
    )


CPU_HEADER = ("phase", "machine busy", "postgres", "notesd", "client (pgbench / loadgen)", "other")
CPU_NOTE = (
    "CPU used during each measured phase, in cores (the machine has "
    f"{os.cpu_count()}): postgres counts every postgres process, whatever its database; "
    "other is the rest of the machine. A client near its thread count limited the phase; "
    "a busy machine with idle server processes points at something else running."
)


def report_lines(title, meta, knobs, intro, rows, cpu_rows, failures):
    """A report's markdown: its title, the run, the figures, the CPU, the failures."""
    md = [f"# {title}", ""] + meta_lines(meta, knobs)
    md += [
        "",
        intro,
        "",
        table(("figure", "value", "target", "met?"), rows),
        "",
        CPU_NOTE,
        "",
        table(CPU_HEADER, cpu_rows),
    ]
    if failures:
        md += ["", "**Failed steps:**", ""] + [f"- {f}" for f in failures]
    return md


def write_report(args, md_lines, result, rows, cpu_rows):
    """Writes the markdown and JSON files and prints the tables."""
    os.makedirs(os.path.dirname(args.md) or ".", exist_ok=True)
    with open(args.md, "w") as f:
        f.write("\n".join(md_lines) + "\n")
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2, sort_keys=False)
        f.write("\n")
    print()
    print(aligned(("figure", "value", "target", "met?"), rows))
    print()
    print(aligned(("phase", "machine busy", "postgres", "notesd", "client", "other"), cpu_rows))
    print()
    print(f"written: {args.md}, {args.json}")


def load_phase(work, name, loadgen=True):
    """A phase's figures, with its CPU and (for a load generator phase) the client's."""
    data = load(os.path.join(work, f"{name}.json"), {}) or {}
    data.update({"cpu": cpu_use(work, name)})
    client = read_time(os.path.join(work, f"{name}.time"))
    if client and loadgen:
        data["client"] = client
    return data


def failures_of(work):
    try:
        with open(os.path.join(work, "failures.txt")) as f:
            return [line.strip() for line in f if line.strip()]
    except OSError:
        return []


def summary(args):
    work = args.work
    knobs = knobs_of(
        (
            "BENCH_SECS",
            "BENCH_WARMUP_SECS",
            "BENCH_CLIENTS",
            "BENCH_LIST_NOTES",
            "BENCH_GET_NOTES",
            "BENCH_DB",
            "BENCH_CONNECTIONS",
            "BENCH_LOADGEN_THREADS",
            "BENCH_PGBENCH_THREADS",
            "BENCH_LIST_CONCURRENCY",
            "BENCH_LIST_PAGE_SIZE",
            "BENCH_NOTESD_ARGS",
            "BENCH_NOTESD",
        )
    )
    phases = {
        name: load_phase(work, name, loadgen=name in ("add", "get", "list"))
        for name in ("pgbench_insert", "add", "pgbench_select", "get", "list")
    }
    rss_add = load(os.path.join(work, "rss_after_add.json"), {}) or {}
    rss_end = load(os.path.join(work, "rss_end.json"), {}) or {}
    rss_idle = load(os.path.join(work, "rss_idle.json"), {}) or {}
    failures = failures_of(work)

    ins, add, sel, get, lst = (phases[n] for n in ("pgbench_insert", "add", "pgbench_select", "get", "list"))
    far = f"page{lst.get('far_page', 1000)}"
    page1, pagefar = lst.get("page1", {}), lst.get(far, {})
    add_ratio = ratio(add.get("rps"), ins.get("tps"))
    get_ratio = ratio(get.get("rps"), sel.get("tps"))
    list_ratio = ratio(pagefar.get("p99_ms"), page1.get("p99_ms"))
    peak_rss = rss_add.get("VmHWM_mib")

    rows = [
        ("pgbench INSERT TPS", fmt(ins.get("tps")), "baseline", ""),
        ("pgbench INSERT p50 / p99", p50_p99(ins), "", ""),
        ("AddNote RPS", fmt(add.get("rps")), "", ""),
        ("AddNote p50 / p99", p50_p99(add), "p99 ≤ 15 ms", met(at_most(add.get("p99_ms"), 15))),
        ("AddNote / pgbench INSERT", fmt(add_ratio, "×"), "≥ 1.2×", met(at_least(add_ratio, 1.2))),
        ("AddNote OK (warmup incl.) / found in DB",
         f"{fmt(add.get('created_ok_total'))} / {fmt(add.get('verified_in_db'))}", "all found",
         met(None if add.get("missing_in_db") is None else add.get("missing_in_db") == 0)),
        ("AddNote errors", fmt(add.get("errors")), "0", met(None if add.get("errors") is None else add["errors"] == 0)),
        ("notesd peak RSS (VmHWM) after AddNote", fmt(peak_rss, " MiB"), "≤ 100 MiB", met(at_most(peak_rss, 100))),
        ("pgbench select-by-key TPS", fmt(sel.get("tps")), "baseline", ""),
        ("pgbench select p50 / p99", p50_p99(sel), "", ""),
        ("GetNote RPS", fmt(get.get("rps")), "", ""),
        ("GetNote p50 / p99", p50_p99(get), "", ""),
        ("GetNote / pgbench select", fmt(get_ratio, "×"), "≥ 0.8×", met(at_least(get_ratio, 0.8))),
        ("GetNote errors", fmt(get.get("errors")), "0", met(None if get.get("errors") is None else get["errors"] == 0)),
        ("ListNotes page 1 RPS", fmt(page1.get("rps")), "", ""),
        ("ListNotes page 1 p50 / p99", p50_p99(page1), "p99 ≤ 5 ms", met(at_most(page1.get("p99_ms"), 5))),
        (f"ListNotes page {lst.get('far_page', 1000)} RPS", fmt(pagefar.get("rps")), "", ""),
        (f"ListNotes page {lst.get('far_page', 1000)} p50 / p99", p50_p99(pagefar), "p99 ≤ 5 ms",
         met(at_most(pagefar.get("p99_ms"), 5))),
        (f"ListNotes p99 page {lst.get('far_page', 1000)} / page 1", fmt(list_ratio, "×"), "≤ 1.5×",
         met(at_most(list_ratio, 1.5))),
    ]

    cpu_rows = [
        cpu_row(label, phases[name]["cpu"], client, notesd=name in ("add", "get", "list"))
        for name, label, client in (
            ("pgbench_insert", "1 pgbench INSERT", ins),
            ("add", "2 AddNote", add.get("client", {})),
            ("pgbench_select", "3 pgbench select", sel),
            ("get", "4 GetNote", get.get("client", {})),
            ("list", "5 ListNotes (both pages)", lst.get("client", {})),
        )
    ]

    meta = run_meta(args)
    md = report_lines(
        "notesd benchmark: latest run",
        meta,
        knobs,
        "Targets are figures to compare against, not pass/fail of the run.",
        rows,
        cpu_rows,
        failures,
    )

    result = {
        "meta": meta,
        "knobs": knobs,
        "ratios": {
            "addnote_over_pgbench_insert": add_ratio,
            "getnote_over_pgbench_select": get_ratio,
            "list_p99_far_over_page1": list_ratio,
        },
        "rss": {"idle": rss_idle, "after_add": rss_add, "end": rss_end},
        "phases": phases,
        "failures": failures,
    }
    write_report(args, md, result, rows, cpu_rows)


SEARCHES = (
    ("search_rare", "rare word"),
    ("search_common", "common word"),
    ("search_phrase", "phrase"),
    ("search_relevance", "common word, relevance order"),
)
BATCH_PHASES = ("get", "batch_get", "add", "batch_add")
SEARCH_P99_MS = 20


def per_million(value, notes):
    return value * 1_000_000 / notes if value is not None and notes else None


def mib(n):
    return None if n is None else round(n / 2**20, 1)


def search_summary(args):
    """bench/search's report. Its work directory holds each phase's figures
    and CPU, queries.json (each search's query and how many notes match it)
    and sizes.json (the index, the column and the table, in bytes)."""
    work = args.work
    knobs = knobs_of(
        (
            "BENCH_SECS",
            "BENCH_WARMUP_SECS",
            "BENCH_CLIENTS",
            "BENCH_LIST_NOTES",
            "BENCH_GET_NOTES",
            "BENCH_DB",
            "BENCH_CONNECTIONS",
            "BENCH_LOADGEN_THREADS",
            "BENCH_SEARCH_CONCURRENCY",
            "BENCH_SEARCH_PAGE_SIZE",
            "BENCH_BATCH",
            "BENCH_BATCH_CONCURRENCY",
            "BENCH_NOTESD_ARGS",
            "BENCH_NOTESD",
        )
    )
    phases = {name: load_phase(work, name) for name, _ in SEARCHES}
    phases.update({name: load_phase(work, name) for name in BATCH_PHASES})
    queries = load(os.path.join(work, "queries.json"), {}) or {}
    sizes = load(os.path.join(work, "sizes.json"), {}) or {}
    failures = failures_of(work)

    list_notes, table_notes = sizes.get("list_notes"), sizes.get("table_notes")
    index_per_m = per_million(sizes.get("index_bytes"), table_notes)
    column_per_m = per_million(sizes.get("column_bytes"), list_notes)
    heap_per_m = per_million(sizes.get("table_bytes"), table_notes)
    rows = []
    for name, label in SEARCHES:
        phase, query = phases[name], queries.get(name, {})
        rows.append(
            (
                f"SearchNotes, {label}: `{query.get('query', '?')}` ({fmt(query.get('matches'))} notes match)",
                f"{p50_p99(phase)}; {fmt(phase.get('rps'))} calls/s, {fmt(phase.get('notes_per_call'))} hits a call",
                f"p99 ≤ {SEARCH_P99_MS} ms",
                met(at_most(phase.get("p99_ms"), SEARCH_P99_MS)),
            )
        )
    rows += [
        ("notes_search (GIN) per 1M notes",
         f"{fmt(mib(index_per_m), ' MiB')} ({fmt(mib(sizes.get('index_bytes')), ' MiB')} for {fmt(table_notes)} notes)",
         "", ""),
        ("search column per 1M notes (bench-list)",
         f"{fmt(mib(column_per_m), ' MiB')} ({fmt(mib(sizes.get('column_bytes')), ' MiB')} for {fmt(list_notes)} notes)",
         "", ""),
        ("  for comparison: notes table per 1M notes",
         f"{fmt(mib(heap_per_m), ' MiB')} ({fmt(mib(sizes.get('table_bytes')), ' MiB')}, heap and TOAST)", "", ""),
    ]
    ratios = {}
    for single, batch, label in (("get", "batch_get", "GetNote"), ("add", "batch_add", "AddNote")):
        one, many = phases[single], phases[batch]
        ratios[f"{batch}_over_{single}_notes_per_sec"] = ratio(many.get("notes_per_sec"), one.get("notes_per_sec"))
        for phase, what in ((one, label), (many, f"Batch{label.replace('Note', 'Notes')} of {many.get('batch', '?')}")):
            rows.append(
                (
                    f"{what}, {phase.get('concurrency', '?')} in flight",
                    f"{fmt(phase.get('notes_per_sec'))} notes/s ({fmt(phase.get('rps'))} calls/s); {p50_p99(phase)}",
                    "",
                    "",
                )
            )
        rows.append((f"  notes/s, batch over single {label}", fmt(ratios[f"{batch}_over_{single}_notes_per_sec"], "×"),
                     "", ""))
        if single == "add":
            for phase, what in ((one, label), (many, "BatchAddNotes")):
                rows.append((f"  {what} notes OK (warmup incl.) / found in DB",
                             f"{fmt(phase.get('created_ok_total'))} / {fmt(phase.get('verified_in_db'))}",
                             "all found",
                             met(None if phase.get("missing_in_db") is None else phase["missing_in_db"] == 0)))
    errors = [phase.get("errors") for phase in phases.values()]
    total_errors = None if None in errors else sum(errors)
    rows.append(("failed calls, every phase", fmt(total_errors), "0", met(None if total_errors is None else total_errors == 0)))

    labels = dict(SEARCHES)
    labels.update(get="GetNote", batch_get="BatchGetNotes", add="AddNote", batch_add="BatchAddNotes")
    cpu_rows = [
        cpu_row(f"{i} {labels[name]}", phases[name]["cpu"], phases[name].get("client", {}))
        for i, name in enumerate(phases, start=1)
    ]

    meta = run_meta(args)
    md = report_lines(
        "SearchNotes and the batch calls: benchmark",
        meta,
        knobs,
        f"SearchNotes on tenant bench-list ({fmt(list_notes)} notes), "
        f"{knobs['BENCH_SEARCH_CONCURRENCY'] or '?'} calls in flight, "
        f"{knobs['BENCH_SEARCH_PAGE_SIZE'] or '?'} hits a page, newest first unless said. "
        "Targets are figures to compare against, not pass/fail of the run.",
        rows,
        cpu_rows,
        failures,
    )
    result = {
        "meta": meta,
        "knobs": knobs,
        "queries": queries,
        "sizes": dict(
            sizes,
            index_bytes_per_million_notes=round(index_per_m) if index_per_m else None,
            column_bytes_per_million_notes=round(column_per_m) if column_per_m else None,
            table_bytes_per_million_notes=round(heap_per_m) if heap_per_m else None,
        ),
        "ratios": ratios,
        "phases": phases,
        "failures": failures,
    }
    write_report(args, md, result, rows, cpu_rows)


EDGE_CASES = (
    ("plain", "plaintext"),
    ("gzip", "gzip"),
    ("zstd", "zstd"),
    ("tls", "TLS"),
    ("tls_zstd", "TLS + zstd"),
    ("tls_gzip", "TLS + gzip"),
)
EDGE_CONNECTS = (
    ("connect.plain", "plaintext"),
    ("connect.tls", "TLS, full handshake"),
    ("connect.tls_resumed", "TLS, resumed session"),
)
# The figures of a run averaged over the rounds.
EDGE_MEANS = (
    "rps",
    "p50_ms",
    "p99_ms",
    "server_cpu_us_per_call",
    "server_cpu_cores",
    "loadgen_cpu_us_per_call",
    "request_bytes_per_call",
    "response_bytes_per_call",
    "compressed_responses_pct",
    "target_rate",
)


def edge_calls(big, page_size):
    return (
        ("add", "AddNote, 110-byte note"),
        ("add_big", f"AddNote, {big}-byte note"),
        ("get", "GetNote, seeded note (~100 bytes)"),
        ("get_big", f"GetNote, {big}-byte note"),
        ("list", f"ListNotes page 1 ({page_size} notes)"),
    )


def edge_figures(phase):
    """A run's loadgen figures (ListNotes nests them under its page)."""
    return phase.get("page1", phase)


def mean(values):
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 3) if values else None


def edge_rounds(figures):
    """The figures of one case and call over its rounds: the mean of each
    of EDGE_MEANS, the errors summed, notesd's CPU a call each round."""
    out = {key: mean([f.get(key) for f in figures]) for key in EDGE_MEANS}
    out["rounds"] = len(figures)
    out["errors"] = sum(f.get("errors") or 0 for f in figures) if figures else None
    out["server_cpu_us_per_call_rounds"] = [f.get("server_cpu_us_per_call") for f in figures]
    out["tls_resumed"] = sum(f.get("tls_resumed") or 0 for f in figures)
    out["calls"] = sum(f.get("calls") or 0 for f in figures)
    out["tls"] = any(f.get("tls") for f in figures)
    return out


def edge_cost(runs, base_runs, key="server_cpu_us_per_call"):
    """What a case costs over the baseline: the difference of the means, its
    share of the baseline, and the lowest and highest difference of a round
    against the baseline of the same round."""
    mean_case = mean([f.get(key) for f in runs])
    mean_base = mean([f.get(key) for f in base_runs])
    if mean_case is None or mean_base is None:
        return {"us": None, "pct": None, "round_min": None, "round_max": None}
    per_round = [
        a.get(key) - b.get(key)
        for a, b in zip(runs, base_runs)
        if a.get(key) is not None and b.get(key) is not None
    ]
    return {
        "us": round(mean_case - mean_base, 2),
        "pct": round(100 * (mean_case - mean_base) / mean_base, 1) if mean_base else None,
        "round_min": round(min(per_round), 2) if per_round else None,
        "round_max": round(max(per_round), 2) if per_round else None,
    }


def cost_text(cost):
    """+12.3 µs (+15 %), and the rounds' range when there are several."""
    if cost["us"] is None:
        return "n/a"
    text = f"{cost['us']:+.1f} µs"
    if cost["pct"] is not None:
        text += f" ({cost['pct']:+.0f} %)"
    if cost["round_min"] is not None and cost["round_min"] != cost["round_max"]:
        text += f" [{cost['round_min']:+.1f} to {cost['round_max']:+.1f}]"
    return text


def us_rounds(runs):
    """notesd's CPU a call: the mean, and each round's when there are several."""
    values = [f.get("server_cpu_us_per_call") for f in runs]
    text = fmt(mean(values), digits=1)
    if len(values) > 1:
        text += " (" + ", ".join(fmt(v, digits=1) for v in values) + ")"
    return text


def edge_summary(args):
    """bench/edge's report. Its work directory holds one phase per case,
    call and round, named CASE.CALL.rN (plain.add.r1, tls_zstd.get_big.r2,
    ...), and the fresh-connection runs (connect.plain.rN, connect.tls.rN,
    connect.tls_resumed.rN), each with notesd's CPU over its measured window
    (loadgen --server-pid)."""
    work = args.work
    knobs = knobs_of(
        (
            "BENCH_SECS",
            "BENCH_WARMUP_SECS",
            "BENCH_EDGE_ROUNDS",
            "BENCH_CLIENTS",
            "BENCH_EDGE_RATES",
            "BENCH_LIST_NOTES",
            "BENCH_GET_NOTES",
            "BENCH_BIG_BYTES",
            "BENCH_EDGE_CASES",
            "BENCH_EDGE_CALLS",
            "BENCH_CONNECT",
            "BENCH_CONNECT_SECS",
            "BENCH_CONNECT_CONCURRENCY",
            "BENCH_DB",
            "BENCH_CONNECTIONS",
            "BENCH_LOADGEN_THREADS",
            "BENCH_LIST_CONCURRENCY",
            "BENCH_LIST_PAGE_SIZE",
            "BENCH_NOTESD_ARGS",
            "BENCH_NOTESD",
        )
    )
    rounds = int(knobs["BENCH_EDGE_ROUNDS"] or "1")
    big = knobs["BENCH_BIG_BYTES"] or "8192"
    calls = edge_calls(big, knobs["BENCH_LIST_PAGE_SIZE"] or "100")
    runs_of = [f"{case}.{call}" for call, _ in calls for case, _ in EDGE_CASES]
    runs_of += [name for name, _ in EDGE_CONNECTS]
    phases = {}
    for run in runs_of:
        for r in range(1, rounds + 1):
            name = f"{run}.r{r}"
            if os.path.exists(os.path.join(work, f"{name}.json")):
                phases[name] = load_phase(work, name)
    failures = failures_of(work)

    def runs(run):
        """The figures of each round of a run, in order."""
        return [edge_figures(phases[f"{run}.r{r}"]) for r in range(1, rounds + 1) if f"{run}.r{r}" in phases]

    paced = bool(knobs["BENCH_EDGE_RATES"].strip())
    rows, costs, summary = [], {}, {}
    for call, call_label in calls:
        base = runs(f"plain.{call}")
        for case, case_label in EDGE_CASES:
            these = runs(f"{case}.{call}")
            if not these:
                continue
            agg = edge_rounds(these)
            summary.setdefault(call, {})[case] = agg
            if case != "plain":
                costs.setdefault(call, {})[case] = {
                    "server": edge_cost(these, base),
                    "loadgen": edge_cost(these, base, "loadgen_cpu_us_per_call"),
                }
            rate = agg.get("rps")
            rate_text = fmt(rate)
            target = agg.get("target_rate")
            if target:
                rate_text += f" of {fmt(target)}" + (" (short)" if rate is not None and rate < 0.95 * target else "")
            rows.append(
                (
                    call_label,
                    case_label,
                    rate_text,
                    p50_p99(agg),
                    us_rounds(these),
                    "baseline" if case == "plain" else cost_text(costs[call][case]["server"]),
                    fmt(agg.get("loadgen_cpu_us_per_call"), digits=1),
                    f"{fmt(agg.get('request_bytes_per_call'))} / {fmt(agg.get('response_bytes_per_call'))}",
                    fmt(agg.get("compressed_responses_pct"), " %", digits=0),
                    fmt(agg.get("errors")),
                )
            )
    header = (
        "call",
        "case",
        "calls/s" + (" (of the paced rate)" if paced else ""),
        "p50 / p99",
        "notesd CPU µs a call" + (" (each round)" if rounds > 1 else ""),
        "vs plaintext" + (" [rounds' range]" if rounds > 1 else ""),
        "loadgen CPU µs a call",
        "message bytes a call (request / response)",
        "responses compressed",
        "errors",
    )

    cost_cases = [
        (case, label) for case, label in EDGE_CASES if case != "plain" and any(case in c for c in costs.values())
    ]
    cost_header = ("call", *(label for _, label in cost_cases))
    cost_rows = [
        (label, *(cost_text(costs[call][case]["server"]) if case in costs[call] else "" for case, _ in cost_cases))
        for call, label in calls
        if call in costs
    ]

    connect_rows, connect_costs = [], {}
    base = runs("connect.plain")
    for run, label in EDGE_CONNECTS:
        these = runs(run)
        if not these:
            continue
        agg = edge_rounds(these)
        summary.setdefault("connect", {})[run.removeprefix("connect.")] = agg
        if run != "connect.plain":
            connect_costs[run.removeprefix("connect.")] = {
                "server": edge_cost(these, base),
                "loadgen": edge_cost(these, base, "loadgen_cpu_us_per_call"),
            }
        connect_rows.append(
            (
                label,
                fmt(agg.get("rps")),
                p50_p99(agg),
                us_rounds(these),
                "baseline" if run == "connect.plain" else cost_text(connect_costs[run.removeprefix("connect.")]["server"]),
                fmt(agg.get("loadgen_cpu_us_per_call"), digits=1),
                f"{fmt(agg.get('tls_resumed'))} of {fmt(agg.get('calls'))}" if agg.get("tls") else "",
                fmt(agg.get("errors")),
            )
        )
    connect_header = (
        "fresh connection, one GetNote",
        "connections/s",
        "p50 / p99",
        "notesd CPU µs a connection" + (" (each round)" if rounds > 1 else ""),
        "vs plaintext" + (" [rounds' range]" if rounds > 1 else ""),
        "loadgen CPU µs a connection",
        "resumed (measured)",
        "errors",
    )

    labels = {f"{case}.{call}": f"{case_label}: {call_label}" for call, call_label in calls for case, case_label in EDGE_CASES}
    labels.update({name: f"connections, {label}" for name, label in EDGE_CONNECTS})
    cpu_rows = []
    for name, phase in phases.items():
        run, _, r = name.rpartition(".")
        label = labels.get(run, run) + (f", round {r[1:]}" if rounds > 1 else "")
        cpu_rows.append(cpu_row(label, phase["cpu"], phase.get("client", {})))

    pace = (
        f"paced at `{knobs['BENCH_EDGE_RATES']}` calls/s, the other calls as fast as they go, "
        if paced
        else "as fast as they go (closed loop), "
    )
    sessions = sorted({edge_figures(p).get("tls_session") for p in phases.values()} - {None})
    meta = run_meta(args)
    meta["tls_sessions"] = sessions
    md = ["# TLS and compression: what they cost notesd", ""] + meta_lines(meta, knobs)
    md += [
        "",
        f"Each run: {knobs['BENCH_CLIENTS'] or '?'} calls in flight over {knobs['BENCH_CONNECTIONS'] or '?'} "
        f"HTTP/2 connections (ListNotes: {knobs['BENCH_LIST_CONCURRENCY'] or '?'} over 2), {pace}"
        f"{knobs['BENCH_SECS'] or '?'} s measured after {knobs['BENCH_WARMUP_SECS'] or '?'} s of warmup, "
        f"{rounds} round(s). notesd's CPU is its utime + stime (/proc/<pid>/stat) from the opening of the "
        "measured window to the end of its last call, over the calls that finished in it; the load "
        "generator's the same way. Compression: requests in that encoding, responses accepted in it (notesd "
        "then compresses every response). Message bytes: the gRPC messages as sent, headers and TLS records "
        "not counted."
        + (f" TLS: {', '.join(f'`{s}`' for s in sessions)} (rustls, ring)." if sessions else ""),
        "",
        "**What each costs notesd a call** (CPU µs, the mean over the rounds against plaintext's"
        + ("; in brackets the lowest and highest difference of one round" if rounds > 1 else "")
        + "):",
        "",
        table(cost_header, cost_rows) if cost_rows else "(no case to compare)",
        "",
        table(header, rows),
    ]
    if connect_rows:
        md += [
            "",
            f"**What a new connection costs** ({knobs['BENCH_CONNECT_CONCURRENCY'] or '?'} at a time, "
            f"{knobs['BENCH_CONNECT_SECS'] or '?'} s each): connect, handshake (TLS 1.3 with a P-256 certificate, "
            "then HTTP/2), one GetNote, close; notesd's CPU per connection, the GetNote included. "
            "The TLS rows less the plaintext one are the handshake's cost.",
            "",
            table(connect_header, connect_rows),
        ]
    md += ["", CPU_NOTE, "", table(CPU_HEADER, cpu_rows)]
    if failures:
        md += ["", "**Failed steps:**", ""] + [f"- {f}" for f in failures]

    result = {
        "meta": meta,
        "knobs": knobs,
        "costs": costs,
        "connect_costs": connect_costs,
        "summary": summary,
        "phases": phases,
        "failures": failures,
    }
    os.makedirs(os.path.dirname(args.md) or ".", exist_ok=True)
    with open(args.md, "w") as f:
        f.write("\n".join(md) + "\n")
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2, sort_keys=False)
        f.write("\n")
    print()
    if cost_rows:
        print(aligned(cost_header, cost_rows))
        print()
    print(aligned(header, rows))
    if connect_rows:
        print()
        print(aligned(connect_header, connect_rows))
    print()
    print(aligned(("phase", "machine busy", "postgres", "notesd", "client", "other"), cpu_rows))
    print()
    print(f"written: {args.md}, {args.json}")



def prom_samples(path):
    """name{labels} -> value of a /metrics snapshot (the Prometheus text format)."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                key, _, value = line.rstrip().rpartition(" ")
                try:
                    out[key] = float(value)
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def replica_reads(work, name):
    """The reads each database served during a run (notesd_db_reads_total,
    warmup included), the replica's share, and its lag and state at the end."""
    a = prom_samples(os.path.join(work, f"{name}.metrics0.txt"))
    b = prom_samples(os.path.join(work, f"{name}.metrics1.txt"))
    reads = {}
    for key, value in b.items():
        m = re.fullmatch(r'notesd_db_reads_total\{target="([^"]+)"\}', key)
        if m:
            reads[m.group(1)] = int(value - a.get(key, 0))
    total = sum(reads.values())
    replica = sum(n for target, n in reads.items() if target != "primary")
    return {
        "reads": reads,
        "replica_share_pct": round(100 * replica / total, 1) if total else None,
        "replica_up": b.get('notesd_replica_up{replica="0"}'),
        "replica_lag_seconds": b.get('notesd_replica_lag_seconds{replica="0"}'),
    }


REPLICA_CALLS = (
    ("get", "GetNote, seeded note"),
    ("list", "ListNotes page 1"),
)
REPLICA_RW = (
    ("rw_token", "primary", "no replica (token on, none sent)"),
    ("rw_token", "replica", "replica, with the token"),
    ("rw_notoken", "replica", "replica, without the token"),
)
REPLICA_MEANS = (
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "mean_ms",
    "server_cpu_us_per_call",
    "loadgen_cpu_us_per_call",
    "stale_reads_pct",
)


def replica_rounds(runs):
    """A run's figures over its rounds: the means, the sums, the replica's share."""
    out = {key: mean([f.get(key) for f in runs]) for key in REPLICA_MEANS}
    out["rounds"] = len(runs)
    for key in ("calls", "errors", "stale_reads", "tokens_received"):
        out[key] = sum(f.get(key) or 0 for f in runs)
    out["replica_share_pct"] = mean([f["db"].get("replica_share_pct") for f in runs])
    out["cpu"] = {
        key: mean([f["cpu"].get(key) for f in runs])
        for key in ("postgres_cores", "standby_cores", "notesd_cores", "all_cores")
    }
    adds = [f["add"] for f in runs if f.get("add")]
    if adds:
        out["add"] = {key: mean([a.get(key) for a in adds]) for key in ("rps", "p50_ms", "p99_ms")}
    return out


def delta(a, b, digits=3):
    return round(a - b, digits) if a is not None and b is not None else None


def signed(value, unit=" ms"):
    return "n/a" if value is None else f"{value:+.3f}{unit}"


def replica_summary(args):
    """bench/replica's report. Its work directory holds one run per call,
    server and round, named CALL.SERVER.rN (get.primary.r1,
    rw_notoken.replica.r2, ...), with /metrics before and after
    (NAME.metrics0.txt, NAME.metrics1.txt)."""
    work = args.work
    knobs = knobs_of(
        (
            "BENCH_SECS",
            "BENCH_WARMUP_SECS",
            "BENCH_REPLICA_ROUNDS",
            "BENCH_REPLICA_CALLS",
            "BENCH_CLIENTS",
            "BENCH_LIST_CONCURRENCY",
            "BENCH_LIST_PAGE_SIZE",
            "BENCH_RW_CONCURRENCY",
            "BENCH_LIST_NOTES",
            "BENCH_GET_NOTES",
            "BENCH_DB",
            "BENCH_STANDBY_PORT",
            "BENCH_CONNECTIONS",
            "BENCH_LOADGEN_THREADS",
            "BENCH_NOTESD_ARGS",
            "BENCH_REPLICA_ARGS",
            "BENCH_NOTESD",
        )
    )
    rounds = int(knobs["BENCH_REPLICA_ROUNDS"] or "1")
    phases = {}
    for call in ("get", "list", "rw_token", "rw_notoken"):
        for server in ("primary", "replica"):
            for r in range(1, rounds + 1):
                name = f"{call}.{server}.r{r}"
                if os.path.exists(os.path.join(work, f"{name}.json")):
                    phase = load_phase(work, name)
                    phase["db"] = replica_reads(work, name)
                    phases[name] = phase
    failures = failures_of(work)

    def runs(call, server):
        out = []
        for r in range(1, rounds + 1):
            phase = phases.get(f"{call}.{server}.r{r}")
            if phase is not None:
                figures = dict(edge_figures(phase))
                figures.update({"cpu": phase["cpu"], "db": phase["db"]})
                out.append(figures)
        return out

    summary = {}
    for call in ("get", "list", "rw_token", "rw_notoken"):
        for server in ("primary", "replica"):
            these = runs(call, server)
            if these:
                summary.setdefault(call, {})[server] = replica_rounds(these)

    header = (
        "call",
        "notesd",
        "calls/s",
        "p50 / p99",
        "vs no replica (calls/s, p99)",
        "notesd CPU µs a call",
        "reads served by the replica",
        "postgres cores: primary / standby",
        "errors",
    )
    rows = []
    for call, label in REPLICA_CALLS:
        base = summary.get(call, {}).get("primary")
        for server in ("primary", "replica"):
            agg = summary.get(call, {}).get(server)
            if not agg:
                continue
            cpu = agg["cpu"]
            primary_pg = delta(cpu.get("postgres_cores"), cpu.get("standby_cores") or 0, 2)
            versus = "baseline"
            if server == "replica":
                versus = (
                    f"{fmt(ratio(agg.get('rps'), base.get('rps')), 'x')}, {signed(delta(agg.get('p99_ms'), base.get('p99_ms')))}"
                    if base
                    else "n/a"
                )
            rows.append(
                (
                    label,
                    "without replicas" if server == "primary" else "with the replica",
                    fmt(agg.get("rps")),
                    p50_p99(agg),
                    versus,
                    fmt(agg.get("server_cpu_us_per_call"), digits=1),
                    fmt(agg.get("replica_share_pct"), " %", digits=1),
                    f"{fmt(primary_pg)} / {fmt(cpu.get('standby_cores'))}",
                    fmt(agg.get("errors")),
                )
            )

    rw_header = (
        "read-own-writes (AddNote, then GetNote of it)",
        "pairs/s",
        "GetNote p50 / p90 / p99",
        "vs the replica without the token (p50, p99)",
        "vs no replica (p50, p99)",
        "AddNote p50 / p99",
        "tokens received",
        "stale reads (NotFound)",
        "reads served by the replica",
        "notesd CPU µs a pair",
    )
    rw_rows, token_cost = [], {}
    notoken = summary.get("rw_notoken", {}).get("replica")
    noreplica = summary.get("rw_token", {}).get("primary")
    for call, server, label in REPLICA_RW:
        agg = summary.get(call, {}).get(server)
        if not agg:
            continue
        vs_notoken = vs_noreplica = ""
        if (call, server) == ("rw_token", "replica"):
            token_cost = {
                "vs_no_token": {
                    p: delta(agg.get(p), notoken.get(p)) if notoken else None for p in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")
                },
                "vs_no_replica": {
                    p: delta(agg.get(p), noreplica.get(p)) if noreplica else None
                    for p in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")
                },
            }
            vs_notoken = ", ".join(signed(token_cost["vs_no_token"][p]) for p in ("p50_ms", "p99_ms"))
            vs_noreplica = ", ".join(signed(token_cost["vs_no_replica"][p]) for p in ("p50_ms", "p99_ms"))
        elif (call, server) == ("rw_notoken", "replica") and noreplica:
            vs_noreplica = ", ".join(signed(delta(agg.get(p), noreplica.get(p))) for p in ("p50_ms", "p99_ms"))
        add = agg.get("add", {})
        rw_rows.append(
            (
                label,
                fmt(agg.get("rps")),
                f"{fmt(agg.get('p50_ms'))} / {fmt(agg.get('p90_ms'))} / {fmt(agg.get('p99_ms'), ' ms')}",
                vs_notoken or ("baseline" if call == "rw_notoken" else ""),
                vs_noreplica or ("baseline" if server == "primary" else ""),
                f"{fmt(add.get('p50_ms'))} / {fmt(add.get('p99_ms'), ' ms')}",
                fmt(agg.get("tokens_received")),
                f"{fmt(agg.get('stale_reads'))} ({fmt(agg.get('stale_reads_pct'), ' %', digits=2)})",
                fmt(agg.get("replica_share_pct"), " %", digits=1),
                fmt(agg.get("server_cpu_us_per_call"), digits=1),
            )
        )

    labels = {"get": "GetNote", "list": "ListNotes page 1", "rw_token": "read-own-writes, token", "rw_notoken": "read-own-writes, no token"}
    cpu_header = ("run", "machine busy", "postgres (both)", "of it the standby", "notesd", "loadgen", "other", "replica lag at the end")
    cpu_rows = []
    for name, phase in phases.items():
        call, server, r = name.split(".")
        label = f"{labels[call]}, {'with the replica' if server == 'replica' else 'no replica'}" + (
            f", round {r[1:]}" if rounds > 1 else ""
        )
        row = cpu_row(label, phase["cpu"], phase.get("client", {}))
        lag = phase["db"].get("replica_lag_seconds")
        cpu_rows.append(
            (
                *row[:3],
                fmt(phase["cpu"].get("standby_cores")),
                *row[3:],
                "" if server == "primary" else fmt(None if lag is None else lag * 1000, " ms", digits=1),
            )
        )

    meta = run_meta(args)
    meta["standby"] = args.standby
    wait = "100"
    m = re.search(r"--replica-token-wait-ms[ =](\d+)", knobs["BENCH_REPLICA_ARGS"] + " " + knobs["BENCH_NOTESD_ARGS"])
    if m:
        wait = m.group(1)
    md = ["# Read replicas: GetNote and ListNotes with one replica, and reading one's own writes", ""]
    md += meta_lines(meta, knobs)
    md += [
        "",
        f"**One machine, {os.cpu_count()} cores, for everything**: the primary PostgreSQL, its hot standby "
        "(made for the run with `pg_basebackup -R -X stream`, streaming from the primary, on port "
        f"{knobs['BENCH_STANDBY_PORT'] or '?'}), notesd and the load generator share them. A replica here adds "
        "no hardware, only another PostgreSQL competing for the same cores (and the standby's replay of the "
        "primary's WAL): what it shows is the cost of routing reads to a replica and of waiting for a token, "
        "not the capacity a replica on its own machine would add. "
        f"Standby: {args.standby}.",
        "",
        f"Each run: {knobs['BENCH_SECS'] or '?'} s measured after {knobs['BENCH_WARMUP_SECS'] or '?'} s of warmup, "
        f"{rounds} round(s), the mean over the rounds. GetNote: {knobs['BENCH_CLIENTS'] or '?'} calls in flight over "
        f"{knobs['BENCH_CONNECTIONS'] or '?'} HTTP/2 connections; ListNotes page 1 ({knobs['BENCH_LIST_PAGE_SIZE'] or '?'} notes): "
        f"{knobs['BENCH_LIST_CONCURRENCY'] or '?'} in flight. notesd's CPU is its utime + stime over the measured window "
        "(loadgen --server-pid). Reads served by the replica: the share of `notesd_db_reads_total` that went to "
        "`replica-0` over the run, warmup included.",
        "",
        table(header, rows) if rows else "(no GetNote or ListNotes run)",
    ]
    if rw_rows:
        md += [
            "",
            f"**Reading one's own write**: {knobs['BENCH_RW_CONCURRENCY'] or '?'} tasks, each in turn: AddNote, then "
            "GetNote of the note it created, with the AddNote's `notesd-consistency-token` in the request metadata "
            "(with the token) or not. The latency is the GetNote's. With the token, notesd serves the read from the "
            "replica once it has replayed that WAL position, else from the primary: it asks the replica at once, "
            "then every millisecond (`TOKEN_POLL`, src/storage/replicas.rs) for at most "
            f"`--replica-token-wait-ms` = {wait} ms, so a token not yet replayed costs at least a 1 ms sleep. Every "
            "read must find its note. Without "
            "the token, a replica within `--replica-max-lag-ms` serves it whatever it has replayed: a read that "
            "finds no note is a stale read. The difference with the token against without is what waiting for the "
            "token adds to a read. Served by the replica: the share of all the reads notesd counted in the run.",
            "",
            table(rw_header, rw_rows),
        ]
    md += [
        "",
        CPU_NOTE + " Of it the standby: the standby's postmaster and its processes (startup/replay, walreceiver, "
        "the backends serving notesd's replica reads); the primary's is the rest (its walsender included).",
        "",
        table(cpu_header, cpu_rows),
    ]
    if failures:
        md += ["", "**Failed steps:**", ""] + [f"- {f}" for f in failures]

    result = {
        "meta": meta,
        "knobs": knobs,
        "shared_machine": f"primary, standby, notesd and the load generator share this machine's {os.cpu_count()} cores",
        "token_cost": token_cost,
        "summary": summary,
        "phases": phases,
        "failures": failures,
    }
    os.makedirs(os.path.dirname(args.md) or ".", exist_ok=True)
    with open(args.md, "w") as f:
        f.write("\n".join(md) + "\n")
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2, sort_keys=False)
        f.write("\n")
    print()
    if rows:
        print(aligned(header, rows))
        print()
    if rw_rows:
        print(aligned(rw_header, rw_rows))
        print()
    print(aligned(cpu_header, cpu_rows))
    print()
    print(f"written: {args.md}, {args.json}")



NOISY_P99_RATIO = 2.0
QUOTA_COST_RATIO = 0.97


def quotas_summary(args):
    """bench/quotas' report: tenant B's latency alone and beside tenant A's
    unbounded loop (with quotas, and without), A's admitted and refused
    calls, and GetNote and AddNote with quotas on, off, on."""
    work = args.work
    knobs = knobs_of(
        (
            "BENCH_SECS",
            "BENCH_WARMUP_SECS",
            "BENCH_CLIENTS",
            "BENCH_LIST_NOTES",
            "BENCH_GET_NOTES",
            "BENCH_DB",
            "BENCH_CONNECTIONS",
            "BENCH_B_RATE",
            "BENCH_A_CONCURRENCY",
            "BENCH_FAIR_QUOTA",
            "BENCH_A_OVERRIDE",
            "BENCH_NOTESD_ARGS",
            "BENCH_NOTESD",
        )
    )
    failures = failures_of(work)
    runs = {}
    for phase in ("alone1", "noisy", "alone2", "unlimited"):
        for part in ("get", "add", "search", "batch"):
            path = os.path.join(work, f"{phase}_{part}.json")
            if os.path.exists(path):
                runs[f"{phase}_{part}"] = load(path, {}) or {}
    cost = {name: load_phase(work, f"cost_{name}") for name in ("on1_get", "on1_add", "off_get", "off_add", "on2_get", "on2_add")}
    cpu = {phase: cpu_use(work, phase) for phase in ("alone1", "noisy", "alone2", "unlimited")}

    def b_p99(phase, part):
        return runs.get(f"{phase}_{part}", {}).get("p99_ms")

    def alone_p99(part):
        values = [v for v in (b_p99("alone1", part), b_p99("alone2", part)) if v is not None]
        return max(values) if values else None

    rows, result = [], {"runs": runs, "cost": cost, "cpu": cpu}
    for part, label in (("get", "GetNote"), ("add", "AddNote")):
        alone, noisy, unlimited = alone_p99(part), b_p99("noisy", part), b_p99("unlimited", part)
        r = ratio(noisy, alone)
        result[f"b_{part}_p99_ratio"] = r
        result[f"b_{part}_p99_ratio_without_quotas"] = ratio(unlimited, alone)
        errors = runs.get(f"noisy_{part}", {}).get("errors")
        rows.append(
            (
                f"B's {label} p99 beside A, over alone (A/B/A, the worse alone run)",
                f"{fmt(r)}× ({fmt(noisy, ' ms')} vs {fmt(alone, ' ms')}); errors {fmt(errors)}",
                f"≤ {NOISY_P99_RATIO}×, no error",
                met(None if r is None else (r <= NOISY_P99_RATIO and errors == 0)),
            )
        )
        rows.append(
            (
                f"  without quotas (--quotas false): B's {label} p99 beside A",
                f"{fmt(ratio(unlimited, alone))}× ({fmt(unlimited, ' ms')})",
                "",
                "",
            )
        )
    for phase, label in (("noisy", "with quotas"), ("unlimited", "without quotas")):
        search, batch = runs.get(f"{phase}_search", {}), runs.get(f"{phase}_batch", {})
        refused = lambda run: (run.get("errors_by_code") or {}).get("ResourceExhausted", 0)
        secs = search.get("measured_secs") or 0
        rows.append(
            (
                f"A's loop, {label}: searches / batches of 100 admitted a second (refused)",
                f"{fmt(search.get('ok', 0) / secs if secs else None)} ({fmt(refused(search) / secs if secs else None)})"
                f" / {fmt(batch.get('ok', 0) / (batch.get('measured_secs') or 1))}"
                f" ({fmt(refused(batch) / (batch.get('measured_secs') or 1))})",
                "",
                "",
            )
        )
    for part, label in (("get", "GetNote"), ("add", "AddNote")):
        on = [cost[f"on1_{part}"].get("rps"), cost[f"on2_{part}"].get("rps")]
        on_mean = sum(on) / 2 if None not in on else None
        off = cost[f"off_{part}"].get("rps")
        r = ratio(on_mean, off)
        result[f"{part}_quotas_on_over_off"] = r
        rows.append(
            (
                f"{label}, {fmt(cost[f'off_{part}'].get('concurrency'))} in flight: quotas on (mean of on, on) over off",
                f"{fmt(r)}× ({fmt(on[0])}, {fmt(on[1])} vs {fmt(off)} calls/s)",
                f"≥ {QUOTA_COST_RATIO}×",
                met(at_least(r, QUOTA_COST_RATIO)),
            )
        )
    cpu_rows = [
        cpu_row(phase, cpu.get(phase) or {}, {})
        for phase in ("alone1", "noisy", "alone2", "unlimited")
    ]
    cpu_rows += [cpu_row(f"cost_{name}", phase.get("cpu") or {}, phase.get("client") or {}) for name, phase in cost.items()]
    meta = run_meta(args)
    result.update({"meta": meta, "knobs": knobs, "failures": failures})
    intro = (
        "Tenant B calls GetNote and AddNote at a modest, paced rate; tenant A loops on "
        "SearchNotes and BatchAddNotes of 100 as fast as notesd answers, never backing off. Every "
        "tenant has the same quota (`BENCH_FAIR_QUOTA`). Then the cost of the check itself: "
        "GetNote and AddNote at full speed, one tenant, quotas on (its rate out of reach) and off, "
        "on/off/on, notesd restarted for each."
    )
    md = report_lines("notesd fair shares: the noisy neighbour and the cost of quotas", meta, knobs, intro, rows, cpu_rows, failures)
    write_report(args, md, result, rows, cpu_rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("free-port")
    p.add_argument("preferred", type=int)
    p = sub.add_parser("proc-mem")
    p.add_argument("pid", type=int)
    p = sub.add_parser("cpu-snap")
    p.add_argument("pid", type=int)
    p = sub.add_parser("pgbench-stats")
    p.add_argument("out")
    p.add_argument("log_dir")
    p.add_argument("time")
    for name in ("summary", "search-summary", "edge-summary", "replica-summary", "quotas-summary"):
        p = sub.add_parser(name)
        p.add_argument("--work", required=True)
        p.add_argument("--git-rev", default="unknown")
        p.add_argument("--pg-version", default="unknown")
        p.add_argument("--seed-secs", default="0")
        p.add_argument("--total-secs", default="0")
        p.add_argument("--md", required=True)
        p.add_argument("--json", required=True)
        if name == "replica-summary":
            p.add_argument("--standby", default="")
    args = parser.parse_args()
    if args.command == "free-port":
        print(free_port(args.preferred))
    elif args.command == "proc-mem":
        print(json.dumps(proc_mem(args.pid)))
    elif args.command == "cpu-snap":
        print(json.dumps(cpu_snap(args.pid)))
    elif args.command == "pgbench-stats":
        print(json.dumps(pgbench_stats(args.out, args.log_dir, args.time)))
    elif args.command == "summary":
        summary(args)
    elif args.command == "search-summary":
        search_summary(args)
    elif args.command == "edge-summary":
        edge_summary(args)
    elif args.command == "replica-summary":
        replica_summary(args)
    elif args.command == "quotas-summary":
        quotas_summary(args)


if __name__ == "__main__":
    sys.exit(main())
