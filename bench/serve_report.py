"""Prints bench/serve's results, one table per case: requests/s and latency
percentiles per server and connection count, with req/s ratios to `wasmtime
serve` (and, for the 0.2 hello, to native hyper) measured in the same run,
then the case's targets; and, for the streaming case, the median time to
first byte and total time.

    python3 bench/serve_report.py [RESULTS_DIR [CASES]]

CASES is bench/serve's comma-separated list (default: every case with
results). A target that compares with another case uses that case's results
even when they come from an earlier run, and says so."""

import re
import statistics
import sys
import time
from pathlib import Path

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
CONNS = (1, 16, 64)
ALL = ("p2", "p3", "spin", "python", "js", "stream")

FRESH_WARM_PEER = [
    ("tern", "tern, fresh"),
    ("tern-warm", "tern, warm"),
    ("wasmtime", "wasmtime serve"),
]
WRK_CASES = {
    "p2": (
        "the wasi:http 0.2 hello (http_hello), a fresh instance per request",
        [
            ("tern", "tern"),
            ("wasmtime", "wasmtime serve"),
            ("native", "native hyper"),
            ("tern-spinning", "tern, 2 spinning"),
        ],
    ),
    "p3": ("the wasi:http 0.3 hello (http3_hello)", FRESH_WARM_PEER),
    "spin": (
        "the Spin SDK 7 hello (spin_hello) from a spin.toml, its SQLite read route, and the Spin SDK 5 hello",
        FRESH_WARM_PEER
        + [("tern-sqlite", "tern, sqlite read"), ("tern-sdk5", "tern, Spin SDK 5 hello")],
    ),
    "python": ("the http-python template's hello (componentize-py)", FRESH_WARM_PEER),
    "js": ("the http-js template's hello (jco componentize)", FRESH_WARM_PEER),
}


def parse(path):
    """wrk's output as {rps, pct (ms), errors}, or None if it has no result."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not rps:
        return None
    pct = {}
    for p, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)$", text, re.M):
        pct[p] = float(value) * UNITS[unit]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", text))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    socket = sum(int(n) for n in socket.groups()) if socket else 0
    return {
        "rps": float(rps.group(1)),
        "pct": pct,
        "errors": errors + socket,
        "socket": socket,
        "mtime": path.stat().st_mtime,
    }


def load(out, case):
    results = {}
    for server, _ in WRK_CASES[case][1]:
        for conns in CONNS:
            result = parse(out / f"{case}-{server}-c{conns}.txt")
            if result:
                results[(server, conns)] = result
    return results


def rps_ratio(a, b):
    if a and b and b["rps"]:
        return a["rps"] / b["rps"]
    return None


def print_table(case, results):
    title, servers = WRK_CASES[case]
    print(f"\n== {case}: {title}")
    if not results:
        print("   no results (run it: CASES=" + case + " bench/serve)")
        return
    native = case == "p2"
    print(
        f"{'server':<17} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs wasmtime':>12}"
        + (f" {'vs native':>10}" if native else "")
    )
    for conns in CONNS:
        for server, label in servers:
            row = results.get((server, conns))
            if not row:
                continue
            pct = row["pct"]
            line = (
                f"{label:<17} {conns:>5} {row['rps']:>9.0f} {pct.get('50', 0):>8.3f} "
                f"{pct.get('90', 0):>8.3f} {pct.get('99', 0):>8.3f} {row['errors']:>7}"
            )
            # The spinning case measures fairness, not the same workload.
            comparable = server != "tern-spinning"
            vs_peer = rps_ratio(row, results.get(("wasmtime", conns))) if comparable else None
            line += f" {f'{vs_peer:.2f}x' if vs_peer else '-':>12}"
            if native:
                vs_native = rps_ratio(row, results.get(("native", conns))) if comparable else None
                line += f" {f'{vs_native:.2f}x' if vs_native else '-':>10}"
            print(line)
    if any(row["errors"] for row in results.values()):
        print("   errors: non-2xx responses and socket errors counted by wrk; a row with errors is not a fair figure")


def print_target(text, value, met):
    if value is None:
        print(f"   target: {text}: no data")
    else:
        print(f"   target: {text}: {value} ({'met' if met else 'NOT met'})")


def when(mtime):
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))


def print_targets(case, results, p2, p2_this_run):
    if case == "p2":
        ratio = rps_ratio(results.get(("tern", 16)), results.get(("wasmtime", 16)))
        print_target(
            "tern req/s at 16 connections >= 4x wasmtime serve",
            ratio and f"{ratio:.2f}x",
            ratio is not None and ratio >= 4,
        )
        row = results.get(("tern", 1))
        p50 = row and row["pct"].get("50")
        print_target(
            "tern median at 1 connection <= 150 us",
            p50 and f"{p50 * 1000:.0f} us",
            p50 is not None and p50 * 1000 <= 150,
        )
    elif case == "p3":
        ratio = rps_ratio(results.get(("tern-warm", 16)), results.get(("wasmtime", 16)))
        print_target(
            "tern, warm req/s at 16 connections >= 2x wasmtime serve",
            ratio and f"{ratio:.2f}x",
            ratio is not None and ratio >= 2,
        )
        p2_tern = p2.get(("tern", 16))
        ratio = rps_ratio(results.get(("tern", 16)), p2_tern)
        note = ""
        if p2_tern and not p2_this_run:
            note = f"; the 0.2 figure is from an earlier run, {when(p2_tern['mtime'])}"
        print_target(
            "tern, fresh on 0.3 within 15% of tern on 0.2, req/s at 16 connections (>= 0.85x)",
            ratio and f"{ratio:.2f}x of {p2_tern['rps']:.0f} req/s{note}",
            ratio is not None and ratio >= 0.85,
        )
    elif case == "spin":
        # Spin 4.1 was last measured here at about 0.63x wasmtime serve at 16
        # connections (Spin cannot be installed on this machine: no
        # downloads but crates.io, and it does not build from there), so 5x
        # Spin is about 3.15x wasmtime serve.
        for server, label in (("tern", "tern, fresh"), ("tern-warm", "tern, warm")):
            ratio = rps_ratio(results.get((server, 16)), results.get(("wasmtime", 16)))
            print_target(
                f"{label} req/s at 16 connections >= 5x Spin (~0.63x wasmtime serve), i.e. >= 3.15x wasmtime serve",
                ratio and f"{ratio:.2f}x wasmtime serve = {ratio / 0.63:.1f}x Spin",
                ratio is not None and ratio >= 3.15,
            )
        row = results.get(("tern-sqlite", 16))
        if row:
            print(f"   SQLite read route (10 rows, 6 returned) at 16 connections: {row['rps']:.0f} req/s")
        ratio = rps_ratio(results.get(("tern-sdk5", 16)), results.get(("wasmtime", 16)))
        print_target(
            "tern, Spin SDK 5 hello (fresh, WASI 0.2) req/s at 16 connections >= 5x Spin, i.e. >= 3.15x wasmtime serve",
            ratio and f"{ratio:.2f}x wasmtime serve's SDK 7 hello = {ratio / 0.63:.1f}x Spin",
            ratio is not None and ratio >= 3.15,
        )
    elif case == "js":
        # Tern refuses warm instances for a ComponentizeJS component: its
        # StarlingMonkey engine answers one request per instance.
        print_target(
            "tern, warm req/s >= 10x tern, fresh at 16 connections",
            "cannot be met: ComponentizeJS instances answer one request each (StarlingMonkey issue #247), so Tern refuses warm instances for them",
            False,
        )
    else:
        for conns in CONNS:
            ratio = rps_ratio(results.get(("tern-warm", conns)), results.get(("tern", conns)))
            if ratio and conns != 16:
                print(f"   tern, warm vs fresh at {conns} connection{'s' if conns > 1 else ''}: {ratio:.1f}x")
        ratio = rps_ratio(results.get(("tern-warm", 16)), results.get(("tern", 16)))
        print_target(
            "tern, warm req/s >= 10x tern, fresh at 16 connections",
            ratio and f"{ratio:.1f}x",
            ratio is not None and ratio >= 10,
        )


def print_stream(out):
    print("\n== stream: http3_stream?chunks=10&delay_ms=100 (10 chunks 100 ms apart), curl, median of 3")
    rows = {}
    for server in ("tern", "wasmtime"):
        path = out / f"stream-{server}.txt"
        if not path.exists():
            continue
        runs = [line.split() for line in path.read_text().splitlines()]
        runs = [run for run in runs if len(run) == 3]
        ok = [(float(ttfb), float(total)) for code, ttfb, total in runs if code == "200"]
        failed = len(runs) - len(ok)
        rows[server] = (ok, failed)
    if not rows:
        print("   no results (run it: CASES=stream bench/serve)")
        return
    print(f"{'server':<17} {'runs':>4} {'failed':>6} {'first byte ms':>14} {'total ms':>9} {'vs wasmtime (first byte)':>25}")
    medians = {}
    for server, (ok, failed) in rows.items():
        if ok:
            medians[server] = (
                statistics.median(t for t, _ in ok) * 1000,
                statistics.median(t for _, t in ok) * 1000,
            )
    for server, (ok, failed) in rows.items():
        label = "tern" if server == "tern" else "wasmtime serve"
        if server not in medians:
            print(f"{label:<17} {len(ok) + failed:>4} {failed:>6} {'-':>14} {'-':>9} {'-':>25}")
            continue
        ttfb, total = medians[server]
        peer = medians.get("wasmtime")
        vs = f"{ttfb / peer[0]:.2f}x" if peer and peer[0] else "-"
        print(f"{label:<17} {len(ok) + failed:>4} {failed:>6} {ttfb:>14.1f} {total:>9.1f} {vs:>25}")
    print(
        "   first byte is curl's time_starttransfer (the response's first byte, its status line);"
        " a streamed body ends about 900-1000 ms in, so first byte near the total means it was buffered"
    )


def main(out, cases):
    out = Path(out)
    if cases is None:
        cases = [c for c in ALL if any(out.glob(f"{c}-*"))]
    p2 = load(out, "p2")
    for case in cases:
        if case == "stream":
            print_stream(out)
            continue
        results = p2 if case == "p2" else load(out, case)
        print_table(case, results)
        print_targets(case, results, p2, "p2" in cases)


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "bench/results/serve",
        sys.argv[2].split(",") if len(sys.argv) > 2 else None,
    )
