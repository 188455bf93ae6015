"""``ibpipeline-dbt``: dbt's command line (``dbt.cli.main:cli``, the ``dbt`` script's entry point)
run by a warm dbt server when there is one (``ibpipeline.dbt_zygote``), and leaving by
``os._exit`` once dbt has returned, so the process skips the interpreter's teardown.

Tearing down the ~500 modules and objects dbt holds (manifest, adapter, Jinja environments) takes
0.5-0.7 s after dbt has written its artifacts, closed its connections and flushed its output: a
tenth of a daily ``dbt build`` (bench/README.md, session 8). Importing dbt takes ~1.5 s more,
which the server saves. ``ibpipeline.dbt.dbt_resource`` runs this script. Only dbt's start and
exit are changed: stdout/stderr are flushed and multiprocessing's finalizers run (they unlink the
semaphores dbt created) before the exit status is returned. Imports nothing else from ibpipeline
(dbt's start-up stays as short as the ``dbt`` script's).
"""

import multiprocessing.util
import os
import sys


def run_dbt() -> int:
    """dbt's command line on ``sys.argv``; its exit status."""
    from dbt.cli.main import cli

    try:
        cli(prog_name=os.path.basename(sys.argv[0]))  # standalone mode: ends with SystemExit
        return 0
    except SystemExit as exc:
        if isinstance(exc.code, int) or exc.code is None:
            return exc.code or 0
        print(exc.code, file=sys.stderr)  # SystemExit("message"): as the interpreter would
        return 1


def finish() -> None:
    """What the interpreter's exit would do that matters: flush the output, run multiprocessing's
    finalizers."""
    sys.stdout.flush()
    sys.stderr.flush()
    multiprocessing.util._exit_function()  # noqa: SLF001 (what atexit would run: finalizers)


def main() -> None:
    from ibpipeline import dbt_zygote

    if dbt_zygote.enabled():
        path = dbt_zygote.socket_path()
        code = dbt_zygote.run(sys.argv, path)
        if code is not None:
            os._exit(code)
    code = run_dbt()
    finish()
    if dbt_zygote.enabled():
        dbt_zygote.start_server(path)  # for the next call
    os._exit(code)


if __name__ == "__main__":
    main()
