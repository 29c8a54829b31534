#!/usr/bin/env python3
"""Helpers of bench/run and bench/search (standard library only).

  free-port PREFERRED            the preferred TCP port if free on 127.0.0.1, else a free one
  proc-mem PID                   VmHWM and VmRSS of a process, as JSON (KiB and MiB)
  cpu-snap PID                   CPU counters (machine, the process, all postgres processes) as JSON
  pgbench-stats OUT LOGDIR TIME  TPS from pgbench's output, latency percentiles from its
                                 per-transaction logs, client CPU from /usr/bin/time
  summary --work DIR ...         the report: a table on stdout, markdown and JSON files
  search-summary --work DIR ...  bench/search's report, the same way
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
    return {
        "time": time.time(),
        "all_processes_ticks": everything,
        "proc_stat_busy_ticks": total - idle,
        "proc_stat_total_ticks": total,
        "notesd_ticks": proc_ticks(pid),
        "postgres_ticks": postgres,
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
    for name in ("summary", "search-summary"):
        p = sub.add_parser(name)
        p.add_argument("--work", required=True)
        p.add_argument("--git-rev", default="unknown")
        p.add_argument("--pg-version", default="unknown")
        p.add_argument("--seed-secs", default="0")
        p.add_argument("--total-secs", default="0")
        p.add_argument("--md", required=True)
        p.add_argument("--json", required=True)
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


if __name__ == "__main__":
    sys.exit(main())
