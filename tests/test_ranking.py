"""Causal unit ranking on tiny real generators: exact, fast, multi-seed, hooks, progress, errors, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from studio.core.errors import Cancelled, LayerNotFound, MaskError
from studio.core.hooks import UnitEdit, count_hooks
from studio.ranking import (Ranking, UnitScore, best_units, measure_effect, rank_layers, rank_units,
                            specificity_score)
from tests.planted import PLANTED, PlantedGenerator, PrefixSteppedGenerator, SteppedGenerator
from tests.toy import ToyGenerator


def left_half(size: int) -> torch.Tensor:
    mask = torch.zeros(size, size)
    mask[:, : size // 2] = 1.0
    return mask


def loop_effects(gen, samples, mask, layer, units, op="off", value=0.0, steps=None):
    """The reference: one full render per unit with an Editor hook, effects averaged over the images."""
    masks = mask if mask.dim() == 3 else mask.expand(len(samples), *mask.shape)
    with torch.inference_mode(), gen.editor() as editor:
        base = gen.render(samples)
        rows = []
        for unit in range(units):
            editor.set([UnitEdit(layer, unit, op, value, steps=steps)])
            inside, outside = measure_effect(base, gen.render(samples), masks)
            rows.append((float(inside.mean()), float(outside.mean())))
    return torch.tensor(rows)


def by_unit(ranking: Ranking) -> torch.Tensor:
    rows = torch.zeros(len(ranking.units), 2)
    for u in ranking.units:
        rows[u.unit] = torch.tensor([u.inside, u.outside])
    return rows


@pytest.fixture
def planted():
    return PlantedGenerator()


# -- exact ranking -----------------------------------------------------------------------------------------------
def test_every_unit_appears_once_best_first(toy):
    ranking = rank_units(toy, [toy.sample(1), toy.sample(2)], left_half(32), "blocks.1")
    assert sorted(u.unit for u in ranking.units) == list(range(16))
    scores = [u.score for u in ranking.units]
    assert scores == sorted(scores, reverse=True)
    assert all(u.exact for u in ranking.units) and ranking.method == "exact" and ranking.seeds == [1, 2]
    assert ranking.top(3) == ranking.units[:3] and ranking.seconds > 0
    assert count_hooks(toy.module) == 0


def test_the_planted_unit_ranks_first(planted):
    samples = [planted.sample(s) for s in (1, 2, 3)]
    ranking = rank_units(planted, samples, left_half(16), "features")
    best = ranking.units[0]
    assert best.unit == PLANTED
    assert best.outside < 1e-6 < best.inside  # its change lands only inside the mask
    assert all(u.outside > 0.1 * u.inside for u in ranking.units[1:])  # the others change both halves


def test_exact_batched_equals_the_per_unit_full_render_loop(toy):
    samples = [toy.sample(3), toy.sample(4), toy.sample(5)]
    mask = left_half(32)
    ranking = rank_units(toy, samples, mask, "blocks.0", chunk=7)  # chunks that split a unit's images
    torch.testing.assert_close(by_unit(ranking), loop_effects(toy, samples, mask, "blocks.0", 32),
                               rtol=1e-4, atol=1e-6)
    scores = {u.unit: u.score for u in ranking.units}
    expected = specificity_score(by_unit(ranking)[:, 0], by_unit(ranking)[:, 1])
    assert all(abs(scores[c] - float(expected[c])) < 1e-7 for c in range(32))


def test_several_seeds_average_the_per_seed_effects(toy):
    mask = left_half(32)
    both = by_unit(rank_units(toy, [toy.sample(1), toy.sample(2)], mask, "blocks.1"))
    one = by_unit(rank_units(toy, [toy.sample(1)], mask, "blocks.1"))
    two = by_unit(rank_units(toy, [toy.sample(2)], mask, "blocks.1"))
    torch.testing.assert_close(both, (one + two) / 2, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(one, two)


def test_one_mask_per_image(toy):
    masks = torch.stack([left_half(32), left_half(32).flip(-1)])
    samples = [toy.sample(1), toy.sample(2)]
    both = by_unit(rank_units(toy, samples, masks, "blocks.1"))
    first = by_unit(rank_units(toy, samples[:1], masks[0], "blocks.1"))
    second = by_unit(rank_units(toy, samples[1:], masks[1], "blocks.1"))
    torch.testing.assert_close(both, (first + second) / 2, rtol=1e-5, atol=1e-7)


def test_mean_ablation_sets_the_unit_to_its_mean(toy):
    samples = [toy.sample(1), toy.sample(2)]
    acts = toy.trace(samples, ["blocks.1"])["blocks.1"]
    ranking = rank_units(toy, samples, left_half(32), "blocks.1", ablation="mean")
    got = by_unit(ranking)
    for unit in (0, 7):
        expected = loop_effects(toy, samples, left_half(32), "blocks.1", 16, "set", float(acts[:, unit].mean()))
        torch.testing.assert_close(got[unit], expected[unit], rtol=1e-4, atol=1e-6)
    assert ranking.ablation == "mean"
    assert not torch.allclose(got, by_unit(rank_units(toy, samples, left_half(32), "blocks.1")))


# -- fast ranking ------------------------------------------------------------------------------------------------
def test_fast_ranking_checks_its_top_candidates_and_finds_the_planted_unit(planted):
    samples = [planted.sample(s) for s in (1, 2)]
    exact = rank_units(planted, samples, left_half(16), "features")
    fast = rank_units(planted, samples, left_half(16), "features", method="fast", candidates=3)
    assert fast.method == "fast" and fast.units[0].unit == PLANTED and fast.units[0].exact
    assert sorted(u.unit for u in fast.units) == list(range(8))
    assert len(fast.exact_units) == 3
    exact_rows = {u.unit: u for u in exact.units}
    for u in fast.units:
        if u.exact:  # checked units carry the exact numbers
            assert u.inside == pytest.approx(exact_rows[u.unit].inside, rel=1e-5, abs=1e-8)
            assert u.outside == pytest.approx(exact_rows[u.unit].outside, rel=1e-5, abs=1e-8)


def test_fast_estimate_tracks_the_exact_effects(toy):
    samples = [toy.sample(1), toy.sample(2)]
    exact = by_unit(rank_units(toy, samples, left_half(32), "blocks.0"))
    fast = by_unit(rank_units(toy, samples, left_half(32), "blocks.0", method="fast", candidates=0))
    for column in (0, 1):
        corr = np.corrcoef(exact[:, column].numpy(), fast[:, column].numpy())[0, 1]
        assert corr > 0.8


def test_fast_estimate_with_colours_together_tracks_the_exact_effects_and_checks_its_argument(toy, planted):
    found = rank_units(planted, [planted.sample(1), planted.sample(2)], left_half(16), "features", method="fast",
                       candidates=0, colours="together")
    assert found.units[0].unit == PLANTED
    samples = [toy.sample(1), toy.sample(2)]
    exact = by_unit(rank_units(toy, samples, left_half(32), "blocks.0"))
    together = by_unit(rank_units(toy, samples, left_half(32), "blocks.0", method="fast", candidates=0,
                                  colours="together"))
    each = by_unit(rank_units(toy, samples, left_half(32), "blocks.0", method="fast", candidates=0))
    assert not torch.allclose(together, each)  # a different estimate, not the default under another name
    for column in (0, 1):  # the toy's colours move apart, so one summed pass is rougher than three
        assert np.corrcoef(exact[:, column].numpy(), together[:, column].numpy())[0, 1] > 0.5
    with pytest.raises(ValueError, match="together"):
        rank_units(toy, samples, left_half(32), "blocks.0", method="fast", colours="mixed")


def test_vector_layers_rank_exactly_and_fast(toy):
    samples = [toy.sample(1), toy.sample(2)]
    exact = rank_units(toy, samples, left_half(32), "fc", chunk=64)
    assert sorted(u.unit for u in exact.units) == list(range(512))
    torch.testing.assert_close(by_unit(exact)[:8], loop_effects(toy, samples, left_half(32), "fc", 8),
                               rtol=1e-4, atol=1e-6)
    fast = rank_units(toy, samples, left_half(32), "fc", method="fast", candidates=4)
    assert len(fast.exact_units) == 4 and sorted(u.unit for u in fast.units) == list(range(512))
    corr = np.corrcoef(by_unit(exact)[:, 0].numpy(), by_unit(fast)[:, 0].numpy())[0, 1]
    assert corr > 0.8


# -- models without forward_from: hooks, step windows, guidance ------------------------------------------------
@pytest.mark.parametrize("guidance", [False, True])
def test_full_render_path_equals_the_loop_with_step_windows(guidance):
    gen = SteppedGenerator(steps=3, guidance=guidance)
    samples = [gen.sample(1), gen.sample(2)]
    mask = left_half(16)
    whole = rank_units(gen, samples, mask, "features", chunk=3)
    torch.testing.assert_close(by_unit(whole), loop_effects(gen, samples, mask, "features", 8), rtol=1e-4, atol=1e-6)
    late = rank_units(gen, samples, mask, "features", steps=(1, 3))
    torch.testing.assert_close(by_unit(late), loop_effects(gen, samples, mask, "features", 8, steps=(1, 3)),
                               rtol=1e-4, atol=1e-6)
    assert not torch.allclose(by_unit(late), by_unit(whole))
    assert count_hooks(gen.module) == 0 and gen.clock.step is None


def test_a_window_after_step_zero_runs_the_shared_prefix_once():
    gen = PrefixSteppedGenerator(steps=3)
    samples = [gen.sample(1), gen.sample(2)]
    late = rank_units(gen, samples, left_half(16), "features", steps=(2, 3), chunk=5)
    assert gen.prefix_calls == [2]
    torch.testing.assert_close(by_unit(late), loop_effects(gen, samples, left_half(16), "features", 8, steps=(2, 3)),
                               rtol=1e-4, atol=1e-6)
    fast = rank_units(gen, samples, left_half(16), "features", steps=(2, 3), method="fast", candidates=2)
    assert len(fast.exact_units) == 2 and fast.units[0].unit == PLANTED


def test_partial_layers_with_a_step_window_render_in_full(planted):
    samples = [planted.sample(1)]
    windowed = rank_units(planted, samples, left_half(16), "features", steps=(0, 5))
    torch.testing.assert_close(by_unit(windowed), by_unit(rank_units(planted, samples, left_half(16), "features")),
                               rtol=1e-4, atol=1e-6)


def test_fast_ranking_through_full_renders():
    gen = SteppedGenerator(steps=1)
    samples = [gen.sample(1), gen.sample(2)]
    fast = rank_units(gen, samples, left_half(16), "features", method="fast", candidates=2)
    assert fast.units[0].unit == PLANTED and len(fast.exact_units) == 2
    mean = rank_units(gen, samples, left_half(16), "features", method="fast", ablation="mean", candidates=2)
    assert sorted(u.unit for u in mean.units) == list(range(8))
    assert count_hooks(gen.module) == 0


class NoGradStepped(SteppedGenerator):
    """Renders under no_grad, like diffusers pipelines: no gradients for the fast estimate."""

    @torch.no_grad()
    def render(self, samples, start=None):
        return super().render(samples, start)


def test_fast_ranking_without_gradients_checks_every_unit():
    gen = NoGradStepped(steps=2)
    ranking = rank_units(gen, [gen.sample(1)], left_half(16), "features", method="fast", candidates=2)
    assert len(ranking.exact_units) == 8 and any("checked exactly" in n for n in ranking.notes)
    assert count_hooks(gen.module) == 0


@pytest.mark.parametrize("stepped", [False, True])
def test_fast_ranking_inside_inference_mode(planted, stepped):
    gen = SteppedGenerator(steps=2) if stepped else planted
    samples = [gen.sample(1), gen.sample(2)]
    plain = rank_units(gen, samples, left_half(16), "features", method="fast", candidates=2)
    with torch.inference_mode():  # how the GUI's model thread calls it
        inside = rank_units(gen, samples, left_half(16), "features", method="fast", candidates=2)
    assert [(u.unit, u.exact) for u in inside.units] == [(u.unit, u.exact) for u in plain.units]
    torch.testing.assert_close(by_unit(inside), by_unit(plain))


def test_mean_ablation_through_full_renders_uses_the_mean():
    gen = SteppedGenerator(steps=1)
    samples = [gen.sample(1), gen.sample(2)]
    acts = gen.trace(samples, ["features"])["features"]
    got = by_unit(rank_units(gen, samples, left_half(16), "features", ablation="mean"))
    expected = loop_effects(gen, samples, left_half(16), "features", 8, "set", float(acts[:, 2].mean()))
    torch.testing.assert_close(got[2], expected[2], rtol=1e-4, atol=1e-6)


# -- progress, cancellation, memory -----------------------------------------------------------------------------
def test_progress_reports_fractions_up_to_one(toy):
    updates = []
    rank_units(toy, [toy.sample(1)], left_half(32), "blocks.0", chunk=4, progress=updates.append)
    fractions = [u.fraction for u in updates]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert len(updates) >= 8 and all(u.unit == "units" and u.rate >= 0 for u in updates)
    fast = []
    rank_units(toy, [toy.sample(1)], left_half(32), "blocks.0", method="fast", progress=fast.append)
    assert fast[-1].fraction == 1.0


def test_cancel_stops_within_a_chunk(toy):
    seen = []

    def stop_after_first_chunk(update):
        seen.append(update.done)
        return update.done == 0

    with pytest.raises(Cancelled):
        rank_units(toy, [toy.sample(1)], left_half(32), "blocks.0", chunk=4, progress=stop_after_first_chunk)
    assert seen == [0, 4]
    assert count_hooks(toy.module) == 0


class OutOfMemoryToy(ToyGenerator):
    """forward_from fails like a full GPU for batches above ``limit`` images."""

    limit = 3

    def forward_from(self, layer, activation, samples):
        if activation.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward_from(layer, activation, samples)


def test_out_of_memory_halves_the_chunk_and_goes_on(toy):
    gen = OutOfMemoryToy()
    samples = [gen.sample(1), gen.sample(2)]
    ranking = rank_units(gen, samples, left_half(32), "blocks.1", chunk=16)
    torch.testing.assert_close(by_unit(ranking), by_unit(rank_units(toy, samples, left_half(32), "blocks.1")))
    assert any("Memory ran out at 16 images per pass; ranked with 2" in n for n in ranking.notes)


# -- masks and names ---------------------------------------------------------------------------------------------
def test_empty_mask_is_refused(toy):
    with pytest.raises(MaskError, match="empty"):
        rank_units(toy, [toy.sample(1)], torch.zeros(32, 32), "blocks.0")


def test_mask_of_another_shape_is_refused(toy):
    with pytest.raises(MaskError, match="shapes differ"):
        rank_units(toy, [toy.sample(1)], torch.ones(32, 48), "blocks.0")
    with pytest.raises(MaskError, match="2 masks were given for 1 images"):
        rank_units(toy, [toy.sample(1)], torch.ones(2, 32, 32), "blocks.0")


def test_mask_of_the_same_aspect_is_resized_with_a_note(toy):
    ranking = rank_units(toy, [toy.sample(1)], left_half(64), "blocks.1")
    assert any("was 64x64; resized to the image's 32x32" in n for n in ranking.notes)
    torch.testing.assert_close(by_unit(ranking), by_unit(rank_units(toy, [toy.sample(1)], left_half(32), "blocks.1")))


def test_unknown_layer_names_the_nearest(toy):
    with pytest.raises(LayerNotFound, match="Nearest: blocks.1"):
        rank_units(toy, [toy.sample(1)], left_half(32), "block.1")


def test_measure_effect_weights_pixels_by_the_mask():
    before = torch.zeros(1, 3, 2, 2)
    after = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]).expand(1, 3, 2, 2)
    inside, outside = measure_effect(before, after, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert float(inside) == 1.0 and float(outside) == 0.0
    inside, outside = measure_effect(before, after, torch.tensor([[0.5, 0.5], [0.0, 0.0]]))
    assert float(inside) == pytest.approx(0.5) and float(outside) == pytest.approx(0.5 / 3)


# -- layers and json -------------------------------------------------------------------------------------------
def test_rank_layers_puts_the_most_specific_layer_first(toy):
    updates = []
    summaries = rank_layers(toy, [toy.sample(1)], left_half(32), method="exact", top=3, progress=updates.append)
    assert [s.layer for s in summaries] != [] and {s.layer for s in summaries} == {"blocks.0", "blocks.1", "blocks.2"}
    means = [s.mean_top_score for s in summaries]
    assert means == sorted(means, reverse=True)
    for s in summaries:
        assert len(s.ranking.units) == s.units and s.best_score == s.ranking.units[0].score
    assert updates[-1].done == updates[-1].total == 32 + 16 + 8


def test_best_units_pools_layers_by_score(toy):
    summaries = [s.ranking for s in rank_layers(toy, [toy.sample(1)], left_half(32), method="exact")]
    pooled = sorted(((u.score, r.layer, u.unit) for r in summaries for u in r.units if u.score > 0),
                    reverse=True)
    best = best_units(summaries, top=10)
    assert best == [(layer, unit) for _, layer, unit in pooled[:10]]
    assert len({layer for layer, _ in best}) > 1  # the best units of this mask lie in more than one layer
    top_score = pooled[0][0]
    kept = best_units(summaries, top=10, min_share=0.9)
    assert kept == [(layer, unit) for score, layer, unit in pooled[:10] if score >= 0.9 * top_score]
    assert 1 <= len(kept) < len(best) and best_units(summaries, top=0) == [] and best_units([], top=5) == []
    one = summaries[0]  # one layer: its own ranking order, positive scores only
    assert best_units([one], top=5) == [(one.layer, u.unit) for u in one.top(5) if u.score > 0]


def test_ranking_round_trips_through_json(toy):
    ranking = rank_units(toy, [toy.sample(1)], left_half(64), "blocks.2", method="fast", candidates=2)
    data = json.loads(json.dumps(ranking.to_json()))
    assert Ranking.from_json(data) == ranking
    assert isinstance(ranking.units[0], UnitScore)


# -- command line ------------------------------------------------------------------------------------------------
def test_cli_rank_json(toy_registry, tmp_path, capsys):
    from studio.cli import main

    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    argv = ["rank", "--model", "toy", "--seeds", "1,2", "--mask", str(tmp_path / "mask.png"), "--layer", "blocks.1",
            "--method", "fast", "--top", "5", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["layer"] == "blocks.1" and data["method"] == "fast" and data["seconds"] > 0
    assert len(data["units"]) == 5
    assert set(data["units"][0]) == {"unit", "score", "inside", "outside", "exact"}
    assert "units" in captured.err  # the progress bar


def test_cli_rank_all_layers_and_errors(toy_registry, tmp_path, capsys):
    from studio.cli import main

    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(tmp_path / "full.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "empty.png")
    assert main(["rank", "--model", "toy", "--mask", str(tmp_path / "full.png"), "--all-layers", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "blocks.0" in out and "blocks.2" in out
    assert main(["rank", "--model", "toy", "--mask", str(tmp_path / "empty.png"), "--layer", "blocks.0"]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["rank", "--model", "toy", "--mask", str(tmp_path / "full.png"), "--layer", "blocks9"]) == 2
    assert "Nearest" in capsys.readouterr().err


def test_bench_figures_on_a_small_model(toy):
    from studio.bench.rank import measure

    result = measure(toy, "blocks.1", seeds=2, sets=1, naive_units=4, repeats=1)
    for key in ("exact_units_per_s", "fast_speedup", "top20_recall", "naive_speedup"):
        assert result[key] > 0
    row = result["sets"][0]
    assert row["naive_max_abs_diff"] < 1e-5  # the naive loop and the exact ranking measure the same thing
    assert result["naive_units_timed"] == 4 and result["naive_extrapolated"]
