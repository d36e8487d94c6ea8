"""Export: exact edits baked, the rest kept as a recipe, every format reopened and compared, LoRAs exact."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from studio.cli import main
from studio.core.errors import ModelOpenError, StudioError
from studio.core.hooks import UnitEdit, count_hooks
from studio.export import ExportError, export
from studio.exported import open_model
from studio.lora import LoraError, lora_targets, merge_lora, read_lora, write_lora
from studio.recipe import Recipe, RecipeError, apply_recipe, load_recipe, save_recipe
from studio.session import Session, save_session
from tests.toy import ToyGenerator

# scale/off everywhere with gain >= 0: exact on the toy; the others stay hooks
BAKED = [UnitEdit("blocks.0", 1, "off"), UnitEdit("blocks.1", 2, "scale", 0.3), UnitEdit("fc", 7, "scale", -2.0)]
KEPT = [UnitEdit("blocks.1", 3, "scale", -1.0), UnitEdit("blocks.2", 4, "scale", 3.0, local=True),
        UnitEdit("blocks.0", 5, "set", 0.2), UnitEdit("blocks.2", 6, "off", steps=(0, 3))]


@pytest.fixture
def registry(monkeypatch):
    from models import registry

    monkeypatch.setattr(registry, "FAMILY_MODULES", ["tests.toy", "tests.toy_text", *registry.FAMILY_MODULES])
    return registry


def _mask() -> torch.Tensor:
    mask = torch.zeros(32, 32)
    mask[8:24, 4:20] = 1.0
    return mask


def _edited_render(gen, edits, samples, mask=None) -> torch.Tensor:
    with torch.inference_mode(), gen.editor() as editor:
        editor.set(edits, mask=mask)
        return gen.render(samples)


def _concept_model(registry):
    from studio.concept import ConceptEdit, ConceptEditSpec, editor_for

    gen = open_model("toy-text")
    editor = editor_for(gen)
    editor.apply(ConceptEditSpec([ConceptEdit("replace", "red", "blue")], preserve=["green"]))
    editor.apply(ConceptEditSpec([ConceptEdit("erase", "lamp")]))
    return gen, editor


def test_studio_export_bakes_exact_edits_keeps_the_rest_and_reopens_the_same(registry, tmp_path):
    gen = open_model("toy")
    before = {k: v.clone() for k, v in gen.module.state_dict().items()}
    samples = [gen.sample(1), gen.sample(2)]
    report = export(gen, BAKED + KEPT, None, "studio", tmp_path / "edited.safetensors", mask=_mask(), samples=samples)
    assert report.baked == BAKED
    assert [e for e, _ in report.kept] == KEPT
    reasons = dict((e.unit, why) for e, why in report.kept)
    assert "cannot fold" in reasons[3] and "inside the mask" in reasons[4] and "sets a value" in reasons[5]
    assert "steps 0:3" in reasons[6]
    assert report.verified and report.max_abs_diff < 1e-4 and "same image" in report.text()
    # the app's model is untouched, bit for bit
    assert all(torch.equal(v, before[k]) for k, v in gen.module.state_dict().items())
    assert count_hooks(gen.module) == 0

    reopened = open_model(str(tmp_path / "edited.safetensors"))  # through the registry, as a user would
    expected = _edited_render(gen, BAKED + KEPT, samples, _mask())
    with torch.inference_mode():
        got = reopened.render(samples)
    assert (got - expected).abs().max() < 1e-4
    assert not torch.allclose(got, gen.render(samples))  # the edits really are in there
    weights = load_file(str(tmp_path / "edited.safetensors"))
    assert torch.count_nonzero(weights["blocks.0.conv.weight"][1]) == 0  # "off" baked into the weights
    assert reopened.edited_layers(kept=True) == ["blocks.0", "blocks.1", "blocks.2"]
    assert reopened.edited_layers() == []  # its own recipe is part of the model, not another editor's edits
    assert reopened.export_base.source == "toy" and reopened.source.endswith("edited.safetensors")


def test_a_wrong_bake_is_caught_by_the_check(registry, tmp_path, monkeypatch):
    monkeypatch.setattr(ToyGenerator, "bake_unit_scale", lambda self, layer, unit, gain: True)  # claims, does nothing
    gen = open_model("toy")
    report = export(gen, [UnitEdit("blocks.0", 1, "off")], None, "studio", tmp_path / "bad.safetensors")
    assert not report.verified and report.max_abs_diff > 1e-4
    assert "DIFFERENT image" in report.text()


def test_an_export_that_does_not_reopen_is_reported(registry, tmp_path, monkeypatch):
    from studio.exported import ExportedFamily

    def broken(self, probe, device, precision):
        raise ModelOpenError("damaged on the way")

    monkeypatch.setattr(ExportedFamily, "open_path", broken)
    with pytest.raises(ExportError, match="e.safetensors was written but could not be reopened to check it "
                                          r"\(damaged on the way\); do not use it"):
        export(open_model("toy"), BAKED, None, "studio", tmp_path / "e.safetensors")


def test_recipe_export_reapplies_every_edit_to_the_original(registry, tmp_path):
    gen, editor = _concept_model(registry)
    edits = [UnitEdit("conv", 2, "scale", 1.5), UnitEdit("conv", 5, "set", 0.1, local=True)]
    mask = torch.zeros(16, 16)
    mask[:8] = 1
    samples = [gen.sample(3, "a room with red walls and a lamp")]
    report = export(gen, edits, editor, "recipe", tmp_path / "edits.json", mask=mask, samples=samples)
    assert report.verified and report.baked == [] and [e for e, _ in report.kept] == edits
    assert report.concept == "2, in the recipe"
    expected = _edited_render(gen, edits, samples, mask)

    recipe = load_recipe(tmp_path / "edits.json")
    assert recipe.model.source == "toy-text" and torch.equal(recipe.mask, mask)
    fresh = open_model("toy-text")
    applied = apply_recipe(fresh, recipe)
    with torch.inference_mode():
        assert torch.equal(fresh.render(samples), expected)  # same computation: bit for bit
    applied.close()
    assert count_hooks(fresh.module) == 0


def test_lora_of_a_concept_edit_reproduces_the_merged_weights(registry, tmp_path):
    gen, editor = _concept_model(registry)
    report = export(gen, [UnitEdit("conv", 1, "off")], editor, "lora", tmp_path / "concept.safetensors",
                    samples=[gen.sample(5, "a room with red walls")])
    assert report.verified and report.concept == "2, as the LoRA"
    assert [f.name for f in report.files] == ["concept.safetensors", "concept.safetensors.recipe.json"]

    tensors = load_file(str(tmp_path / "concept.safetensors"))
    name = "lora_unet_attn0_to_k"  # kohya layout: lora_unet_ + module path with underscores
    assert {f"{name}.lora_up.weight", f"{name}.lora_down.weight", f"{name}.alpha"} <= set(tensors)
    assert tensors[f"{name}.lora_up.weight"].shape == (32, 2) and tensors[f"{name}.lora_down.weight"].shape == (2, 16)
    assert float(tensors[f"{name}.alpha"]) == 2.0  # alpha = rank: the loaders' scale alpha / rank is 1

    fresh = open_model("toy-text")
    merged = merge_lora(fresh, tmp_path / "concept.safetensors")
    assert len(merged) == 4
    edited, reopened = lora_targets(gen), lora_targets(fresh)
    for n in merged:
        assert torch.allclose(reopened[n].weight, edited[n].weight, atol=1e-6, rtol=0)
    untouched = set(lora_targets(fresh)) - set(merged)
    assert all(torch.equal(reopened[n].weight, edited[n].weight) for n in untouched)


def test_lora_writer_on_known_factors(registry, tmp_path):
    gen = open_model("toy-text")
    original = gen.module.attn1.to_v.weight.detach().clone()
    up, down = torch.randn(32, 3), torch.randn(3, 16)
    write_lora({"attn1.to_v": (up, down)}, tmp_path / "k.safetensors")
    entries = read_lora(tmp_path / "k.safetensors")
    assert list(entries) == ["lora_unet_attn1_to_v"] and entries["lora_unet_attn1_to_v"][2] == 3.0
    merge_lora(gen, tmp_path / "k.safetensors", strength=0.5)
    assert torch.allclose(gen.module.attn1.to_v.weight, original + 0.5 * up @ down, atol=1e-5)

    save_file({"lora_unet_nowhere.lora_up.weight": up, "lora_unet_nowhere.lora_down.weight": down},
              str(tmp_path / "other.safetensors"))
    with pytest.raises(LoraError, match="changes 1 layers toy-text does not have .*another model"):
        merge_lora(gen, tmp_path / "other.safetensors")
    with pytest.raises(LoraError, match="no concept edit"):
        write_lora({}, tmp_path / "none.safetensors")


def test_export_refuses_clearly(registry, tmp_path):
    gen = open_model("toy")
    with pytest.raises(ExportError, match="Unknown export format 'onnx'"):
        export(gen, [], None, "onnx", tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="name it x.safetensors"):
        export(gen, [], None, "studio", tmp_path / "x.pt")
    with pytest.raises(ExportError, match="toy has no text conditioning, so it has no concept edits"):
        export(gen, [], None, "lora", tmp_path / "x.safetensors")
    with pytest.raises(ExportError, match="no concept edit to export as a LoRA: apply one first"):
        export(open_model("toy-text"), [], None, "lora", tmp_path / "x.safetensors")
    with pytest.raises(StudioError, match="units 0..31"):
        export(gen, [UnitEdit("blocks.0", 99, "off")], None, "studio", tmp_path / "x.safetensors")
    with pytest.raises(ExportError, match="mask is 16x16 but the model renders 32x32"):
        export(gen, [], None, "studio", tmp_path / "x.safetensors", mask=torch.ones(16, 16))
    with gen.editor() as other:
        other.set([UnitEdit("blocks.1", 0, "off")])
        with pytest.raises(ExportError, match="Another editor has edits on blocks.1"):
            export(gen, [], None, "studio", tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


def test_exports_that_cannot_be_reopened_say_why(registry, tmp_path):
    gen = open_model("toy")
    path = tmp_path / "e.safetensors"
    export(gen, BAKED, None, "studio", path)
    tensors = load_file(str(path))
    from models.registry import read_safetensors_header

    meta, _ = read_safetensors_header(path)
    save_file(tensors, str(tmp_path / "newer.safetensors"), metadata={**meta, "version": "9"})
    with pytest.raises(ModelOpenError, match="newer Neuron Studio"):
        open_model(str(tmp_path / "newer.safetensors"))
    base = json.loads(meta["base"])
    save_file(tensors, str(tmp_path / "orphan.safetensors"),
              metadata={**meta, "base": json.dumps({**base, "source": str(tmp_path / "gone.toy")})})
    with pytest.raises(ModelOpenError, match="was exported from .*gone.toy, which cannot be opened here"):
        open_model(str(tmp_path / "orphan.safetensors"))
    del tensors["fc.bias"]
    save_file(tensors, str(tmp_path / "short.safetensors"), metadata=meta)
    with pytest.raises(ModelOpenError, match="does not fit toy any more"):
        open_model(str(tmp_path / "short.safetensors"))


def test_recipes_refuse_damage_newer_versions_and_other_models(registry, tmp_path):
    gen = open_model("toy")
    path = save_recipe(Recipe.of(gen, unit_edits=BAKED, mask=_mask()), tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["format"] == "neuron-studio-recipe" and data["unit_edits"][0]["op"] == "off"
    path.write_text(path.read_text()[:200])
    with pytest.raises(RecipeError, match="not readable JSON"):
        load_recipe(path)
    path.write_text(json.dumps({**data, "version": 7}))
    with pytest.raises(RecipeError, match="newer Neuron Studio"):
        load_recipe(path)
    path.write_text(json.dumps({**data, "mask": {"dtype": "float32", "shape": [5], "base64": "AAAA"}}))
    with pytest.raises(RecipeError, match="damaged"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="made for a toy model"):
        apply_recipe(open_model("toy-text"), Recipe.from_json(data))
    wide = Recipe.from_json({**data, "unit_edits": [UnitEdit("blocks.2", 40, "off").to_json()]})
    with pytest.raises(RecipeError, match="units 0..7"):
        apply_recipe(gen, wide)


def test_cli_exports_a_session_and_applies_a_recipe(registry, tmp_path, capsys):
    from PIL import Image

    gen = open_model("toy")
    session = Session.capture(gen, samples=[gen.sample(7)], masks={"m": _mask()}, active_mask="m",
                              unit_edits=BAKED + KEPT)
    save_session(session, tmp_path / "s.nstudio")
    assert main(["export", "--session", str(tmp_path / "s.nstudio"), "--format", "studio",
                 "-o", str(tmp_path / "e.safetensors")]) == 0
    out = capsys.readouterr()
    assert "baked into the weights: blocks.0:1 off" in out.out and "same image" in out.out
    assert "export [" in out.err  # progress on stderr

    assert main(["export", "--session", str(tmp_path / "s.nstudio"), "--format", "recipe", "--json",
                 "-o", str(tmp_path / "r.json")]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True
    assert main(["apply", "--recipe", str(tmp_path / "r.json"), "-o", str(tmp_path / "a.png")]) == 0
    assert Image.open(tmp_path / "a.png").size == (32, 32)
    assert main(["apply", "--model", "toy", "--recipe", str(tmp_path / "r.json"),
                 "-o", str(tmp_path / "again.safetensors")]) == 0
    assert "baked into the weights" in capsys.readouterr().out
    assert main(["apply", "--model", "toy-text", "--recipe", str(tmp_path / "r.json"),
                 "-o", str(tmp_path / "b.png")]) == 2
    assert "made for a toy model" in capsys.readouterr().err
    assert not (tmp_path / "b.png").exists()


def test_cli_export_exits_1_when_the_check_fails(registry, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ToyGenerator, "bake_unit_scale", lambda self, layer, unit, gain: True)
    gen = open_model("toy")
    save_session(Session.capture(gen, unit_edits=[UnitEdit("blocks.1", 0, "off")]), tmp_path / "s.nstudio")
    assert main(["export", "--session", str(tmp_path / "s.nstudio"), "-o", str(tmp_path / "e.safetensors")]) == 1
    assert "DIFFERENT image" in capsys.readouterr().out


@pytest.fixture
def rooms_file(tmp_path):
    """A tiny random Rooms generator written in the real Rooms weights format."""
    from studio.core.rooms import text as rtext
    from studio.core.rooms import world
    from studio.core.rooms.model import RoomsConfig, RoomsGenerator, save_weights

    cfg = RoomsConfig(latent_dim=world.LATENT_DIM, vocab_size=len(rtext.VOCAB), text_dim=8, stem_res=4,
                      widths=(16, 24, 8, 4), attn_blocks=(0, 1), attn_heads=2, attn_head_dim=4, stem_hidden=16)
    torch.manual_seed(0)
    net = RoomsGenerator(cfg).eval()
    with torch.no_grad():
        for lin in net.film:  # FiLM starts at zero; make the latent matter
            lin.weight.normal_(0, 0.3)
    path = tmp_path / "tiny-rooms.safetensors"
    save_weights(net, path, list(rtext.VOCAB))
    return path


def test_rooms_bakes_every_global_scale_exactly(rooms_file, tmp_path):
    from studio.exported import open_model

    gen = open_model(str(rooms_file), device="cpu")
    edits = [UnitEdit("blocks.0", 3, "off"), UnitEdit("blocks.1", 5, "scale", -1.5),
             UnitEdit("blocks.3", 2, "scale", 2.0), UnitEdit("blocks.2", 1, "scale", 3.0, local=True)]
    mask = torch.zeros(gen.resolution)
    mask[:, : gen.resolution[1] // 2] = 1
    samples = [gen.sample(4), gen.sample(9, "a bedroom with red walls, a bed and one lamp")]
    report = export(gen, edits, None, "studio", tmp_path / "rooms-edited.safetensors", mask=mask, samples=samples)
    assert report.baked == edits[:3] and [e for e, _ in report.kept] == edits[3:]
    assert report.verified, report.text()
    reopened = open_model(str(tmp_path / "rooms-edited.safetensors"), device="cpu")
    assert reopened.family == "rooms" and reopened.export_base.sha256 is not None
    with torch.inference_mode():
        got = reopened.render(samples)
    assert (got - _edited_render(gen, edits, samples, mask)).abs().max() < 1e-4


def test_rooms_concept_edit_exports_as_lora_and_merged_weights(rooms_file, tmp_path):
    from studio.concept import ConceptEdit, ConceptEditSpec, editor_for
    from studio.exported import open_model

    gen = open_model(str(rooms_file), device="cpu")
    editor = editor_for(gen)
    editor.apply(ConceptEditSpec([ConceptEdit("replace", "red", "blue")]))
    samples = [gen.sample(2, "a bedroom with red walls, a bed and two lamps")]
    lora = export(gen, [], editor, "lora", tmp_path / "red-blue.safetensors", samples=samples)
    assert lora.verified and "lora_unet_blocks_0_attn_to_k" in read_lora(tmp_path / "red-blue.safetensors")
    merged = export(gen, [UnitEdit("blocks.1", 0, "off")], editor, "studio", tmp_path / "m.safetensors",
                    samples=samples)
    assert merged.verified and merged.concept == "1, merged into the weights"


def test_stylegan_exports_a_rosinality_checkpoint_with_a_recipe_beside_it(tmp_path):
    from studio.exported import open_model
    from tests.stylegan_files import tiny_net, write_nvidia_pickle

    pickle = write_nvidia_pickle(tmp_path / "sg2.pkl", tiny_net("sg2"), marker=tmp_path / "ran", layout="stylegan3")
    gen = open_model(str(pickle), device="cpu")
    names = [info.name for info in gen.layers()]
    edits = [UnitEdit("mapping", 3, "scale", 0.7), UnitEdit(names[-1], 2, "off"),  # exact: readers are linear
             UnitEdit(names[2], 1, "off"), UnitEdit(names[3], 0, "scale", 2.0, local=True)]  # demodulated; masked
    mask = torch.zeros(gen.resolution)
    mask[:8] = 1
    samples = [gen.sample(1), gen.sample(2)]
    out = tmp_path / "edited.pt"
    report = export(gen, edits, None, "stylegan-pt", out, mask=mask, samples=samples)
    assert report.verified, report.text()
    assert report.baked == edits[:2] and [e for e, _ in report.kept] == edits[2:]
    assert [f.name for f in report.files] == ["edited.pt", "edited.pt.recipe.json"]

    reopened = open_model(str(out), device="cpu")  # rosinality layout, read back by the StyleGAN family
    assert reopened.info()["format"] == "rosinality"
    expected = _edited_render(gen, edits, samples, mask)
    with torch.inference_mode():
        assert (reopened.render(samples) - _edited_render(gen, edits[:2], samples)).abs().max() < 1e-4
        assert (reopened.render(samples) - expected).abs().max() > 1e-3  # the kept edits live in the recipe
    applied = apply_recipe(reopened, load_recipe(tmp_path / "edited.pt.recipe.json"))
    with torch.inference_mode():
        assert (reopened.render(samples) - expected).abs().max() < 1e-4
    applied.close()
    studio = export(gen, edits, None, "studio", tmp_path / "edited.safetensors", mask=mask, samples=samples)
    assert studio.verified and studio.baked == edits[:2]

    sg3 = open_model(str(write_nvidia_pickle(tmp_path / "sg3.pkl", tiny_net("sg3t"), marker=tmp_path / "ran",
                                             layout="stylegan3")), device="cpu")
    with pytest.raises(ExportError, match="no StyleGAN3 architecture; export it as studio"):
        export(sg3, [], None, "stylegan-pt", tmp_path / "x.pt")
    with pytest.raises(ExportError, match="Unknown export format 'stylegan-pt' for toy .*studio, recipe"):
        export(ToyGenerator(), [], None, "stylegan-pt", tmp_path / "y.pt")


@pytest.fixture(scope="module")
def sd_folder(tiny_sd_files):
    return tiny_sd_files.folder


def test_diffusion_exports_a_folder_a_single_file_and_a_lora_that_reopen_the_same(sd_folder, tmp_path):
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers

    from studio.concept import ConceptEdit, ConceptEditSpec, editor_for
    from studio.exported import open_model

    gen = open_model(str(sd_folder), device="cpu")
    editor = editor_for(gen)
    editor.apply(ConceptEditSpec([ConceptEdit("replace", "cat", "dog")]))
    samples = [gen.sample(1, "a red cat", steps=2)]
    edits = [UnitEdit("down_blocks.0.resnets.0", 3, "off"), UnitEdit("up_blocks.1.attentions.0", 2, "scale", 2.0,
                                                                     steps=(0, 1))]
    folder = export(gen, edits, editor, "diffusers", tmp_path / "edited", samples=samples)
    assert folder.verified, folder.text()
    assert folder.baked == [] and [e for e, _ in folder.kept] == edits  # GroupNorm readers: nothing folds exactly
    assert (tmp_path / "edited" / "model_index.json").is_file() and (tmp_path / "edited.recipe.json").is_file()
    again = export(gen, edits, editor, "diffusers", tmp_path / "edited", samples=samples)  # replaces its own folder
    assert again.verified and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(StudioError, match="photos is a folder of something else .*not replaced"):
        export(gen, edits, editor, "diffusers", tmp_path / "photos", samples=samples)
    assert (tmp_path / "photos" / "cat.jpg").exists()

    single = export(gen, edits, editor, "sd-single-file", tmp_path / "edited.safetensors", samples=samples)
    assert single.verified, single.text()
    assert any(k.startswith("model.diffusion_model.") for k in load_file(str(tmp_path / "edited.safetensors")))
    assert "render it with size 32x32, scheduler ddim (what the check rendered its 1 sample with)" in single.text()

    lora = export(gen, edits, editor, "lora", tmp_path / "cat-dog.safetensors", samples=samples)
    assert lora.verified, lora.text()
    # diffusers' own kohya-format parser maps every entry onto the projection it was made from
    converted, alphas = _convert_non_diffusers_lora_to_diffusers(load_file(str(tmp_path / "cat-dog.safetensors")))
    fresh = open_model(str(sd_folder), device="cpu")
    modules = dict(fresh.unet.named_modules())
    downs = [k for k in converted if k.endswith("_lora.down.weight")]
    assert len(downs) == 2 * len(gen.cross_attention())
    with torch.no_grad():
        for key in downs:
            path = key.removeprefix("unet.").replace(".processor.", ".").removesuffix("_lora.down.weight")
            down, up = converted[key], converted[key.replace(".down.", ".up.")]
            modules[path].weight += (alphas[key + ".alpha"] / down.shape[0]) * (up @ down)
    edited = dict(gen.unet.named_modules())
    for key in downs:
        path = key.removeprefix("unet.").replace(".processor.", ".").removesuffix("_lora.down.weight")
        assert torch.allclose(modules[path].weight, edited[path].weight, atol=1e-6, rtol=0)


def test_the_single_file_note_says_what_the_check_rendered_and_claims_no_check_that_did_not_run(sd_folder,
                                                                                                tmp_path):
    from studio.exported import open_model

    gen = open_model(str(sd_folder), device="cpu")
    small = [gen.sample(1, "a red cat", steps=2, size=16, scheduler="euler")]  # not the model's own 32x32
    checked = export(gen, [], None, "sd-single-file", tmp_path / "a.safetensors", samples=small)
    note = next(n for n in checked.notes if n.startswith("the file records"))
    assert checked.verified and "size 16x16, scheduler euler (what the check rendered its 1 sample with)" in note
    assert "32x32" not in note
    unchecked = export(gen, [], None, "sd-single-file", tmp_path / "b.safetensors", verify=False)
    note = next(n for n in unchecked.notes if n.startswith("the file records"))
    assert "size 32x32, scheduler ddim (the edited model's settings; no check ran)" in note
    assert "as the check" not in unchecked.text() and unchecked.verdict() == "not checked"


def _clip_4x_layout(layers: int) -> set[str]:
    """The key names transformers 4.x's CLIPTextModel has (``text_model = CLIPTextTransformer``, see
    transformers/models/clip/modeling_clip.py before 5.0) and ComfyUI's comfy/clip_model.py CLIPTextModel loads."""
    names = {"text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
             "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias"}
    for i in range(layers):
        for part in ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj",
                     "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"):
            names |= {f"text_model.encoder.layers.{i}.{part}.weight", f"text_model.encoder.layers.{i}.{part}.bias"}
    return names


def test_the_diffusers_export_writes_its_text_encoders_in_the_layout_older_loaders_read(sd_folder, tmp_path):
    from models.sd_random import tiny_sdxl
    from studio.exported import open_model

    gen = open_model(str(sd_folder), device="cpu")
    report = export(gen, [], None, "diffusers", tmp_path / "sd", samples=[gen.sample(1, "a red cat", steps=2)])
    assert report.verified, report.text()  # and the studio's own transformers still reads it
    keys = set(load_file(str(tmp_path / "sd" / "text_encoder" / "model.safetensors")))
    layers = gen.pipe.text_encoder.config.num_hidden_layers
    assert keys == _clip_4x_layout(layers)

    xl = open_model(str(_saved(tiny_sdxl(tmp_path / "xl-build"), tmp_path / "xl")), device="cpu")
    written = xl.write_native("diffusers", tmp_path / "xl-out")
    assert written.files == [tmp_path / "xl-out"]
    for part, projection in (("text_encoder", False), ("text_encoder_2", True)):
        keys = set(load_file(str(tmp_path / "xl-out" / part / "model.safetensors")))
        config = getattr(xl.pipe, part).config
        expected = _clip_4x_layout(config.num_hidden_layers) | ({"text_projection.weight"} if projection else set())
        assert keys == expected, part


def _saved(pipe, folder):
    pipe.save_pretrained(folder)
    return folder


def _a1111_lora_version(metadata: dict) -> str:
    """How AUTOMATIC1111's built-in Lora extension (extensions-builtin/Lora/network.py, NetworkOnDisk) tells
    LoRAs apart: it hides those whose version does not match the loaded checkpoint."""
    if str(metadata.get("ss_base_model_version", "")).startswith("sdxl_"):
        return "SDXL"
    if str(metadata.get("ss_v2", "")) == "True":
        return "SD2"
    return "SD1" if metadata else "Unknown"


@pytest.mark.parametrize("which, version, a1111", [("tiny_sd", "sd_v1", "SD1"), ("tiny_sd2", "sd_v2", "SD2"),
                                                    ("tiny_sdxl", "sdxl_base_v1-0", "SDXL")])
def test_loras_name_their_base_architecture_and_model_but_not_its_folders(which, version, a1111, tmp_path):
    import models.sd_random
    from models.registry import read_safetensors_header
    from studio.concept import ConceptEdit, ConceptEditSpec, editor_for

    folder = tmp_path / "private-folder" / "my-model"
    getattr(models.sd_random, which)(tmp_path / "build").save_pretrained(folder)
    gen = open_model(str(folder), device="cpu")
    editor = editor_for(gen)
    editor.apply(ConceptEditSpec([ConceptEdit("replace", "cat", "dog")]))
    out = tmp_path / "cat-dog.safetensors"
    export(gen, [], editor, "lora", out, verify=False)
    meta, _ = read_safetensors_header(out)
    # kohya sd-scripts' train_network.py writes str(bool(args.v2)) and the model version string
    assert meta["ss_base_model_version"] == version and meta["ss_v2"] == str(which == "tiny_sd2")
    assert _a1111_lora_version(meta) == a1111
    assert "private-folder" not in json.dumps(meta) and str(tmp_path) not in json.dumps(meta)
    model = json.loads(meta["neuron_studio"])["model"]
    assert model["file"] == "my-model" == meta["ss_sd_model_name"] and model["family"] == "diffusion"
    assert model["sha256"] and len(model["sha256"]) == 64


def test_the_single_file_export_prints_the_exact_offline_diffusers_call_that_opens_it(sd_folder, tmp_path,
                                                                                       monkeypatch):
    import diffusers

    from studio.exported import open_model

    gen = open_model(str(sd_folder), device="cpu")
    out = tmp_path / "edited.safetensors"
    report = export(gen, [], None, "sd-single-file", out, verify=False)
    assert tmp_path / "edited.config" in report.files
    prefix = "open it in diffusers offline: "
    call = next(n for n in report.notes if n.startswith(prefix))[len(prefix):]
    assert call in report.text()
    assert call == (f"diffusers.StableDiffusionPipeline.from_single_file({str(out)!r}, "
                    f"config={str(tmp_path / 'edited.config')!r}, local_files_only=True)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = eval(call, {"diffusers": diffusers})  # the printed call itself, offline
    for part in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(gen.pipe, part).state_dict(), getattr(pipe, part).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), part
    assert pipe.tokenizer("a red cat").input_ids == gen.pipe.tokenizer("a red cat").input_ids
    assert type(pipe.scheduler) is type(gen.pipe.scheduler)


def test_cli_exports_and_applies_a_model_with_edit_files_without_a_session(registry, tmp_path, capsys):
    from PIL import Image

    from studio.concept import save_edits
    from studio.reference import ModelReference

    gen, editor = _concept_model(registry)  # concept edits, saved as `concept --save-edit` does
    save_edits(tmp_path / "red2blue.safetensors", editor.stack, gen)
    units = [UnitEdit("conv", 2, "off"), UnitEdit("attn1", 5, "scale", 2.0)]
    save_recipe(Recipe(ModelReference.of(gen), units), tmp_path / "units.json")  # a unit-edit recipe
    samples = [gen.sample(0)]
    expected = _edited_render(gen, units, samples)  # the concept edits are in gen's weights

    out = tmp_path / "edited.safetensors"
    files = [str(tmp_path / "red2blue.safetensors"), str(tmp_path / "units.json")]
    assert main(["export", "--model", "toy-text", "--edits", *files, "--format", "studio", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "concept edits: 2, merged into the weights" in text and "same image" in text
    with torch.inference_mode():
        assert (open_model(str(out)).render(samples) - expected).abs().max() < 1e-4

    lora = tmp_path / "red2blue-lora.safetensors"
    assert main(["export", "--model", "toy-text", "--edits", files[0], "--format", "lora", "-o", str(lora)]) == 0
    assert "same image" in capsys.readouterr().out and read_lora(lora)

    assert main(["apply", "--model", "toy-text", "--edits", *files, "-o", str(tmp_path / "a.png")]) == 0
    image = torch.from_numpy(__import__("numpy").asarray(Image.open(tmp_path / "a.png"))).permute(2, 0, 1) / 255
    assert (image - expected[0]).abs().max() < 2 / 255  # 8-bit rounding only

    (tmp_path / "notes.json").write_text('{"hello": 1}')
    assert main(["export", "--model", "toy-text", "--edits", str(tmp_path / "notes.json"), "-o",
                 str(tmp_path / "x.safetensors")]) == 2
    assert "notes.json is not an edit file Neuron Studio reads" in capsys.readouterr().err
    assert main(["export", "--model", "toy", "--edits", files[1], "-o", str(tmp_path / "y.safetensors")]) == 2
    assert "made for a toy-text model" in capsys.readouterr().err
    assert main(["export", "--edits", files[1], "-o", str(tmp_path / "z.safetensors")]) == 2
    assert "--model M --edits" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name[0] in "xyz"]


def test_cli_exports_a_model_with_a_knob_file(registry, tmp_path, capsys):
    from studio.knobs import Example, learn_knob, save_knob

    gen = open_model("toy")
    whole = torch.ones(32, 32)
    knob = learn_knob(gen, "seed-look", present=[Example(gen.sample(s), whole) for s in (1, 2)],
                      wanted=[Example(gen.sample(s), whole) for s in (3, 4)], units=4, min_contrast=0.0)
    save_knob(knob, tmp_path / "look.safetensors")
    out = tmp_path / "knobbed.safetensors"
    assert main(["export", "--model", "toy", "--edits", str(tmp_path / "look.safetensors"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 knob edit(s) kept as recipe hooks" in text and "same image" in text
    with torch.inference_mode():
        plain, knobbed = gen.render([gen.sample(0)]), open_model(str(out)).render([gen.sample(0)])
    assert (plain - knobbed).abs().max() > 1e-3  # the knob is really in the export
