"""`python -m tests.gpu.crashing_workbench RANK:CHUNK ARGS...`: the `workbench ARGS` command,
except that rank RANK kills itself (SIGKILL) right after computing its block of chunk CHUNK
(0-based) of `workbench.distributed.run_chunks`, before its results reach rank 0.

A deterministic stand-in for a GPU or node lost mid-run, for the resume tests; run it under
torchrun (`tests.gpu.launch.torchrun(..., crash="1:1")`). The library offers the seam
(`run_chunks(on_computed=...)`); this module, not the library, decides to crash there.
"""

from __future__ import annotations

import functools
import os
import signal
import sys

from workbench import distributed
from workbench.cli import main


def kill_at(rank: int, chunk: int):
    """An `on_computed` callback that SIGKILLs this process at (`rank`, `chunk`)."""

    def on_computed(k: int) -> None:
        if distributed.world().rank == rank and k == chunk:
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return on_computed


if __name__ == "__main__":
    where, *args = sys.argv[1:]
    rank, chunk = (int(x) for x in where.split(":"))
    # Every caller (run_resumable, agents.runner) looks run_chunks up on the module.
    distributed.run_chunks = functools.partial(
        distributed.run_chunks, on_computed=kill_at(rank, chunk)
    )
    main(args)
