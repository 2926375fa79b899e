"""Work too heavy for the server process, done in a child process with a memory limit.

A profile that is not in the shipped `profiles.json` (a model added since it was
generated, or other keyword arguments) and a diagram that the meta device cannot draw run
here: each job in a fresh spawned process whose address space is capped with
`resource.setrlimit(RLIMIT_AS)`, so a large model cannot take the server's memory with it
and whatever the job allocated goes back to the system when it ends. Jobs queue behind each
other on this worker's own lock; predictions never take it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from typing import Any

DEFAULT_MEMORY_LIMIT = 8 * 2**30  # bytes of address space; VISIONZOO_WORKER_MEMORY overrides
JOB_TIMEOUT_S = 600


class WorkerFailed(Exception):
    """The job raised, ran out of memory or time, or its process died."""


def memory_limit() -> int:
    value = os.environ.get("VISIONZOO_WORKER_MEMORY", "")
    return int(value) if value.isdigit() else DEFAULT_MEMORY_LIMIT


def _limit_memory(limit: int) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def profile_job(name: str) -> dict[str, Any]:
    """`profile_model(name)` (runs in the worker)."""
    import torch

    from visionzoo.bench.profile import profile_model

    torch.set_num_threads(1)
    return profile_model(name)


def diagram_job(name: str) -> dict[str, Any]:
    """The diagram of `name` from a real CPU forward pass (runs in the worker)."""
    import torch

    from visionzoo.explorer.diagram import draw_model

    torch.set_num_threads(1)
    return draw_model(name, "cpu")


class Worker:
    """Runs one job at a time in a fresh child process with an address-space limit."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit or memory_limit()
        self._lock = threading.Lock()

    def run(self, fn: Any, *args: Any, timeout: float = JOB_TIMEOUT_S) -> Any:
        with self._lock:
            ctx = mp.get_context("spawn")
            pool = ctx.Pool(1, initializer=_limit_memory, initargs=(self.limit,))
            try:
                return pool.apply_async(fn, args).get(timeout=timeout)
            except mp.TimeoutError:
                raise WorkerFailed(f"took more than {timeout:.0f} s") from None
            except Exception as err:  # noqa: BLE001 - the job's own error, said in one line
                text = f"{type(err).__name__}: {err}"
                if isinstance(err, MemoryError) or "can't allocate memory" in str(err):
                    text = (
                        f"needs more than the worker's {self.limit / 2**30:.1f} GiB of memory "
                        "(VISIONZOO_WORKER_MEMORY sets the limit in bytes)"
                    )
                raise WorkerFailed(text) from None
            finally:
                pool.terminate()  # the process and all it allocated go back to the system
                pool.join()
