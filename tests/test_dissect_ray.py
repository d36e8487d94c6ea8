"""The same dissection tasks on a local Ray cluster (2 CPUs) give exactly the in-process result."""
from __future__ import annotations

import pytest
import torch

from models.registry import open_model
from studio.dissect import Plan, dissect
from studio.dissect_ray import ray_runner

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install -e \".[ray]\"); not installed here")

PLAN = Plan("rooms", ["blocks.0"], samples=8, first_seed=2, concepts="rooms", top=3, task_size=2, batch=2)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_run_equals_in_process(cluster):
    torch.set_num_threads(1)
    gen = open_model("rooms", device="cpu")
    here = dissect(gen, PLAN)
    runner, close = ray_runner(PLAN, workers=2, device="cpu")
    try:
        there = dissect(gen, PLAN, runner=runner)
    finally:
        close()
    a, b = here.tensors(), there.tensors()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert here.labels("blocks.0") == there.labels("blocks.0")
