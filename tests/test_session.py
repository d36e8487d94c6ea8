"""Sessions: bit-exact round trips, atomic saves that survive a kill, clear refusals, autosave and recent files."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from studio.core.hooks import UnitEdit, count_hooks
from studio.recovery import Autosaver, BackgroundWriter, RecentSessions, RecoveryStore
from studio.reference import ModelReference, content_sha256
from studio.session import Session, SessionError, load_session, peek_session, save_session

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def registry(monkeypatch):
    from models import registry

    monkeypatch.setattr(registry, "FAMILY_MODULES", ["tests.toy", "tests.toy_text", *registry.FAMILY_MODULES])
    return registry


def _mask(size: int) -> torch.Tensor:
    mask = torch.zeros(size, size)
    mask[:, : size // 2] = 1.0
    mask[3, 3] = 0.37  # a soft value: masks are stored exactly, not as 8-bit images
    return mask


def _toy_session(gen) -> Session:
    edits = [UnitEdit("blocks.0", 1, "off"), UnitEdit("blocks.1", 2, "scale", 0.3, local=True),
             UnitEdit("blocks.2", 3, "set", 0.25, steps=(0, 5)), UnitEdit("fc", 9, "scale", 1.7)]
    ranking = {"layer": "blocks.1", "scores": [0.5, 0.25, 1e-9], "units": [2, 0, 1]}
    return Session.capture(gen, samples=[gen.sample(3), gen.sample(11, None, truncation=0.7)],
                           masks={"lamp": _mask(32), "bed": 1 - _mask(32)}, active_mask="lamp",
                           unit_edits=edits, rankings=[ranking], ui={"layer": "blocks.1", "local": True})


def test_round_trip_keeps_every_field_and_renders_bit_for_bit(toy, tmp_path):
    session = _toy_session(toy)
    before = session.render(toy)
    path = save_session(session, tmp_path / "work.nstudio")
    loaded = load_session(path)
    assert loaded.model == session.model and loaded.samples == session.samples
    assert loaded.unit_edits == session.unit_edits and loaded.rankings == session.rankings
    assert loaded.ui == session.ui and loaded.active_mask == "lamp" and loaded.device == "cpu"
    assert set(loaded.masks) == {"lamp", "bed"} and all(torch.equal(loaded.masks[k], session.masks[k])
                                                        for k in loaded.masks)
    after = loaded.render(toy)
    assert torch.equal(before, after)
    unedited = toy.render(session.samples)
    assert not torch.equal(after, unedited)  # the edits really are on
    assert count_hooks(toy.module) == 0  # render() takes them off again


def test_concept_edits_round_trip_bit_for_bit_and_revert(registry, tmp_path):
    from studio.concept import ConceptEdit, ConceptEditSpec, editor_for

    gen = registry.open_model("toy-text")
    original = {k: v.clone() for k, v in gen.module.state_dict().items()}
    editor = editor_for(gen)
    editor.apply(ConceptEditSpec([ConceptEdit("replace", "red", "blue")], preserve=["green"]))
    sample = gen.sample(4, "a room with red walls")
    session = Session.capture(gen, samples=[sample], unit_edits=[UnitEdit("conv", 2, "scale", 1.5)],
                              concept_editor=editor)
    with torch.inference_mode(), gen.editor() as hooks:
        hooks.set(session.unit_edits)
        before = gen.render([sample])
    edited = {k: v.clone() for k, v in gen.module.state_dict().items()}
    other = Session.capture(gen, samples=[sample], reference=session.model)  # no concept edits, no unit edits
    assert not torch.equal(other.render(gen), before)
    assert len(editor.stack) == 1  # rendering another session put this model's concept edits back ...
    assert all(torch.equal(v, edited[k]) for k, v in gen.module.state_dict().items())  # ... bit for bit
    editor.revert()
    save_session(session, tmp_path / "c.nstudio")

    fresh = registry.open_model("toy-text")  # a new process would see exactly this
    loaded = load_session(tmp_path / "c.nstudio")
    with loaded.apply(fresh) as applied:
        assert len(applied.concepts.stack) == 1
        assert applied.concepts.stack[0].spec == session_spec(session)
        with torch.inference_mode():
            assert torch.equal(fresh.render([sample]), before)
    assert all(torch.equal(v, original[k]) for k, v in fresh.module.state_dict().items())


def session_spec(session: Session):
    from studio.concept import edits_from_tensors

    return edits_from_tensors(session.concept["tensors"], session.concept["metadata"])[0].spec


def test_numpy_options_and_non_finite_scores_are_kept(toy, tmp_path):
    import numpy as np

    latent = np.linspace(-1, 1, 5, dtype=np.float32)
    scored = {"units": [{"unit": 0, "score": float("nan")}, {"unit": 1, "score": float("inf")}]}
    session = Session.capture(toy, samples=[toy.sample(2, None, latent=latent)], rankings=[scored])
    loaded = load_session(save_session(session, tmp_path / "n.nstudio"))
    assert loaded.samples[0].option("latent") == latent.tolist()
    scores = [u["score"] for u in loaded.rankings[0]["units"]]
    assert scores[0] != scores[0] and scores[1] == float("inf")
    with pytest.raises(SessionError, match="cannot be saved .*nothing was written"):
        save_session(Session.capture(toy, samples=[toy.sample(1, None, thing=object())]), tmp_path / "o.nstudio")
    assert not (tmp_path / "o.nstudio").exists()


def test_a_failed_save_leaves_the_old_file(toy, tmp_path, monkeypatch):
    path = save_session(_toy_session(toy), tmp_path / "work.nstudio")
    old = path.read_bytes()

    def half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        raise OSError("No space left on device")

    monkeypatch.setattr("studio.session.save_file", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        save_session(Session.capture(toy), path)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["work.nstudio"]  # the temporary file is gone too


def test_a_save_killed_midway_leaves_the_old_file(toy, tmp_path):
    path = save_session(_toy_session(toy), tmp_path / "work.nstudio")
    old = path.read_bytes()
    marker = tmp_path / "half-written"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        import studio.session
        from studio.session import Session, save_session
        from tests.toy import ToyGenerator

        def slow_save(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"half a session")
            Path({str(marker)!r}).touch()
            time.sleep(60)

        studio.session.save_file = slow_save
        save_session(Session.capture(ToyGenerator()), {str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "the saving process ended before writing"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert path.read_bytes() == old
    assert load_session(path).unit_edits == _toy_session(toy).unit_edits


def _corrupt_variants(good: bytes) -> dict[str, bytes]:
    (length,) = struct.unpack("<Q", good[:8])
    header = good[8:8 + length]
    meta = json.loads(header)["__metadata__"]
    bad_json = dict(meta, session=meta["session"][:-20])
    wrong_header = json.dumps({**json.loads(header), "__metadata__": bad_json}).encode()
    wrong_header += b" " * ((8 - len(wrong_header) % 8) % 8)
    flipped = bytearray(good)
    flipped[-5] ^= 0xFF  # inside the mask data
    return {"truncated": good[: len(good) // 2], "garbage": b"\x13\x37" * 50, "empty": b"",
            "bit flip in the tensors": bytes(flipped),
            "broken JSON": struct.pack("<Q", len(wrong_header)) + wrong_header + good[8 + length:]}


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "bit flip in the tensors", "broken JSON"])
def test_corrupt_files_are_refused_clearly_and_never_overwritten(toy, tmp_path, kind):
    good = save_session(_toy_session(toy), tmp_path / "good.nstudio").read_bytes()
    path = tmp_path / "bad.nstudio"
    path.write_bytes(_corrupt_variants(good)[kind])
    with pytest.raises(SessionError, match=r"bad.nstudio is damaged and cannot be read as a session") as info:
        load_session(path)
    assert "\n" not in str(info.value)
    damaged = path.read_bytes()
    with pytest.raises(SessionError, match="was not overwritten"):
        save_session(Session.capture(toy), path)
    assert path.read_bytes() == damaged
    save_session(Session.capture(toy), path, replace_unreadable=True)  # after the user confirmed Save As
    assert load_session(path).unit_edits == []


def _rewrite_version(path: Path, version: int) -> None:
    from safetensors.torch import load_file, save_file

    meta = peek_session(path)
    doc = json.loads(meta["session"])
    doc["version"] = version
    meta.update(version=str(version), session=json.dumps(doc))
    save_file(load_file(str(path)), str(path), metadata=meta)


def test_a_newer_version_is_refused_and_never_overwritten(toy, tmp_path):
    path = save_session(_toy_session(toy), tmp_path / "future.nstudio")
    _rewrite_version(path, 2)
    newer = path.read_bytes()
    with pytest.raises(SessionError, match=r"saved by a newer Neuron Studio \(session format 2; this one reads up "
                                           r"to 1\): update Neuron Studio"):
        load_session(path)
    with pytest.raises(SessionError, match="was not overwritten"):
        save_session(Session.capture(toy), path)
    assert path.read_bytes() == newer


def test_other_files_are_not_sessions(toy, tmp_path):
    from safetensors.torch import save_file

    model = tmp_path / "weights.nstudio"
    save_file({"w": torch.zeros(2)}, str(model), metadata={"format": "neuron-studio/rooms"})
    with pytest.raises(SessionError, match="is not a Neuron Studio session .*open it as a model"):
        load_session(model)
    with pytest.raises(SessionError, match="No session file"):
        load_session(tmp_path / "missing.nstudio")


def test_an_unknown_active_mask_is_refused(toy):
    with pytest.raises(SessionError, match="active mask 'sky'"):
        Session.capture(toy, masks={"lamp": _mask(32)}, active_mask="sky")


def test_model_reference_hashes_files_and_folders_and_notices_changes(registry, tmp_path):
    path = tmp_path / "net.toy"
    path.write_bytes(b"TOY17")
    gen = registry.open_model(str(path))
    ref = ModelReference.of(gen)
    assert ref.source == str(path.resolve()) and ref.sha256 == content_sha256(path)
    assert ref.mismatch(gen) is None
    path.write_bytes(b"TOY180")  # another size: a change even where file times are coarse
    assert "differ" in ref.mismatch(gen)
    assert "a toy-text model is open" in ModelReference("x", "toy").mismatch(registry.open_model("toy-text"))

    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "w.bin").write_bytes(b"abc")
    (folder / "model_index.json").write_text("{}")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "lock").write_text("x")  # hidden: not part of the model
    first = content_sha256(folder)
    (folder / ".cache" / "lock").write_text("y")
    assert content_sha256(folder) == first
    (folder / "unet" / "w.bin").rename(folder / "unet" / "v.bin")
    assert content_sha256(folder) != first


def test_autosave_writes_on_edits_throttled_and_every_minute(toy, tmp_path):
    store = RecoveryStore(tmp_path / "recovery")
    now = [1000.0]
    snapshots = []

    def snapshot():
        snapshots.append(now[0])
        return _toy_session(toy)

    auto = Autosaver(store, snapshot, interval=60, min_gap=2, origin=lambda: "/work/a.nstudio", clock=lambda: now[0])
    assert not auto.tick() and store.pending() is None  # nothing edited: nothing to recover
    assert auto.edited() and store.path.exists()
    now[0] += 0.5
    assert not auto.edited()  # a slider drag does not write every frame
    assert auto.dirty
    now[0] += 1.6
    assert auto.tick() and not auto.dirty
    now[0] += 30
    assert not auto.tick()
    now[0] += 31
    assert auto.tick()  # every minute once there is work
    assert snapshots == [1000.0, 1002.1, 1063.1]
    pending = store.pending()
    assert pending.origin == "/work/a.nstudio" and "a.nstudio autosaved at" in pending.describe()
    assert pending.load().unit_edits == _toy_session(toy).unit_edits
    auto.saved()
    assert store.pending() is None and not auto.tick()


def test_a_failed_autosave_keeps_the_window_and_the_last_recovery(toy, tmp_path, monkeypatch):
    store = RecoveryStore(tmp_path)
    auto = Autosaver(store, lambda: _toy_session(toy), clock=lambda: 0.0)
    assert auto.edited()
    kept = store.path.read_bytes()
    monkeypatch.setattr("studio.recovery.save_session", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    auto.dirty, auto.last_write = True, -100.0
    assert not auto.tick()
    assert "Autosave failed (disk full)" in auto.last_error and store.path.read_bytes() == kept


class GatedStore(RecoveryStore):
    """A recovery store whose writes wait for ``gate`` (so a test can hand in snapshots while one is written)."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self.gate, self.started, self.order = threading.Event(), threading.Event(), []

    def write(self, session, origin=None):
        self.started.set()
        assert self.gate.wait(30)
        self.order.append(session.unit_edits[0].unit)
        return super().write(session, origin)


def test_background_autosave_ends_with_the_newest_snapshot_off_the_callers_thread(toy, tmp_path):
    store = GatedStore(tmp_path)
    base = _toy_session(toy)
    state = {"unit": 0}
    auto = Autosaver(store, lambda: replace(base, unit_edits=[UnitEdit("fc", state["unit"], "off")]),
                     clock=lambda: 1000.0 + 10 * state["unit"], writer=BackgroundWriter(store))
    assert auto.edited()  # handed over; the write waits on the gate, so it cannot have run on this thread
    assert store.started.wait(30) and not store.path.exists()
    for unit in (1, 2, 3):  # a drag goes on while the first write runs: only the newest of these is kept
        state["unit"] = unit
        assert auto.edited()
    store.gate.set()
    auto.flush()
    assert store.order == [0, 3] and auto.writer.writes == 2
    assert load_session(store.path).unit_edits == [UnitEdit("fc", 3, "off")]

    store.gate.clear()
    store.started.clear()
    state["unit"] = 4
    assert auto.edited() and store.started.wait(30)
    state["unit"] = 5
    auto.edited()  # waiting behind the running write when the user saves: dropped, the running one finishes first
    done = threading.Thread(target=auto.saved)
    done.start()
    store.gate.set()
    done.join(30)
    assert store.order == [0, 3, 4] and not store.path.exists()  # no write lands after the discard


def test_a_failed_background_autosave_is_reported_and_retried(toy, tmp_path, monkeypatch):
    store = RecoveryStore(tmp_path)
    now = [0.0]
    auto = Autosaver(store, lambda: _toy_session(toy), clock=lambda: now[0], writer=BackgroundWriter(store))
    monkeypatch.setattr("studio.recovery.save_session", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    assert auto.edited()
    auto.flush()
    now[0] = 0.5
    assert not auto.tick()  # too soon to write again, but the failure is said
    assert "Autosave failed (disk full)" in auto.last_error and auto.dirty and not store.path.exists()
    monkeypatch.undo()
    now[0] = 5.0
    assert auto.tick()
    auto.flush()
    assert load_session(store.path).unit_edits == _toy_session(toy).unit_edits and auto.writer.take_error() is None


def test_an_unreadable_recovery_file_is_not_offered(tmp_path):
    store = RecoveryStore(tmp_path)
    store.path.write_bytes(b"junk")
    assert store.pending() is None
    store.discard()
    assert not store.path.exists()


def test_recent_sessions_newest_first_deduplicated_and_limited(tmp_path):
    recent = RecentSessions(tmp_path / "recent.json", limit=3)
    files = []
    for name in "abcd":
        files.append(tmp_path / f"{name}.nstudio")
        files[-1].write_bytes(b"x")
        recent.add(files[-1])
    recent.add(files[1])
    assert [p.name for p in recent.paths()] == ["b.nstudio", "d.nstudio", "c.nstudio"]
    files[3].unlink()
    assert [p.name for p in recent.paths()] == ["b.nstudio", "c.nstudio"]
    recent.remove(files[1])
    assert [p.name for p in recent.paths()] == ["c.nstudio"]
    (tmp_path / "recent.json").write_text("{not json")
    assert recent.paths() == []
    recent.add(files[0])
    assert [p.name for p in recent.paths()] == ["a.nstudio"]


def test_default_config_dir_honours_the_override(monkeypatch, tmp_path):
    from studio.recovery import user_config_dir

    monkeypatch.setenv("NEURON_STUDIO_CONFIG_DIR", str(tmp_path))
    assert user_config_dir() == tmp_path
    assert RecoveryStore().path == tmp_path / "recovery" / "recovery.nstudio"


def test_saved_files_get_ordinary_permissions(toy, tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = save_session(Session.capture(toy), tmp_path / "mode.nstudio")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600: others can read an export
    path.chmod(0o640)
    save_session(Session.capture(toy), path)
    assert path.stat().st_mode & 0o777 == 0o640  # a replaced file keeps the mode it had
