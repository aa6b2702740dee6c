"""The ``kernelgrad`` command. It parses arguments and calls :mod:`kernelgrad.bench`; no more.

A bad argument is the user's mistake, not a bug: it is reported as one line on stderr with
exit status 2 and no traceback, before anything slow runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from dataclasses import replace


class UsageError(Exception):
    """A bad command line; the message is printed as is."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from kernelgrad.bench.peers import DEFAULT_PEERS, PEER_NAMES

    parser = _Parser(
        prog="kernelgrad",
        description="Exact, fast derivatives of covariance functions. Commands: bench.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser(
        "bench",
        help="the forum's experiment side by side with kernelgrad, then a sweep over n",
        description=(
            "Reproduce the forum's table (n = 100, its kernel as posted) with first calls from "
            "fresh processes, then sweep n for d = 1 and 3 with the RBF kernel: median time per "
            "call, ratio to kernelgrad, max error against a float64 reference, peak memory. "
            "Approaches that would exceed the memory or time budget are skipped, with the "
            "reason printed. About 2 minutes on 2 cores; --quick under 30 s."
        ),
    )
    bench.add_argument("--quick", action="store_true", help="a short run (n = 100, 300)")
    bench.add_argument(
        "--n",
        type=_positive_int,
        nargs="+",
        action="extend",
        default=[],
        metavar="N",
        help="sizes added to the sweep (default sweep: 100 300 1000 3000)",
    )
    bench.add_argument(
        "--d",
        type=_positive_int,
        nargs="+",
        metavar="D",
        help="input dimensions to sweep instead of the default 1 3",
    )
    bench.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float64",
        help="working precision of every approach (default: float64); errors are always "
        "against a float64 reference",
    )
    bench.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="where JAX and torch run (default: cpu); NumPy runs on the CPU only",
    )
    bench.add_argument(
        "--peers",
        nargs="+",
        metavar="PEER",
        help=(
            f"columns, space- or comma-separated, from {', '.join(PEER_NAMES)} "
            f"(default: {' '.join(DEFAULT_PEERS)}); kernelgrad is always included"
        ),
    )
    bench.add_argument(
        "--mem-budget",
        type=_positive_float,
        metavar="GIB",
        help="skip approaches estimated to need more (default: 2 GiB or 1/4 of free memory)",
    )
    bench.add_argument(
        "--time-budget",
        type=_positive_float,
        metavar="S",
        help="skip a case whose timed calls are predicted to take longer (default: 5 s)",
    )
    bench.add_argument("--json", metavar="PATH", help="write every result, machine and versions")
    bench.add_argument("--plot", metavar="PATH", help="write a PNG: log-log time against n")
    return parser


def _check_writable(option: str, path: str) -> None:
    """Fail now, not after a two-minute run, if ``path`` cannot be written."""
    existed = os.path.exists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as err:
        raise UsageError(f"kernelgrad bench: error: {option} {path}: {err.strerror}") from None
    if not existed:
        os.remove(path)


def _peers(requested: list[str] | None) -> tuple[str, ...]:
    from kernelgrad.bench.peers import DEFAULT_PEERS, PEER_NAMES

    if requested is None:
        return DEFAULT_PEERS
    names = [name for item in requested for name in item.split(",") if name]
    for name in names:
        if name not in PEER_NAMES:
            raise UsageError(
                f"kernelgrad bench: error: unknown peer {name!r}; choose from "
                f"{', '.join(PEER_NAMES)}"
            )
    # Ratios are to kernelgrad, so it is always measured; columns keep the canonical order.
    return tuple(p for p in PEER_NAMES if p in names or p == "kernelgrad")


def _config(args):
    from kernelgrad.bench import runner

    changes = {"dtype": args.dtype, "device": args.device, "peers": _peers(args.peers)}
    if args.d:
        changes["ds"] = tuple(dict.fromkeys(args.d))
    if args.mem_budget:
        changes["mem_budget_bytes"] = int(args.mem_budget * runner.GIB)
    if args.time_budget:
        changes["time_budget_s"] = args.time_budget
    config = runner.quick_config(**changes) if args.quick else runner.BenchConfig(**changes)
    return replace(config, ns=tuple(sorted(set(config.ns) | set(args.n))))


def _check_environment(args) -> None:
    missing = [m for m in ("rich",) + (("matplotlib",) if args.plot else ()) if not _has(m)]
    if missing:
        raise UsageError(
            f"kernelgrad bench: error: needs {' and '.join(missing)}: "
            "pip install 'kernelgrad[bench]'"
        )
    if args.device == "gpu":
        from kernelgrad.bench.runner import gpu_available

        if not gpu_available():
            raise UsageError(
                "kernelgrad bench: error: --device gpu, but JAX finds no GPU here "
                "(jax.devices('gpu') fails); use --device cpu or install jax[cuda12]"
            )
    for option in ("json", "plot"):
        path = getattr(args, option)
        if path:
            _check_writable(f"--{option}", path)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def bench(args, config) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from kernelgrad.bench import report, runner

    # Wide enough for the sweep's columns when the output is a file or a pipe.
    console = Console(width=None if sys.stdout.isatty() else 170)
    steps = len(runner.plan(config))
    progress = Progress(
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        task = progress.add_task("starting", total=steps)
        finished = iter(range(steps))  # steps finished when the next one starts

        def on_step(description: str) -> None:
            progress.update(task, description=description.ljust(44), completed=next(finished))

        results = runner.run(config, on_step=on_step)
    report.print_report(results, console)
    command = ["kernelgrad", *sys.argv[1:]] if args.argv is None else ["kernelgrad", *args.argv]
    if args.json:
        report.write_json(results, args.json, command)
        console.print(f"wrote {args.json}")
    if args.plot:
        report.write_plot(results, args.plot)
        ratios = report.ratio_plot_path(args.plot)
        report.write_ratio_plot(results, ratios)
        console.print(f"wrote {args.plot} and {ratios}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``kernelgrad``; returns the exit status (2 for a bad command line)."""
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        _check_environment(args)
        if args.command == "bench":
            return bench(args, _config(args))
    except UsageError as err:
        print(err, file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        print("kernelgrad: interrupted", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
