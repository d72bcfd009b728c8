"""Stops a ``twofa dev`` run's embedded PostgreSQL when that run ends, however it ends.

PostgreSQL runs as a daemon of its own (the wheel starts it with ``pg_ctl``), so it
would outlive a ``twofa dev`` killed with ``kill -9``. This small process is started
dying with the run (``die_with_parent``: SIGTERM when the run's main thread is gone)
and answers SIGTERM by stopping PostgreSQL: ``python -m shared.devtools.guard DATA_DIR``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

from shared.devtools.servers import stop_postgres


def main(argv: list[str]) -> int:
    data_dir = Path(argv[1])

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop_postgres(data_dir)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # its run decides when to stop
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
