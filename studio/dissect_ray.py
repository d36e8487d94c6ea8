"""Dissection tasks on a Ray cluster: one model copy per worker actor, Ray's scheduler hands out the tasks.

    runner, close = ray_runner(plan, address=None, workers=2)       # a local cluster when no address is given
    try:
        result = dissect(gen, plan, runner=runner)                  # merged in task order: same as in-process
    finally:
        close()

Each actor opens the model by its source (built-in name or path, so the path must exist on every node) and runs
:func:`studio.dissect.run_task`; with CUDA present each actor asks Ray for one GPU. Each actor asks Ray for
``cpus_per_worker`` CPUs and runs torch with exactly that many threads, so workers never oversubscribe the cores
Ray gave them. Ray is an optional extra (``pip install -e ".[ray]"``).
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
        # torch's default is one thread per core of the machine, not per CPU Ray gave this actor
        torch.set_num_threads(max(1, threads))
        self.plan = Plan.from_json(plan_json)
        self.generator = open_model(self.plan.model, device=device)
        self.segmenter = open_segmenter(self.plan.concepts)

    def ready(self) -> int:
        """Answers once the model is open (a cheap call to wait for start-up)."""
        return torch.get_num_threads()

    def run(self, task: Task, thresholds: Tensor | None) -> tuple[Task, dict[str, Tensor]]:
        return task, run_task(self.generator, self.plan, self.segmenter, task, thresholds)


def ray_runner(plan: Plan, address: str | None = None, workers: int = 2, device: str = "auto",
               cpus_per_worker: int = 1) -> tuple[Runner, Callable[[], None]]:
    """A runner for :func:`studio.dissect.dissect` on Ray, and a function that releases its actors.

    Without ``address`` (and no Ray already started in this process) a local cluster of ``workers *
    cpus_per_worker`` CPUs is started. The actors start at once, in parallel, while the caller goes on.
    """
    try:
        import ray  # optional extra: only Ray runs need it
        from ray.util import ActorPool
    except ImportError as error:
        raise StudioError("Ray is not installed: pip install -e \".[ray]\" (or drop --ray to run in-process).") \
            from error
    if workers < 1 or cpus_per_worker < 1:
        raise StudioError("A Ray dissection needs at least one worker with at least one CPU.")
    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=workers * cpus_per_worker, include_dashboard=False, log_to_driver=False)
    gpus = 1 if torch.cuda.is_available() else 0
    actor = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus)(DissectWorker)
    runner = RayRunner(ray, ActorPool, [actor.remote(plan.to_json(), "cuda" if gpus else device, cpus_per_worker)
                                        for _ in range(workers)])
    return runner, runner.close


class RayRunner:
    """Runs tasks on a pool of :class:`DissectWorker` actors; ``ready()`` waits until every model is open."""

    def __init__(self, ray, pool_type, actors: list) -> None:
        self.ray, self.actors, self.pool = ray, actors, pool_type(actors)

    def __call__(self, tasks: list[Task], thresholds: dict[str, Tensor]) -> Iterator[tuple[Task, dict[str, Tensor]]]:
        # one copy of each layer's levels in the object store, not one per task
        levels = {layer: self.ray.put(value) for layer, value in thresholds.items()}
        for task in tasks:
            self.pool.submit(lambda a, t: a.run.remote(t, levels.get(t.layer)), task)
        while self.pool.has_next():
            yield self.pool.get_next_unordered()

    def ready(self) -> list[int]:
        """Each actor's torch thread count, once all of them have opened their model."""
        return self.ray.get([a.ready.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
