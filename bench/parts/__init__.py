"""The seven parts of the suite, one module each; ``PARTS`` lists them in figure order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import PartResult
from bench.stack import Stack

__all__ = ["Options", "Part"]


@dataclass(frozen=True, slots=True)
class Options:
    """How a part runs: ``profile`` samples the parts whose goals were not met."""

    profile: bool = False


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    figure: int
    title: str
    needs_broker: bool
    run: Callable[[Stack, Options], Awaitable[PartResult]]
    plot: Callable[[Mapping[str, Any], Path], None]
