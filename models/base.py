"""The one contract every model family implements; everything else is written once in ``studio/``.

A family adapter overrides names and accessors, never algorithms: ranking, sliders and concept edits
are written once for every family, so a fix in one lands in all::

    gen = open_model("rooms")                      # models.registry
    sample = gen.sample(seed=3, prompt="a bedroom with blue walls, a bed and two lamps")
    image = gen.render([sample])                   # (1, 3, H, W) float32 in [0, 1]
    info = gen.layer("blocks.3")                   # LayerInfo(name, units, size, ...)
    acts = gen.trace([sample], ["blocks.3"])       # {"blocks.3": (1, C, h, w)}
    same = gen.forward_from("blocks.3", acts["blocks.3"], [sample])   # only later layers run
    with gen.editor() as editor:                   # unit edits through hooks
        editor.set([UnitEdit("blocks.3", 12, "off")])
        edited = gen.render([sample])
"""
from __future__ import annotations

import difflib
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from studio.core.errors import LayerNotFound, StudioError, UnsupportedOperation
from studio.core.hooks import Editor, StepClock, Trace, check_unit


def seed_z(seed: int, dim: int) -> np.ndarray:
    """The GAN latent for ``seed`` as NVIDIA's ``gen_images.py`` and the face packages draw it (numpy's legacy
    normal), so a seed shows the same picture here and in the family's own tools."""
    return np.random.RandomState(int(seed) % 2**32).randn(dim)


@dataclass(frozen=True)
class LayerInfo:
    """One inspectable layer: its dotted module path, unit (channel) count and spatial size."""

    name: str
    units: int
    size: tuple[int, int] | None  # (h, w) of its activation; None for vector layers (mapping networks)
    kind: str = "conv"  # conv | mapping | attention | resnet | block
    partial: bool = False  # True when forward_from(name, ...) can re-render from this layer

    def label(self) -> str:
        res = f"{self.size[0]}×{self.size[1]}" if self.size else "vector"
        return f"{self.name} · {self.units} units · {res}"


@dataclass(frozen=True)
class Sample:
    """What to render: a seed, a prompt for text models, and family options (truncation, steps, ...)."""

    seed: int
    prompt: str | None = None
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)

    def with_seed(self, seed: int) -> "Sample":
        return replace(self, seed=seed)

    def to_json(self) -> dict:
        return {"seed": self.seed, "prompt": self.prompt, "options": dict(self.options)}

    @classmethod
    def from_json(cls, data: dict) -> "Sample":
        return cls(int(data["seed"]), data.get("prompt"), dict(data.get("options") or {}))


@dataclass(frozen=True)
class SampleOption:
    """One sample option a family takes, described so a command line or a panel can offer it::

        SampleOption("psi", "float", 0.7, "Truncation", minimum=0.0, maximum=1.0)
        SampleOption("class", "int", 0, "Class", minimum=0, maximum=9)
        SampleOption("noise", "choice", "const", "Noise", choices=("const", "random", "none"), flag="noise-mode")

    ``name`` is the key in :attr:`Sample.options`; ``flag`` the command-line spelling (``--flag``).
    """

    name: str
    kind: str  # "int" | "float" | "choice"
    default: Any
    label: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""
    flag: str = ""

    @property
    def option_flag(self) -> str:
        return f"--{self.flag or self.name}"

    def check(self, value: Any) -> Any:
        """``value`` as this option's type, or a :class:`StudioError` sentence saying what it accepts."""
        try:
            value = int(value) if self.kind == "int" else float(value) if self.kind == "float" else str(value)
        except (TypeError, ValueError) as error:
            raise StudioError(f"{self.option_flag} takes a number, not {value!r}.") from error
        if self.kind == "choice" and value not in self.choices:
            raise StudioError(f"{self.option_flag} {value} is unknown: use {', '.join(self.choices)}.")
        low = self.minimum if self.minimum is not None else value
        high = self.maximum if self.maximum is not None else value
        if self.kind != "choice" and not low <= value <= high:
            raise StudioError(f"{self.option_flag} {value} is out of range: this model takes "
                              f"{self.minimum:g} to {self.maximum:g}.")
        return value


@dataclass(frozen=True)
class NativeFormat:
    """A file format a family writes in another tool's layout (its own checkpoint, a diffusers folder, ...).

    ``unrecorded``: sample options the file does not keep (an original-layout SD file keeps neither ``size``
    nor ``scheduler``), so whoever renders it, and the export's check, must name them.
    """

    name: str
    description: str
    suffix: str  # what the output path must end with ("" for a folder)
    unrecorded: tuple[str, ...] = ()


@dataclass
class NativeWrite:
    """What :meth:`Generator.write_native` wrote: the files (the path first) and notes for the report."""

    files: list[Path]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CrossAttention:
    """A cross-attention module whose key/value projections read text-token embeddings."""

    name: str
    to_k: nn.Linear
    to_v: nn.Linear


@dataclass
class PromptEncoding:
    """What the cross-attention k/v projections read for a prompt, one row per token position."""

    embeddings: torch.Tensor  # (T, D)
    tokens: list[str]  # T token strings, aligned with the rows
    content: torch.Tensor  # (T,) bool: rows that are words of the prompt (not start/end/padding)


Tensors = dict[str, torch.Tensor]


@dataclass
class InversionSpace:
    """What ``studio.invert`` optimises to make this model reproduce a given image (a GAN's latent).

    The continuous part is a dict of batch-first tensors (``init``); the discrete part, where a family has one (the
    Rooms caption), is the choice among ``starts`` and ``alternatives``. ``render`` must be differentiable in the
    tensors and equal ``Generator.render(to_samples(tensors, samples))`` (no edits active), so the inverted image is
    a sample like any other::

        space = gen.inversion_space()
        tensors = space.init(space.starts[:2])                  # {"latent": (2, 22)}
        image = space.render(tensors, space.starts[:2])         # (2, 3, H, W) in [0, 1], with gradients
        samples = space.to_samples(tensors, space.starts[:2])   # render() of these equals image

    ``starts``: starting samples screened by loss before optimising (Rooms: every caption the vocabulary allows,
    each with a few scene draws; StyleGAN: the mean w). ``alternatives(sample)``: other discrete choices worth
    trying with the same tensors (Rooms: captions one fact away), or None. ``widen(tensors)``: a larger space to
    continue in after the first ``widen_at`` share of the steps (StyleGAN: W to W+, as NVIDIA's projector), or
    None. ``coordinates``: values each tensor entry is tried at in ``sweeps`` coordinate sweeps before the
    gradient steps, or None. ``regularise(tensors)``: a (B,) penalty added to the loss (noise regularisation), or None. ``project``:
    puts the tensors back in their valid range in place after each step (Rooms: [-1, 1]), or None.
    """

    starts: Sequence[Sample]
    init: Callable[[Sequence[Sample]], Tensors]
    render: Callable[[Tensors, Sequence[Sample]], torch.Tensor]
    to_samples: Callable[[Tensors, Sequence[Sample]], list[Sample]]
    alternatives: Callable[[Sample], list[Sample]] | None = None
    widen: Callable[[Tensors], Tensors] | None = None
    widen_at: float = 0.5
    regularise: Callable[[Tensors], torch.Tensor] | None = None
    project: Callable[[Tensors], None] | None = None
    learning_rate: float = 0.05
    #: starting samples kept after screening and optimised side by side for the first share of the steps
    keep: int = 4
    #: values every entry of the tensors is tried at, one entry at a time, before the gradient steps (a coordinate
    #: sweep: Rooms' lamp positions and lit flags sit in separate basins that gradients alone do not cross); None:
    #: no sweep (a StyleGAN w has too many entries for one)
    coordinates: Sequence[float] | None = None
    sweeps: int = 2
    description: str = ""


class Generator(ABC):
    """A loaded generator on a device. Subclasses fill in the family specifics."""

    family: ClassVar[str] = "?"
    supports_half: ClassVar[bool] = True
    takes_prompt: ClassVar[bool] = False
    #: True when :meth:`denoise_prefix` and :meth:`prefix_step` work: edits windowed from step k leave steps
    #: before k alike for every copy, so a ranking runs them once (diffusion).
    shares_denoising_prefix: ClassVar[bool] = False

    def __init__(self, module: nn.Module, *, name: str, device: torch.device, dtype: torch.dtype,
                 resolution: tuple[int, int], source: str | None = None) -> None:
        self.module = module
        self.name = name
        self.device = device
        self.dtype = dtype
        self.resolution = resolution
        self.source = source or name  # built-in name or path: what a session records
        self.clock = StepClock()
        self.default_prompt = ""
        #: the model reference a studio export was made from (set by the layer that opens exports); None otherwise
        self.export_base: Any = None
        self._editors: "weakref.WeakSet[Editor]" = weakref.WeakSet()
        self._kept: list[Editor] = []  # editors whose hooks are part of the model (a studio export's recipe)

    # -- layers ---------------------------------------------------------------------------------
    @abstractmethod
    def layers(self) -> list[LayerInfo]:
        """The layers users can inspect, in forward order."""

    def layer(self, name: str) -> LayerInfo:
        """One layer by name; an unknown name raises with the nearest names."""
        layers = {info.name: info for info in self.layers()}
        if name in layers:
            return layers[name]
        near = difflib.get_close_matches(name, list(layers), n=5, cutoff=0.3)
        hint = f" Nearest: {', '.join(near)}." if near else f" Layers: {', '.join(list(layers)[:8])}..."
        raise LayerNotFound(f"{self.name} has no layer '{name}'.{hint}")

    def unit_layer(self, name: str, unit: int) -> LayerInfo:
        """The layer ``name``, after checking that ``unit`` is one of its units (StudioError otherwise)."""
        info = self.layer(name)
        check_unit(name, unit, info.units)
        return info

    # -- rendering ------------------------------------------------------------------------------
    def sample(self, seed: int, prompt: str | None = None, **options: Any) -> Sample:
        """A :class:`Sample` with the model's default prompt filled in for text models."""
        if self.takes_prompt and not prompt:
            prompt = self.default_prompt
        return Sample(int(seed), prompt if self.takes_prompt else None, options)

    @abstractmethod
    def render(self, samples: Sequence[Sample]) -> torch.Tensor:
        """Images for ``samples`` as (B, 3, H, W) float32 in [0, 1] on ``self.device``.

        Active hooks (an :meth:`editor`) apply. Grad mode is the caller's: wrap in
        ``torch.inference_mode()`` unless gradients are wanted.
        """

    def forward_from(self, layer: str, activation: torch.Tensor, samples: Sequence[Sample]) -> torch.Tensor:
        """Re-render from ``activation`` at ``layer``: only the layers after it run.

        ``activation.shape[0] == len(samples)``. Equals :meth:`render` when ``activation`` is that
        layer's traced output (edits on later layers still apply through hooks).
        """
        raise UnsupportedOperation(f"{self.family} models cannot re-render from a cached layer.")

    def sample_options(self) -> list[SampleOption]:
        """The sample options this model takes (truncation, class, noise, ...), for command lines and panels.

        Empty (the default) for families whose samples are only a seed and a prompt.
        """
        return []

    def preview_options(self) -> dict[str, Any]:
        """Sample options for a quick, lower-quality frame while a slider is being dragged.

        Empty (the default) when a full-quality frame is already fast, as with partial re-renders of GANs;
        slow families (diffusion: fewer steps, smaller size) return what makes a frame cheap.
        """
        return {}

    def denoise_prefix(self, samples: Sequence[Sample], step: int, progress: Any = None) -> Any:
        """Run denoising steps ``[0, step)`` once and keep what :meth:`render` (``start=``) resumes from."""
        raise UnsupportedOperation(f"{self.family} models have no denoising steps to share.")

    def prefix_step(self, window_start: int, sample: Sample) -> int:
        """The render step at which edits windowed from full-schedule step ``window_start`` begin."""
        raise UnsupportedOperation(f"{self.family} models have no denoising steps to share.")

    def trace(self, samples: Sequence[Sample], layers: Sequence[str], *, before_edits: bool = False,
              stop: bool = True) -> dict[str, torch.Tensor]:
        """Activations of ``layers`` for ``samples``; with ``stop`` later layers do not run."""
        with Trace(self.module, layers, stop=stop, before_edits=before_edits) as trace:
            self.render(samples)
        return dict(trace.outputs)

    def editor(self) -> Editor:
        """A fresh hook editor over this model's layers (use it as a context manager)."""
        editor = Editor(self.module, {info.name: info.units for info in self.layers()}, self.clock)
        self._editors.add(editor)
        return editor

    def keep_edits(self, editor: Editor) -> None:
        """Make ``editor``'s hooks part of the model for its lifetime (a studio export's recipe)."""
        self._kept.append(editor)

    def edited_layers(self, *, kept: bool = False) -> list[str]:
        """Layers where an editor of this model has unit edits on; ``kept``: those that are part of the model.

            busy = gen.edited_layers()          # the live sliders' edits, say, but not an export's recipe
        """
        kept_ids = {id(e) for e in self._kept}
        editors = self._kept if kept else [e for e in list(self._editors) if id(e) not in kept_ids]
        return sorted({name for e in editors for name in e.edited_layers})

    # -- inversion: a user's own image --------------------------------------------------------------
    def inversion_space(self) -> InversionSpace | None:
        """What ``studio.invert`` optimises to reproduce an image (:class:`InversionSpace`); None (the default)
        when this family has no latent to optimise (then :meth:`invert_image` may invert in its own way)."""
        return None

    def invert_image(self, image: torch.Tensor, prompt: str | None = None, steps: int = 50, progress: Any = None,
                     cancel: Callable[[], bool] | None = None) -> Sample | None:
        """A sample whose render reproduces ``image`` ((3, H, W) in [0, 1] at :attr:`resolution`) found in the
        family's own way (diffusion: DDIM inversion under ``prompt``); None (the default) when the family has none,
        and then ``studio.invert`` optimises :meth:`inversion_space`."""
        return None

    # -- text conditioning ------------------------------------------------------------------------
    def cross_attention(self) -> list[CrossAttention]:
        """Every cross-attention key/value projection pair (empty for unconditional models)."""
        return []

    def encode_prompt(self, prompt: str) -> PromptEncoding:
        """Token embeddings that the k/v projections read for ``prompt``."""
        raise UnsupportedOperation(f"{self.name} has no text conditioning: it takes no prompt.")

    # -- export -----------------------------------------------------------------------------------
    def bake_unit_scale(self, layer: str, unit: int, gain: float) -> bool:
        """Fold ``x[unit] *= gain`` at ``layer`` into the weights, in place, where that is exact.

        After ``True`` the model renders as with ``UnitEdit(layer, unit, "scale", gain)`` applied by a
        hook (``gain=0`` is switching the unit off); ``False`` (the default) changes nothing and the
        edit stays a hook, kept in the export's recipe::

            exact = gen.bake_unit_scale("blocks.1", 17, 0.0)
        """
        return False

    def native_formats(self) -> list[NativeFormat]:
        """The formats this model writes in its family's own or another tool's layout (default: none)."""
        return []

    def write_native(self, format: str, path: Path) -> NativeWrite:
        """Write the model as it is now (exact edits baked) in one of :meth:`native_formats`, atomically::

            written = gen.write_native("stylegan-pt", Path("edited.pt"))
        """
        raise UnsupportedOperation(f"{self.name} writes no {format} files.")

    def lora_metadata(self) -> dict[str, str]:
        """The safetensors metadata that the kohya/AUTOMATIC1111 convention gives a LoRA made for this model, naming
        its architecture (``ss_v2``, ``ss_base_model_version`` for Stable Diffusion). Default: none."""
        return {}

    def pinned_options(self) -> dict[str, Any]:
        """Sample options a render takes from the model's current settings rather than the sample (diffusion:
        ``size`` and ``scheduler``): an export names them so a file that does not record them is compared on its
        weights, and so whoever renders it knows what to ask for. Default: none."""
        return {}

    def weights_file(self) -> Path | None:
        """The file or folder whose contents are this model (what a session hashes); None if unknown."""
        path = Path(self.source).expanduser()
        return path if path.exists() else None

    # -- description ----------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {"family": self.family, "name": self.name, "source": self.source, "device": str(self.device),
                "dtype": str(self.dtype).removeprefix("torch."), "resolution": list(self.resolution),
                "takes_prompt": self.takes_prompt}


@dataclass(frozen=True)
class ModelEntry:
    """A model the registry can open by name (built-in) or that needs an optional package."""

    name: str
    family: str
    description: str
    available: bool = True
    reason: str = ""  # why it is unavailable and what to install


@dataclass
class FileProbe:
    """What the registry learned about a path before asking families whether it is theirs."""

    path: Path
    is_dir: bool
    suffix: str
    head: bytes = b""
    safetensors_metadata: dict[str, str] | None = None
    safetensors_keys: list[str] | None = None
    zip_names: list[str] | None = None


class Family(Protocol):
    """What a family module exposes as ``FAMILY`` for the registry."""

    name: str

    def builtins(self) -> list[ModelEntry]: ...

    def open_builtin(self, name: str, device: torch.device, precision: str) -> Generator: ...

    def sniff(self, probe: FileProbe) -> bool: ...

    def open_path(self, probe: FileProbe, device: torch.device, precision: str) -> Generator: ...
