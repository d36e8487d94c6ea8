"""``python -m studio bench concept``: runs end to end on a tiny Rooms file; its baseline and SD 1.5 stand-in are right."""
from __future__ import annotations

import json

import pytest
import torch

from studio.bench.concept import SD15_TEXT, SD15_WIDTHS, RoomsConceptBench, Sd15Shapes, dense_solve, sd15_timing
from studio.cli import main
from studio.concept import ConceptEdit, ConceptEditor, ConceptEditSpec
from tests.toy_text import ToyTextGenerator


@pytest.fixture
def tiny_rooms(tmp_path):
    from studio.core.rooms import text as rtext
    from studio.core.rooms import world
    from studio.core.rooms.model import RoomsConfig, RoomsGenerator, save_weights

    cfg = RoomsConfig(latent_dim=world.LATENT_DIM, vocab_size=len(rtext.VOCAB), text_dim=8, stem_res=4,
                      widths=(8, 8, 4, 4), attn_blocks=(0, 1), attn_heads=2, attn_head_dim=4, stem_hidden=8)
    torch.manual_seed(0)
    path = tmp_path / "tiny-rooms.safetensors"
    save_weights(RoomsGenerator(cfg).eval(), path, list(rtext.VOCAB))
    return path


def test_bench_runs_on_a_rooms_file_and_prints_json(tiny_rooms, capsys):
    assert main(["bench", "concept", "--model", str(tiny_rooms), "--seeds", "1", "--no-compare", "--no-sd15",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("efficacy", "generality", "specificity", "facts_kept"):
        assert 0.0 <= out[key] <= 1.0
    assert out["edits_solved"] == out["edits"] == 8 and out["rank"] == 1
    assert out["joint"]["rank"] == 8
    assert out["prompts_per_edit"] == {"efficacy": 1, "generality": 1, "specificity": 7}
    assert set(out["targets"]) == {"efficacy", "generality", "specificity"}


def test_sd15_timing_compares_with_the_dense_solve_on_the_same_request():
    out = sd15_timing(repeats=1, widths=SD15_WIDTHS[:2])
    assert out["sd15_layers"] == 2 and out["sd15_rank"] == 4  # "red car", "van gogh": the words that change
    assert out["sd15_max_abs_diff_vs_dense"] < 1e-3
    assert out["sd15_edit_seconds"] > 0 and out["sd15_dense_seconds"] > 0


def test_token_choices_giving_the_same_weights_share_one_evaluation(tiny_rooms):
    from models.registry import open_model

    bench = RoomsConceptBench(open_model(str(tiny_rooms), device="cpu"), seeds=1)
    table = bench.compare()
    assert table["last/word"]["same_weights_as"] == "concept/word"  # one-word colours: one row either way
    assert table["all/phrase"]["same_weights_as"] == "concept/phrase"  # padding rows are zero in Rooms
    assert table["last/phrase"]["edits_solved"] == 0  # "walls" is the last word on both sides: nothing moves
    assert "same_weights_as" not in table["concept/phrase"]


def test_the_dense_baseline_agrees_with_the_factored_solve():
    gen, other = ToyTextGenerator(), ToyTextGenerator()
    spec = ConceptEditSpec([ConceptEdit("replace", "red", "blue"), ConceptEdit("erase", "bed")], ["green", "a room"])
    ConceptEditor(gen).apply(spec)
    dense_solve(other, spec)
    for a, b in zip(gen.cross_attention(), other.cross_attention()):
        assert torch.allclose(a.to_k.weight, b.to_k.weight, atol=1e-4)
        assert torch.allclose(a.to_v.weight, b.to_v.weight, atol=1e-4)


def test_sd15_stand_in_has_the_shapes_and_causal_rows():
    model = Sd15Shapes()
    found = model.cross_attention()
    assert [ca.to_k.weight.shape for ca in found] == [(w, SD15_TEXT) for w in SD15_WIDTHS]
    a, b = model.encode_prompt("a red car"), model.encode_prompt("a red truck")
    assert a.embeddings.shape == (77, 768) and a.content.sum() == 3
    assert torch.equal(a.embeddings[:3], b.embeddings[:3])  # start, "a", "red": same prefix, same rows
    assert not torch.equal(a.embeddings[3], b.embeddings[3])
