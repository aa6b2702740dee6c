"""kernelgrad's margin on each sweep row, measured again at length: the closest peers only.

Run: ``python benchmarks/margins.py docs/bench.json [--rounds 12] [--rows kernel:300:3 ...]``

``kernelgrad bench`` times some ten approaches per row in about a minute and a half, so each
gets a few tenths of a second. On a shared 2-core machine the rows near 1.1x then move by
tens of percent from one run to the next (13, 12 and 9 of 24 rows within 1.1x in three runs
of the same code). This script takes a bench JSON file, keeps for every row kernelgrad and
the three fastest other approaches, and times them again the same way as the bench (each
peer's own callable, warmed by 70 calls, so that kernelgrad's sizes are hot) in
``--rounds`` rounds of batched calls, the order shuffled in every round. It prints the
ratio of kernelgrad's median batch time to the fastest other median, and the same for the
minima.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from kernelgrad.bench import peers as P

WARM_CALLS = 70  # above the policy's hot_calls, as the bench's warm-up is


def _closest(rows: list[dict]) -> dict[tuple[str, int, int], list[str]]:
    """Per (op, n, d): kernelgrad and the three fastest other peers of the bench run."""
    times: dict[tuple[str, int, int], dict[str, float]] = {}
    for r in rows:
        if r["steady_s"]:
            times.setdefault((r["op"], r["n"], r["d"]), {})[r["peer"]] = r["steady_s"]
    chosen = {}
    for key, by_peer in times.items():
        if "kernelgrad" not in by_peer:
            continue
        others = sorted((t, p) for p, t in by_peer.items() if p != "kernelgrad")[:3]
        chosen[key] = ["kernelgrad", *(p for _, p in others)]
    return chosen


def measure(op: str, n: int, d: int, names: list[str], rounds: int, batch_s: float) -> dict:
    """Median and minimum seconds per call of each peer, in shuffled interleaved rounds."""
    case = P.Case(op, n, d)
    X = P.points(case)
    calls = {}
    for name in names:
        peer = P.get_peer(name)
        with peer.context(case):
            call = peer.prepare(case, X)
            start = time.perf_counter()
            for _ in range(WARM_CALLS):
                call()
            per_call = (time.perf_counter() - start) / WARM_CALLS
        calls[name] = (peer, call, max(1, int(batch_s / per_call)))
    samples: dict[str, list[float]] = {name: [] for name in names}
    order = list(names)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            peer, call, batch = calls[name]
            with peer.context(case):
                start = time.perf_counter()
                for _ in range(batch):
                    call()
                samples[name].append((time.perf_counter() - start) / batch)
    return {n: (statistics.median(s), min(s)) for n, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_json")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--batch-s", type=float, default=0.01, help="seconds per batch")
    parser.add_argument("--rows", nargs="*", help="op:n:d, e.g. kernel:300:3 (default: all)")
    parser.add_argument("--json", default=None, help="write the ratios here")
    args = parser.parse_args()
    with open(args.bench_json) as f:
        rows = json.load(f)["sweep"]
    wanted = {tuple(r.split(":")) for r in args.rows} if args.rows else None
    out = []
    within = 0
    for (op, n, d), names in _closest(rows).items():
        if wanted and (op, str(n), str(d)) not in wanted:
            continue
        t = measure(op, n, d, names, args.rounds, args.batch_s)
        median_ratio = t["kernelgrad"][0] / min(t[p][0] for p in names[1:])
        min_ratio = t["kernelgrad"][1] / min(t[p][1] for p in names[1:])
        within += median_ratio <= 1.1
        peers = ", ".join(f"{p} {t[p][0] * 1e6:.1f} us" for p in names[1:])
        print(
            f"{op:8s} n={n:5d} d={d}: kernelgrad {t['kernelgrad'][0] * 1e6:9.1f} us; {peers}; "
            f"ratio {median_ratio:.2f} (medians), {min_ratio:.2f} (minima)",
            flush=True,
        )
        out.append(
            {
                "op": op,
                "n": n,
                "d": d,
                "median_ratio": median_ratio,
                "min_ratio": min_ratio,
                "times_s": {p: list(v) for p, v in t.items()},
            }
        )
    print(f"kernelgrad within 1.1x of the fastest (medians) in {within} of {len(out)} rows.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
