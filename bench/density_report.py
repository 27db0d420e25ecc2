"""Prints bench/density's results as one Markdown table (figure, tern, peer,
target, met?), then notes on what the figures mean.

    python3 bench/density_report.py [RESULTS_DIR]

RESULTS_DIR (default bench/results/density) holds what bench/density wrote:
figures.txt (`KEY VALUE` lines), cold.txt (`APP STATUS SECONDS`, one line
per cold request), warm-one.txt and warm-rr.txt (wrk's output), the
fairness step's fair-quiet.txt, fair-under.txt and fair-flood.txt (wrk's
output with `status CODE COUNT` lines), fair-curl.txt (one flood response,
headers and body) and fair-ended.txt (`budget|deadline MILLISECONDS`, one
line per flood request the host ended), and peer.txt (`PID RSS_KIB PSS_KIB`,
one line per `wasmtime serve` process)."""

import math
import re
import statistics
import sys
from pathlib import Path

# wrk's output is read as bench/serve reads it (this directory is on the path).
from serve_report import parse as parse_wrk

TARGET_N = 10_000


def read_figures(out):
    figures = {}
    path = out / "figures.txt"
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            figures[key] = value
    return figures


def number(figures, key):
    try:
        return float(figures[key])
    except (KeyError, ValueError):
        return None


def read_cold(out):
    """The cold requests' times in ms, and how many did not answer 200."""
    path = out / "cold.txt"
    if not path.exists():
        return [], 0
    times, failed = [], 0
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        if parts[1] == "200":
            times.append(float(parts[2]) * 1e3)
        else:
            failed += 1
    return sorted(times), failed


def percentile(sorted_values, p):
    """The nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def read_wrk(path):
    """wrk's output as {rps, p50, p99 (ms), errors, socket}, or None:
    errors counts statuses of 400 and up and socket errors, socket only the
    latter."""
    result = parse_wrk(path)
    if result is None:
        return None
    return {
        "rps": result["rps"],
        "p50": result["pct"].get("50"),
        "p99": result["pct"].get("99"),
        "errors": result["errors"],
        "socket": result["socket"],
    }


def read_statuses(path):
    """The `status CODE COUNT` lines of a wrk run with bench/density's Lua
    script, as {code: count}, or None."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    counts = {code: int(n) for code, n in re.findall(r"^status (\S+) (\d+)$", text, re.M)}
    return counts or None


def read_ended(out):
    """{"budget": [ms, ...], "deadline": [ms, ...]}: the flood requests the
    host ended, by why, with their wall time, sorted."""
    ended = {"budget": [], "deadline": []}
    path = out / "fair-ended.txt"
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in ended:
                ended[parts[0]].append(float(parts[1]))
    return {k: sorted(v) for k, v in ended.items()}


def read_peer(out):
    """[(rss_kib, pss_kib)] per `wasmtime serve` process."""
    path = out / "peer.txt"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((int(parts[1]), int(parts[2])))
    return rows


def ms(value):
    return "?" if value is None else f"{value:.2f} ms"


def mib(kib):
    return f"{kib / 1024:,.1f} MiB"


def kib(value):
    return f"{value:,.0f} KiB" if value >= 10 else f"{value:.2f} KiB"


def met(ok):
    if ok is None:
        return "no data"
    return "yes" if ok else "**no**"


def main(out):
    out = Path(out)
    f = read_figures(out)
    if not f:
        print(f"no results in {out} (run bench/density)")
        return 1
    n = int(number(f, "n") or 0)
    distinct = int(number(f, "distinct") or 0)
    apps_loaded = int(number(f, "apps_loaded") or 0)
    rss_empty = number(f, "rss_empty_kib")
    rss_deployed = number(f, "rss_deployed_kib")
    rss_idle = number(f, "rss_idle_kib")
    rss_loaded = number(f, "rss_loaded_kib")
    anon_idle = number(f, "anon_idle_kib")
    anon_loaded = number(f, "anon_loaded_kib")
    cold, cold_failed = read_cold(out)
    one = read_wrk(out / "warm-one.txt")
    rr = read_wrk(out / "warm-rr.txt")
    quiet = read_wrk(out / "fair-quiet.txt")
    under = read_wrk(out / "fair-under.txt")
    under_statuses = read_statuses(out / "fair-under.txt")
    flood_statuses = read_statuses(out / "fair-flood.txt")
    ended = read_ended(out)
    peer = read_peer(out)
    peer_rss = statistics.mean(r for r, _ in peer) if peer else None
    peer_pss = statistics.mean(p for _, p in peer) if peer else None

    print(
        f"bench/density, {f.get('date', '?')}: N={n:,} apps ({distinct:,} distinct binaries), "
        f"{apps_loaded:,} loaded by a cold request, {len(peer)} `wasmtime serve` processes, "
        f"wrk {f.get('duration', '?')} at 16 connections (fairness: 4, beside a flood of 64); "
        f"tern is {f.get('tern', '?')}\n"
    )
    rows = []

    def row(figure, tern, peer_text="", target="", ok=""):
        rows.append((figure, tern, peer_text, target, ok))

    peer_each = f"{kib(peer_rss)} RSS, {kib(peer_pss)} PSS per process" if peer else "no data"
    at_target_n = n == TARGET_N
    if rss_idle is not None:
        ok = rss_idle < 256 * 1024
        row(
            f"host RSS, {n:,} apps idle (app0 loaded)",
            mib(rss_idle),
            f"{mib(peer_pss * n)} to {mib(peer_rss * n)} ({n:,} processes: PSS to RSS, extrapolated)" if peer else "",
            "< 256 MiB at N=10,000",
            met(ok) if at_target_n else f"n/a (N={n:,})",
        )
    if rss_idle is not None and rss_empty is not None:
        row("RSS per idle app, (idle - empty host) / N", kib((rss_idle - rss_empty) / n), peer_each)
    if rss_loaded is not None and rss_idle is not None and apps_loaded:
        per = (rss_loaded - rss_idle) / apps_loaded
        row(
            f"RSS per loaded app, (after - before {apps_loaded:,} cold requests) / {apps_loaded:,}",
            kib(per),
            peer_each,
            "reported",
        )
    if anon_loaded is not None and anon_idle is not None and apps_loaded:
        per = (anon_loaded - anon_idle) / apps_loaded
        row(
            "the same beyond the code pages (RssAnon + RssShmem: not the compile cache's file pages)",
            kib(per),
            "",
            "≤ 200 KiB",
            met(per <= 200),
        )
    p50, p99 = percentile(cold, 50), percentile(cold, 99)
    no_idle = "none: a process per app, started ahead"
    row(
        f"first request to an idle app, p50 ({len(cold):,} apps)",
        ms(p50) if p50 is not None else "no data",
        no_idle,
        "≤ 1 ms",
        met(None if p50 is None else p50 <= 1),
    )
    row(
        "first request to an idle app, p99",
        ms(p99) if p99 is not None else "no data",
        no_idle,
        "≤ 5 ms",
        met(None if p99 is None else p99 <= 5),
    )
    if one:
        row("warm req/s, all to app0", f"{one['rps']:,.0f} (p50 {ms(one['p50'])}, p99 {ms(one['p99'])})")
    if rr:
        ratio = rr["rps"] / one["rps"] if one and one["rps"] else None
        row(
            f"warm req/s, round-robin over {apps_loaded:,} apps",
            f"{rr['rps']:,.0f} (p50 {ms(rr['p50'])}, p99 {ms(rr['p99'])})"
            + (f", {ratio:.0%} of one app" if ratio is not None else ""),
            "",
            "≥ 70% of one app",
            met(None if ratio is None else ratio >= 0.7),
        )
    if quiet or under:
        row(
            "second app's hello p99, quiet / under a flood of another app",
            f"{ms(quiet and quiet['p99'])} / {ms(under and under['p99'])} "
            f"(p50 {ms(quiet and quiet['p50'])} / {ms(under and under['p50'])})",
            "",
            "reported",
            "",
        )
        ratio = under["rps"] / quiet["rps"] if quiet and under and quiet["rps"] else None
        row(
            "second app's req/s, quiet / under flood (4 connections)",
            f"{quiet['rps']:,.0f} / {under['rps']:,.0f} ({ratio:.0%})" if ratio is not None else "no data",
            "",
            "reported",
            "",
        )
    if flood_statuses:
        curl_status = f.get("fair_curl_status") or "no answer"
        retry = f.get("fair_curl_retry_after", "none")
        turned_away = flood_statuses.get("503", 0) > 0 and curl_status == "503" and retry != "none"
        budget = ended["budget"]
        row(
            f"flood: responses by status (64 connections, max_concurrent "
            f"{f.get('fair_max_concurrent', '?')})",
            ", ".join(f"{code}: {flood_statuses.get(code, 0):,}" for code in ("200", "503", "504", "other"))
            + f"; one probe: {curl_status}, Retry-After: {retry}",
            "",
            "excess requests get 503 + Retry-After",
            met(turned_away),
        )
        if budget or ended["deadline"]:
            row(
                "flood request ended by its CPU budget (1 s of CPU; deadline 30 s), wall time",
                f"p50 {percentile(budget, 50) / 1e3:.1f} s, max {budget[-1] / 1e3:.1f} s "
                f"({len(budget):,} requests)" if budget else "none",
                "",
                "reported",
                "",
            )
    if under_statuses:
        bad = sum(n for code, n in under_statuses.items() if code != "200")
        socket = under["socket"] if under else 0
        row(
            "second app's non-2xx under flood (must be 0)",
            f"{bad:,} of {sum(under_statuses.values()):,}"
            + (f", and {socket:,} socket errors" if socket > 0 else ""),
            "",
            "0",
            met(bad == 0 and socket == 0),
        )
    answer = number(f, "restart_answer_seconds")
    if answer is not None:
        row(
            f"restart with {n:,} apps until app0 answers",
            f"{answer:.3f} s",
            "",
            "< 2 s",
            met(answer < 2),
        )
    listening = number(f, "restart_listening_seconds")
    if listening is not None:
        row("restart until the `listening on` line", f"{listening:.3f} s")
    cold_s = number(f, "deploy_cold_seconds")
    if cold_s:
        row(f"deploys/s, distinct binaries (compile, cache cold), {distinct:,}", f"{distinct / cold_s:,.1f}", "", "reported", "")
    shared_s = number(f, "deploy_shared_seconds")
    if shared_s:
        row(f"deploys/s, binary already compiled, {n - distinct:,}", f"{(n - distinct) / shared_s:,.1f}", "", "reported", "")
    if rss_deployed is not None:
        row(f"host RSS right after the deploys (each app unloaded 2 s after its deploy)", mib(rss_deployed))
    if rss_empty is not None:
        row("host RSS, no app deployed", mib(rss_empty))

    print("| figure | tern | peer (`wasmtime serve`) | target | met? |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")

    print()
    notes = []
    if not at_target_n:
        notes.append(f"N is {n:,}, not 10,000: the idle-RSS target is not judged.")
    binaries = {0} | {i % distinct for i in range(1, apps_loaded + 1)} if distinct else set()
    shared = apps_loaded + 1 - len(binaries)
    if n > distinct:
        notes.append(
            f"app i runs binary i % {distinct:,}: apps past the first {distinct:,} share a binary with one of them. "
            "An idle app holds no code, so sharing does not change the idle RSS"
            + (
                f"; {shared:,} of the {apps_loaded:,} cold apps {'shares' if shared == 1 else 'share'} "
                "a binary with another loaded app."
                if shared
                else "."
            )
        )
    listed = number(f, "apps_loaded_listed")
    if listed is not None and int(listed) != apps_loaded + 1:
        notes.append(f"the host listed {int(listed):,} apps loaded after the cold requests, not {apps_loaded + 1:,}.")
    if cold_failed:
        notes.append(f"{cold_failed} cold requests did not answer 200.")
    for name, result in (("one app", one), ("round-robin", rr), ("quiet app alone", quiet)):
        if result and result["errors"]:
            notes.append(f"wrk counted {result['errors']} errors in the {name} run: that figure is not fair.")
    if flood_statuses:
        turned = number(f, "fair_log_concurrency")
        notes.append(
            "the flood's counts are wrk's, until it was stopped once the first 8 flood requests had ended; "
            "in the host's access log over the whole flood, "
            + (f"{int(turned):,} flood requests were turned away at once (503, max_concurrent), " if turned is not None else "")
            + f"{len(ended['budget']):,} ended by the CPU budget (503) and {len(ended['deadline']):,} "
            "by the deadline (504). Both 503s carry Retry-After: 1."
        )
        notes.append(
            "both wrk clients of the fairness step run on CPU 1: the flood's client, answered 503 at once on "
            "56 of its connections, takes CPU from the quiet app's client, so the quiet app's req/s under "
            "flood is bounded by the client as well as by the host."
        )
    if "wasm_bytes" in f:
        notes.append(
            f"each binary is the wasi:http 0.2 hello without its DWARF, {int(f['wasm_bytes']):,} bytes; "
            f"a bundle (.tar.gz) is {int(f.get('bundle_bytes', 0)):,} bytes on average."
        )
    notes.append(
        "a cold request's time is a client's, from its connect to the last byte of the response: "
        "a new TCP connection plus loading the app (its compiled code mapped from the compile "
        "cache) and the request."
    )
    if peer:
        notes.append(
            "a `wasmtime serve` process's RSS counts the pages of its binary and libraries that the "
            "processes share; PSS divides those among them, so the true cost per process is between the two."
        )
    for note in notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/density"))
