"""Where the time goes: py-spy samples of a process, summed up for the report.

``record(pid, seconds)`` runs ``py-spy record`` against a process (a service, or the
bench process itself for parts measured in-process) and returns a ``Profile``: the share
of samples by leaf function ("self" time), by the twofa function on the stack nearest
the leaf, and by library. A part records a profile only when one of its goals was not
met and the run asked for profiles, in a pass apart from the measured one (sampling
slows the process it samples).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Profile", "record", "summarise"]

RATE = 250  # samples per second

# Library of a frame, by the path of its file; the first match wins.
_LIBRARIES = (
    ("argon2", "argon2"),
    ("asyncpg", "asyncpg"),
    ("aiokafka", "aiokafka"),
    ("kafka", "aiokafka"),
    ("h11", "uvicorn/h11"),
    ("uvicorn", "uvicorn/h11"),
    ("starlette", "fastapi/starlette"),
    ("fastapi", "fastapi/starlette"),
    ("pydantic", "pydantic"),
    ("prometheus_client", "prometheus_client"),
    ("cryptography", "cryptography"),
    ("jwt", "pyjwt"),
    ("pyotp", "pyotp"),
    ("eventsourcing", "eventsourcing"),
    ("psycopg", "psycopg"),
    ("anyio", "anyio (threadpool)"),
    ("asyncio", "asyncio"),
    ("threading.py", "threads"),
)

# A sample whose leaf is one of these is a thread waiting, not working.
_WAITING = (
    ".select (selectors.py",
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
    "_worker (concurrent/futures/thread.py",
    "_do_waitpid (asyncio/unix_events.py",
)

_TWOFA = re.compile(r"\((?:.*/)?(?:shared|services|bench)/[^)]*\)$")
# Stages of an HTTP request, innermost first: the first marker on a stack names its stage.
_STAGES = (
    ("run_in_threadpool (starlette/concurrency.py", "sync dependencies in the thread pool"),
    ("run_endpoint_function (fastapi/routing.py", "endpoint"),
    ("(starlette/", "framework and middleware"),
    ("(fastapi/", "framework and middleware"),
    ("(uvicorn/protocols/", "HTTP server (uvicorn, h11)"),
    ("(h11/", "HTTP server (uvicorn, h11)"),
)

# Entry points: on every stack of their process, so they say nothing about where.
_ENTRY = re.compile(r"\((?:.*/)?(?:shared/cli|bench/__main__|bench/suite)\.py:\d+\)$")


@dataclass(slots=True)
class Profile:
    """Shares of the samples (0..1), largest first."""

    target: str
    samples: int
    waiting: float = 0.0  # share of samples in threads that were waiting
    leaf: list[tuple[str, float]] = field(default_factory=list)
    twofa: list[tuple[str, float]] = field(default_factory=list)
    libraries: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    stages: list[tuple[str, float]] = field(default_factory=list)  # HTTP services only

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "samples": self.samples,
            "waiting": self.waiting,
            "leaf": self.leaf,
            "stages": self.stages,
            "twofa": self.twofa,
            "libraries": self.libraries,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Profile:
        def pairs(key: str) -> list[tuple[str, float]]:
            return [(str(name), float(share)) for name, share in raw.get(key, [])]

        return cls(
            raw["target"],
            raw["samples"],
            raw.get("waiting", 0.0),
            pairs("leaf"),
            pairs("twofa"),
            pairs("libraries"),
            raw.get("error"),
            stages=pairs("stages"),
        )

    def text(self, top: int = 8) -> str:
        if self.error:
            return f"profile of {self.target}: {self.error}"
        lines = [
            f"profile of {self.target} ({self.samples} samples at {RATE}/s, every thread; "
            f"{self.waiting:.0%} waiting, shares below are of the rest):"
        ]
        lines.append("  by library: " + ", ".join(f"{n} {s:.0%}" for n, s in self.libraries[:8]))
        if self.stages:
            lines.append("  by stage of the request:")
            lines += [f"    {s:5.1%}  {n}" for n, s in self.stages[:10]]
        lines.append("  nearest twofa function on the stack:")
        lines += [f"    {s:5.1%}  {n}" for n, s in self.twofa[:top]]
        lines.append("  leaf functions (self time):")
        lines += [f"    {s:5.1%}  {n}" for n, s in self.leaf[:top]]
        return "\n".join(lines)


def _library(frame: str) -> str:
    if _is_twofa(frame):
        return "twofa"
    for needle, name in _LIBRARIES:
        if needle in frame:
            return name
    return "other"


def _short(frame: str) -> str:
    """``func (/long/path/shared/x.py:12)`` → ``func (shared/x.py:12)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in where:
            where = where.rpartition(marker)[2]
    return f"{name} ({where})" if where else name


def _is_twofa(frame: str) -> bool:
    return "site-packages" not in frame and bool(_TWOFA.search(frame))


def summarise(target: str, collapsed: str) -> Profile:
    """A ``Profile`` from py-spy's raw (collapsed-stack) output."""
    leaf: Counter[str] = Counter()
    nearest: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = waiting = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if any(mark in frames[-1] for mark in _WAITING):
            waiting += count
            continue
        total += count
        leaf[_short(frames[-1])] += count
        libraries[_library(frames[-1])] += count
        stages[_stage(frames)] += count
        ours = next((f for f in reversed(frames) if _is_twofa(f) and not _ENTRY.search(f)), None)
        nearest[_short(ours) if ours else "(server, framework or event loop)"] += count
    if not total:
        return Profile(target, waiting, error="no samples of working threads")

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counter.most_common(15)]

    every = total + waiting
    http = any(not name.startswith("outside") for name in stages)
    return Profile(
        target,
        every,
        waiting / every,
        shares(leaf),
        shares(nearest),
        shares(libraries),
        stages=shares(stages) if http else [],
    )


def _stage(frames: list[str]) -> str:
    stack = ";".join(frames)
    for marker, name in _STAGES:
        if marker in stack:
            return f"endpoint: {_library(frames[-1])}" if name == "endpoint" else name
    return "outside any request: event loop, I/O, background tasks"


async def record(pid: int, seconds: float, target: str, *, idle: bool = False) -> Profile:
    """Sample ``pid`` for ``seconds`` with py-spy, every thread; ``idle`` keeps the
    samples of threads waiting (an event loop in ``select``: time spent waiting on I/O)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.access(spy, os.X_OK):
        return Profile(target, 0, error="py-spy is not installed (pip install '.[bench]')")
    with tempfile.TemporaryDirectory(prefix="twofa-profile-") as tmp:
        out = Path(tmp) / "stacks.txt"
        proc = await asyncio.create_subprocess_exec(
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(RATE),
            "--format",
            "raw",
            "--threads",
            *(["--idle"] if idle else []),
            "--output",
            str(out),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0 or not out.exists():
            return Profile(target, 0, error=err.decode(errors="replace").strip()[-300:])
        return summarise(target, _without_thread_roots(out.read_text()))


def _without_thread_roots(collapsed: str) -> str:
    # --threads puts "thread (0x...)" first on each stack; drop it, keep the frames.
    lines = []
    for line in collapsed.splitlines():
        first, sep, rest = line.partition(";")
        lines.append(rest if sep and first.startswith("thread ") else line)
    return "\n".join(lines)
