"""Start a simulator the way a script's background job starts it: SIGINT ignored."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def started_with_sigint_ignored(code: str) -> Iterator[subprocess.Popen]:
    """``python -c code`` with SIGINT ignored (as ``cmd &`` in a non-interactive shell, or a test
    worker, starts it), stdout piped as text; killed on exit if it is still running."""
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
