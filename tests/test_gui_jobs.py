"""widgets/jobs.py: functions of the generator run on the model's thread; results, errors, progress, cancel."""
from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import QThread

from studio.core.errors import StudioError
from studio.core.progress import Ticker
from tests.gui_support import WorkerHarness


@pytest.fixture
def harness(toy, qapp):
    h = WorkerHarness(toy)
    yield h
    h.stop()


def test_a_job_runs_on_the_worker_thread_and_returns_on_the_gui_thread(harness, qtbot):
    results, threads = [], []

    def work(generator):
        threads.append(threading.get_ident())
        return generator.layer("blocks.1").units

    def done(units):
        results.append((units, QThread.currentThread() is harness.jobs.thread()))

    harness.jobs.submit(work, done, failed=pytest.fail)
    qtbot.waitUntil(lambda: bool(results), timeout=5000)
    assert results == [(16, True)]
    assert threads and threads[0] != threading.get_ident()
    assert not harness.jobs.busy


def test_progress_arrives_and_cancel_stops_the_job(harness, qtbot):
    updates, failures = [], []
    proceed = threading.Event()

    def work(generator, progress):
        ticker = Ticker(1000, progress, unit="units")
        ticker.advance()
        proceed.wait(5)  # hold here until the GUI has pressed Cancel
        for _ in range(999):
            ticker.advance()
        return "finished"

    job = harness.jobs.submit(work, done=lambda r: pytest.fail("a cancelled job finished"),
                              failed=failures.append, progress=updates.append)
    qtbot.waitUntil(lambda: bool(updates), timeout=5000)
    assert job.state == "running"
    job.cancel()
    proceed.set()
    qtbot.waitUntil(lambda: bool(failures), timeout=5000)
    assert failures[0] == "Stopped at 2 of 1000 units, as asked."
    assert job.state == "failed" and job.cancelled
    assert updates[0].done == 1 and updates[0].total == 1000


def test_an_error_is_one_sentence_and_the_worker_keeps_working(harness, qtbot):
    failures, results = [], []

    def broken(generator):
        raise StudioError("The mask is empty: paint over the region first.")

    harness.jobs.submit(broken, done=results.append, failed=failures.append)
    harness.jobs.submit(lambda g: g.name, done=results.append, failed=failures.append)
    qtbot.waitUntil(lambda: bool(results), timeout=5000)
    assert failures == ["The mask is empty: paint over the region first."]
    assert results == ["toy"]


def test_a_job_cancelled_before_it_starts_never_runs(harness, qtbot):
    gate, ran, failures = threading.Event(), [], []
    harness.jobs.submit(lambda g: gate.wait(5), done=lambda r: None, failed=failures.append)
    second = harness.jobs.submit(lambda g: ran.append(1), done=lambda r: None, failed=failures.append)
    second.cancel()
    gate.set()
    qtbot.waitUntil(lambda: bool(failures), timeout=5000)
    assert ran == [] and "Cancelled before it started" in failures[0]
