#!/usr/bin/env python3
"""Helpers of bench/run (standard library only).

  free-port PREFERRED            the preferred TCP port if free on 127.0.0.1, else a free one
  proc-mem PID                   VmHWM and VmRSS of a process, as JSON (KiB and MiB)
  cpu-snap PID                   CPU counters (machine, the process, all postgres processes) as JSON
  pgbench-stats OUT LOGDIR TIME  TPS from pgbench's output, latency percentiles from its
                                 per-transaction logs, client CPU from /usr/bin/time
  summary --work DIR ...         the report: a table on stdout, markdown and JSON files
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


def summary(args):
    work = args.work
    env = os.environ
    knobs = {
        k: env.get(k, "")
        for k in (
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
    }
    phases = {}
    for name in ("pgbench_insert", "add", "pgbench_select", "get", "list"):
        data = load(os.path.join(work, f"{name}.json"), {}) or {}
        data.update({"cpu": cpu_use(work, name)})
        client = read_time(os.path.join(work, f"{name}.time"))
        if client and name in ("add", "get", "list"):
            data["client"] = client
        phases[name] = data
    rss_add = load(os.path.join(work, "rss_after_add.json"), {}) or {}
    rss_end = load(os.path.join(work, "rss_end.json"), {}) or {}
    rss_idle = load(os.path.join(work, "rss_idle.json"), {}) or {}
    try:
        with open(os.path.join(work, "failures.txt")) as f:
            failures = [line.strip() for line in f if line.strip()]
    except OSError:
        failures = []

    ins, add, sel, get, lst = (phases[n] for n in ("pgbench_insert", "add", "pgbench_select", "get", "list"))
    far = f"page{lst.get('far_page', 1000)}"
    page1, pagefar = lst.get("page1", {}), lst.get(far, {})
    add_ratio = ratio(add.get("rps"), ins.get("tps"))
    get_ratio = ratio(get.get("rps"), sel.get("tps"))
    list_ratio = ratio(pagefar.get("p99_ms"), page1.get("p99_ms"))
    peak_rss = rss_add.get("VmHWM_mib")

    def met(ok):
        return "n/a" if ok is None else ("yes" if ok else "NO")

    def at_most(value, limit):
        return None if value is None else value <= limit

    def at_least(value, limit):
        return None if value is None else value >= limit

    rows = [
        ("pgbench INSERT TPS", fmt(ins.get("tps")), "baseline", ""),
        ("pgbench INSERT p50 / p99", f"{fmt(ins.get('p50_ms'))} / {fmt(ins.get('p99_ms'), ' ms')}", "", ""),
        ("AddNote RPS", fmt(add.get("rps")), "", ""),
        ("AddNote p50 / p99", f"{fmt(add.get('p50_ms'))} / {fmt(add.get('p99_ms'), ' ms')}", "p99 ≤ 15 ms",
         met(at_most(add.get("p99_ms"), 15))),
        ("AddNote / pgbench INSERT", fmt(add_ratio, "×"), "≥ 1.2×", met(at_least(add_ratio, 1.2))),
        ("AddNote OK (warmup incl.) / found in DB",
         f"{fmt(add.get('created_ok_total'))} / {fmt(add.get('verified_in_db'))}", "all found",
         met(None if add.get("missing_in_db") is None else add.get("missing_in_db") == 0)),
        ("AddNote errors", fmt(add.get("errors")), "0", met(None if add.get("errors") is None else add["errors"] == 0)),
        ("notesd peak RSS (VmHWM) after AddNote", fmt(peak_rss, " MiB"), "≤ 100 MiB", met(at_most(peak_rss, 100))),
        ("pgbench select-by-key TPS", fmt(sel.get("tps")), "baseline", ""),
        ("pgbench select p50 / p99", f"{fmt(sel.get('p50_ms'))} / {fmt(sel.get('p99_ms'), ' ms')}", "", ""),
        ("GetNote RPS", fmt(get.get("rps")), "", ""),
        ("GetNote p50 / p99", f"{fmt(get.get('p50_ms'))} / {fmt(get.get('p99_ms'), ' ms')}", "", ""),
        ("GetNote / pgbench select", fmt(get_ratio, "×"), "≥ 0.8×", met(at_least(get_ratio, 0.8))),
        ("GetNote errors", fmt(get.get("errors")), "0", met(None if get.get("errors") is None else get["errors"] == 0)),
        ("ListNotes page 1 RPS", fmt(page1.get("rps")), "", ""),
        ("ListNotes page 1 p50 / p99", f"{fmt(page1.get('p50_ms'))} / {fmt(page1.get('p99_ms'), ' ms')}",
         "p99 ≤ 5 ms", met(at_most(page1.get("p99_ms"), 5))),
        (f"ListNotes page {lst.get('far_page', 1000)} RPS", fmt(pagefar.get("rps")), "", ""),
        (f"ListNotes page {lst.get('far_page', 1000)} p50 / p99",
         f"{fmt(pagefar.get('p50_ms'))} / {fmt(pagefar.get('p99_ms'), ' ms')}", "p99 ≤ 5 ms",
         met(at_most(pagefar.get("p99_ms"), 5))),
        (f"ListNotes p99 page {lst.get('far_page', 1000)} / page 1", fmt(list_ratio, "×"), "≤ 1.5×",
         met(at_most(list_ratio, 1.5))),
    ]

    cpu_rows = []
    for name, label, client in (
        ("pgbench_insert", "1 pgbench INSERT", ins),
        ("add", "2 AddNote", add.get("client", {})),
        ("pgbench_select", "3 pgbench select", sel),
        ("get", "4 GetNote", get.get("client", {})),
        ("list", "5 ListNotes (both pages)", lst.get("client", {})),
    ):
        cpu = phases[name]["cpu"]
        other = None
        if cpu and client.get("client_cpu_cores") is not None:
            other = round(
                max(0.0, cpu["all_cores"] - cpu["postgres_cores"] - cpu["notesd_cores"] - client["client_cpu_cores"]), 2
            )
            cpu["other_cores"] = other
        cpu_rows.append(
            (
                label,
                fmt(cpu.get("machine_busy_pct"), " %", digits=1),
                fmt(cpu.get("postgres_cores")),
                fmt(cpu.get("notesd_cores")) if name in ("add", "get", "list") else "idle",
                fmt(client.get("client_cpu_cores")),
                fmt(other),
            )
        )

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        load_avg = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load_avg = "n/a"
    meta = {
        "date": now,
        "git_rev": args.git_rev,
        "nproc": os.cpu_count(),
        "postgres": args.pg_version,
        "seed_secs": float(args.seed_secs),
        "total_secs": float(args.total_secs),
        "load_average_at_end": load_avg,
        "note": env.get("BENCH_NOTE", ""),
    }

    def table(header, body):
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)

    md = [
        "# notesd benchmark: latest run",
        "",
        f"{now}, commit `{args.git_rev}`, {os.cpu_count()} CPUs, PostgreSQL {args.pg_version}. "
        f"Seeding took {float(args.seed_secs):.0f} s, the whole run {float(args.total_secs):.0f} s; "
        f"load average at the end: {load_avg}.",
        "",
        "Knobs: " + ", ".join(f"`{k}={v}`" for k, v in knobs.items() if v != "") + ".",
    ]
    if meta["note"]:
        md += ["", f"Note: {meta['note']}"]
    md += [
        "",
        "Targets are figures to compare against, not pass/fail of the run.",
        "",
        table(("figure", "value", "target", "met?"), rows),
        "",
        "CPU used during each measured phase, in cores (the machine has "
        f"{os.cpu_count()}): postgres counts every postgres process, whatever its database; "
        "other is the rest of the machine. A client near its thread count limited the phase; "
        "a busy machine with idle server processes points at something else running.",
        "",
        table(("phase", "machine busy", "postgres", "notesd", "client (pgbench / loadgen)", "other"), cpu_rows),
    ]
    if failures:
        md += ["", "**Failed steps:**", ""] + [f"- {f}" for f in failures]
    md_text = "\n".join(md) + "\n"

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
    os.makedirs(os.path.dirname(args.md) or ".", exist_ok=True)
    with open(args.md, "w") as f:
        f.write(md_text)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2, sort_keys=False)
        f.write("\n")

    # The terminal gets the same tables, aligned.
    def aligned(header, body):
        widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
        out = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths))]
        out.append("  ".join("-" * w for w in widths))
        out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in body]
        return "\n".join(out)

    print()
    print(aligned(("figure", "value", "target", "met?"), rows))
    print()
    print(aligned(("phase", "machine busy", "postgres", "notesd", "client", "other"), cpu_rows))
    print()
    print(f"written: {args.md}, {args.json}")


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
    p = sub.add_parser("summary")
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


if __name__ == "__main__":
    sys.exit(main())
