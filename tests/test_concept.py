"""Closed-form concept edits on a tiny real text-conditioned generator (tests/toy_text.py)."""
from __future__ import annotations

import pytest
import torch

from studio.concept import (ConceptEdit, ConceptEditor, ConceptEditSpec, ConceptError, edit_vectors, editor_for,
                            input_factor, load_edits, save_edits, solve)
from studio.core.errors import StudioError, UnsupportedOperation
from tests.toy_text import ToyTextGenerator


@pytest.fixture
def gen():
    return ToyTextGenerator()


def weights(g) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in g.module.state_dict().items()}


def render(g, prompt: str, seeds=(1, 2, 3)) -> torch.Tensor:
    with torch.inference_mode():
        return g.render([g.sample(s, prompt) for s in seeds])


def dense(w0, c, t, p, lam, a, b):
    """The normal equations solved densely in fp64: W = (a V* Cᵀ + b W0 P Pᵀ + λ W0)(a C Cᵀ + b P Pᵀ + λ I)⁻¹."""
    w0, c, t, p = (x.double() for x in (w0, c, t, p))
    lam = lam * float((c * c).sum(1).mean())  # the edit rows here are never zero
    vstar = w0 @ t.T
    lhs = a * vstar @ c + b * w0 @ p.T @ p + lam * w0
    m = a * c.T @ c + b * p.T @ p + lam * torch.eye(w0.shape[1], dtype=torch.float64)
    return lhs @ torch.linalg.inv(m)


@pytest.mark.parametrize("n,m,a,b,lam", [(1, 0, 1.0, 1.0, 0.01), (3, 5, 2.0, 0.5, 0.1), (4, 40, 1.0, 1.0, 1e-3),
                                         (2, 20, 1.0, 1.0, 1e-5), (6, 30, 1.0, 3.0, 1e-6)])
def test_factored_update_equals_the_dense_normal_equations(n, m, a, b, lam):
    g = torch.Generator().manual_seed(n + m)
    w0 = torch.randn(24, 32, generator=g)
    c, t, p = torch.randn(n, 32, generator=g), torch.randn(n, 32, generator=g), torch.randn(m, 32, generator=g)
    d = input_factor(c, p, lam, a, b)  # (in, n)
    up = a * w0 @ (t - c).T  # what solve() builds per projection
    delta = up @ d.T
    assert torch.linalg.matrix_rank(delta, rtol=1e-5) <= n
    expected = dense(w0, c, t, p, lam, a, b) - w0.double()
    assert torch.allclose(delta.double(), expected, atol=1e-4 * expected.abs().max().item() + 1e-6)


def test_replace_makes_the_concept_render_as_its_target_and_keeps_the_preserved(gen):
    red, blue, green = (render(gen, f"a room with {c} walls") for c in ("red", "blue", "green"))
    before = (red - blue).abs().mean()
    keep = ["green", "blue", "a room with walls"]  # the prompt's other words too: no spill onto them
    applied = editor_for(gen).apply(ConceptEditSpec([ConceptEdit("replace", "red", "blue")], preserve=keep))
    assert set(applied.factors) == {"attn0.to_k", "attn0.to_v", "attn1.to_k", "attn1.to_v"}
    assert applied.rank == 1
    after = render(gen, "a room with red walls")
    assert (after - blue).abs().mean() < 0.05 * before  # red now looks like blue
    assert (render(gen, "a room with green walls") - green).abs().max() < 1e-3  # green kept
    assert (render(gen, "a room with blue walls") - blue).abs().mean() < 0.05 * before


def test_key_and_value_of_the_concept_become_the_targets(gen):
    enc = {w: gen.encode_prompt(w).embeddings[0] for w in ("red", "blue", "green")}
    original = {n: ca.to_k.weight.detach().clone() for n, ca in ((c.name, c) for c in gen.cross_attention())}
    editor_for(gen).apply(ConceptEditSpec([ConceptEdit("replace", "red", "blue")], preserve=["green"],
                                          lambda_=1e-4))
    for ca in gen.cross_attention():
        w, w0 = ca.to_k.weight, original[ca.name]
        assert torch.allclose(w @ enc["red"], w0 @ enc["blue"], atol=1e-3)
        assert torch.allclose(w @ enc["green"], w0 @ enc["green"], atol=1e-3)


def test_erase_maps_to_the_empty_prompt_and_a_guide_when_given(gen):
    enc = {w: gen.encode_prompt(w).embeddings[0] for w in ("red", "pink")}
    w0 = gen.module.attn1.to_v.weight.detach().clone()
    editor = editor_for(gen)
    editor.apply(ConceptEditSpec([ConceptEdit("erase", "red")], lambda_=1e-4))
    assert (gen.module.attn1.to_v.weight @ enc["red"]).abs().max() < 1e-2 * (w0 @ enc["red"]).abs().max()
    editor.undo()
    editor.apply(ConceptEditSpec([ConceptEdit("erase", "red", "pink")], lambda_=1e-4))
    assert torch.allclose(gen.module.attn1.to_v.weight @ enc["red"], w0 @ enc["pink"], atol=1e-3)


def test_several_concepts_in_one_solve(gen):
    red, green, blue, yellow = (render(gen, f"a {c} room") for c in ("red", "green", "blue", "yellow"))
    applied = editor_for(gen).apply(ConceptEditSpec(
        [ConceptEdit("replace", "red", "blue"), ConceptEdit("replace", "green", "yellow")],
        preserve=["a room", "blue", "yellow"]))
    assert applied.rank == 2
    assert (render(gen, "a red room") - blue).abs().mean() < 0.05 * (red - blue).abs().mean()
    assert (render(gen, "a green room") - yellow).abs().mean() < 0.05 * (green - yellow).abs().mean()


def test_undo_redo_revert_are_bit_exact(gen):
    original = weights(gen)
    editor = ConceptEditor(gen)
    editor.apply(ConceptEditSpec([ConceptEdit("replace", "red", "blue")], preserve=["green"]))
    first = weights(gen)
    editor.apply(ConceptEditSpec([ConceptEdit("erase", "bed")], preserve=["lamp"], lambda_=0.5))
    second = weights(gen)
    assert any(not torch.equal(first[k], second[k]) for k in first)
    editor.undo()
    assert all(torch.equal(first[k], v) for k, v in weights(gen).items())
    editor.redo()
    assert all(torch.equal(second[k], v) for k, v in weights(gen).items())
    assert editor.redo() is None
    editor.undo()
    editor.undo()
    assert all(torch.equal(original[k], v) for k, v in weights(gen).items())
    assert editor.undo() is None and editor.can_redo
    editor.redo()
    editor.redo()
    editor.revert()
    assert all(torch.equal(original[k], v) for k, v in weights(gen).items())
    assert not editor.can_undo and not editor.can_redo


def test_half_precision_weights_revert_bit_exactly(gen):
    gen.module.half()
    original = weights(gen)
    editor = ConceptEditor(gen)
    applied = editor.apply(ConceptEditSpec([ConceptEdit("replace", "red", "blue")]))
    assert all(f.up.dtype == torch.float32 for f in applied.factors.values())
    assert gen.module.attn0.to_k.weight.dtype == torch.float16
    assert not torch.equal(gen.module.attn0.to_k.weight, original["attn0.to_k.weight"])
    editor.revert()
    assert all(torch.equal(original[k], v) for k, v in weights(gen).items())


def test_lora_factors_are_the_exact_weight_change(gen):
    original = weights(gen)
    editor = editor_for(gen)
    editor.apply(ConceptEditSpec([ConceptEdit("replace", "red", "blue")], preserve=["green"]))
    editor.apply(ConceptEditSpec([ConceptEdit("replace", "bed", "lamp")]))
    lora = editor.lora()
    assert set(lora) == {"attn0.to_k", "attn0.to_v", "attn1.to_k", "attn1.to_v"}
    up, down = lora["attn1.to_v"]
    assert up.shape == (32, 2) and down.shape == (2, 16)  # (out, r), (r, in): ranks add up over the stack
    change = gen.module.attn1.to_v.weight - original["attn1.to_v.weight"]
    assert torch.allclose(up @ down, change, atol=1e-6)


def test_saved_edit_loads_onto_a_fresh_copy_of_the_model(gen, tmp_path):
    editor = editor_for(gen)
    editor.apply(ConceptEditSpec([ConceptEdit("replace", "red", "blue")], preserve=["green", "yellow"],
                                 lambda_=0.05, edit_scale=2.0, tokens="all"))
    path = save_edits(tmp_path / "edit.safetensors", editor.stack, gen)
    loaded = load_edits(path)
    assert loaded[0].spec == editor.stack[0].spec
    fresh = ToyTextGenerator()
    ConceptEditor(fresh).push(*loaded)
    assert all(torch.equal(v, weights(gen)[k]) for k, v in weights(fresh).items())


def test_tensors_round_trip_restores_the_stack(gen):
    editor = editor_for(gen)
    editor.apply(ConceptEditSpec([ConceptEdit("replace", "red", "blue")]))
    editor.apply(ConceptEditSpec([ConceptEdit("erase", "lamp")]))
    tensors, meta = editor.to_tensors()
    edited = weights(gen)
    fresh = ToyTextGenerator()
    other = ConceptEditor(fresh)
    other.from_tensors(tensors, meta)
    assert [a.spec for a in other.stack] == [a.spec for a in editor.stack]
    assert all(torch.equal(v, edited[k]) for k, v in weights(fresh).items())
    other.undo()
    editor.undo()
    assert all(torch.equal(v, weights(gen)[k]) for k, v in weights(fresh).items())


def test_token_modes_choose_the_rows(gen):
    edit = ConceptEdit("replace", "red walls", "blue walls")
    c, t = edit_vectors(gen, edit, "concept")
    assert c.shape == (2, 16) and torch.equal(c[1], t[1])  # "walls" maps onto itself: a preserve
    c, t = edit_vectors(gen, edit, "all")
    assert c.shape == (8, 16)
    c, t = edit_vectors(gen, ConceptEdit("replace", "red", "blue bed"), "concept")
    assert torch.allclose(t[0], gen.encode_prompt("blue bed").embeddings[:2].mean(0))
    with pytest.raises(ConceptError, match="changes no embedding row"):
        solve(gen, ConceptEditSpec([edit], tokens="last"))  # the last word, "walls", is the same on both sides


def test_preserving_costs_spill_onto_the_preserved(gen):
    green = gen.encode_prompt("green").embeddings[0]

    def drift(preserve):
        factors = solve(gen, ConceptEditSpec([ConceptEdit("replace", "red", "blue")], preserve=preserve))
        return (factors["attn0.to_v"].delta() @ green).norm()

    assert drift(["green"]) < 0.05 * drift([])


@pytest.mark.parametrize("make,message", [
    (lambda: ConceptEditSpec([ConceptEdit("replace", "crimson walls", "blue")]), "does not know (crimson)"),
    (lambda: ConceptEditSpec([ConceptEdit("replace", "red", "azure")]), "target 'azure'"),
    (lambda: ConceptEditSpec([ConceptEdit("replace", "red", "blue")], preserve=["mauve"]), "(mauve)"),
])
def test_unknown_words_are_named(gen, make, message):
    original = weights(gen)
    with pytest.raises(ConceptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        editor_for(gen).apply(make())
    assert all(torch.equal(original[k], v) for k, v in weights(gen).items())  # nothing lost
    assert editor_for(gen).stack == []


@pytest.mark.parametrize("make,message", [
    (lambda: ConceptEditSpec([], preserve=["green"]), "Nothing to edit"),
    (lambda: ConceptEditSpec([ConceptEdit("replace", "red", "blue")], preserve=["red"]), "both edited and preserved"),
    (lambda: ConceptEdit("replace", "red"), "needs a target"),
    (lambda: ConceptEdit("replace", "red", "Red"), "onto itself"),
    (lambda: ConceptEdit("paint", "red", "blue"), "erase or replace"),
    (lambda: ConceptEditSpec([ConceptEdit("erase", "red")], tokens="middle"), "token choice"),
    (lambda: ConceptEditSpec([ConceptEdit("erase", "red")], lambda_=0), "lambda must be above 0"),
])
def test_bad_requests_are_one_sentence(make, message):
    with pytest.raises(ConceptError, match=message):
        make()


def test_models_without_cross_attention_say_so(toy):
    with pytest.raises(UnsupportedOperation, match="has no cross-attention"):
        ConceptEditor(toy)


def test_edits_for_another_model_are_refused(gen, tmp_path):
    applied = editor_for(gen).apply(ConceptEditSpec([ConceptEdit("replace", "red", "blue")]))
    applied.factors["attn9.to_k"] = applied.factors.pop("attn0.to_k")
    path = save_edits(tmp_path / "e.safetensors", [applied])
    with pytest.raises(ConceptError, match="does not have"):
        ConceptEditor(ToyTextGenerator()).push(*load_edits(path))
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(StudioError, match="not a readable concept edit file|not a Neuron Studio concept edit"):
        load_edits(tmp_path / "bad.safetensors")
