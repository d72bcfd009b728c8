"""Searching text for secrets: what every secrets test and the reliability sweep share."""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from urllib.parse import quote

from shared.platform.logs import JsonFormatter

__all__ = ["Secret", "leaks", "log_lines"]

_LOG_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


@dataclass(frozen=True)
class Secret:
    name: str
    value: str
    code: bool = False  # a 6-digit OTP: only a match that is not part of a longer token

    def pattern(self) -> re.Pattern[str]:
        return _pattern(self.value, self.code)

    def found_in(self, text: str) -> bool:
        """Whether ``text`` holds this secret in any of its forms."""
        # A substring test first: sweeps search megabytes for thousands of secrets, and
        # only an OTP needs the pattern's word boundaries.
        if not any(form in text for form in _forms(self.value)):
            return False
        return not self.code or self.pattern().search(text) is not None


@functools.cache
def _forms(value: str) -> tuple[str, ...]:
    return tuple(sorted({value, json.dumps(value)[1:-1], quote(value, safe="")}))


@functools.cache
def _pattern(value: str, code: bool) -> re.Pattern[str]:
    either = "|".join(re.escape(form) for form in _forms(value))
    # An OTP is six digits: inside a hex id, or as the microseconds of a time
    # (".123456"), the same digits are chance, not a leak.
    return re.compile(rf"(?<![0-9A-Za-z.])(?:{either})(?![0-9A-Za-z])" if code else either)


def leaks(text: str, secrets: list[Secret], allowed: AbstractSet[str] = frozenset()) -> list[str]:
    """The names of the secrets ``text`` holds, apart from the ``allowed`` values."""
    return [s.name for s in secrets if s.value not in allowed and s.found_in(text)]


def log_lines(records: list[logging.LogRecord]) -> list[str]:
    """Each record as every text it carries (message, arguments, extras, traceback) and
    as the JSON line production writes."""
    formatter = JsonFormatter()
    lines = []
    for record in records:
        extras = {k: v for k, v in record.__dict__.items() if k not in _LOG_STANDARD}
        parts = [record.getMessage(), repr(record.args), repr(extras)]
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            parts.append(record.stack_info)
        lines.append(f"{record.name}: " + " | ".join(parts))
        lines.append(formatter.format(record))
    return lines
