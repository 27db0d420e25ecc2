"""Prints hyperfine results as one table: medians, and ratios to the peer
(`wasmtime`) and to `native` measured in the same run."""

import json
import sys


def main(paths):
    print(f"{'case':<10} {'command':<10} {'median':>10} {'p90':>10} {'vs wasmtime':>12} {'vs native':>10}")
    for path in paths:
        case = path.rsplit("/", 1)[-1].removesuffix(".json")
        results = {r["command"]: r for r in json.load(open(path))["results"]}
        medians = {name: r["median"] for name, r in results.items()}
        for name, r in results.items():
            times = sorted(r["times"])
            p90 = times[int(len(times) * 0.9) - 1] if times else float("nan")
            vs_peer = medians[name] / medians["wasmtime"]
            vs_native = medians[name] / medians["native"]
            print(f"{case:<10} {name:<10} {fmt(medians[name]):>10} {fmt(p90):>10} {vs_peer:>11.2f}x {vs_native:>9.2f}x")


def fmt(seconds):
    return f"{seconds * 1e3:.2f} ms" if seconds < 10 else f"{seconds:.2f} s"


if __name__ == "__main__":
    main(sys.argv[1:])
