"""The tables of docs/why.md, written from a bench JSON file, so that the page quotes one run.

Run: ``python benchmarks/why_tables.py docs/bench.json`` and paste its Markdown.
"""

from __future__ import annotations

import json
import sys

from kernelgrad.bench.report import WITHIN, fmt_bytes, fmt_time


def _rows(data: dict) -> dict[tuple[str, int, int], dict[str, dict]]:
    rows: dict[tuple[str, int, int], dict[str, dict]] = {}
    for r in data["sweep"]:
        rows.setdefault((r["op"], r["d"], r["n"]), {})[r["peer"]] = r
    return rows


def margin_table(data: dict) -> str:
    """Per sweep row: the fastest other approach, its time, kernelgrad's, and the ratio."""
    lines = [
        "| op | d | n | fastest other | its time | kernelgrad | kernelgrad / fastest | within "
        f"{WITHIN:g}x |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (op, d, n), peers in _rows(data).items():
        mine = peers.get("kernelgrad", {}).get("steady_s")
        others = [
            (r["steady_s"], p) for p, r in peers.items() if p != "kernelgrad" and r["steady_s"]
        ]
        if not mine or not others:
            continue
        best, who = min(others)
        ratio = mine / best
        lines.append(
            f"| {op.replace('_', ' ')} | {d} | {n} | {who} | {fmt_time(best)} | {fmt_time(mine)} "
            f"| {ratio:.2f}x | {'yes' if ratio <= WITHIN else '**no**'} |"
        )
    return "\n".join(lines)


def ratio_table(data: dict) -> str:
    """Each approach's time over kernelgrad's, per sweep row."""
    peers = [p for p in data["peers"] if p != "kernelgrad"]
    lines = [
        "| op | d | n | kernelgrad | " + " | ".join(peers) + " |",
        "|---" * (4 + len(peers)) + "|",
    ]
    for (op, d, n), found in _rows(data).items():
        cells = []
        for p in peers:
            r = found.get(p)
            if r is None:
                cells.append("")
            elif r["ratio_to_kernelgrad"] is None:
                cells.append(r["status"])
            else:
                cells.append(f"{r['ratio_to_kernelgrad']:.2g}x")
        mine = found["kernelgrad"]["steady_s"]
        lines.append(
            f"| {op.replace('_', ' ')} | {d} | {n} | {fmt_time(mine)} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def replica_table(data: dict) -> str:
    """The replica's first, second and median calls per approach."""
    peers = sorted({r["peer"] for r in data["replica"]}, key=list(data["peers"]).index)
    found = {(r["op"], r["peer"]): r for r in data["replica"]}
    lines = ["| call | " + " | ".join(peers) + " |", "|---" * (1 + len(peers)) + "|"]
    for op in ("kernel", "grad", "grad_map"):
        label = op.replace("_", " ")
        base = found[op, "kernelgrad"]["steady_s"]
        for what, key in (("1", "first_call_s"), ("1, warm cache", "first_call_cached_s")):
            cells = [
                fmt_time(found[op, p].get(key)) if found[op, p].get(key) else "" for p in peers
            ]
            lines.append(f"| {label} {what} | " + " | ".join(cells) + " |")
        cells = [fmt_time(found[op, p]["fresh_second_call_s"]) for p in peers]
        lines.append(f"| {label} 2 | " + " | ".join(cells) + " |")
        cells = [
            f"{fmt_time(found[op, p]['steady_s'])} ({found[op, p]['steady_s'] / base:.2g}x)"
            for p in peers
        ]
        lines.append(f"| {label} median (ratio) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(r: dict | None, key: str = "steady_s") -> str:
    if r is None:
        return ""
    if r.get(key) is None:
        return r["status"]
    return fmt_bytes(r[key]) if key == "peak_bytes" else fmt_time(r[key])


def broadcast_table(data: dict) -> str:
    """Section 1: the grad map as n dispatched calls (loop-jacfwd) against one program."""
    lines = [
        "| n | d | loop-jacfwd (n calls) | forum-jacfwd (one program) | ratio |",
        "|---|---|---|---|---|",
    ]
    for (op, d, n), peers in _rows(data).items():
        loop, vmap = peers.get("loop-jacfwd"), peers.get("forum-jacfwd")
        if op != "grad_map" or not loop or not vmap or not loop["steady_s"]:
            continue
        ratio = loop["steady_s"] / vmap["steady_s"]
        lines.append(f"| {n} | {d} | {_cell(loop)} | {_cell(vmap)} | {ratio:.2g}x |")
    return "\n".join(lines)


def reverse_table(data: dict) -> str:
    """Section 2: forward against reverse mode, time and XLA's memory plan."""
    lines = [
        "| op | n | d | jacfwd | jacrev | memory, jacfwd | memory, jacrev | torch.func jacrev |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (op, d, n), peers in _rows(data).items():
        fwd, rev = peers.get("forum-jacfwd"), peers.get("forum-jacrev")
        if op == "kernel" or not fwd or not rev:
            continue
        torch_rev = peers.get("torch-jacrev")
        lines.append(
            f"| {op.replace('_', ' ')} | {n} | {d} | {_cell(fwd)} | {_cell(rev)} | "
            f"{_cell(fwd, 'peak_bytes')} | {_cell(rev, 'peak_bytes')} | {_cell(torch_rev)} |"
        )
    return "\n".join(lines)


def main() -> None:
    with open(sys.argv[1] if len(sys.argv) > 1 else "docs/bench.json") as f:
        data = json.load(f)
    for title, table in (
        ("Broadcast", broadcast_table(data)),
        ("Reverse", reverse_table(data)),
        ("Margins", margin_table(data)),
        ("Every ratio", ratio_table(data)),
        ("Replica", replica_table(data)),
    ):
        print(f"## {title}\n\n{table}\n")


if __name__ == "__main__":
    main()
