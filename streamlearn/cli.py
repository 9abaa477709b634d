"""The ``streamlearn`` command: argument parsing, exit codes, and one-line error messages.

Exit codes: 0 ok, 2 bad usage or configuration, 1 runtime failure. Errors are
one line on stderr, never a traceback (tracebacks are logged at DEBUG).

>>> main(["replay"])
2
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from streamlearn import __version__
from streamlearn.config import LOG_LEVELS, MAX_SEED, Settings, load_settings
from streamlearn.argtypes import int_at_least, positive_float
from streamlearn.dirlock import DirectoryLock
from streamlearn.errors import CheckpointError, ConfigError, StreamlearnError, UsageError
from streamlearn.logging_setup import configure_logging
from streamlearn.paths import open_output, unwritable_reason, write_errors_named

__all__ = ["main", "build_parser"]

logger = logging.getLogger(__name__)

PROG = "streamlearn"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        """Turn argparse's complaint into a UsageError; its help hint names the subcommand."""
        raise UsageError(f"{message} (see '{self.prog} --help')")  # printed after "streamlearn: error: "


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar (DESIGN.md §2)."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS, default=argparse.SUPPRESS,
        help="log verbosity on stderr (default: log_level from the config, INFO)",
    )
    config = _Parser(add_help=False)
    config.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file (env vars still override it)")

    parser = _Parser(prog=PROG, description="Online meta-learned feature extractor over Kafka streams.",
                     parents=[common])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", parents=[common, config], help="run the daemon: consume, learn, publish, serve")
    run.set_defaults(handler=_cmd_run)

    rep = commands.add_parser("replay", parents=[common, config], help="run the learner offline over a JSONL file")
    rep.add_argument("input", type=Path, metavar="FILE.jsonl")
    rep.add_argument("--predictions", type=Path, metavar="OUT.jsonl", help="one prediction line per input line")
    rep.add_argument("--report", type=Path, metavar="OUT.json", help="JSON summary of the run")
    rep.add_argument("--save-model", type=Path, metavar="DIR", help="save the final model here")
    rep.add_argument("--seed", type=int_at_least(0, MAX_SEED), metavar="N", help="override learner.seed")
    rep.set_defaults(handler=_cmd_replay)

    emb = commands.add_parser("embed", parents=[common], help="embed a JSONL file with a saved model")
    emb.add_argument("--model", type=Path, metavar="DIR", required=True, help="saved model or checkpoint directory")
    emb.add_argument("input", type=Path, metavar="FILE.jsonl")
    emb.add_argument("--output", type=Path, metavar="OUT.jsonl", help="write here instead of stdout")
    emb.add_argument("--batch-size", type=int_at_least(1, 100_000), default=256, metavar="N",
                     help="samples per batch (at most 100,000)")
    emb.set_defaults(handler=_cmd_embed)

    prod = commands.add_parser("produce", parents=[common, config], help="feed the samples topic")
    prod.add_argument("input", type=Path, metavar="FILE.jsonl", nargs="?", help="JSONL file to send")
    prod.add_argument("--demo", action="store_true", help="send the built-in demo stream instead of a file")
    prod.add_argument("--rate", type=positive_float, metavar="N",
                      help="samples per second (default: as fast as possible)")
    prod.add_argument("--count", type=int_at_least(1), metavar="N", help="stop after N samples")
    prod.set_defaults(handler=_cmd_produce)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    """Load settings and apply the config's log level unless --log-level was given."""
    settings = load_settings(getattr(args, "config", None))
    if not hasattr(args, "log_level"):
        configure_logging(settings.log_level)
    return settings


def _require_file(path: Path, what: str) -> None:
    """A readable regular file, or a pipe (``/dev/stdin`` of ``cat x.jsonl | streamlearn replay /dev/stdin``)."""
    if not (path.is_file() or path.is_fifo() or path.is_char_device()):
        raise UsageError(f"{what} {path} does not exist or is not a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} {path} is not readable")


def _check_outputs(inputs: dict[str, Path], files: dict[str, Path | None],
                   folders: dict[str, Path | None] | None = None) -> None:
    """Refuse an output that is an input or another output (it would be overwritten), or a file output that
    is a directory; then make sure every output's folder can be written, before any work is done."""
    seen = {path.resolve(): what for what, path in inputs.items()}
    outputs = {flag: (path, False) for flag, path in files.items() if path is not None}
    outputs.update({flag: (path, True) for flag, path in (folders or {}).items() if path is not None})
    for flag, (path, is_folder) in outputs.items():
        if not is_folder and path.is_dir():
            raise UsageError(f"{flag} {path} is a directory; give a file path")
        resolved = path.resolve()
        if resolved in seen:
            raise UsageError(f"{flag} {path} is also {seen[resolved]}; it would be overwritten")
        seen[resolved] = flag
    for flag, (path, is_folder) in outputs.items():
        folder = path if is_folder else path.parent
        blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise UsageError(f"{flag} {path}: {blocking} is a file, not a folder")
        if (reason := unwritable_reason(folder)) is not None:
            raise UsageError(f"{flag} {path}: {reason}")


def _cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from streamlearn.service import run_daemon

    return int(run_daemon(settings))


def _cmd_replay(args: argparse.Namespace) -> int:
    _require_file(args.input, "input file")
    _check_outputs({"the input file": args.input}, {"--predictions": args.predictions, "--report": args.report},
                   {"--save-model": args.save_model})
    if args.save_model is not None and args.save_model.is_dir():
        # A running daemon's checkpoint.dir: refused now, not after the replay (the save takes the lock again).
        DirectoryLock(args.save_model, "--save-model").release()
    settings = _settings(args)
    if args.seed is not None:
        settings = settings.model_copy(update={"learner": settings.learner.model_copy(update={"seed": args.seed})})
    from streamlearn.replay import replay

    report = replay(args.input, settings, predictions=args.predictions, report=args.report,
                    save_model=args.save_model)
    invalid = sum(report.invalid.values())
    accuracy = "n/a" if report.accuracy is None else f"{report.accuracy:.4f}"
    with write_errors_named("<stdout>"):
        print(
            f"replayed {report.samples} lines ({report.valid} valid, {invalid} invalid): "
            f"accuracy {accuracy}, drift events {report.drift_events['count']}, model_version {report.model_version}, "
            f"{report.throughput_samples_per_s:.0f} samples/s"
        )
        for label, path in (("predictions", args.predictions), ("report", args.report), ("model", args.save_model)):
            if path is not None:
                print(f"{label}: {path}")
        sys.stdout.flush()
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    _require_file(args.input, "input file")
    _check_outputs({"the input file": args.input, "the model": args.model}, {"--output": args.output})
    if not args.model.exists():
        raise UsageError(f"model {args.model} does not exist")
    from streamlearn import checkpoint
    from streamlearn.embed import embed_file

    if checkpoint.latest_path(args.model) is None:
        raise UsageError(f"--model {args.model} holds no checkpoint or saved model")
    try:
        learner, _extra = checkpoint.load(args.model)
    except CheckpointError as exc:
        if args.model.is_file():  # the wrong file given; a damaged checkpoint in a folder stays a runtime failure
            raise UsageError(f"--model {args.model} is not a streamlearn model ({exc.__cause__ or exc})") from None
        raise

    settings = _settings(args)  # no --config for embed, but env vars (e.g. the size limit) still apply
    kwargs = {"batch_size": args.batch_size, "max_bytes": settings.kafka.max_message_bytes}
    if args.output is None:
        embed_file(learner, args.input, sys.stdout, **kwargs)
        return 0
    with open_output(args.output) as out:
        summary = embed_file(learner, args.input, out, **kwargs)
    print(f"embedded {summary.embedded} of {summary.lines} lines with model_version {summary.model_version} "
          f"-> {args.output}", file=sys.stderr)
    return 0


_MIN_RATE = 0.001  # slower is a mistake (and a wait beyond what the clock can represent)


_MAX_DEMO_COUNT = 10_000_000


def _cmd_produce(args: argparse.Namespace) -> int:
    if (args.input is None) == (not args.demo):
        raise UsageError("produce: give either FILE.jsonl or --demo (exactly one)")
    if args.input is not None:
        _require_file(args.input, "input file")
    if args.rate is not None and args.rate < _MIN_RATE:
        raise UsageError(f"produce: --rate {args.rate:g} is below {_MIN_RATE:g} samples/s (one every ~17 minutes)")
    if args.demo and args.count is not None and args.count > _MAX_DEMO_COUNT:
        # The demo stream draws its sample order up front: 10^9 samples would take ~17 GB before the first is sent.
        raise UsageError(f"produce: --count {args.count} with --demo is over {_MAX_DEMO_COUNT:,} samples; "
                         "for a longer run, send the demo stream again")
    settings = _settings(args)
    from streamlearn.produce import produce_main

    return int(produce_main(settings, args.input, args.demo, args.rate, args.count))


def _fail(message: str, code: int) -> int:
    """Write one error line (never more) to stderr and return the exit code."""
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def _one_thread_by_default(environ: dict | None = None) -> None:
    """Run torch and BLAS on one thread each unless the user set ``OMP_NUM_THREADS``.

    The learner's tensors are small: with a thread per core, the threads contend instead
    of sharing work (on 2 cores ``replay`` of the demo stream ran at ~2,200 samples/s with
    the default threads, ~6,200 with one). Must run before torch or numpy is imported.

    >>> env = {}; _one_thread_by_default(env); env
    {'OMP_NUM_THREADS': '1'}
    >>> env = {"OMP_NUM_THREADS": "4"}; _one_thread_by_default(env); env
    {'OMP_NUM_THREADS': '4'}
    """
    (os.environ if environ is None else environ).setdefault("OMP_NUM_THREADS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamlearn`` console script; returns the exit code."""
    _one_thread_by_default()
    try:
        args = build_parser().parse_args(argv)
        configure_logging(getattr(args, "log_level", "INFO"))
        return args.handler(args)
    except UsageError as exc:
        return _fail(str(exc), 2)
    except ConfigError as exc:
        return _fail(f"invalid configuration: {exc}", 2)
    except StreamlearnError as exc:
        logger.debug("command failed", exc_info=True)
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`); silence the flush at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        logger.debug("command failed", exc_info=True)
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}", 1)
    except Exception as exc:  # a bug or a library failure: one line for the user, the traceback at DEBUG
        logger.debug("unexpected error", exc_info=True)
        return _fail(f"unexpected {exc.__class__.__name__}: {exc} (rerun with --log-level DEBUG for details)", 1)
