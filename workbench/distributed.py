"""Work split across processes with torch.distributed: one process per GPU, launched by torchrun.

    torchrun --nproc-per-node 4 -m workbench explain --dataset decisions.jsonl --device cuda
    workbench explain --dataset decisions.jsonl --device cuda --gpus 4      # the same
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m workbench explain ...                  # on each node

Starting the processes is the command line's job (`workbench.cli.launch`); so is joining
the job, once per process, with `init`. No library function joins as a side effect: a
collective in a rank that has not joined fails with one line that says so.

Every rank runs the same command over the same inputs. `shard` hands each rank one
contiguous block of them, `gather` brings the blocks back to rank 0 in input order, and
`run_chunks` does both chunk after chunk: every rank computes its block of a chunk, rank 0
alone writes the chunk (DuckDB lets one process write), in one transaction, and only then
does the next chunk start. A run that stops (a rank killed, a node lost) leaves whole chunks
in the store and nothing half-written; the same command run again skips what is stored.

Without torchrun (no WORLD_SIZE, or WORLD_SIZE=1) every function here is the plain
one-process version. NCCL is the process group's backend on GPUs and gloo on CPUs (so CI
runs the same code); Python objects (explanations, features) travel over a gloo group in
both cases, which also notices a dead peer at once rather than at NCCL's timeout.
"""

from __future__ import annotations

import atexit
import bisect
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
R = TypeVar("R")

# Items per rank per chunk: smaller chunks lose less to a crash, larger ones batch better.
CHUNK_ENV = "WORKBENCH_CHUNK_SIZE"
DEFAULT_CHUNK = 128
# Seconds a collective may wait for a slow rank (a long chunk on another GPU) before failing.
TIMEOUT_ENV = "WORKBENCH_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 3600.0


class RankLostError(WorkbenchError):
    """Another process of the job stopped; whole chunks written before are kept."""


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank `rank` of `size` (one process: 0 of 1).

    `init` returns the joined job's World, which also holds `objects`, the gloo group that
    carries pickled objects between ranks (None: the default group, or no job).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    objects: Any = field(default=None, compare=False, repr=False)

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the store and prints results."""
        return self.rank == 0


# The job this process joined (set by `init`, cleared by `shutdown`): the only state kept.
_joined: World | None = None


def launched() -> bool:
    """True in a process that torchrun started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world() -> World:
    """This process's place, from torchrun's environment (or the joined job's World)."""
    if _joined is not None:
        return _joined
    if not launched():
        return World()
    return World(
        int(os.environ.get("RANK", "0")),
        int(os.environ["WORLD_SIZE"]),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def is_main() -> bool:
    return world().main


def init(backend: str | None = None) -> World:
    """Join the torchrun job once per process; later calls return the same World at once.

    `backend` is "nccl" for a process that computes on its GPU (the command line asks for
    it when the model goes to CUDA) or "gloo" (the default, CPU). Outside torchrun this
    joins nothing and returns World() (rank 0 of 1).
    """
    import torch

    global _joined
    if _joined is not None:
        return _joined
    here = world()
    if not launched():
        return here
    if torch.distributed.is_initialized():  # joined by the caller's own code: use its group
        _joined = here
        return here
    backend = backend or "gloo"
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT)))
    try:
        if backend == "nccl":
            use_gpu(here)
        torch.distributed.init_process_group(backend, timeout=timeout)
        objects = (
            torch.distributed.new_group(backend="gloo", timeout=timeout)
            if backend != "gloo"
            else torch.distributed.group.WORLD
        )
    except (RuntimeError, ValueError) as exc:
        raise WorkbenchError(f"could not join the torchrun job: {_first_line(exc)}") from None
    atexit.register(shutdown)
    _joined = World(here.rank, here.size, here.local_rank, objects)
    return _joined


def _job() -> World:
    """The job a collective runs in: the one this process joined, or World() alone."""
    import torch

    if _joined is not None:
        return _joined
    if not launched():
        return World()
    if torch.distributed.is_initialized():  # joined by the caller's own code
        return init()
    raise WorkbenchError(
        f"rank {world().rank} of a torchrun job has not joined it: "
        "call workbench.distributed.init() first"
    )


def use_gpu(here: World | None = None) -> torch.device:
    """The GPU this process computes on: `cuda:LOCAL_RANK` under torchrun, else the current one."""
    import torch

    here = here or world()
    if not torch.cuda.is_available():
        raise WorkbenchError("device 'cuda' was asked for but no CUDA GPU is available")
    if not launched():
        return torch.device("cuda", torch.cuda.current_device())
    count = torch.cuda.device_count()
    if here.local_rank >= count:
        raise WorkbenchError(
            f"rank {here.rank} needs GPU {here.local_rank} but this machine has {count} GPU(s); "
            f"start at most {count} process(es) per node"
        )
    torch.cuda.set_device(here.local_rank)
    return torch.device("cuda", here.local_rank)


def shutdown() -> None:
    """Leave the job (registered at exit by `init`)."""
    import torch

    global _joined
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _joined = None


def shard_bounds(
    n: int, weights: Sequence[float] | None = None, size: int | None = None
) -> list[tuple[int, int]]:
    """[start, end) of each rank's contiguous block of `n` items.

    Equal counts by default; with `weights` (an item's expected cost, e.g. its tokens), the
    split points balance the summed weight instead, so no rank waits long for another.
    """
    size = size or world().size
    if weights is None or n == 0:
        cuts = [n * r // size for r in range(size + 1)]
    else:
        if len(weights) != n:
            raise ValueError(f"{len(weights)} weights for {n} items")
        prefix = [0.0]
        for w in weights:
            prefix.append(prefix[-1] + float(w))
        cuts = [0]
        for r in range(1, size):
            goal = prefix[-1] * r / size
            c = bisect.bisect_left(prefix, goal, lo=cuts[-1])
            if c > cuts[-1] and (c > n or goal - prefix[c - 1] < prefix[c] - goal):
                c -= 1  # the cut just before lands nearer the goal
            cuts.append(min(c, n))
        cuts.append(n)
    return [(cuts[r], cuts[r + 1]) for r in range(size)]


def shard(items: Sequence[T], weights: Sequence[float] | None = None) -> list[T]:
    """This rank's contiguous block of `items` (all of them in a one-process run)."""
    start, end = shard_bounds(len(items), weights)[world().rank]
    return list(items[start:end])


def gather(part: list[T]) -> list[T] | None:
    """Every rank's `shard` result, concatenated in rank (= input) order, on rank 0; None on
    the others. In a one-process run, `part` itself."""
    import torch

    here = _job()
    if here.size == 1:
        return part
    parts: list[Any] = [None] * here.size if here.main else []
    _collective(
        torch.distributed.gather_object,
        part,
        parts if here.main else None,
        dst=0,
        group=here.objects,
    )
    return [x for p in parts for x in p] if here.main else None


def all_gather(part: list[T]) -> list[T]:
    """Every rank's `shard` result, concatenated in rank (= input) order, on every rank."""
    import torch

    here = _job()
    if here.size == 1:
        return part
    parts: list[Any] = [None] * here.size
    _collective(torch.distributed.all_gather_object, parts, part, group=here.objects)
    return [x for p in parts for x in p]


def broadcast(obj: T) -> T:
    """Rank 0's `obj`, on every rank."""
    import torch

    here = _job()
    if here.size == 1:
        return obj
    box = [obj if here.main else None]
    _collective(torch.distributed.broadcast_object_list, box, src=0, group=here.objects)
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """`fn()` on rank 0 alone (the one process that may open the store), its result handed
    to every rank; in a one-process run, just `fn()`.

    A `WorkbenchError` on rank 0 stops every rank: rank 0 raises it as it is, the others
    raise a `WorkbenchError` naming rank 0 (which the CLI leaves to rank 0 to print).
    """
    here = world()
    if here.size == 1:
        return fn()
    value: Any = None
    failure: WorkbenchError | None = None
    if here.main:
        try:
            value = fn()
        except WorkbenchError as exc:
            failure = exc
    message, value = broadcast((None if failure is None else str(failure), value))
    if failure is not None:
        raise failure
    if message is not None:
        raise WorkbenchError(f"rank 0: {message}")
    return value


def barrier() -> None:
    """Wait until every rank got here."""
    import torch

    here = _job()
    if here.size > 1:
        _collective(torch.distributed.barrier, group=here.objects)


def run_chunks(
    items: Sequence[T],
    compute: Callable[[list[T]], list[R]],
    *,
    save: Callable[[list[R]], Any] | None = None,
    chunk_size: int = 64,
    weights: Sequence[float] | None = None,
    on_chunk: Callable[[int], None] | None = None,
    on_computed: Callable[[int], None] | None = None,
) -> list[R]:
    """Compute one result per item on every rank, chunk by chunk; rank 0 saves each chunk.

    Args:
        items: the same list on every rank (work already stored left out by the caller).
        compute: items -> their results, in order (runs on every rank, on its block).
        save: rank 0 only: one chunk's results, in item order; it should write them in one
            transaction, so that a chunk is stored whole or not at all.
        chunk_size: items per rank per chunk (a chunk holds `chunk_size` x world size).
        weights: an item's expected cost, to balance blocks (see `shard_bounds`).
        on_chunk: called on every rank with the number of items of each finished chunk.
        on_computed: called on every rank with a chunk's index (0-based) once this rank
            computed its block of it, before the block travels to rank 0 (the tests kill a
            rank here: a deterministic stand-in for a GPU or node lost mid-run).

    Returns every result in item order on rank 0, and [] on the other ranks. A
    `WorkbenchError` on any rank stops every rank with that message (naming the rank);
    a rank that dies stops the others with `RankLostError`.
    """
    here = _job()
    step = max(1, int(chunk_size)) * here.size
    results: list[R] = []
    for k, start in enumerate(range(0, len(items), step)):
        chunk = list(items[start : start + step])
        chunk_weights = None if weights is None else list(weights[start : start + step])
        lo, hi = shard_bounds(len(chunk), chunk_weights, here.size)[here.rank]
        if here.size == 1:
            done = _checked(compute(chunk), len(chunk))
            if on_computed is not None:
                on_computed(k)
            if save is not None:
                save(done)
            results.extend(done)
        else:
            try:
                mine, failure = _checked(compute(chunk[lo:hi]) if hi > lo else [], hi - lo), None
            except WorkbenchError as exc:
                mine, failure = [], f"rank {here.rank}: {exc}"
            if on_computed is not None:
                on_computed(k)
            parts = gather([(failure, mine)])  # one (failure, results) pair per rank, on rank 0
            status = None
            if parts is not None:
                status = next((f for f, _ in parts if f), None)
                done = [r for _, p in parts for r in p]
                if status is None and save is not None:
                    try:
                        save(done)
                    except WorkbenchError as exc:
                        status = str(exc)
                if status is None:
                    results.extend(done)
            # Rank 0's word that the chunk is stored (or why not) is also what lets the
            # others start the next one: a rank that dies later never costs a stored chunk.
            status = broadcast(status)
            if status is not None:
                raise WorkbenchError(status)
        if on_chunk is not None:
            on_chunk(len(chunk))
    return results


def run_resumable(
    items: Sequence[T],
    compute: Callable[[list[T]], list[R]],
    *,
    stored: Callable[[], Iterable[int]] | None = None,
    save: Callable[[list[int], list[R]], Any] | None = None,
    weights: Sequence[float] | None = None,
    chunk_size: int | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[list[int], list[R]]:
    """`run_chunks` over the items not stored yet: a re-run of a stopped job resumes.

    `stored()` (asked on rank 0 alone, the process that may open the store) lists the
    indices of items whose results are stored already; `save(indices, results)` stores one
    chunk. Returns the indices computed by this call and their results on rank 0, and
    ([], []) on the others. `chunk_size` defaults to $WORKBENCH_CHUNK_SIZE or 128.
    """
    here = _job()
    done = set(broadcast(sorted(stored()) if here.main and stored is not None else []))
    pending = [i for i in range(len(items)) if i not in done]
    pairs = run_chunks(
        pending,
        lambda indices: list(zip(indices, compute([items[i] for i in indices]))),
        save=None if save is None else (lambda chunk: save(*_unzip(chunk))),
        chunk_size=chunk_size or int(os.environ.get(CHUNK_ENV, DEFAULT_CHUNK)),
        weights=None if weights is None else [weights[i] for i in pending],
        on_chunk=on_chunk,
    )
    return _unzip(pairs)


def _unzip(pairs: list[tuple[int, R]]) -> tuple[list[int], list[R]]:
    return [i for i, _ in pairs], [r for _, r in pairs]


def _checked(results: list[R], expected: int) -> list[R]:
    results = list(results)
    if len(results) != expected:
        raise RuntimeError(f"compute returned {len(results)} results for {expected} items")
    return results


def _collective(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, ConnectionError) as exc:
        raise RankLostError(
            f"rank {world().rank}: another rank stopped; whole chunks written before are kept: "
            "run the same command again to resume"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
