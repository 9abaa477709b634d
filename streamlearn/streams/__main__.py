"""Write the demo stream to a JSONL file: ``python -m streamlearn.streams OUT.jsonl [--n N] [--seed S]``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from streamlearn.argtypes import int_at_least
from streamlearn.errors import UsageError
from streamlearn.streams.demo import DEMO_SIZE, demo_stream
from streamlearn.streams.jsonl import write_jsonl

__all__ = ["main"]

logger = logging.getLogger("streamlearn.streams")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit itself
        raise UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, write the demo stream, and return the exit status (0, 1 or 2)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    parser = _Parser(prog="python -m streamlearn.streams", description="Write the demo sample stream as JSONL.")
    parser.add_argument("output", help="JSONL file to write")
    parser.add_argument("--n", type=int_at_least(0), default=DEMO_SIZE, help="number of samples (default %(default)s)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default %(default)s)")
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:  # one line, exit status 2
        logger.error("usage: %s", exc)
        return 2
    try:
        write_jsonl(demo_stream(args.n, args.seed), args.output)
    except OSError as exc:
        logger.error("cannot write %s: %s", args.output, exc.strerror or exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
