"""First calls in a fresh process, run the way the forum's script ran them.

``python -m kernelgrad.bench.firstcall PEER N DTYPE DEVICE`` imports the peer, builds the
inputs, then for the kernel, grad and grad map in turn times the first call and the second,
on the forum's kernel as posted. The clock covers exactly one call each time; imports and
input building are outside it. Prints one JSON line:
``{"kernel": {"first": s, "second": s}, ..., "max_rss_bytes": b, "compile_cache": folder}``.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main(argv: list[str]) -> None:
    peer_name, n, dtype, device = argv[0], int(argv[1]), argv[2], argv[3]
    from kernelgrad.bench import peers as P
    from kernelgrad.execution import compile_cache

    peer = P.get_peer(peer_name)
    out: dict = {}
    for op in P.OPS:
        case = P.Case(op, n, 1, dtype, "forum", device)
        X = P.points(case)
        with peer.context(case):
            call = peer.prepare(case, X)
            t0 = time.perf_counter()
            call()
            t1 = time.perf_counter()
            call()
            t2 = time.perf_counter()
        out[op] = {"first": t1 - t0, "second": t2 - t1}
    # ru_maxrss is in KiB on Linux.
    out["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["compile_cache"] = compile_cache.active_folder()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
