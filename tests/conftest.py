from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Qt must never need a display in tests (they run headless, in CI too); set before any Qt import.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
import torch  # noqa: E402

# Two cores are shared by CI and everything else; small models run fastest single-threaded.
torch.set_num_threads(1)


@pytest.fixture
def toy_registry(monkeypatch):
    """The registry with the tiny test family registered first."""
    from models import registry

    monkeypatch.setattr(registry, "FAMILY_MODULES", ["tests.toy", *registry.FAMILY_MODULES])
    return registry


@pytest.fixture
def toy():
    from tests.toy import ToyGenerator

    return ToyGenerator()


@dataclass(frozen=True)
class TinySD:
    """The tiny random SD 1.x pipeline, built once per test run: read it, never change it or its files."""

    pipe: Any  # the StableDiffusionPipeline as built (diffusers is imported only by the tests that ask)
    build: Path  # the folder it was built in: its BPE tokenizer files are under bpe/
    folder: Path  # the pipeline saved as a diffusers folder; open a model of your own from it to change weights


@pytest.fixture(scope="session")
def tiny_sd_files(tmp_path_factory) -> TinySD:
    """The tiny SD pipeline and its diffusers folder, shared by every test that needs a Stable Diffusion model."""
    from models.sd_random import tiny_sd  # heavy import (diffusers): only the diffusion tests need it

    root = tmp_path_factory.mktemp("tiny-sd")
    pipe = tiny_sd(root / "build")
    pipe.save_pretrained(root / "folder")
    return TinySD(pipe, root / "build", root / "folder")


@pytest.fixture(scope="session")
def sg2(tmp_path_factory):
    """A tiny StyleGAN2 written as NVIDIA's code pickles it, opened on the CPU (the inversion tests share it)."""
    from models.registry import open_model
    from tests.stylegan_files import tiny_net, write_nvidia_pickle
    root = tmp_path_factory.mktemp("sg2")
    return open_model(str(write_nvidia_pickle(root / "sg2.pkl", tiny_net("sg2"), marker=root / "ran")), device="cpu")


@pytest.fixture(scope="session")
def sg2_target(sg2):
    """An image the tiny StyleGAN2 made itself (seed 5, psi 0.7): an inversion can reproduce it closely."""
    with torch.inference_mode():
        return sg2.render([sg2.sample(5, psi=0.7)])[0].clone()


@pytest.fixture(scope="session")
def sg2_inversion(sg2, sg2_target):
    """(inversion of ``sg2_target`` in 150 steps, the (step, shape) of each preview it showed): one search for the
    inversion and the noise/fine-tune tests."""
    from studio.invert import invert
    previews = []
    inv = invert(sg2, sg2_target, steps=150, preview=lambda step, image: previews.append((step, image.shape)))
    return inv, previews


@pytest.fixture(autouse=True)
def no_running_qthreads(monkeypatch):
    """Fail any test that leaves a QThread running (a destroyed running QThread aborts the process)."""
    try:
        from PySide6.QtCore import QThread
    except ImportError:  # Qt-free environments still run the core tests
        yield
        return
    started: list = []
    original = QThread.start

    def recording_start(self, *args, **kwargs):
        started.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(QThread, "start", recording_start)
    yield
    running = []
    for thread in started:
        try:
            if thread.isRunning():
                running.append(thread.objectName() or type(thread).__name__)
                thread.quit()
                thread.wait(5000)
        except RuntimeError:  # the C++ object is gone, so it is not running
            pass
    started.clear()
    # The app collects garbage only on the GUI thread (widgets/gui_gc.py) and only while its event loop runs;
    # between tests no loop runs, so collect this test's garbage here, on the GUI thread, before the next one.
    gc.collect()
    assert not running, f"test left QThreads running: {', '.join(running)}"
