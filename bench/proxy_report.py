"""Prints bench/proxy's results as markdown: one table of requests/s, p50
and p99 latency per case with the req/s ratio to nginx (the mean of its two
runs, which bracket the others), the p50 of one connection alone, each
CPU's load and whatever makes a row suspect (non-2xx responses, socket
errors, a failed check request, a case from an earlier run); then the cost
of the http_headers filter and the targets, each marked met or missed.

    python3 bench/proxy_report.py [RESULTS_DIR [CASES]]

CASES is bench/proxy's comma-separated list (default: every case with
results); rows of cases not in it are marked as from an earlier run."""

import re
import statistics
import sys
import time
from pathlib import Path

# wrk's latency units (its format_time), in ms.
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}
# Result name, label, the CASES name that runs it.
ROWS = [
    ("nginx", "nginx, reverse proxy", "nginx"),
    ("hyper", "plain hyper proxy (the floor)", "hyper"),
    ("tern", "tern, no filters", "tern"),
    ("tern-headers", "tern + http_headers", "tern-headers"),
    ("tern-body", "tern + http_body, /secret", "tern-body"),
    ("nginx-2", "nginx again (noise check)", "nginx"),
]
NGINX = ("nginx", "nginx-2")
FILTER_TARGET_US = 10.0


def parse_wrk(path):
    """wrk's output as a dict, None without a file, {"failed": True} if it
    has no result."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    result = {"mtime": path.stat().st_mtime, "failed": False}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not rps:
        result["failed"] = True
        return result
    result["rps"] = float(rps.group(1))
    result["pct"] = {
        p: float(value) * UNITS[unit]
        for p, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    }
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    result["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    result["socket"] = dict(zip(("connect", "read", "write", "timeout"), map(int, socket.groups()))) if socket else {}
    run = re.search(r"Running (\S+) test @ (\S+)", text)
    conns = re.search(r"(\d+) threads? and (\d+) connections", text)
    result["duration"] = run.group(1) if run else "?"
    result["url"] = run.group(2) if run else "?"
    result["conns"] = int(conns.group(2)) if conns else None
    return result


def read_check(path):
    """The FAILED lines of CASE.check (empty if it passed or is missing)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [line.removeprefix("FAILED: ") for line in lines if line.startswith("FAILED")]


def read_cpu(path):
    """{"cpu0": (busy %, steal %), "cpu1": ...} from CASE.cpu."""
    cpu = {}
    try:
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) == 5:
                cpu[fields[0]] = (float(fields[2]), float(fields[4]))
    except FileNotFoundError:
        pass
    return cpu


def fmt_ms(ms):
    if ms is None:
        return "-"
    return f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:.2f} ms"


def when(mtime):
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))


def flags_of(name, row, run_by, cases):
    flags = []
    if row.get("not_run"):
        flags.append("not measured")
    elif row["failed"]:
        flags.append("wrk gave no result")
    if row.get("non2xx"):
        flags.append(f"**{row['non2xx']:,} non-2xx**")
    if any(row.get("socket", {}).values()):
        counts = ", ".join(f"{kind} {n}" for kind, n in row["socket"].items() if n)
        flags.append(f"**socket errors: {counts}**")
    for failure in row["check"]:
        flags.append(f"**check failed: {failure}**")
    cpu0, cpu1 = row["cpu"].get("cpu0"), row["cpu"].get("cpu1")
    if cpu0 and cpu1 and cpu1[0] >= 95 and cpu0[0] < 90:
        flags.append("CPU 1 saturated, CPU 0 not: client or upstream bound")
    steal = max((cpu[1] for cpu in row["cpu"].values()), default=0)
    if steal >= 2:
        flags.append(f"steal {steal:.0f}%")
    if cases is not None and run_by not in cases:
        flags.append(f"from an earlier run ({when(row['mtime'])})")
    return flags


def suspect(row):
    return row["failed"] or row.get("non2xx") or any(row.get("socket", {}).values()) or row["check"]


def caveat(names, rows, cases):
    """What a target's figure should be read with: rows of NAMES that are
    flagged or come from an earlier run."""
    notes = []
    present = [name for name in names if name in rows]
    if any(suspect(rows[name]) for name in present):
        notes.append("flagged rows: see above")
    run_by = {name: by for name, _, by in ROWS}
    earlier = [name for name in present if cases is not None and run_by[name] not in cases]
    if earlier:
        notes.append("from an earlier run: " + ", ".join(earlier))
    return f" ({'; '.join(notes)})" if notes else ""


def main(out, cases):
    out = Path(out)
    rows = {}
    for name, _, _ in ROWS:
        row = parse_wrk(out / f"{name}.txt")
        check = read_check(out / f"{name}.check")
        if row is None and check:
            # The server did not start: bench/proxy says so in CASE.check.
            row = {"mtime": (out / f"{name}.check").stat().st_mtime, "failed": True, "not_run": True}
        if row is not None:
            row["check"] = check
            row["cpu"] = read_cpu(out / f"{name}.cpu")
            alone = parse_wrk(out / f"{name}.c1.txt")
            row["p50_alone"] = alone["pct"].get("50") if alone and not alone["failed"] else None
            rows[name] = row
    if not rows:
        print(f"No results in {out} (run bench/proxy).")
        return
    ok = {name: row for name, row in rows.items() if not row["failed"]}

    nginx_runs = [ok[name]["rps"] for name in NGINX if name in ok]
    nginx_rps = statistics.mean(nginx_runs) if nginx_runs else None
    any_row = next(iter(ok.values()), None)
    conns = any_row["conns"] if any_row else 16
    duration = any_row["duration"] if any_row else "?"
    print(f"## bench/proxy: wrk, 1 thread, {conns} connections, {duration} per case\n")
    print("Proxy on CPU 0; wrk and the upstream nginx on CPU 1. CPU busy is over the measured run.\n")
    print("| case | req/s | p50 | p99 | vs nginx | p50, 1 connection | CPU 0 / CPU 1 busy | flags |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for name, label, run_by in ROWS:
        row = rows.get(name)
        if row is None:
            continue
        flags = "; ".join(flags_of(name, row, run_by, cases))
        if row["failed"]:
            print(f"| {label} | - | - | - | - | - | - | {flags} |")
            continue
        ratio = f"{row['rps'] / nginx_rps:.2f}x" if nginx_rps else "-"
        cpu = row["cpu"]
        busy = (
            f"{cpu['cpu0'][0]:.0f}% / {cpu['cpu1'][0]:.0f}%" if "cpu0" in cpu and "cpu1" in cpu else "-"
        )
        print(
            f"| {label} | {row['rps']:,.0f} | {fmt_ms(row['pct'].get('50'))} | {fmt_ms(row['pct'].get('99'))} "
            f"| {ratio} | {fmt_ms(row['p50_alone'])} | {busy} | {flags} |"
        )
    print()

    if len(nginx_runs) == 2:
        a, b = nginx_runs
        print(
            f"nginx's two runs: {a:,.0f} and {b:,.0f} req/s, {abs(a - b) / max(a, b) * 100:.1f}% apart "
            "(the run's noise); \"vs nginx\" is against their mean."
        )
    elif len(nginx_runs) == 1:
        print("One nginx run only: \"vs nginx\" is against it, with no noise check.")
    else:
        print("No nginx run: no ratios (run it: CASES=nginx,... bench/proxy).")

    # The filter's cost: what it adds to a request's p50 when the request
    # waits behind no other (one connection). At 16 connections on a
    # saturated core each request waits behind the others, so a p50
    # difference there counts the filter's work about once per request in
    # the queue; 1/req/s is CPU 0's time per request when it is the
    # bottleneck.
    tern, headers = ok.get("tern"), ok.get("tern-headers")
    filter_us = None
    if tern and headers and tern["p50_alone"] is not None and headers["p50_alone"] is not None:
        filter_us = (headers["p50_alone"] - tern["p50_alone"]) * 1000
        print(
            f"http_headers filter: p50 with one connection {fmt_ms(headers['p50_alone'])} - "
            f"{fmt_ms(tern['p50_alone'])} = {filter_us:.1f} µs."
        )
    if tern and headers and "50" in tern["pct"] and "50" in headers["pct"]:
        loaded = (headers["pct"]["50"] - tern["pct"]["50"]) * 1000
        per_request = 1e6 / headers["rps"] - 1e6 / tern["rps"]
        print(
            f"At {conns} connections: p50 {fmt_ms(headers['pct']['50'])} - {fmt_ms(tern['pct']['50'])} = "
            f"{loaded:.1f} µs, which includes queueing behind the other connections' requests; by "
            f"throughput (1/req/s), {per_request:.1f} µs more of CPU 0 per request."
        )
    floor = ok.get("hyper")
    if tern and floor:
        print(
            f"Tern without filters against the plain hyper proxy: {1e6 / tern['rps'] - 1e6 / floor['rps']:.1f} µs "
            f"more of CPU 0 per request ({tern['rps'] / floor['rps']:.2f}x its req/s): what Tern's limits, "
            "routing, logging and forwarding fields cost over hyper itself."
        )
    body = ok.get("tern-body")
    if tern and body:
        print(
            f"http_body filter (/secret, body buffered and rewritten): {1e6 / body['rps'] - 1e6 / tern['rps']:.1f} µs "
            "more of CPU 0 per request than tern without filters."
        )
    print()

    print("| target | result | met |")
    print("|---|---|---|")
    ratio = tern["rps"] / nginx_rps if tern and nginx_rps else None
    note = caveat(("tern",) + NGINX, rows, cases)
    print(
        "| Tern without filters >= nginx req/s | "
        + (f"{ratio:.2f}x nginx ({tern['rps']:,.0f} vs {nginx_rps:,.0f}){note} | {'met' if ratio >= 1 else 'missed'} |" if ratio is not None else "no data | |")
    )
    note = caveat(("tern", "tern-headers"), rows, cases)
    print(
        f"| http_headers filter <= {FILTER_TARGET_US:.0f} µs per request at p50 (one connection) | "
        + (f"{filter_us:.1f} µs{note} | {'met' if filter_us <= FILTER_TARGET_US else 'missed'} |" if filter_us is not None else "no data | |")
    )


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "bench/results/proxy",
        sys.argv[2].split(",") if len(sys.argv) > 2 else None,
    )
