"""``bench dissect`` on a tiny run: the in-process baseline runs in child processes at 2 and 1 threads, and
``ray_overhead`` is taken against the faster of them (the figures' keys and arithmetic; no timing assertions)."""
from __future__ import annotations

import json

import pytest
import torch

from studio.cli import main

pytest.importorskip("ray", reason="Ray is an optional extra (pip install -e \".[ray]\"); not installed here")


def test_tiny_run_reports_both_baselines_and_the_overhead_against_the_faster(capsys):
    torch.set_num_threads(1)
    assert main(["bench", "dissect", "--samples", "8", "--task-size", "2", "--check", "1", "--top", "2",
                 "--memory", "0", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    two, one, base = figures["in_process_2_threads_s"], figures["in_process_1_thread_s"], figures["in_process_s"]
    assert base == min(two, one) and figures["in_process_threads"] == (2 if two <= one else 1)
    for key in ("ray_cluster_start_s", "ray_actor_start_s", "ray_run_s", "ray_total_s", "ray_overhead_joined",
                "ray_over_1_thread", "samples_per_s", "thread_rounding", "timing_pairs"):
        assert key in figures, key
    total = figures["ray_total_s"]
    assert total >= figures["ray_cluster_start_s"] + figures["ray_actor_start_s"]  # start-up stays in the Ray time
    assert figures["ray_overhead"] == pytest.approx(total / base, rel=0.05, abs=0.02)
    assert figures["ray_over_1_thread"] == pytest.approx(total / one, rel=0.05, abs=0.02)
    assert figures["ray_equal"] == 0.0  # Ray's 1-thread workers match the 1-thread child bit for bit
    assert figures["timing_pairs"][0]["in_process_s"] == base
