"""Running `workbench` in subprocesses: plainly, or as ranks under torchrun (gloo on CPU,
NCCL on GPUs). Shared by the CPU distributed tests and the GPU tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def torchrun(
    *args: str,
    nproc: int = 2,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    crash: str | None = None,
):
    """`torchrun --standalone --nproc-per-node N -m workbench ARGS` in a subprocess.

    `crash="RANK:CHUNK"` runs the command through tests.gpu.crashing_workbench instead: that
    rank kills itself after computing that chunk, before its results reach rank 0.
    """
    entry = ["workbench"] if crash is None else ["tests.gpu.crashing_workbench", crash]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    # "--" ends torchrun's own options: its parser would take `--run` for `--run-path`.
    cmd += ["--nproc-per-node", str(nproc), "-m", entry[0], "--", *entry[1:], *args]
    return run(cmd, env, timeout)


def workbench(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """`python -m workbench ARGS` in a subprocess."""
    return run([sys.executable, "-m", "workbench", *args], env, timeout)


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 300):
    full_env = {**os.environ, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT
    )
