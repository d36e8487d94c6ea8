"""Knob edits on a diffusion model keep to a window of denoising steps, as unit edits do (tiny random SD)."""
from __future__ import annotations

import json

import pytest
import torch

from studio.core.errors import StudioError
from studio.core.hooks import count_hooks
from studio.knobs import Example, KnobEdit, learn_knob
from studio.recipe import Recipe, load_recipe, save_recipe
from studio.session import Session, knob_edits_document, knob_edits_from_document, load_session, save_session

STEPS = 4
LAYER = "up_blocks.1.resnets.1"


def square(size: int = 32) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[8:24, 6:22] = 1.0
    return m


@pytest.fixture(scope="module")
def sd(tiny_sd_files):
    from models.registry import open_model

    return open_model(str(tiny_sd_files.folder), device="cpu")


def sample(gen, seed=3, prompt="a red house"):
    return gen.sample(seed, prompt, steps=STEPS, size=32, scheduler="ddim")


@pytest.fixture(scope="module")
def knob(sd):
    present = [Example(sample(sd, s, "a red house"), square()) for s in (1, 2)]
    wanted = [Example(sample(sd, s, "a blue tree"), square()) for s in (5, 6)]
    return learn_knob(sd, "tiny", present=present, wanted=wanted, layers=[LAYER], units=8, min_contrast=0.0)


def render_with(sd, edits, s, record=None):
    """The image of ``s`` with ``edits`` on; ``record`` collects the UNet's output at every step."""
    hook = None
    if record is not None:
        hook = sd.unet.register_forward_hook(lambda m, a, out: record.append(
            (sd.clock.step, (out[0] if isinstance(out, tuple) else out.sample).detach().clone())))
    try:
        with torch.inference_mode(), sd.editor() as editor:
            editor.set_knobs(edits)
            return sd.render([s])
    finally:
        if hook is not None:
            hook.remove()


def test_a_windowed_knob_changes_only_its_steps(sd, knob):
    s = sample(sd)
    base_steps, every_steps, late_steps = [], [], []
    base = render_with(sd, [], s, base_steps)
    every = render_with(sd, [KnobEdit(knob, square(), 3.0)], s, every_steps)
    late = render_with(sd, [KnobEdit(knob, square(), 3.0, steps=(2, STEPS))], s, late_steps)
    assert [step for step, _ in late_steps] == list(range(STEPS))
    # steps 0 and 1 run as without the knob; the knob over every step already differs there
    for (step, b), (_, e), (_, w) in zip(base_steps, every_steps, late_steps):
        if step < 2:
            assert torch.equal(w, b)
            assert not torch.allclose(e, b, atol=1e-6)
        else:
            assert not torch.allclose(w, b, atol=1e-6)
    assert (late - base).abs().mean() > 1e-4
    assert not torch.allclose(late, every, atol=1e-4)
    # a window over the whole schedule is the knob without a window
    assert torch.equal(render_with(sd, [KnobEdit(knob, square(), 3.0, steps=(0, STEPS))], s), every)
    # a window after the last step leaves the image as it is
    assert torch.equal(render_with(sd, [KnobEdit(knob, square(), 3.0, steps=(STEPS, STEPS + 3))], s), base)
    assert count_hooks(sd.module) == 0


def test_the_shared_prefix_stays_exact_under_a_windowed_knob(sd, knob):
    a, b = sample(sd, 3), sample(sd, 4)
    edit = KnobEdit(knob, square(), 2.5, steps=(2, STEPS))
    full = render_with(sd, [edit], a), render_with(sd, [edit], b)
    with torch.inference_mode():
        state = sd.denoise_prefix([a, b], sd.prefix_step(2, a))  # steps 0, 1 once, without the knob
        with sd.editor() as editor:
            editor.set_knobs([edit])
            resumed = sd.render([b, a], start=state)
    assert torch.allclose(resumed[0], full[1][0], atol=1e-5) and torch.allclose(resumed[1], full[0][0], atol=1e-5)


def test_the_window_is_saved_in_sessions_and_recipes_and_old_files_read_as_every_step(sd, knob, tmp_path):
    s = sample(sd)
    edit = KnobEdit(knob, square(), 2.0, steps=(1, 3))
    session = Session.capture(sd, samples=[s], knob_edits=[edit])
    assert session.knob_edits[0].steps == (1, 3)
    before = session.render(sd)
    again = load_session(save_session(session, tmp_path / "work.nstudio"))
    assert again.knob_edits[0].steps == (1, 3) and torch.equal(again.render(sd), before)
    recipe = load_recipe(save_recipe(Recipe.from_session(session), tmp_path / "edits.json"))
    assert recipe.knob_edits[0].steps == (1, 3)
    assert torch.equal(recipe.as_session().render(sd), before)
    # a file written before knob windows existed has no "steps": the knob acts in every step
    docs, tensors = knob_edits_document([KnobEdit(knob, square(), 2.0)])
    assert "steps" not in docs[0]
    docs, tensors = knob_edits_document([edit])
    old = [{k: v for k, v in d.items() if k != "steps"} for d in json.loads(json.dumps(docs))]
    assert knob_edits_from_document(old, tensors)[0].steps is None


def test_an_empty_window_is_one_sentence(knob):
    with pytest.raises(StudioError, match="Step window .* is empty"):
        KnobEdit(knob, square(), 1.0, steps=(3, 3))


def test_knob_apply_takes_a_step_window_on_the_command_line(sd, knob, tiny_sd_files, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from studio.cli import main
    from studio.core.images import save_image
    from studio.knobs import save_knob

    path = save_knob(knob, tmp_path / "tiny.safetensors")
    mask = tmp_path / "mask.png"
    save_image(square(sd.resolution[0])[None].repeat(3, 1, 1), mask)
    common = ["knob", "apply", "--model", str(tiny_sd_files.folder), "--device", "cpu", "--knob", str(path),
              "--seed", "3", "--mask", str(mask), "--strength", "3"]
    assert main(common + ["-o", str(tmp_path / "every.png")]) == 0
    assert main(common + ["--steps", "20:25", "-o", str(tmp_path / "late.png")]) == 0
    assert main(common[:-2] + ["--strength", "0", "-o", str(tmp_path / "none.png")]) == 0
    every, late, none = (np.asarray(Image.open(tmp_path / f"{n}.png"), dtype=np.int16)
                         for n in ("every", "late", "none"))
    assert np.abs(every - late).max() > 0 and np.abs(late - none).max() > 0
    assert np.abs(late - none).mean() < np.abs(every - none).mean()  # five late steps change less than all 25
    assert main(common + ["--steps", "4:4", "-o", str(tmp_path / "x.png")]) == 2
    assert "Step window (4, 4) is empty" in capsys.readouterr().err
