"""Stable Diffusion adapter on tiny random SD 1.x- and SDXL-shaped pipelines, written and reopened offline."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from models.registry import open_model
from models.sd_convert import pipeline_to_original, save_single_file
from studio.core.errors import Cancelled, ModelOpenError, StudioError
from studio.core.hooks import UnitEdit, count_hooks
from models.sd_random import tiny_sdxl

STEPS = 3


def _write_single_files(root, pipe, build):
    """The pipeline as a .safetensors and a .ckpt (original layout), with a tokenizer folder beside them (they
    carry none)."""
    save_single_file(pipe, root / "model.safetensors")
    save_single_file(pipe, root / "model.ckpt", ckpt=True)
    (root / "tokenizer").mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(build / "bpe" / name, root / "tokenizer" / name)
    return pipe


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory, tiny_sd_files):
    root = tmp_path_factory.mktemp("sd1")
    shutil.copytree(tiny_sd_files.folder, root / "folder")  # a copy: tests here copy and break parts of it
    _PIPES["sd"] = _write_single_files(root, tiny_sd_files.pipe, tiny_sd_files.build)
    return root


@pytest.fixture(scope="module")
def xl_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl")
    pipe = tiny_sdxl(root / "build")
    pipe.save_pretrained(root / "folder")
    _PIPES["xl"] = _write_single_files(root, pipe, root / "build")
    return root


_PIPES: dict = {}  # the pipelines the fixtures wrote, as built


@pytest.fixture(scope="module")
def sd(sd_dir):
    return open_model(str(sd_dir / "folder"), device="cpu")


@pytest.fixture(scope="module")
def xl(xl_dir):
    return open_model(str(xl_dir / "folder"), device="cpu")


def sample(gen, seed=3, prompt="a red house", **options):
    options = {"steps": STEPS, "size": 32, "scheduler": "ddim", **options}
    return gen.sample(seed, prompt, **options)


def render(gen, samples, **kw):
    with torch.inference_mode():
        return gen.render(list(samples), **kw)


# -- opening ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["sd", "xl"])
def test_folder_and_single_files_open_to_the_same_images(which, request):
    root = request.getfixturevalue(f"{which}_dir")
    folder = request.getfixturevalue(which)
    assert folder.family == "diffusion" and folder.kind == ("sdxl" if which == "xl" else "sd1")
    s = sample(folder)
    image = render(folder, [s])
    assert image.shape == (1, 3, 32, 32) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert torch.equal(render(folder, [s]), image)  # same seed, same image
    assert not torch.equal(render(folder, [s.with_seed(4)]), image)
    for name in ("model.safetensors", "model.ckpt"):
        single = open_model(str(root / name), device="cpu")
        assert single.kind == folder.kind
        assert torch.allclose(render(single, [s]), image, atol=1e-5), name


def test_half_precision_runs_the_unet_in_fp16_and_keeps_the_vae_in_fp32(xl_dir, xl):
    half = open_model(str(xl_dir / "folder"), device="cpu", precision="fp16")  # what GPUs get by default
    assert half.dtype == half.unet.dtype == torch.float16 and half.pipe.vae.dtype == torch.float32
    s = sample(xl)
    image = render(half, [s])
    assert image.dtype == torch.float32 and torch.allclose(image, render(xl, [s]), atol=0.02)


def test_render_matches_the_diffusers_pipeline_call(sd):
    s = sample(sd, guidance=6.0)
    plan = sd.plan([s])
    latents, _ = sd.sampler.noise([s.seed], plan)
    with torch.inference_mode():
        ref = sd.pipe(s.prompt, num_inference_steps=STEPS, guidance_scale=6.0, height=32, width=32, latents=latents,
                      output_type="pt").images
    assert torch.allclose(render(sd, [s]), ref, atol=1e-6)


def test_a_sample_is_the_same_alone_or_in_a_batch(sd):
    a, b = sample(sd, 1), sample(sd, 2, "a blue tree", negative_prompt="red", guidance=3.0)
    both = render(sd, [a, b])
    assert torch.allclose(both[0], render(sd, [a])[0], atol=1e-5)
    assert torch.allclose(both[1], render(sd, [b])[0], atol=1e-5)


def test_round_trip_of_the_original_layout_through_diffusers_converters(sd_dir, xl_dir):
    from models.sd_single_file import build_pipeline, detect_kind

    for which, root in (("sd", sd_dir), ("xl", xl_dir)):
        pipe = _PIPES[which]
        state = pipeline_to_original(pipe)
        kind = detect_kind(state)
        back = build_pipeline(state, kind, tokenizer_files=root / "tokenizer")
        for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
            if getattr(pipe, part, None) is None:
                continue
            want, got = getattr(pipe, part).state_dict(), getattr(back, part).state_dict()
            assert set(want) == set(got), part
            assert all(torch.equal(want[k], got[k]) for k in want), part
        assert back.tokenizer("a red cat").input_ids == pipe.tokenizer("a red cat").input_ids


def test_sd2_round_trip_keeps_the_unread_last_text_block(tmp_path):
    from models.sd_random import tiny_sd2
    from models.sd_single_file import build_pipeline, detect_kind

    pipe = tiny_sd2(tmp_path)
    state = pipeline_to_original(pipe)
    assert "cond_stage_model.model.transformer.resblocks.2.attn.in_proj_weight" in state  # 2 read + 1 unread
    assert detect_kind(state) == "sd2"
    back = build_pipeline(state, "sd2", tokenizer_files=tmp_path / "bpe")
    for part in ("unet", "vae", "text_encoder"):
        want, got = getattr(pipe, part).state_dict(), getattr(back, part).state_dict()
        assert set(want) == set(got) and all(torch.equal(want[k], got[k]) for k in want), part
    assert back.tokenizer.pad_token == "!" and back.scheduler.config.prediction_type == "v_prediction"


def test_detect_kind_from_keys_and_clear_refusals(tmp_path):
    from models.sd_single_file import detect_kind

    unet = "model.diffusion_model.input_blocks.0.0.weight"
    assert detect_kind([unet, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"]) == "sd1"
    assert detect_kind([unet, "cond_stage_model.model.token_embedding.weight"]) == "sd2"
    assert detect_kind([unet, "conditioner.embedders.0.transformer.text_model.x",
                        "conditioner.embedders.1.model.token_embedding.weight"]) == "sdxl"
    with pytest.raises(ModelOpenError, match="LoRA"):
        detect_kind(["lora_unet_down_blocks_0.alpha"])
    with pytest.raises(ModelOpenError, match="refiner"):
        detect_kind([unet, "conditioner.embedders.0.model.token_embedding.weight"])
    with pytest.raises(ModelOpenError, match="no text encoder"):
        detect_kind([unet])


def test_pickled_objects_in_a_ckpt_are_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "callbacks": StudioError("x")}, path)
    with pytest.raises(ModelOpenError, match="pickled Python objects"):
        open_model(str(path), device="cpu")


def test_missing_tokenizer_and_incomplete_folder_say_what_is_missing(sd_dir, tmp_path, monkeypatch):
    from models import sd_tokenizer

    monkeypatch.setattr(sd_tokenizer, "TOKENIZER_DIR", tmp_path / "none")
    monkeypatch.setattr(sd_tokenizer, "_cached_clip", lambda: None)
    monkeypatch.setattr(sd_tokenizer, "_open_clip_bpe", lambda: None)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(sd_dir / "model.safetensors", lone / "model.safetensors")
    with pytest.raises(ModelOpenError, match="vocab.json and merges.txt"):
        open_model(str(lone / "model.safetensors"), device="cpu")
    broken = tmp_path / "broken"
    shutil.copytree(sd_dir / "folder", broken)
    for f in (broken / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelOpenError, match="'unet' lacks weights"):
        open_model(str(broken), device="cpu")


def test_tokenizer_files_are_built_from_an_open_clip_style_merge_list(tmp_path, monkeypatch):
    from models import sd_tokenizer
    from models.sd_random import MERGES, write_bpe

    bpe = write_bpe(tmp_path / "pkg" / "bpe_simple_vocab_16e6.txt.gz")
    monkeypatch.setattr(sd_tokenizer, "TOKENIZER_DIR", tmp_path / "none")
    monkeypatch.setattr(sd_tokenizer, "_cached_clip", lambda: None)
    monkeypatch.setattr(sd_tokenizer, "_open_clip_bpe", lambda: bpe)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = sd_tokenizer.find_clip_tokenizer(tmp_path / "x.safetensors")
    vocab = json.loads((folder / "vocab.json").read_text())
    assert vocab["!"] == 0 and vocab["!</w>"] == 256  # CLIP's layout: printable bytes first, then with </w>
    assert vocab["<|startoftext|>"] == 512 + len(MERGES) and vocab["<|endoftext|>"] == 513 + len(MERGES)
    assert vocab["red</w>"] == 512 + MERGES.index("re d</w>")


def test_a_cached_repository_id_opens_offline_and_an_uncached_one_is_explained(sd_dir, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    repo = cache / "models--tiny--sd" / "snapshots" / ("a" * 40)
    shutil.copytree(sd_dir / "folder", repo)
    (cache / "models--tiny--sd" / "refs").mkdir()
    (cache / "models--tiny--sd" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    gen = open_model("tiny/sd", device="cpu")
    assert gen.kind == "sd1" and gen.layers()
    with pytest.raises(ModelOpenError, match="nor a model in the local Hugging Face cache"):
        open_model("tiny/absent", device="cpu")
    with pytest.raises(ModelOpenError, match="no file or folder exists"):
        open_model("tiny/absent.safetensors", device="cpu")  # a mistyped path is not taken for an id


# -- layers and edits -------------------------------------------------------------------------------------------
def test_layers_are_unet_blocks_with_latent_resolutions(sd, xl):
    names = {i.name: i for i in sd.layers()}
    assert names["down_blocks.0.resnets.0"].units == 32 and names["down_blocks.0.resnets.0"].size == (16, 16)
    assert names["down_blocks.0.downsamplers.0"].size == (8, 8)
    assert names["mid_block"].units == 64 and names["mid_block"].size == (8, 8)
    assert names["up_blocks.1.attentions.1"].kind == "attention" and names["up_blocks.1"].size == (16, 16)
    assert not any(i.partial for i in sd.layers())
    assert [i.size for i in sd.layers_at((64, 64)) if i.name == "mid_block"] == [(16, 16)]
    assert {c.name for c in xl.cross_attention()} >= {"down_blocks.1.attentions.0.transformer_blocks.1.attn2"}
    enc = xl.encode_prompt("a red cat")
    assert enc.embeddings.shape == (77, 64)  # both text encoders, concatenated: what attn2 reads
    assert enc.tokens[:4] == ["<|startoftext|>", "a</w>", "red</w>", "cat</w>"]
    assert enc.content[:5].tolist() == [False, True, True, True, False] and not enc.content[5:].any()


def test_trace_gives_one_row_per_sample_at_the_chosen_step(sd):
    a, b = sample(sd, 1), sample(sd, 2)
    with torch.inference_mode():
        acts = sd.trace([a, b], ["mid_block", "up_blocks.1.resnets.0"])
        first = sd.trace([a], ["mid_block"], step=0)["mid_block"]
    assert acts["mid_block"].shape == (2, 64, 8, 8) and acts["up_blocks.1.resnets.0"].shape == (2, 32, 16, 16)
    assert not torch.allclose(first[0], acts["mid_block"][0])  # step 0 sees other latents than the last step
    assert count_hooks(sd.module) == 0


@pytest.mark.parametrize("which", ["sd", "xl"])
def test_unit_edits_change_the_image_and_leave_no_hooks(which, request):
    gen = request.getfixturevalue(which)
    s = sample(gen)
    base = render(gen, [s])
    layer = gen.layer("up_blocks.1.resnets.1")
    with gen.editor() as editor:
        editor.set([UnitEdit(layer.name, u, "off") for u in range(layer.units)])
        assert (render(gen, [s]) - base).abs().mean() > 1e-3
        editor.set([UnitEdit(layer.name, 0, "scale", 1.0)])  # identity
        assert torch.allclose(render(gen, [s]), base, atol=1e-6)
    assert count_hooks(gen.module) == 0


def test_baking_a_unit_scale_equals_the_hook_where_it_is_exact(tiny_sd_files):
    gen = open_model(str(tiny_sd_files.folder), device="cpu")  # baking writes weights: a model of its own
    s = sample(gen)
    edits = [("down_blocks.0.downsamplers.0", 3, 0.0), ("up_blocks.0", 5, 2.0), ("up_blocks.1.resnets.0", 7, 0.5)]
    with gen.editor() as editor:
        editor.set([UnitEdit(layer, unit, "scale", gain) for layer, unit, gain in edits])
        hooked = render(gen, [s])
    assert all(gen.bake_unit_scale(layer, unit, gain) for layer, unit, gain in edits)
    assert torch.allclose(render(gen, [s]), hooked, atol=1e-5)
    assert not gen.bake_unit_scale("up_blocks.1.attentions.0", 0, 0.0)  # residual: not foldable
    assert not gen.bake_unit_scale("mid_block.resnets.0", 0, 0.0)  # identity shortcut


def test_edits_apply_only_within_their_step_window(sd):
    s = sample(sd)
    base = render(sd, [s])
    off = [UnitEdit("mid_block", u, "off", steps=(STEPS, STEPS + 5)) for u in range(64)]  # after the last step
    with sd.editor() as editor:
        editor.set(off)
        assert torch.allclose(render(sd, [s]), base, atol=1e-6)
        editor.set([UnitEdit("mid_block", u, "off", steps=(1, 2)) for u in range(64)])
        one = render(sd, [s])
        editor.set([UnitEdit("mid_block", u, "off") for u in range(64)])
        every = render(sd, [s])
    assert (one - base).abs().mean() > 1e-4 and not torch.allclose(one, every, atol=1e-4)


def test_local_edits_change_mostly_inside_the_mask(sd):
    s = sample(sd, steps=2)
    base = render(sd, [s])
    mask = torch.zeros(32, 32)
    mask[8:24, 8:24] = 1.0  # the centre quarter
    inside = mask.bool()
    layer = sd.layer("up_blocks.1.resnets.1")
    change = {}
    with sd.editor() as editor:
        for local in (True, False):
            editor.set([UnitEdit(layer.name, u, "off", local=local) for u in range(layer.units)], mask=mask)
            change[local] = (render(sd, [s]) - base).abs().mean(dim=(0, 1))
    local, everywhere = change[True], change[False]
    # random attention and group norms carry some change out of the mask; most of it stays in
    assert float(local[inside].mean()) > 2 * float(local[~inside].mean())
    assert float(local[~inside].mean()) < 0.5 * float(everywhere[~inside].mean())


# -- resuming, previews, progress ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scheduler", ["ddim", "dpm++2m", "euler-a"])
def test_resuming_from_a_cached_prefix_equals_the_full_render(sd, scheduler):
    a, b = sample(sd, 1, scheduler=scheduler, steps=4), sample(sd, 2, scheduler=scheduler, steps=4)
    full = render(sd, [a, b])
    with torch.inference_mode():
        state = sd.denoise_prefix([a, b], 2)
        resumed = sd.render([b, a, a], start=state)
    assert torch.allclose(resumed[0], full[1], atol=1e-4) and torch.allclose(resumed[1], full[0], atol=1e-4)
    assert torch.allclose(resumed[2], full[0], atol=1e-4)


def test_previews_are_smaller_and_take_fewer_steps(sd):
    calls = []
    s = sample(sd, steps=12, size=64)
    with torch.inference_mode():
        preview = sd.render([s.__class__(s.seed, s.prompt, {**s.options, "preview": True})],
                            progress=lambda u: calls.append(u.total))
    assert preview.shape[-2:] == (32, 32) and calls[-1] == 8
    assert sd.prefix_step(6, s.__class__(s.seed, s.prompt, {**s.options, "preview": True})) == 4


def test_progress_reports_every_step_and_cancelling_stops_sampling(sd):
    seen = []
    render(sd, [sample(sd, steps=4)], progress=lambda u: seen.append(u.done))
    assert seen == [1, 2, 3, 4]
    steps_run = []
    hook = sd.unet.register_forward_hook(lambda *a: steps_run.append(sd.clock.step))
    try:
        with pytest.raises(Cancelled):
            render(sd, [sample(sd, steps=10)], progress=lambda u: u.done < 2)
    finally:
        hook.remove()
    assert steps_run == [0, 1] and sd.clock.step is None


def test_samples_with_different_steps_cannot_share_a_batch(sd):
    with pytest.raises(StudioError, match="share size, steps"):
        render(sd, [sample(sd, steps=2), sample(sd, steps=3)])


# -- ranking and concept edits ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["exact", "fast"])
def test_ranking_returns_every_unit_of_a_layer(sd, method):
    from studio.ranking import rank_units

    mask = torch.zeros(32, 32)
    mask[8:24, 8:24] = 1.0
    s = sample(sd, steps=2)
    calls = []
    with torch.inference_mode():
        prefix = sd.denoise_prefix
        sd.denoise_prefix = lambda *a, **k: calls.append(a[1]) or prefix(*a, **k)  # see the shared prefix used
        try:
            ranking = rank_units(sd, [s], mask, "down_blocks.0.downsamplers.0", steps=(1, 2), chunk=16,
                                 method=method)
        finally:
            del sd.denoise_prefix
    assert sorted(u.unit for u in ranking.units) == list(range(32))
    assert any(u.inside > 0 for u in ranking.units) and any(u.exact for u in ranking.units)
    assert calls == [1]  # step 0 ran once for all units
    assert count_hooks(sd.module) == 0


def test_concept_edit_changes_cross_attention_with_the_expected_rank(sd):
    from studio.concept import ConceptEdit, ConceptEditSpec, editor_for

    before = {c.name: (c.to_k.weight.detach().clone(), c.to_v.weight.detach().clone()) for c in sd.cross_attention()}
    s = sample(sd)
    base = render(sd, [s])
    editor = editor_for(sd)
    try:
        applied = editor.apply(ConceptEditSpec([ConceptEdit("replace", "red", "blue")], preserve=["tree"]))
        assert applied.rank == 1  # one word, one edit vector
        assert set(applied.factors) == {f"{c.name}.{p}" for c in sd.cross_attention() for p in ("to_k", "to_v")}
        for c in sd.cross_attention():
            for old, new in zip(before[c.name], (c.to_k.weight, c.to_v.weight)):
                delta = (new.detach() - old).double()
                assert delta.abs().max() > 0
                assert int(torch.linalg.matrix_rank(delta, rtol=1e-6)) == 1
        assert not torch.allclose(render(sd, [s]), base, atol=1e-4)  # "a red house" renders differently now
    finally:
        editor.revert()
    assert torch.equal(render(sd, [s]), base)
