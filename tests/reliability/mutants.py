"""The mutation harness: plant a bug in a copy of the tree, run the property test on it.

Each ``Mutant`` is a one-place patch of the product code (the exact old text must occur
exactly once, or the harness stops: a patch that no longer applies is an error, never a
"caught"). For the unmutated tree and then for each mutant the harness copies
``shared/``, ``services/``, ``tests/`` and the migrations to a temporary directory,
plants the bug there, and runs ``tests/reliability/test_properties.py`` in that copy
(``PYTHONPATH`` and the working directory point at it; the test checks that the
packages really come from the copy), with a fixed seed and budget and no shrinking.
A mutant is caught when the property test fails (not errors) on it; the unmutated
copy must pass the same budget.

``make mutants`` runs it standalone (``python -m tests.reliability.mutants``);
``tests/reliability/test_mutants.py`` runs it in ``make reliability`` and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EXAMPLES", "MUTANTS", "Mutant", "Outcome", "run_all"]

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("shared", "services", "tests", "deploy/migrations", "pyproject.toml")
PROPERTY_TEST = "tests/reliability/test_properties.py"
# The property test's budget (examples of up to 40 steps, from a fixed seed), here and in
# ``make reliability``: a bug caught here is caught by that run too.
EXAMPLES = 150
RUN_TIMEOUT = 600


@dataclass(frozen=True, slots=True)
class Mutant:
    """A planted bug: ``old`` (occurring exactly once in ``path``) becomes ``new``."""

    name: str
    path: str
    old: str
    new: str


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "totp window one step wider (security)",
        "shared/security/totp.py",
        "range(max(0, now - window), now + window + 1)",
        "range(max(0, now - window - 1), now + window + 1)",
    ),
    Mutant(
        "otp window setting off by one (app)",
        "shared/app/secondfactor.py",
        "window=deps.settings.otp_window)",
        "window=deps.settings.otp_window + 1)",
    ),
    Mutant(
        "replayed time-step accepted",
        "shared/domain/twofactor/verification.py",
        "if matched_step <= state.last_time_step:",
        "if matched_step < state.last_time_step:",
    ),
    Mutant(
        "accepted time-step not recorded",
        "shared/domain/twofactor/state.py",
        "return replace(_succeeded(state), last_time_step=event.time_step)",
        "return _succeeded(state)",
    ),
    Mutant(
        "recovery code not spent",
        "shared/domain/twofactor/state.py",
        "hashes[event.code_index] = None",
        "hashes = hashes",
    ),
    Mutant(
        "lock one failure late",
        "shared/domain/twofactor/lockout.py",
        "if failures < policy.max_failures:",
        "if failures <= policy.max_failures:",
    ),
    Mutant(
        "lock grows linearly, not doubling",
        "shared/domain/twofactor/policy.py",
        "self.lock_base * (1 << min(previous_locks, 32))",
        "self.lock_base * (1 + min(previous_locks, 32))",
    ),
    Mutant(
        "a success keeps the lock count",
        "shared/domain/twofactor/state.py",
        "return replace(state, failures=0, lock_count=0, locked_until=None)",
        "return replace(state, failures=0, locked_until=None)",
    ),
    Mutant(
        "lockout after the login began no longer kills it",
        "shared/domain/twofactor/lockout.py",
        "return requires_second_factor(state, now) and not locked_out_since(state, issued_at, now)",
        "return requires_second_factor(state, now)",
    ),
    Mutant(
        "snapshot saved with the loaded (stale) version",
        "shared/eventstore/repository.py",
        "await self._snapshot(stream_id, state, version, connection)",
        "await self._snapshot(stream_id, state, loaded.version, connection)",
    ),
    Mutant(
        "snapshot read ignores the events after it",
        "shared/eventstore/repository.py",
        "for recorded in await self.store.read_stream(stream_id, version, connection=connection):",
        "for recorded in [] if snapshot else await self.store.read_stream("
        "stream_id, version, connection=connection):",
    ),
    Mutant(
        "re-authentication reads the wrong password throttle",
        "services/auth/usecases/account.py",
        "retry_at = acct.retry_password_at(account.state, True, now, deps.password_policy)",
        "retry_at = acct.retry_password_at(account.state, False, now, deps.password_policy)",
    ),
    Mutant(
        "password throttle one failure late",
        "shared/domain/account/password.py",
        "if failures < self.threshold:",
        "if failures <= self.threshold:",
    ),
    Mutant(
        "a password change keeps the other sessions",
        "shared/domain/account/password.py",
        '*revoke_other_sessions(state, current_session, "password_changed"),',
        "",
    ),
    Mutant(
        "the requester may approve their own reset request",
        "shared/domain/twofactor/reset.py",
        "if approved_by == reset.requested_by:",
        "if approved_by == reset.requested_by and not approved_by:",
    ),
    Mutant(
        "reset takes effect without its cooling-off",
        "shared/domain/twofactor/reset.py",
        "effective_at=now + policy.reset_cooling_off,",
        "effective_at=now,",
    ),
    Mutant(
        "reset takes effect a moment late",
        "shared/domain/twofactor/state.py",
        "reset.effective_at is not None and reset.effective_at <= now)",
        "reset.effective_at is not None and reset.effective_at < now)",
    ),
    Mutant(
        "an enrolment stays open at its expiry",
        "shared/domain/twofactor/enrolment.py",
        "or state.pending_expires_at <= now",
        "or state.pending_expires_at < now",
    ),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the property test did on one tree: ``failed`` is True when it caught a bug."""

    name: str
    failed: bool
    seconds: float
    why: str  # the first assertion line of a failure, or "passed"


class HarnessError(RuntimeError):
    """A patch that does not apply, or a run that errored instead of passing or failing."""


def plant(root: Path, mutant: Mutant) -> None:
    """Apply ``mutant`` to the tree at ``root``; its old text must occur exactly once."""
    path = root / mutant.path
    text = path.read_text()
    found = text.count(mutant.old)
    if found != 1:
        raise HarnessError(f"{mutant.name}: the old text occurs {found} times in {mutant.path}")
    path.write_text(text.replace(mutant.old, mutant.new))
    for cached in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        cached.unlink()  # never let a stale compiled copy of the unmutated file load


def copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".pytest_cache", "test-artifacts", ".mypy_cache")
    for name in COPIED:
        source, target = ROOT / name, dest / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


# Base32 TOTP secrets and recovery codes the property test handed out: even a test's
# secrets stay out of a printed report.
_SECRETS = re.compile(r"\b[A-Z2-7]{16,}\b|\b[0-9a-z]{4}(?:-[0-9a-z]{4}){3}\b")


def _why(output: str) -> str:
    """The failure's first line that says something: the assertion and its message."""
    errors = [line[4:].strip() for line in output.splitlines() if line.startswith("E   ")]
    for line in errors:
        if line.startswith(("AssertionError: ", "assert ", "KeyError", "TypeError")):
            found = re.sub(r"\s+", " ", line.removeprefix("AssertionError: "))
            return _SECRETS.sub("<secret>", found)[:80]
    return _SECRETS.sub("<secret>", errors[0])[:80] if errors else "failed"


def run_one(mutant: Mutant | None, database_url: str, examples: int) -> Outcome:
    """The property test on a copy of the tree with ``mutant`` planted (None: as it is)."""
    name = mutant.name if mutant else "(no mutant: the tree as it is)"
    with tempfile.TemporaryDirectory(prefix="twofa-mutant-") as tmp:
        root = Path(tmp)
        copy_tree(root)
        if mutant is not None:
            plant(root, mutant)
        env = {
            **os.environ,
            "PYTHONPATH": str(root),
            "TWOFA_MUTANT_ROOT": str(root),
            "TWOFA_DATABASE_URL": database_url,
            "TWOFA_PROPERTY_EXAMPLES": str(examples),
            "TWOFA_PROPERTY_NO_SHRINK": "1",
        }
        command = [
            sys.executable,
            "-m",
            "pytest",
            PROPERTY_TEST,
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
        ]
        started = time.monotonic()
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    if done.returncode == 0 and "1 passed" in output:
        return Outcome(name, False, seconds, "passed")
    failed = f"FAILED {PROPERTY_TEST}::test_random_command_sequences_never_break_an_invariant"
    if done.returncode == 1 and failed in output and f"ERROR {PROPERTY_TEST}" not in output:
        return Outcome(name, True, seconds, _why(output))
    tail = "\n".join(output.splitlines()[-30:])
    raise HarnessError(f"{name}: the property test neither passed nor failed:\n{tail}")


def run_all(
    database_url: str,
    mutants: Sequence[Mutant] = MUTANTS,
    *,
    jobs: int = 2,
    examples: int = EXAMPLES,
    progress: Callable[[Outcome], None] | None = None,
) -> tuple[Outcome, list[Outcome]]:
    """The unmutated tree's outcome and each mutant's, ``jobs`` property tests at a time."""
    for mutant in mutants:  # every patch applies to the tree as it is, before any run
        found = (ROOT / mutant.path).read_text().count(mutant.old)
        if found != 1:
            raise HarnessError(f"{mutant.name}: the old text occurs {found} times")

    _migrate_once(database_url)

    def one(mutant: Mutant | None) -> Outcome:
        outcome = run_one(mutant, database_url, examples)
        if progress is not None:
            progress(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes = list(pool.map(one, [None, *mutants]))
    return outcomes[0], outcomes[1:]


def _migrate_once(database_url: str) -> None:
    """Migrate a scratch database first: the runs then migrate their own at the same
    time, and the first migration creates a server-wide role they would race to create."""
    import asyncio
    import uuid

    from shared.platform.db import migrate
    from tests.support.database import admin_sql
    from tests.support.servers import with_database

    async def once() -> None:
        name = f"twofa_mutants_{uuid.uuid4().hex[:12]}"
        await admin_sql(database_url, f'CREATE DATABASE "{name}"')
        try:
            await migrate(with_database(database_url, name))
        finally:
            await admin_sql(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    asyncio.run(once())


def lines(baseline: Outcome, outcomes: Sequence[Outcome]) -> Iterator[str]:
    def line(name: str, result: str, seconds: float, why: str) -> str:
        return f"{name.ljust(52)} {result:>8} {seconds:>8.0f}  {why}"

    yield f"{'tree'.ljust(52)} {'result':>8} {'seconds':>8}  why"
    yield line(baseline.name, "FAILED" if baseline.failed else "passed", baseline.seconds, "")
    for o in outcomes:
        yield line(o.name, "caught" if o.failed else "MISSED", o.seconds, o.why)


@contextlib.contextmanager
def _postgres() -> Iterator[str]:
    url = os.environ.get("TWOFA_DATABASE_URL")
    if url:
        yield url
        return
    from tests.support import servers

    with (
        tempfile.TemporaryDirectory(prefix="twofa-mutants-pg-") as tmp,
        servers.postgres(Path(tmp)) as started,
    ):
        yield started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--examples", type=int, default=EXAMPLES)
    parser.add_argument("--only", help="run only the mutants whose name contains this")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only is None or args.only in m.name]
    started = time.monotonic()
    with _postgres() as url:
        baseline, outcomes = run_all(url, chosen, jobs=args.jobs, examples=args.examples)
    for line in lines(baseline, outcomes):
        print(line)
    missed = [o.name for o in outcomes if not o.failed]
    print(
        f"{len(outcomes) - len(missed)} caught, {len(missed)} missed, "
        f"in {time.monotonic() - started:.0f} s with {args.jobs} at a time"
    )
    return 1 if missed or baseline.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
