"""``python -m bench run [PART ...]``: the benchmark suite (``make bench`` runs it all).

``python -m bench list`` names the parts; ``python -m bench report`` redraws the table
and the plots from ``bench/results/latest.json`` without measuring anything.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from bench.report import LATEST, PartResult, load_document, markdown

try:
    from bench.parts import Options
    from bench.suite import PARTS, PLOTTERS, run_parts
except ModuleNotFoundError as missing:  # matplotlib, eventsourcing: the bench extra
    sys.exit(f"python -m bench: {missing.name} is missing; pip install -e '.[test,bench]'")

__all__ = ["main"]


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every ``with``: processes and servers stop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure (every part when none is named)")
    run.add_argument("parts", nargs="*", metavar="PART", help=", ".join(PARTS))
    run.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the py-spy pass of a part whose goal was not met",
    )
    sub.add_parser("list", help="the parts, in figure order")
    sub.add_parser("report", help="rewrite latest.md and the plots from latest.json")
    args = parser.parse_args(argv)

    if args.command == "list":
        for part in PARTS.values():
            print(f"{part.name:10} figure {part.figure}: {part.title}")
        return 0
    if args.command == "report":
        document = load_document()
        results = [PartResult.from_json(raw) for raw in document["parts"].values()]
        if not results:
            print(f"nothing in {LATEST}")
            return 1
        for result in results:
            PLOTTERS[result.part](result.data, LATEST.parent / f"{result.part}.png")
        print(markdown(results, document.get("environment", {})))
        return 0
    unknown = [name for name in args.parts if name not in PARTS]
    if unknown:
        parser.error(f"no part {', '.join(unknown)}; the parts are {', '.join(PARTS)}")
    chosen = [PARTS[name] for name in (args.parts or PARTS)]
    signal.signal(signal.SIGTERM, _stop)
    try:
        return asyncio.run(run_parts(chosen, Options(profile=not args.no_profile)))
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
