"""The bench's outputs: rich tables for the terminal, the JSON file and the log-log plot.

Every number shown comes from a :class:`~kernelgrad.bench.runner.Result`; nothing here
measures. Ratios are each peer's median time over kernelgrad's, so ``x3.0`` means kernelgrad
is three times faster and ``x0.5`` means it is twice as slow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import peers as P
from .runner import REPLICA_NOTE, BenchConfig, BenchResults, Result, error_bound, replica_peers


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for scale, unit in ((1e-6, "us"), (1e-3, "ms"), (1.0, "s")):
        if seconds < 1000 * scale or unit == "s":
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def fmt_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.3g} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def fmt_ratio(ratio: float | None) -> str:
    return "" if ratio is None else f"x{ratio:.2g}" if ratio < 10 else f"x{ratio:.0f}"


class _Footnotes:
    """Numbered reasons for skipped and failed cells, each reason listed once."""

    def __init__(self):
        self.reasons: list[str] = []

    def mark(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"[{self.reasons.index(reason) + 1}]"

    def render(self) -> str:
        return "\n".join(f"[{i}] {reason}" for i, reason in enumerate(self.reasons, 1))


def _unfinished(r: Result, notes: _Footnotes) -> str:
    style = "yellow" if r.status == "skipped" else "red"
    return f"[{style}]{r.status} {notes.mark(f'{r.peer} {r.op} n={r.n}: {r.reason}')}[/]"


def _error_text(r: Result) -> str:
    if r.max_rel_err is None:
        return "-"
    text = f"err {r.max_rel_err:.0e}"
    return text if r.within_bound else f"[bold red]{text} (over bound)[/]"


def replica_table(res: BenchResults):
    """The forum's table at n = 100: first and second call from a fresh process, the median."""
    from rich.table import Table

    cfg = res.config
    peers = replica_peers(cfg)
    table = Table(
        title=f"Forum replica: n = {cfg.replica_n}, d = 1, {cfg.dtype}, {cfg.device}",
        caption=(
            f"{REPLICA_NOTE}\n1: the first call in a fresh process, without a persistent "
            "compilation cache (warm cache: a second fresh process reusing kernelgrad's); "
            "2: the call after it; median: steady state, xratio to kernelgrad."
        ),
        caption_justify="left",
    )
    table.add_column("call")
    for p in peers:
        table.add_column(p, justify="right")
    notes = _Footnotes()
    cached = any(r.first_call_cached_s is not None for r in res.section("replica"))
    for op in P.OPS:
        label = P.OP_LABELS[op]
        cells = {p: res.find("replica", p, op, cfg.replica_n, 1) for p in peers}
        first, second, steady = [f"{label} 1 (fresh)"], [f"{label} 2 (fresh)"], [f"{label} median"]
        warm = [f"{label} 1 (fresh, warm cache)"]
        for p in peers:
            r = cells[p]
            missing = res.fresh_errors.get(p)
            first.append(notes.mark(f"{p} fresh process: {missing}") if missing else "")
            second.append("")
            warm.append("")
            if missing is None and r is not None:
                first[-1] = fmt_time(r.first_call_s)
                second[-1] = fmt_time(r.fresh_second_call_s)
                warm[-1] = fmt_time(r.first_call_cached_s) if r.first_call_cached_s else ""
            if r is None or r.status != "ok":
                steady.append(_unfinished(r, notes) if r else "-")
            else:
                steady.append(f"{fmt_time(r.steady_s)} {fmt_ratio(r.ratio_to_kernelgrad)}")
        table.add_row(*first)
        if cached:
            table.add_row(*warm)
        table.add_row(*second)
        table.add_row(*steady, end_section=True)
    errors = ["max error"]
    for p in peers:
        errs = [r for r in res.section("replica") if r.peer == p and r.max_rel_err is not None]
        worst = max(errs, key=lambda r: r.max_rel_err, default=None)
        errors.append(_error_text(worst) if worst else "-")
    table.add_row(*errors)
    return table, notes


def sweep_table(res: BenchResults, d: int, notes: _Footnotes):
    """One d of the sweep: the median per call and its ratio, then error and peak memory."""
    from rich.table import Table

    cfg = res.config
    table = Table(
        title=(
            f"Sweep: RBF, d = {d}, {cfg.dtype}, {cfg.device}. Median per call, xratio to "
            "kernelgrad (>1: kernelgrad faster); max relative error; peak memory"
        ),
    )
    table.add_column("op")
    table.add_column("n", justify="right")
    for p in cfg.peers:
        table.add_column(p, justify="right")
    for op in cfg.ops:
        for i, n in enumerate(cfg.ns):
            row = [P.OP_LABELS[op] if i == 0 else "", str(n)]
            cells = [res.find("sweep", p, op, n, d) for p in cfg.peers]
            times = [r.steady_s for r in cells if r is not None and r.steady_s is not None]
            fastest = min(times, default=None)
            for r in cells:
                if r is None:
                    row.append("-")
                elif r.status != "ok":
                    row.append(_unfinished(r, notes))
                else:
                    t = fmt_time(r.steady_s)
                    t = f"[bold green]{t}[/]" if r.steady_s == fastest else t
                    mem = fmt_bytes(r.peak_bytes)
                    mem = f"~{mem}" if r.peak_method == "estimate" else mem
                    row.append(
                        f"{t} {fmt_ratio(r.ratio_to_kernelgrad)}\n[dim]{_error_text(r)} {mem}[/]"
                    )
            table.add_row(*row, end_section=i == len(cfg.ns) - 1)
    return table


#: kernelgrad counts as level with the fastest approach within this factor of its time.
WITHIN = 1.1


def margins(res: BenchResults) -> dict[tuple[str, int, int], float]:
    """kernelgrad's time over the fastest other approach's, per sweep row (op, n, d)."""
    out = {}
    for r in res.section("sweep"):
        if r.peer != "kernelgrad" or r.steady_s is None:
            continue
        others = [
            x.steady_s
            for x in res.section("sweep")
            if (x.op, x.n, x.d) == (r.op, r.n, r.d) and x.peer != "kernelgrad" and x.steady_s
        ]
        if others:
            out[r.op, r.n, r.d] = r.steady_s / min(others)
    return out


def summary_lines(res: BenchResults) -> list[str]:
    """Where kernelgrad stands, the error bounds, and how long the run took."""
    cfg = res.config
    ratio = margins(res)
    rows = len(ratio)
    within = sum(v <= WITHIN for v in ratio.values())
    wins = sum(v <= 1.0 for v in ratio.values())
    short = ", ".join(
        f"{P.OP_LABELS[op]} n={n} d={d} {v:.2f}x"
        for (op, n, d), v in sorted(ratio.items(), key=lambda kv: -kv[1])
        if v > WITHIN
    )
    replica = []
    for op in P.OPS:
        mine = res.find("replica", "kernelgrad", op, cfg.replica_n, 1)
        forum_r = res.find("replica", "forum-jacfwd", op, cfg.replica_n, 1)
        if mine and forum_r and mine.steady_s and forum_r.steady_s:
            replica.append(f"{P.OP_LABELS[op]} {mine.steady_s / forum_r.steady_s:.2f}x")
    paths: dict[str, list[str]] = {}
    for r in res.section("sweep"):
        if r.peer == "kernelgrad" and r.path:
            paths.setdefault(r.path, []).append(f"{P.OP_LABELS[r.op]} n={r.n} d={r.d}")
    over = [r for r in res.results if r.within_bound is False]
    bounds = ", ".join(f"{error_bound(cfg.dtype, n):.0e} at n={n}" for n in sorted(set(cfg.ns)))
    load = res.machine.get("load_average_at_start")
    lines = [
        f"kernelgrad is within {WITHIN:g}x of the fastest in {within} of {rows} rows "
        f"(fastest in {wins}).",
        *([f"Over {WITHIN:g}x of the fastest: {short}."] if short else []),
        *(
            [f"Replica, kernelgrad's time over the forum's jitted jacfwd: {', '.join(replica)}."]
            if replica
            else []
        ),
        f"Error bound (16 n eps, {cfg.dtype}): {bounds}; "
        + (f"[bold red]{len(over)} results over it[/]." if over else "every result within it."),
        *(f"kernelgrad ran {path}: {', '.join(cases)}." for path, cases in paths.items()),
        f"Memory: XLA's buffer assignment for JAX programs, tracemalloc for NumPy, "
        f"'~' an estimate. Budget {cfg.mem_budget_bytes / 2**30:.1f} GiB.",
        f"Took {res.elapsed_s:.0f} s on {res.machine.get('cpu')} "
        f"({res.machine.get('usable_cores')} cores"
        + (f", load average {load[0]:.1f} at start" if load else "")
        + ").",
    ]
    return lines


def print_report(res: BenchResults, console) -> None:
    notes = _Footnotes()
    if res.config.replica:
        table, notes = replica_table(res)
        console.print(table)
        console.print()
    for d in res.config.ds:
        console.print(sweep_table(res, d, notes))
        console.print()
    if notes.reasons:
        console.print("[bold]Skipped, failed or not run:[/]")
        console.print(notes.render(), highlight=False, markup=False)
        console.print()
    for line in summary_lines(res):
        console.print(line, highlight=False)


def write_json(res: BenchResults, path: str | Path, command: list[str] | None = None) -> None:
    with open(path, "w") as f:
        json.dump(res.to_json(command), f, indent=1)
        f.write("\n")


def _figure(res: BenchResults):
    """(pyplot, figure, axes, colours): one panel per (d, op), one colour per peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = res.config
    fig, axes = plt.subplots(
        len(cfg.ds), len(cfg.ops), figsize=(4.2 * len(cfg.ops), 3.4 * len(cfg.ds)), squeeze=False
    )
    colours = {p: f"C{i}" for i, p in enumerate(cfg.peers)}
    colours["kernelgrad"] = "black"
    return plt, fig, axes, colours


def _style(ax, op: str, d: int, ylabel: str) -> None:
    """Log-log axes of one (op, d) panel."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(f"{P.OP_LABELS[op]}, d = {d}")
    ax.set_xlabel("n")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


def _peer_legend(plt, cfg: BenchConfig, colours: dict) -> tuple[list, list]:
    """One legend entry per peer, in its colour."""
    handles = [plt.Line2D([], [], marker="o", color=colours[p]) for p in cfg.peers]
    return handles, list(cfg.peers)


def _save(plt, fig, handles, labels, title: str, rows: int, path) -> None:
    fig.legend(handles, labels, loc="lower center", ncol=math.ceil(len(labels) / 2), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08 + 0.02 * (rows == 1), 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plot(res: BenchResults, path: str | Path) -> None:
    """Log-log time against n, one panel per (d, op), one colour per peer.

    Filled markers: the median per call. Hollow markers: the first call at that n in the warm
    process (JAX traces and compiles per shape). Stars: the first call in a fresh process, from
    the replica (n = 100, the forum's kernel as posted, so d = 1 only).
    """
    plt, fig, axes, colours = _figure(res)
    cfg = res.config
    ds, ops = cfg.ds, cfg.ops
    for row, d in enumerate(ds):
        for col, op in enumerate(ops):
            ax = axes[row][col]
            for p in cfg.peers:
                series = sorted(
                    (r for r in res.section("sweep") if (r.peer, r.op, r.d) == (p, op, d)),
                    key=lambda r: r.n,
                )
                ok = [r for r in series if r.steady_s is not None]
                if ok:
                    ns = [r.n for r in ok]
                    width = 2.2 if p == "kernelgrad" else 1.3
                    ax.plot(ns, [r.steady_s for r in ok], "o-", color=colours[p], lw=width)
                    ax.plot(
                        ns,
                        [r.new_n_call_s for r in ok],
                        "o:",
                        color=colours[p],
                        mfc="none",
                        lw=0.8,
                        alpha=0.7,
                    )
                first = res.find("replica", p, op, cfg.replica_n, 1)
                if d == 1 and first is not None and first.first_call_s is not None:
                    ax.plot(cfg.replica_n, first.first_call_s, "*", color=colours[p], ms=11)
            _style(ax, op, d, "seconds")
    handles, labels = _peer_legend(plt, cfg, colours)
    handles += [
        plt.Line2D([], [], marker="o", color="grey", ls="-"),
        plt.Line2D([], [], marker="o", color="grey", mfc="none", ls=":"),
        plt.Line2D([], [], marker="*", color="grey", ls="", ms=11),
    ]
    labels += [
        "median per call",
        "first call at this n (warm process)",
        "first call, fresh process (replica)",
    ]
    title = f"kernelgrad bench: {cfg.dtype}, {cfg.device}, {res.machine.get('cpu', '')}"
    _save(plt, fig, handles, labels, title, len(ds), path)


def ratio_plot_path(path: str | Path) -> Path:
    """Where the ratio plot goes beside the time plot: ``bench.png`` -> ``bench-ratio.png``."""
    path = Path(path)
    return path.with_name(f"{path.stem}-ratio{path.suffix or '.png'}")


def write_ratio_plot(res: BenchResults, path: str | Path) -> None:
    """Each approach's median time over the fastest approach's in that row, against n.

    1 is the fastest approach of the row; the shaded band up to 1.1 is "level with it".
    kernelgrad is the thick black line, so its margin reads at a glance.
    """
    plt, fig, axes, colours = _figure(res)
    cfg = res.config
    ds, ops = cfg.ds, cfg.ops
    for row, d in enumerate(ds):
        for col, op in enumerate(ops):
            ax = axes[row][col]
            fastest = {}
            for r in res.section("sweep"):
                if (r.op, r.d) == (op, d) and r.steady_s:
                    fastest[r.n] = min(fastest.get(r.n, math.inf), r.steady_s)
            for p in cfg.peers:
                ok = sorted(
                    (
                        r
                        for r in res.section("sweep")
                        if (r.peer, r.op, r.d) == (p, op, d) and r.steady_s
                    ),
                    key=lambda r: r.n,
                )
                if ok:
                    width = 2.4 if p == "kernelgrad" else 1.2
                    ys = [r.steady_s / fastest[r.n] for r in ok]
                    ax.plot([r.n for r in ok], ys, "o-", color=colours[p], lw=width, ms=4)
            ax.axhspan(1.0, WITHIN, color="green", alpha=0.15, lw=0)
            _style(ax, op, d, "time / fastest in row")
    handles, labels = _peer_legend(plt, cfg, colours)
    handles.append(plt.Rectangle((0, 0), 1, 1, color="green", alpha=0.15))
    labels.append(f"within {WITHIN:g}x of the fastest")
    title = f"kernelgrad bench, time over the fastest approach per row: {cfg.dtype}, {cfg.device}"
    _save(plt, fig, handles, labels, title, len(ds), path)
