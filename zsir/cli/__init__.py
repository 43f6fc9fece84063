"""The ``zsir`` command line: ``restore``, ``bench``, ``priors``, ``tune`` and ``train-prior``, one module per
subcommand.

Every restoration goes through :func:`zsir.solve`. Exit codes: 0 success, 1 some inputs failed (or a runtime
error), 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence

from tqdm.auto import tqdm

import zsir
from zsir.cli import bench, priors, restore, tune
from zsir.cli.common import Parser, UsageError

__all__ = ["main", "build_parser", "UsageError"]


def build_parser() -> Parser:
    """The ``zsir`` argument parser (usage errors raise :class:`UsageError`)."""
    parser = Parser(prog="zsir", description="Zero-shot image restoration with diffusion and consistency priors.")
    parser.add_argument("--version", action="version", version=f"zsir {zsir.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    restore.add_parser(sub)
    bench.add_parser(sub)
    priors.add_parser(sub)
    tune.add_parser(sub)
    sub.add_parser("train-prior", help="train the built-in prior (see `zsir train-prior --help`)", add_help=False)
    return parser


def _train_prior(argv: list[str]) -> int:
    from zsir.models.train import main as train_main

    return int(train_main(argv) or 0)


# ----- entry point --------------------------------------------------------------------------------------------
def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    tqdm.write(f"zsir: warning: {message}", file=sys.stderr)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``zsir`` command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Exit codes: 0 success, 1 some inputs failed (or a runtime error), 2 usage error, 130 interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    commands = [a for a in argv if not a.startswith("-")]
    if commands and commands[0] == "train-prior":
        rest = argv[argv.index("train-prior") + 1 :]
        return _train_prior(rest)
    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args = build_parser().parse_args(argv)
            return args.func(args)
    except UsageError as err:
        print(f"zsir: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as err:  # --help / --version
        return err.code if isinstance(err.code, int) else 0
    except KeyboardInterrupt:
        print(
            f"zsir: interrupted after {time.perf_counter() - start:.0f} s; written outputs are complete (rerun "
            "with --resume to continue)",
            file=sys.stderr,
        )
        return 130
    except Exception as err:
        if debug:
            raise
        print(f"zsir: error: {err}", file=sys.stderr)
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old_term)
