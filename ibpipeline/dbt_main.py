"""``ibpipeline-dbt``: dbt's command line (``dbt.cli.main:cli``, the ``dbt`` script's entry point)
leaving by ``os._exit`` once dbt has returned, so the process skips the interpreter's teardown.

Tearing down the ~500 modules and objects dbt holds (manifest, adapter, Jinja environments) takes
0.5-0.7 s after dbt has written its artifacts, closed its connections and flushed its output: a
tenth of a daily ``dbt build`` (bench/README.md, session 8). ``ibpipeline.dbt.dbt_resource`` runs
this script. Only dbt's exit is changed: stdout/stderr are flushed and multiprocessing's
finalizers run (they unlink the semaphores dbt created) before the exit status is returned.
Imports nothing from ibpipeline (dbt's start-up stays as short as the ``dbt`` script's).
"""

import multiprocessing.util
import os
import sys


def main() -> None:
    from dbt.cli.main import cli

    try:
        cli()  # click's standalone mode: ends with SystemExit
        code = 0
    except SystemExit as exc:
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:  # SystemExit("message"): what the interpreter would print, with status 1
            print(exc.code, file=sys.stderr)
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    multiprocessing.util._exit_function()  # noqa: SLF001 (what atexit would run: finalizers)
    os._exit(code)


if __name__ == "__main__":
    main()
