"""Random-weight Stable Diffusion pipelines with their own small tokenizer, built offline (tests, benchmarks).

    pipe = tiny_sd(workdir)                  # SD 1.x-shaped: 2-level UNet (32, 64), 32-px images, seconds to run
    pipe = tiny_sd2(workdir)                 # SD 2.x-shaped: OpenCLIP-style text encoder, linear projections
    pipe = tiny_sdxl(workdir)                # SDXL-shaped: two text encoders, text_time conditioning
    pipe = full_size("sd1", workdir)         # the real SD 1.5 sizes (UNet 860 M parameters), random weights

Tiny sizes follow each family's conventions (SD 1: 8 heads; SDXL and CLIP: 64-wide heads) so that the
single-file loader, which reads sizes from tensors and conventions from the family, rebuilds the same model.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import torch

from .sd_single_file import shipped_config
from .sd_tokenizer import tokenizer_dir, write_from_bpe

#: A handful of BPE merges (CLIP's format), enough to give words of the test prompts their own tokens.
MERGES = ["c a", "ca t</w>", "d o", "do g</w>", "r e", "re d</w>", "l a", "la m", "lam p</w>", "b e", "be d</w>",
          "b l", "bl u", "blu e</w>", "h o", "ho u", "hou s", "hous e</w>", "t r", "tr e", "tre e</w>"]


def write_bpe(path: Path) -> Path:
    """A CLIP-format BPE merge list (gzip, version line first), like the one open-clip ships."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(("\"bpe_simple_vocab_16e6.txt#version: 0.2\n" + "\n".join(MERGES) + "\n").encode()))
    return path


def tokenizer_files(folder: Path) -> Path:
    """``vocab.json`` + ``merges.txt`` in ``folder`` (through the same code that serves open-clip's list)."""

    return write_from_bpe(write_bpe(folder / "bpe.txt.gz"), folder)


def _tokenizer(files: Path, out: Path, pad: str):
    from transformers import CLIPTokenizer  # heavy import (seconds): only diffusion models need it


    return CLIPTokenizer.from_pretrained(str(tokenizer_dir(files, out, pad_token=pad)))


def _text_config(vocab: int, hidden: int = 32, act: str = "quick_gelu", projection: int | None = None):
    from transformers import CLIPTextConfig  # heavy import (seconds): only diffusion models need it

    return CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=max(1, hidden // 64), max_position_embeddings=77, hidden_act=act,
                          bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=projection or hidden)


def _vae(scaling_factor: float):
    from diffusers import AutoencoderKL  # heavy import (seconds): only diffusion models need it

    return AutoencoderKL(block_out_channels=[32, 32], in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         layers_per_block=1, norm_num_groups=32, sample_size=32, scaling_factor=scaling_factor)


def _scheduler():
    from diffusers import DDIMScheduler  # heavy import (seconds): only diffusion models need it

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def tiny_sd(workdir: Path, seed: int = 0):
    """A StableDiffusionPipeline with a 2-level UNet (32, 64 channels), 32-px images, random weights."""
    from diffusers import (  # heavy import (seconds): only diffusion models need it
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel  # heavy import (seconds): only diffusion models need it

    files = tokenizer_files(workdir / "bpe")
    tokenizer = _tokenizer(files, workdir / "tok1", "<|endoftext|>")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32)
    vae = _vae(0.18215)  # the SD 1 VAE's latent scale
    text = CLIPTextModel(_text_config(len(tokenizer)))
    _randomize(unet, vae)
    return StableDiffusionPipeline(vae=vae, text_encoder=text.eval(), tokenizer=tokenizer, unet=unet.eval(),
                                   scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def tiny_sd2(workdir: Path, seed: int = 0):
    """An SD 2.x-shaped StableDiffusionPipeline: OpenCLIP-style text encoder (gelu, pads with '!'), linear
    attention projections, 64-wide heads."""
    from diffusers import (  # heavy import (seconds): only diffusion models need it
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel  # heavy import (seconds): only diffusion models need it

    files = tokenizer_files(workdir / "bpe")
    tokenizer = _tokenizer(files, workdir / "tok1", "!")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=(1, 1), use_linear_projection=True, norm_num_groups=32)
    vae = _vae(0.18215)
    text = CLIPTextModel(_text_config(len(tokenizer), act="gelu"))
    _randomize(unet, vae)
    return StableDiffusionPipeline(vae=vae, text_encoder=text.eval(), tokenizer=tokenizer, unet=unet.eval(),
                                   scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def tiny_sdxl(workdir: Path, seed: int = 0):
    """A StableDiffusionXLPipeline: two text encoders (CLIP + projection), text_time conditioning, 32-px images."""
    from diffusers import (  # heavy import (seconds): only diffusion models need it
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (  # heavy import (seconds): only diffusion models need it
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )

    files = tokenizer_files(workdir / "bpe")
    tok1 = _tokenizer(files, workdir / "tok1", "<|endoftext|>")
    tok2 = _tokenizer(files, workdir / "tok2", "!")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64,
                                attention_head_dim=(1, 1), transformer_layers_per_block=(1, 2),
                                use_linear_projection=True, addition_embed_type="text_time",
                                addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8,
                                norm_num_groups=32)
    vae = _vae(0.13025)  # the SDXL VAE's latent scale
    te1 = CLIPTextModel(_text_config(len(tok1)))
    te2 = CLIPTextModelWithProjection(_text_config(len(tok2), act="gelu", projection=32))
    _randomize(unet, vae)
    return StableDiffusionXLPipeline(vae=vae, text_encoder=te1.eval(), text_encoder_2=te2.eval(), tokenizer=tok1,
                                     tokenizer_2=tok2, unet=unet.eval(), scheduler=_scheduler(),
                                     force_zeros_for_empty_prompt=True)


def full_size(kind: str, workdir: Path, seed: int = 0):
    """A pipeline of the real sizes of ``kind`` (``sd1``, ``sd2``, ``sdxl``: the shipped configs), random weights."""
    import diffusers  # heavy import (seconds): only diffusion models need it
    from transformers import (  # heavy import (seconds): only diffusion models need it
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )


    files = tokenizer_files(workdir / "bpe")
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel.from_config(shipped_config(kind, "unet/config.json"))
    vae = diffusers.AutoencoderKL.from_config(shipped_config(kind, "vae/config.json"))
    scfg = shipped_config(kind, "scheduler/scheduler_config.json")
    scheduler = getattr(diffusers, scfg["_class_name"]).from_config(scfg)
    te1 = CLIPTextModel(CLIPTextConfig(**shipped_config(kind, "text_encoder/config.json")))
    tok1 = _tokenizer(files, workdir / "tok1", shipped_config(kind, "tokenizer/tokenizer_config.json")["pad_token"])
    if kind == "sdxl":
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**shipped_config(kind, "text_encoder_2/config.json")))
        return diffusers.StableDiffusionXLPipeline(vae=vae, text_encoder=te1.eval(), text_encoder_2=te2.eval(),
                                                   tokenizer=tok1, tokenizer_2=_tokenizer(files, workdir / "tok2", "!"),
                                                   unet=unet.eval(), scheduler=scheduler)
    return diffusers.StableDiffusionPipeline(vae=vae, text_encoder=te1.eval(), tokenizer=tok1, unet=unet.eval(),
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)


@torch.no_grad()
def _randomize(*models) -> None:
    """Give zero-initialised layers (diffusers zeroes conv_out and proj_out) small random weights, so every
    layer of the random model matters and unit edits visibly change the image."""
    for model in models:
        for name, p in model.named_parameters():
            if p.dim() > 1 and bool((p == 0).all()):
                p.normal_(0, 0.05)
