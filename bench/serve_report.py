"""Prints bench/serve's wrk results as one table: requests/s and latency
percentiles per server and connection count, with req/s ratios to
`wasmtime serve` and to native hyper measured in the same run."""

import re
import sys
from pathlib import Path

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse(path):
    text = path.read_text()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    pct = {}
    for p, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)$", text, re.M):
        pct[p] = float(value) * UNITS[unit]
    return rps, pct


def main(out):
    out = Path(out)
    rows = {}
    for path in sorted(out.glob("*-c*.txt")):
        name, conns = path.stem.rsplit("-c", 1)
        rows[(name, int(conns))] = parse(path)
    print(f"{'server':<15} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'vs wasmtime':>12} {'vs native':>10}")
    for (name, conns), (rps, pct) in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        peer = rows.get(("wasmtime", conns), (None,))[0]
        native = rows.get(("native", conns), (None,))[0]
        vs_peer = f"{rps / peer:.2f}x" if peer else "-"
        vs_native = f"{rps / native:.2f}x" if native else "-"
        print(
            f"{name:<15} {conns:>5} {rps:>9.0f} {pct.get('50', 0):>8.3f} {pct.get('90', 0):>8.3f} "
            f"{pct.get('99', 0):>8.3f} {vs_peer:>12} {vs_native:>10}"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/serve")
