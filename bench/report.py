"""What a benchmark part reports, and the files the suite writes from it.

Every figure is a ``Row``: our number next to a baseline measured in the same run on the
same machine, and their ratio. ``bench/results/latest.json`` keeps the newest result of
each part (a part run alone replaces only its own entry), ``latest.md`` is the table
made from it, and each part draws its PNG from the data it kept.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "RESULTS",
    "PartResult",
    "Row",
    "environment",
    "load_document",
    "markdown",
    "write_outputs",
]

RESULTS = Path(__file__).resolve().parent / "results"
LATEST = RESULTS / "latest.json"


@dataclass(slots=True)
class Row:
    """One figure: ours against the baseline (``ratio`` is always ours / baseline)."""

    figure: int
    label: str
    ours: float
    baseline: float
    baseline_label: str
    unit: str
    higher_is_better: bool = True
    goal: str = ""
    met: bool | None = None  # None: no goal for this row
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else math.nan

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Row:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in raw.items() if k in names})


@dataclass(slots=True)
class PartResult:
    """Everything one part measured: its rows and the raw runs behind them."""

    part: str
    figure: int
    title: str
    rows: list[Row]
    data: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    seconds: float = 0.0
    load_average: list[float] = field(default_factory=list)  # 1-min, at start and end
    profiles: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "figure": self.figure,
            "title": self.title,
            "rows": [r.to_json() for r in self.rows],
            "data": self.data,
            "started": self.started,
            "seconds": self.seconds,
            "load_average": self.load_average,
            "profiles": self.profiles,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PartResult:
        return cls(
            part=raw["part"],
            figure=raw["figure"],
            title=raw["title"],
            rows=[Row.from_json(r) for r in raw["rows"]],
            data=raw.get("data", {}),
            started=raw.get("started", ""),
            seconds=raw.get("seconds", 0.0),
            load_average=raw.get("load_average", []),
            profiles=raw.get("profiles", {}),
        )


# The machine --------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return math.nan


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(postgres_version: str | None = None) -> dict[str, Any]:
    """The machine and the software versions a result was measured with."""
    packages = ("fastapi", "uvicorn", "asyncpg", "aiokafka", "argon2-cffi", "eventsourcing")
    env: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in packages},
        "http_server": "uvicorn, "
        + ("uvloop" if _version("uvloop") != "not installed" else "asyncio loop")
        + ", "
        + ("httptools" if _version("httptools") != "not installed" else "h11"),
    }
    if postgres_version:
        env["postgres"] = postgres_version
    return env


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return math.nan


# Files --------------------------------------------------------------------------------


def load_document() -> dict[str, Any]:
    try:
        document: dict[str, Any] = json.loads(LATEST.read_text())
    except (OSError, ValueError):
        return {"parts": {}}
    document.setdefault("parts", {})
    return document


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "ms":
        return f"{value:,.2f} ms" if value < 10 else f"{value:,.1f} ms"
    if value >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:,.1f}{unit}"


def _ratio(ratio: float) -> str:
    if math.isnan(ratio):
        return "n/a"
    if ratio >= 100:
        return f"{ratio:,.0f}x"
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.3f}x"


def _verdict(row: Row) -> str:
    if row.met is None:
        return "—"
    return "met" if row.met else "**not met**"


def markdown(results: Sequence[PartResult], env: Mapping[str, Any]) -> str:
    """The table of every row, in figure order, with the machine it ran on."""
    lines = [
        f"Machine: {env.get('cpus')} x {env.get('cpu')}, {env.get('memory_gib')} GiB, "
        f"{env.get('os')}; Python {env.get('python')}; PostgreSQL {env.get('postgres', '?')} "
        f"(embedded), Tansu broker; {env.get('http_server')}.",
        "",
        "| # | Figure | Ours | Baseline (same run) | Ratio | Goal | Met |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for result in sorted(results, key=lambda r: r.figure):
        for row in result.rows:
            label = row.label + (f" ({row.note})" if row.note else "")
            lines.append(
                f"| {row.figure} | {label} | {_number(row.ours, row.unit)} "
                f"| {_number(row.baseline, row.unit)} {row.baseline_label} "
                f"| {_ratio(row.ratio)} | {row.goal or '—'} | {_verdict(row)} |"
            )
    return "\n".join(lines)


Plotter = Callable[[Mapping[str, Any], Path], None]


def write_outputs(
    fresh: Sequence[PartResult], env: Mapping[str, Any], plotters: Mapping[str, Plotter]
) -> list[PartResult]:
    """Merge ``fresh`` into latest.json, then write latest.md and each fresh part's PNG."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = load_document()
    for result in fresh:
        document["parts"][result.part] = result.to_json() | {"environment": dict(env)}
    document["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
    document["environment"] = dict(env)
    LATEST.write_text(json.dumps(document, indent=1, allow_nan=True) + "\n")
    every = [PartResult.from_json(raw) for raw in document["parts"].values()]
    (RESULTS / "latest.md").write_text(markdown(every, env) + "\n")
    for result in fresh:
        plot = plotters.get(result.part)
        if plot is not None:
            plot(result.data, RESULTS / f"{result.part}.png")
    return every
