"""The Concepts panel (offscreen) on the tiny text-conditioned model, with a real worker thread."""
from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from tests.gui_support import WorkerHarness
from tests.toy_text import ToyTextGenerator


@pytest.fixture
def gen():
    return ToyTextGenerator()


@pytest.fixture
def panel(gen, qtbot):
    from widgets.concept_panel import ConceptPanel

    harness = WorkerHarness(gen)
    widget = ConceptPanel(harness.jobs)
    qtbot.addWidget(widget)
    widget.show()  # buttons take clicks only with a geometry
    qtbot.waitExposed(widget)
    with qtbot.waitSignal(widget.finished, timeout=10_000):
        widget.set_generator(gen)
    yield widget
    harness.stop()


def weights(g) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in g.module.state_dict().items()}


def press(qtbot, panel, button) -> None:
    with qtbot.waitSignals([panel.model_changed, panel.finished], order="strict", timeout=20_000):
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_apply_undo_redo_revert_through_the_buttons(panel, gen, qtbot):
    original = weights(gen)
    panel.rows[0].set("replace", "red", "blue")
    panel.add_row("erase", "bed")
    panel.preserve.setText("green, a room")
    panel.test_prompts.setPlainText("a red room\na green room")
    panel.test_seeds.setText("1-2")
    assert not panel.undo_button.isEnabled()
    press(qtbot, panel, panel.apply_button)
    assert "red → blue" in panel.status.text() and "rank 2" in panel.status.text()
    assert panel.stack_list.count() == 1
    assert panel.grid_images() == (4, 8)  # 2 prompts × 2 seeds, before and after
    edited = weights(gen)
    assert not torch.equal(edited["attn0.to_k.weight"], original["attn0.to_k.weight"])
    assert panel.undo_button.isEnabled() and panel.revert_button.isEnabled()

    press(qtbot, panel, panel.undo_button)
    assert all(torch.equal(original[k], v) for k, v in weights(gen).items())
    assert panel.stack_list.count() == 0 and panel.redo_button.isEnabled()
    press(qtbot, panel, panel.redo_button)
    assert all(torch.equal(edited[k], v) for k, v in weights(gen).items())

    panel.rows[1].set("replace", "lamp", "pink")
    press(qtbot, panel, panel.apply_button)
    assert panel.stack_list.count() == 2
    press(qtbot, panel, panel.revert_button)
    assert all(torch.equal(original[k], v) for k, v in weights(gen).items())
    assert panel.stack_list.count() == 0 and not panel.undo_button.isEnabled()


def test_the_grid_shows_the_edit(panel, gen, qtbot):
    panel.rows[0].set("replace", "red", "blue")
    panel.preserve.setText("blue, a room")
    panel.test_prompts.setPlainText("a red room")
    panel.test_seeds.setText("3")
    with torch.inference_mode():
        red, blue = (gen.render([gen.sample(3, f"a {c} room")])[0] for c in ("red", "blue"))
    press(qtbot, panel, panel.apply_button)
    assert panel.grid_images() == (1, 2)
    (before,), (after,) = panel.result.before, panel.result.after
    assert torch.allclose(before, red)  # the same seed before and after
    assert (after - blue).abs().mean() < 0.05 * (red - blue).abs().mean()


def test_unknown_words_and_empty_rows_are_one_sentence(panel, gen, qtbot):
    original = weights(gen)
    messages = []
    panel.message.connect(messages.append)
    panel.rows[0].set("replace", "", "")
    panel.preserve.setText("green")
    panel.apply()
    assert "Nothing to edit" in messages[-1]
    panel.rows[0].set("replace", "crimson", "blue")
    with qtbot.waitSignal(panel.finished, timeout=10_000):
        panel.apply()
    assert "does not know (crimson)" in messages[-1] == panel.status.text()
    assert all(torch.equal(original[k], v) for k, v in weights(gen).items())
    assert panel.apply_button.isEnabled() and panel.stack_list.count() == 0


def test_a_model_without_cross_attention_disables_the_panel(panel, toy):
    panel.set_generator(toy)
    assert "no cross-attention" in panel.reason.text() and "\n" not in panel.reason.text()
    assert not panel.apply_button.isEnabled() and panel.apply() is None


def test_on_a_model_without_cross_attention_the_fields_take_no_input(panel, toy, qtbot, gen):
    panel.show()
    panel.set_generator(toy)
    qtbot.waitExposed(panel)
    qtbot.mouseClick(panel.rows[0].concept, Qt.MouseButton.LeftButton)
    qtbot.keyClicks(panel.rows[0].concept, "red")
    assert panel.rows[0].concept.text() == ""
    for field in (panel.rows[0].target, panel.preserve, panel.lambda_, panel.tokens):
        assert not field.isEnabled()
    assert panel.reason.isVisible()
    panel.set_generator(gen)  # a text model: everything editable again, no reason shown
    assert panel.rows[0].concept.isEnabled() and not panel.reason.isVisible()
    qtbot.keyClicks(panel.rows[0].concept, "red")
    assert panel.rows[0].concept.text() == "red"


def test_strengths_explain_their_effect(panel):
    assert "gentler" in panel.lambda_.toolTip() and "spills less" in panel.lambda_.toolTip()
    assert "preserved" in panel.edit_scale.toolTip()
    assert "preserve list" in panel.preserve_scale.toolTip()
    panel.rows[0].set("erase", "red")
    panel.lambda_.setValue(0.5)
    panel.tokens.setCurrentIndex(panel.tokens.findData("all"))
    made = panel.spec()
    assert made.edits[0].kind == "erase" and made.lambda_ == 0.5 and made.tokens == "all"


def test_the_stack_follows_edits_made_elsewhere(panel, gen, qtbot):
    from studio.concept import editor_for

    panel.rows[0].set("replace", "red", "blue")
    panel.test_prompts.setPlainText("a red room")
    panel.test_seeds.setText("0")
    job = panel.apply()
    panel.set_generator(gen)  # e.g. a session was opened while the edit ran: read the stack once it is done
    qtbot.waitUntil(lambda: job.finished and not panel.busy and panel.stack_list.count() == 1, timeout=20_000)
    with qtbot.waitSignal(panel.finished, timeout=10_000):
        panel.jobs.submit(lambda g: editor_for(g).revert(), done=lambda _: panel.refresh(), failed=pytest.fail)
    assert panel.stack_list.count() == 0 and not panel.undo_button.isEnabled()


def test_the_token_choice_and_strengths_explain_themselves_without_hovering(panel, qtbot):
    from widgets.concept_panel import TOKENS_TIP

    panel.show()
    qtbot.waitExposed(panel)
    assert panel.tokens_explained.isVisible() and panel.tokens_explained.text() == TOKENS_TIP[panel.tokens.currentData()]
    first = panel.tokens.currentData()
    panel.tokens.setFocus()
    qtbot.keyClick(panel.tokens, Qt.Key.Key_Down)
    assert panel.tokens.currentData() != first and panel.tokens_explained.text() == TOKENS_TIP[panel.tokens.currentData()]
    labels = [w.text() for w in panel.findChildren(QLabel) if w.isVisible()]
    assert {"Gentleness λ", "Edit strength", "Preserve strength", "Words read"} <= set(labels)
