"""Dissection tasks on a Ray cluster: one model copy per worker actor, Ray's scheduler hands out the tasks.

    runner, close = ray_runner(plan, address=None, workers=2)       # a local cluster when no address is given
    try:
        result = dissect(gen, plan, runner=runner)                  # merged in task order: same as in-process
    finally:
        close()

Each actor opens the model by its source (built-in name or path, so the path must exist on every node) and runs
:func:`studio.dissect.run_task`; with CUDA present each actor asks Ray for one GPU. Ray is an optional extra
(``pip install -e ".[ray]"``).
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor

from .core.errors import StudioError
from .dissect import Plan, Runner, Task, run_task
from .exported import open_model
from .segments import open_segmenter


class DissectWorker:
    """One model copy on a Ray worker (wrapped by ``ray.remote`` in :func:`ray_runner`)."""

    def __init__(self, plan_json: dict, device: str, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.plan = Plan.from_json(plan_json)
        self.generator = open_model(self.plan.model, device=device)
        self.segmenter = open_segmenter(self.plan.concepts)

    def run(self, task: Task, thresholds: Tensor | None) -> tuple[Task, dict[str, Tensor]]:
        return task, run_task(self.generator, self.plan, self.segmenter, task, thresholds)


def ray_runner(plan: Plan, address: str | None = None, workers: int = 2,
               device: str = "auto") -> tuple[Runner, Callable[[], None]]:
    """A runner for :func:`studio.dissect.dissect` on Ray, and a function that releases its actors."""
    try:
        import ray  # optional extra: only Ray runs need it
        from ray.util import ActorPool
    except ImportError as error:
        raise StudioError("Ray is not installed: pip install -e \".[ray]\" (or drop --ray to run in-process).") \
            from error
    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    gpus = 1 if torch.cuda.is_available() else 0
    actor = ray.remote(num_cpus=1, num_gpus=gpus)(DissectWorker)
    actors = [actor.remote(plan.to_json(), "cuda" if gpus else device, 1) for _ in range(max(1, workers))]
    pool = ActorPool(actors)

    def run(tasks: list[Task], thresholds: dict[str, Tensor]) -> Iterator[tuple[Task, dict[str, Tensor]]]:
        for task in tasks:
            pool.submit(lambda a, t: a.run.remote(t, thresholds.get(t.layer)), task)
        while pool.has_next():
            yield pool.get_next_unordered()

    def close() -> None:
        for a in actors:
            ray.kill(a)

    return run, close
