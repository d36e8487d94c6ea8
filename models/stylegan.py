"""StyleGAN2, StyleGAN2-ADA and StyleGAN3 checkpoints behind the model contract (users bring the files).

    gen = open_model("~/ckpt/network-snapshot-001000.pkl")      # NVIDIA pickle, read without running its code
    gen = open_model("~/ckpt/550000.pt")                         # rosinality/stylegan2-pytorch {"g_ema": ...}
    s = gen.sample(3, psi=0.7, noise="const")                    # seed -> z as NVIDIA's gen_images.py draws it
    image = gen.render([s])                                      # (1, 3, H, W) in [0, 1]
    [l.name for l in gen.layers()]        # mapping, synthesis.b4.conv1, synthesis.b8.conv0, ... | synthesis.L0_36_512
    acts = gen.trace([s], ["synthesis.b16.conv0"])
    same = gen.forward_from("synthesis.b16.conv0", acts["synthesis.b16.conv0"], [s])

Sample options: ``psi`` (truncation, default 0.7), ``noise`` (``const`` | ``random``: seeded per sample | ``none``),
``class`` (conditional models), ``w`` (an explicit w, w_dim floats), ``ws`` (explicit w+, num_ws rows).
``sample(seed, w_plus=True)`` stores the seed's w+ in ``ws`` so each layer's latent can be changed on its own.
An inverted image's sample also names a tensor payload (``studio.core.payload``): its optimised noise maps
(``noise/LAYER``, in place of the noise mode's) and a fine-tuned correction (``residual/LAYER``).

For exporters: :func:`producing_conv` (the module whose ``weight[unit]``/``bias[unit]`` make a unit),
:func:`bake_unit_scale` (fold a unit's gain into the weights where that is exact) and
:func:`models.stylegan_formats.to_rosinality_checkpoint` (write rosinality's layout; reopens here).
"""
from __future__ import annotations

import argparse
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from studio.core import payload
from studio.core.atomic import atomic_path
from studio.core.device import pick_dtype
from studio.core.errors import ModelOpenError, StudioError

from .base import (FileProbe, Generator, InversionSpace, LayerInfo, ModelEntry, NativeFormat, NativeWrite, Sample,
                   SampleOption, seed_z)
from .safe_pickle import clipped, load_network_pickle, refused_by_torch
from .stylegan_formats import from_record, from_rosinality, rosinality_args, to_rosinality_checkpoint

DEFAULT_PSI = 0.7
NOISE_MODES = ("const", "random", "none")
#: What a StyleGAN model writes besides the studio's own formats.
ROSINALITY = NativeFormat("stylegan-pt", "StyleGAN2 checkpoint in rosinality/stylegan2-pytorch's layout", ".pt")
_MAX_REMEMBERED = 16  # samples whose skip-path carries are kept for partial re-renders
#: Payload tensors named ``NOISE + layer`` (the synthesis layer's own name, ``b8.conv0``) are that layer's noise map
#: (r x r) for the sample, in place of its noise mode's: an inversion's optimised noise.
NOISE = "noise/"
#: Weight of the noise regularisation against the inversion loss (mean-square pixel + feature loss). NVIDIA's projector
#: weighs it 1e5 against a summed squared LPIPS distance; here, measured on a tiny StyleGAN2 (150 steps, its own
#: images): 1e3 held the maps to white noise but cost 10-17 dB, while 1 to 10 reached 32-34 dB, near the 37 dB of
#: frozen noise, with the maps' penalty still under 1e-5 per map (white noise scores about 1/pixels).
NOISE_WEIGHT = 10.0
#: Adam step for the noise maps (unit variance). NVIDIA's projector steps them at 0.1 over 1000 steps; over a few
#: hundred steps 0.1 overshot (23 dB on the same tiny StyleGAN) and 0.01 did not (33.6 dB).
NOISE_RATE = 0.01


def _key(sample: Sample) -> str:
    return json.dumps(sample.to_json(), sort_keys=True, default=str)


class StyleGANModel(Generator):
    """A StyleGAN2/3 network (ours, holding the checkpoint's tensors) on a device."""

    family = "stylegan"
    applies_corrections = True  # render and forward_from open self.corrections(samples)
    supports_half = True
    takes_prompt = False

    def __init__(self, net: nn.Module, device: torch.device, dtype: torch.dtype, *, name: str, source: str,
                 file_format: str) -> None:
        res = net.config.img_resolution
        super().__init__(net.to(device).eval(), name=name, device=device, dtype=dtype, resolution=(res, res),
                         source=source)
        self.file_format = file_format
        net.synthesis.half = dtype == torch.float16
        self._carries: dict[str, dict[str, dict]] = {}

    @property
    def net(self) -> nn.Module:
        return self.module

    @property
    def arch(self) -> str:
        return self.net.config.arch

    # -- layers -------------------------------------------------------------------------------------------------
    def layers(self) -> list[LayerInfo]:
        infos = [LayerInfo("mapping", self.net.config.w_dim, None, "mapping", True)]
        return infos + [LayerInfo(name, channels, (size, size), "conv", True)
                        for name, channels, size in self.net.synthesis_layers()]

    # -- latents ------------------------------------------------------------------------------------------------
    def sample_options(self) -> list[SampleOption]:
        """Truncation psi, the noise mode and, for conditional models, the class (NVIDIA's --trunc, --noise-mode,
        --class)."""
        options = [SampleOption("psi", "float", DEFAULT_PSI, "Truncation psi", minimum=-1.0, maximum=2.0,
                                help="truncation towards the mean w: 1 is none, 0 the mean image (default 0.7)"),
                   SampleOption("noise", "choice", "const", "Noise", choices=NOISE_MODES, flag="noise-mode",
                                help="const: the stored noise; random: seeded per sample; none: no noise")]
        c_dim = self.net.config.c_dim
        if c_dim:
            options.insert(0, SampleOption("class", "int", 0, "Class", minimum=0, maximum=c_dim - 1,
                                           help=f"the class to draw, 0..{c_dim - 1} (conditional models)"))
        return options

    def sample(self, seed: int, prompt: str | None = None, *, psi: float = DEFAULT_PSI, noise: str = "const",
               w_plus: bool = False, **options: Any) -> Sample:
        """A sample; ``w_plus=True`` stores the seed's per-layer latents in ``options['ws']``."""
        options = {"psi": float(psi), "noise": noise, **options}
        sample = Sample(int(seed), None, options)
        self._check(sample)
        if w_plus and "ws" not in options:
            with torch.no_grad():
                ws = self.ws([sample])[0]
            sample = Sample(int(seed), None, {**options, "ws": ws.cpu().tolist()})
        return sample

    def _check(self, s: Sample) -> None:
        cfg = self.net.config
        if s.option("noise", "const") not in NOISE_MODES:
            raise StudioError(f"Noise mode '{s.option('noise')}' is unknown: use {', '.join(NOISE_MODES)}.")
        label = int(s.option("class", 0))
        if not 0 <= label < max(cfg.c_dim, 1):
            raise StudioError(f"Class {label} does not exist: this model has classes 0..{max(cfg.c_dim, 1) - 1}.")
        if s.option("w") is not None and np.shape(s.option("w")) != (cfg.w_dim,):
            raise StudioError(f"An explicit w needs {cfg.w_dim} numbers, this one has shape {np.shape(s.option('w'))}.")
        if s.option("ws") is not None and np.shape(s.option("ws")) != (self.net.num_ws, cfg.w_dim):
            raise StudioError(f"An explicit w+ needs {self.net.num_ws} rows of {cfg.w_dim} numbers, this one has "
                              f"shape {np.shape(s.option('ws'))}.")

    def ws(self, samples: Sequence[Sample]) -> torch.Tensor:
        """(B, num_ws, w_dim) per-layer latents; edits on the ``mapping`` layer apply (not to explicit w+)."""
        for s in samples:
            self._check(s)
        cfg = self.net.config
        z = torch.as_tensor(np.stack([seed_z(s.seed, cfg.z_dim) for s in samples]), dtype=torch.float32)
        c = torch.zeros(len(samples), cfg.c_dim)
        if cfg.c_dim:
            c[torch.arange(len(samples)), torch.tensor([int(s.option("class", 0)) for s in samples])] = 1
        psi = torch.tensor([float(s.option("psi", DEFAULT_PSI)) for s in samples])
        use_w = torch.tensor([s.option("w") is not None for s in samples])
        given = torch.tensor([s.option("w") if s.option("w") is not None else [0.0] * cfg.w_dim for s in samples],
                             dtype=torch.float32)
        dev = self.device
        w = self.net.mapping(z.to(dev), c.to(dev), psi.to(dev), given.to(dev), use_w.to(dev))
        return self._broadcast(w, samples)

    def _broadcast(self, w: torch.Tensor, samples: Sequence[Sample]) -> torch.Tensor:
        ws = self.net.broadcast(w.to(torch.float32))
        rows = [i for i, s in enumerate(samples) if s.option("ws") is not None]
        if rows:
            ws = ws.clone()
            for i in rows:
                ws[i] = torch.as_tensor(samples[i].option("ws"), dtype=torch.float32, device=ws.device)
        return ws

    def _noise(self, samples: Sequence[Sample]):
        """The per-layer noise source: a sample's own maps (its payload's ``noise/LAYER``, an inversion's), else
        the stored constants, seeded random fields, or none, as its noise mode says."""
        modes = [s.option("noise", "const") for s in samples]
        synthesis = self.net.synthesis
        order = {name: i for i, (name, _) in enumerate(self.net.noise_layers())}
        own = [payload.named(s.options, NOISE) for s in samples]
        if not order:  # trained with use_noise=False: no layer takes noise
            return lambda name, batch, res: None
        if not any(own):
            if all(m == "none" for m in modes):
                return lambda name, batch, res: None
            if all(m == "const" for m in modes):
                return lambda name, batch, res: synthesis.layer(name).noise_const if name in order else None

        def noise(name: str, batch: int, res: int) -> torch.Tensor | None:
            if name not in order:
                return None
            cache: dict[int, torch.Tensor] = {}
            rows = []
            for s, mode, maps in zip(samples, modes, own):
                if name in maps:
                    rows.append(maps[name][None])
                elif mode == "const":
                    rows.append(synthesis.layer(name).noise_const.cpu()[None])
                elif mode == "none":
                    rows.append(torch.zeros(1, res, res))
                else:
                    if s.seed not in cache:
                        gen = torch.Generator().manual_seed(int(s.seed) * 1009 + order[name])
                        cache[s.seed] = torch.randn(1, res, res, generator=gen)
                    rows.append(cache[s.seed])
            return torch.stack(rows).to(self.device)

        return noise

    # -- rendering ----------------------------------------------------------------------------------------------
    def _image(self, img: torch.Tensor) -> torch.Tensor:
        img = img.to(torch.float32)
        if img.shape[1] == 1:
            img = img.repeat(1, 3, 1, 1)
        return ((img[:, :3] + 1) / 2).clamp(0, 1)

    def render(self, samples: Sequence[Sample]) -> torch.Tensor:
        ws = self.ws(samples)
        record: dict[str, dict] = {}
        try:
            with self.corrections(samples):
                img = self.net.synthesis(ws, self._noise(samples), record=record)
        finally:  # also when a stopping Trace ended the pass: the carries up to its layer are valid
            self._remember(samples, record)
        return self._image(img)

    def forward_from(self, layer: str, activation: torch.Tensor, samples: Sequence[Sample]) -> torch.Tensor:
        info = self.layer(layer)
        if activation.shape[0] != len(samples):
            raise StudioError(f"{activation.shape[0]} activations were given for {len(samples)} samples.")
        with self.corrections(samples):
            if info.name == "mapping":
                ws = self._broadcast(activation.to(self.device), samples)
                return self._image(self.net.synthesis(ws, self._noise(samples)))
            name = info.name[len("synthesis."):]
            ws = self.ws(samples)
            carry = self._carry(name, samples, ws) if self.arch == "stylegan2" else {}
            img = self.net.synthesis(ws, self._noise(samples), start=name, x=activation.to(self.device),
                                     carry=carry)
        return self._image(img)

    def _remember(self, samples: Sequence[Sample], record: dict[str, dict]) -> None:
        """Keep each sample's skip-path carries of this pass (rows of one sample must agree)."""
        if self.arch != "stylegan2" or not record:
            return
        keys = [_key(s) for s in samples]
        rows: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            rows.setdefault(k, []).append(i)
        if len(rows) > _MAX_REMEMBERED:
            self._carries = {}
            return
        carries: dict[str, dict[str, dict]] = {}
        for k, idx in rows.items():
            for layer, carry in record.items():
                entry = {n: (t[idx[0]: idx[0] + 1] if t is not None else None) for n, t in carry.items()}
                if len(idx) > 1 and not all(t is None or all(torch.equal(t[0], carry[n][j]) for j in idx[1:])
                                            for n, t in entry.items()):
                    continue  # rows of one sample differ before this layer (per-row edits): do not trust it
                carries.setdefault(k, {})[layer] = entry
        self._carries = carries

    def _carry(self, name: str, samples: Sequence[Sample], ws: torch.Tensor) -> dict:
        """What the skip paths hold at ``name`` for each row: remembered, or recomputed for the missing samples."""
        keys = [_key(s) for s in samples]
        missing = sorted({k for k in keys if name not in self._carries.get(k, {})})
        fresh: dict[str, dict] = {}
        if missing:
            first = [keys.index(k) for k in missing]
            subset = [samples[i] for i in first]
            part = self.net.synthesis(ws[first], self._noise(subset), stop_before=name)
            for j, k in enumerate(missing):
                fresh[k] = {n: (t[j: j + 1] if t is not None else None) for n, t in part.items()}
        entries = [fresh.get(k) or self._carries[k][name] for k in keys]
        return {n: (torch.cat([e[n] for e in entries]) if entries[0][n] is not None else None) for n in entries[0]}

    # -- inversion ----------------------------------------------------------------------------------------------
    def inversion_space(self) -> InversionSpace:
        """W from the mean w (``w_avg``), then W+ (one w per layer) for the second half, as NVIDIA's projector;
        where the network takes noise, every noise map is optimised too, with NVIDIA's noise regularisation (see
        :func:`noise_penalty`; each map renormalised to zero mean and unit variance after every step).

        The result is a sample with ``psi`` 1, an explicit ``ws`` (JSON rows of w_dim floats: 14 x 512 for a 256 px
        FFHQ model) and, with noise, its maps in the sample's payload (``studio.core.payload``, tensors
        ``noise/LAYER``: too many numbers for JSON options, hundreds of thousands at 1024 px); they start from the
        model's stored constants, so the first renders are the model's own.
        """
        cfg = self.net.config
        w_avg = self.net.mapping.w_avg.detach().to(self.device, torch.float32)
        with torch.no_grad():  # the spread of w, for the step size (NVIDIA's projector measures it the same way)
            z = torch.randn(256, cfg.z_dim, generator=torch.Generator().manual_seed(0)).to(self.device)
            c = torch.zeros(256, cfg.c_dim, device=self.device)
            if cfg.c_dim:
                c[:, 0] = 1
            spread = float(((self.net.mapping(z, c) - w_avg) ** 2).mean().sqrt())
        starts = [Sample(0, None, {"psi": 1.0, "noise": "const", "w": w_avg.cpu().tolist()})]
        layers = [name for name, _ in self.net.noise_layers()]
        synthesis = self.net.synthesis

        def init(samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
            if all(s.option("ws") is not None for s in samples):
                tensors = {"ws": self.ws(samples).detach().clone()}
            else:
                tensors = {"w": self.ws(samples)[:, 0].detach().clone()}
            for name in layers:
                rows = []
                for s in samples:
                    own = payload.named(s.options, NOISE).get(name)
                    rows.append(own if own is not None else synthesis.layer(name).noise_const.detach().cpu())
                tensors[NOISE + name] = torch.stack(rows).to(self.device, torch.float32)
            return tensors

        def render(tensors: dict[str, torch.Tensor], samples: Sequence[Sample]) -> torch.Tensor:
            ws = tensors["ws"] if "ws" in tensors else self.net.broadcast(tensors["w"])
            if layers:
                noise = lambda name, batch, res: tensors[NOISE + name][:, None] if NOISE + name in tensors else None
            else:
                noise = self._noise(samples)
            return self._image(self.net.synthesis(ws, noise))

        def to_samples(tensors: dict[str, torch.Tensor], samples: Sequence[Sample]) -> list[Sample]:
            key = "ws" if "ws" in tensors else "w"
            rows = tensors[key].detach().to("cpu", torch.float32)
            out = []
            for i, (s, row) in enumerate(zip(samples, rows)):
                options = {k: v for k, v in s.options.items() if k not in ("w", "ws", payload.OPTION)}
                options.update({"psi": 1.0, "noise": "const", key: row.tolist()})
                if layers:  # a fine-tune's residual belonged to the old latent: only the noise rides on
                    options[payload.OPTION] = payload.put({NOISE + name: tensors[NOISE + name][i] for name in layers})
                out.append(Sample(s.seed, None, options))
            return out

        def widen(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            if "ws" in tensors:
                return tensors
            rest = {k: v for k, v in tensors.items() if k != "w"}
            return {"ws": self.net.broadcast(tensors["w"].detach()).clone(), **rest}

        def regularise(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
            return NOISE_WEIGHT * sum(noise_penalty(tensors[NOISE + name]) for name in layers)

        def project(tensors: dict[str, torch.Tensor]) -> None:
            with torch.no_grad():
                for name in layers:
                    normalise_noise_(tensors[NOISE + name])

        rates = {NOISE + name: NOISE_RATE for name in layers}
        return InversionSpace(starts, init, render, to_samples, widen=widen, widen_at=0.5,
                              regularise=regularise if layers else None, project=project if layers else None,
                              learning_rate=0.1 * max(spread, 1e-3), keep=1, rates=rates,
                              description="W, then W+, and the noise maps" if layers else "W, then W+")

    # -- export -------------------------------------------------------------------------------------------------
    def bake_unit_scale(self, layer: str, unit: int, gain: float) -> bool:
        """See :func:`bake_unit_scale`: exact for ``mapping`` and the last layer before toRGB only."""
        return bake_unit_scale(self, layer, unit, gain)

    def native_formats(self) -> list[NativeFormat]:
        return [ROSINALITY]

    def write_native(self, format: str, path: Path) -> NativeWrite:
        """rosinality's ``{"g_ema": ..., "latent_avg": ...}`` (tensors only); a StyleGAN3 raises
        UnsupportedOperation (rosinality has no such architecture)."""
        if format != ROSINALITY.name:
            return super().write_native(format, path)
        checkpoint = to_rosinality_checkpoint(self.net)
        args = rosinality_args(self.net)
        if args is None:
            note = ("its channel widths follow no rosinality channel multiplier: the studio reopens the checkpoint, "
                    "rosinality's Generator(...) needs its widths edited")
        else:
            note = "rosinality: Generator(" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")"
        with atomic_path(Path(path), suffix=".pt") as tmp:
            torch.save(checkpoint, tmp)
        return NativeWrite([Path(path)], [note])

    def info(self) -> dict[str, Any]:
        data = super().info()
        cfg = self.net.config
        data.update({"arch": cfg.arch, "format": self.file_format, "z_dim": cfg.z_dim, "w_dim": cfg.w_dim,
                     "c_dim": cfg.c_dim, "num_ws": self.net.num_ws, "config": cfg.to_json()})
        return data


# -- noise regularisation (inversion) ----------------------------------------------------------------------------
def noise_penalty(maps: torch.Tensor) -> torch.Tensor:
    """NVIDIA's projector's noise regularisation for (B, r, r) noise maps, per row (B,): at every scale, from r down
    to 8 pixels by 2x2 averaging, the squared mean of the map times itself shifted one pixel across, and the same
    shifted one pixel down (wrapping round). White noise scores near 0; a map that has learnt part of the image
    (smooth, so correlated with its neighbours) scores high."""
    x = maps[:, None].to(torch.float32)
    total = x.new_zeros(x.shape[0])
    while True:
        total = total + (x * torch.roll(x, 1, dims=3)).mean(dim=(1, 2, 3)) ** 2
        total = total + (x * torch.roll(x, 1, dims=2)).mean(dim=(1, 2, 3)) ** 2
        if x.shape[2] <= 8:
            return total
        x = F.avg_pool2d(x, kernel_size=2)


def normalise_noise_(maps: torch.Tensor) -> None:
    """Each (r, r) row of ``maps`` to zero mean and unit variance, in place (NVIDIA's projector, after each step)."""
    maps -= maps.mean(dim=(1, 2), keepdim=True)
    maps *= maps.square().mean(dim=(1, 2), keepdim=True).clamp_min(1e-12).rsqrt()


# -- weights behind units (for exporters) ----------------------------------------------------------------------
def producing_conv(generator: StyleGANModel, layer: str) -> nn.Module:
    """The module whose ``weight[unit]`` (and ``bias[unit]``) produce ``layer``'s unit.

    ``mapping`` -> its last dense layer; a StyleGAN2 layer -> its modulated conv (weight (O, I, k, k));
    ``synthesis.input`` -> the Fourier-feature mixing matrix (weight (C, C), no bias).
    """
    info = generator.layer(layer)
    if info.name == "mapping":
        return getattr(generator.net.mapping, f"fc{generator.net.mapping.num_layers - 1}")
    return dict(generator.net.named_modules())[info.name]


def _consumer_of_last_layer(generator: StyleGANModel, layer: str) -> nn.Module | None:
    """The toRGB conv that is the only reader of ``layer`` (a linear map), or None when others read it too."""
    synthesis = generator.net.synthesis
    names = [n for n, _, _ in generator.net.synthesis_layers()]
    if layer != names[-1]:
        return None
    if generator.arch == "stylegan3":
        return getattr(synthesis, synthesis.layer_names[-1])
    if synthesis.architecture == "resnet":
        return None  # the shortcut is added after the hook, so a toRGB column would scale it too
    return getattr(synthesis, f"b{synthesis.img_resolution}").torgb


@torch.no_grad()
def bake_unit_scale(generator: StyleGANModel, layer: str, unit: int, gain: float) -> bool:
    """Fold "scale ``unit`` of ``layer`` by ``gain``" into the weights, if that is exact; True when done.

    Exact where every reader of the unit is linear in it:
    * ``mapping``: w feeds only the affine (style) layers, so their input columns take the gain;
    * the last synthesis layer before toRGB: toRGB has no demodulation, so its input column takes the gain.
    Anywhere else the next layer's demodulation renormalises its weights (and the producing layer's own
    demodulation cancels a row scale; noise is shared by all channels), so no weight change equals the edit:
    returns False and changes nothing. For samples with an explicit w+ the mapping bake also changes images
    that the live edit (which acts on the mapping output) leaves alone.
    """
    info = generator.unit_layer(layer, unit)
    if info.name == "mapping":
        for name, module in generator.net.synthesis.named_modules():
            if name.endswith("affine"):
                module.weight[:, unit] *= gain
        return True
    consumer = _consumer_of_last_layer(generator, info.name)
    if consumer is None:
        return False
    consumer.weight[:, unit] *= gain
    return True


# -- the registry family -----------------------------------------------------------------------------------------
_SCAN = 1 << 20  # how much of a file sniffing reads


def _pickle_head(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _zip_pickle(path: Path, names: list[str]) -> bytes:
    """The (small) object pickle of a ``torch.save`` zip: names and structure, not tensor data."""
    inner = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
    if inner is None:
        return b""
    with zipfile.ZipFile(path) as archive:
        with archive.open(inner) as f:
            return f.read(_SCAN)


class StyleGANFamily:
    """Registry entry: NVIDIA ``.pkl`` snapshots and ``.pt``/``.pth`` files holding a ``g_ema`` state dict."""

    name = "stylegan"

    def builtins(self) -> list[ModelEntry]:
        return []

    def open_builtin(self, name: str, device: torch.device, precision: str) -> Generator:
        raise ModelOpenError(f"There is no built-in StyleGAN '{name}': open a .pkl or .pt file instead.")

    def sniff(self, probe: FileProbe) -> bool:
        if probe.is_dir:
            return False
        if probe.zip_names is not None:
            try:
                data = _zip_pickle(Path(probe.path), probe.zip_names)
            except (OSError, zipfile.BadZipFile, KeyError):
                return False
            return b"g_ema" in data or b"G_ema" in data
        if probe.suffix == ".pkl":
            return True  # a pickle named so is ours to explain, whatever it holds
        if probe.suffix in (".pt", ".pth") and _pickle_head(probe.head):
            with open(probe.path, "rb") as f:
                scan = f.read(_SCAN)
            return b"torch_utils.persistence" in scan or b"g_ema" in scan
        return False

    def open_path(self, probe: FileProbe, device: torch.device, precision: str) -> Generator:
        path = Path(probe.path)
        if (probe.zip_names is None and probe.suffix == ".pkl") or self._is_nvidia(path):
            net, file_format = from_record(load_network_pickle(path)["G_ema"], path.name), "nvidia-pickle"
        else:
            net, file_format = from_rosinality(_load_torch(path), path.name), "rosinality"
        dtype = pick_dtype(device, StyleGANModel.supports_half, precision)
        if device.type == "cpu":
            dtype = torch.float32  # half precision is for GPUs; on the CPU it is slower and loses accuracy
        return StyleGANModel(net, device, dtype, name=path.stem, source=str(path), file_format=file_format)

    @staticmethod
    def _is_nvidia(path: Path) -> bool:
        with open(path, "rb") as f:
            scan = f.read(_SCAN)
        return _pickle_head(scan) and b"torch_utils.persistence" in scan


def _load_torch(path: Path) -> dict:
    """A ``torch.save`` checkpoint, tensors and plain containers only (rosinality's ``args`` Namespace allowed)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = refused_by_torch(error) or clipped(str(error))
        raise ModelOpenError(f"{path.name} holds more than tensors ({detail}); it was not loaded, because "
                             "loading it could run code.") from error
    if not isinstance(data, dict) or "g_ema" not in data:
        raise ModelOpenError(f"{path.name} has no 'g_ema' generator; expected a rosinality stylegan2-pytorch "
                             "checkpoint ({'g_ema': state_dict, ...}).")
    return data


FAMILY = StyleGANFamily()
