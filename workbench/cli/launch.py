"""`--gpus N` and torchrun: starting a command's processes, joining the job, ending a rank.

    workbench explain --dataset decisions.jsonl --device cuda --gpus 4
    torchrun --nproc-per-node 4 -m workbench explain --dataset decisions.jsonl --device cuda

Both run the same command as 4 ranks; `workbench.distributed` splits the work between them.
A command that splits work calls `start(gpus, device)` first: with `--gpus N` this process
runs the command again under torchrun and exits with its code; in a rank it joins the job
(NCCL for a model on the GPU, gloo on the CPU). `main` ends a rank with `finish`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from workbench import distributed
from workbench.errors import WorkbenchError

# Set by `relaunch` for the ranks it starts: a lost rank is then reported once, by the launcher.
LAUNCHER_ENV = "WORKBENCH_GPUS_LAUNCHER"


def start(gpus: int | None, device: str, local_model: bool = True) -> distributed.World:
    """Run this command under torchrun with `gpus` ranks (then exit), or join the job that
    this process is a rank of; one process without `--gpus` joins nothing.

    Checked here, with the flags' names, before any model loads: `--gpus` and `--device
    cuda` need CUDA GPUs. A rank joins over NCCL only where it computes with a local model
    on its GPU; ranks that play without one (a random or expert agent, an OpenAI-compatible
    endpoint) join over gloo, so that they need no GPU each.
    """
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError("--device cuda was asked for but no CUDA GPU is available")
    relaunch(gpus)
    on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return distributed.init("nccl" if on_gpu and local_model else "gloo")


def relaunch(gpus: int | None, argv: Sequence[str] | None = None) -> None:
    """`--gpus N`: run this very command again under torchrun with N processes, then exit.

    Does nothing when `gpus` is None or when this process is already one of the torchrun
    job (the option travels with the command line). Fails with one line where there are no
    or too few GPUs; a rank that dies ends the job with one line and a non-zero exit.
    """
    import torch

    if gpus is None or distributed.launched() or os.environ.get("TORCHELASTIC_RUN_ID"):
        return
    if gpus < 1:
        raise WorkbenchError(f"--gpus must be >= 1, not {gpus}")
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        raise WorkbenchError(f"--gpus {gpus} was asked for but no CUDA GPU is available")
    if gpus > available:
        raise WorkbenchError(f"--gpus {gpus} was asked for but this machine has {available} GPU(s)")
    args = list(sys.argv[1:] if argv is None else argv)
    code = _torchrun(gpus, [sys.executable, "-u", "-m", "workbench", *args])
    sys.exit(code)


def _torchrun(nproc: int, command: list[str]) -> int:
    """Run `command` as `nproc` local ranks, as `torchrun --standalone` would; its exit code."""
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ[LAUNCHER_ENV] = "1"
    quiet = logging.getLogger("torch.distributed.elastic")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the failed rank says what went wrong; see below
    try:
        elastic_launch(config, command[0])(*command[1:])
        return 0
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode > 0:
            return failure.exitcode  # the rank printed its own one-line error
        raise WorkbenchError(
            f"rank {rank} stopped ({failure.signal_name()}); whole chunks written before are "
            "kept: run the same command again to resume"
        ) from None
    finally:
        quiet.setLevel(level)


def reported_by_launcher(exc: BaseException) -> bool:
    """A lost rank under `--gpus`: the launcher says which rank stopped, in one line."""
    return isinstance(exc, distributed.RankLostError) and os.environ.get(LAUNCHER_ENV) == "1"


def finish(code: int) -> None:
    """End a torchrun rank's process with `code`, after the job's last collective.

    A rank that tore its process group down while a peer was still finishing, or left the
    group to the interpreter's teardown, could die of SIGABRT ("terminate called without an
    active exception", once in a busy CI run): gloo's threads outlived the objects they
    use. So a rank that succeeded waits at a barrier for the others, leaves the group while
    the interpreter is whole, and exits at once without running C++ static destructors.
    A rank that failed exits at once: the launcher stops the others (a barrier could wait
    for a peer stuck in another collective). The store closes its connection after every
    transaction, so nothing is lost by skipping the interpreter's teardown.
    """
    import torch

    if code == 0 and torch.distributed.is_available() and torch.distributed.is_initialized():
        try:
            distributed.barrier()
            distributed.shutdown()
        except WorkbenchError as exc:  # a peer died after its last chunk was stored
            if distributed.is_main():
                sys.stderr.write(f"error: {exc}\n")
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
