"""``python -m studio bench concept``: concept edits measured on the Rooms ground truth, and the solve's speed.

Each wall colour is replaced by the colour opposite it in the palette (red -> teal, ...), with the other seven
colours preserved; one edit at a time, reverted after. Held-out seeds give rooms whose wall the world's detector reads
back from the render:

- ``efficacy``: share of canonical prompts naming the edited colour that now render the target colour;
- ``generality``: the same on paraphrased prompts (caption styles 1..N);
- ``specificity``: share of canonical prompts naming a preserved colour still rendered in that colour;
- ``facts_kept``: share of the edited renders whose bed, window and lamp count still match the prompt (spill onto
  words nobody listed);
- ``edit_seconds``: one solve for all layers of the model (median of the edits);
- ``joint``: all eight replacements in one solve (the palette swapped pairwise), the captions' other words preserved;
- ``sd15_edit_seconds``: one solve on random weights of Stable Diffusion 1.5's cross-attention shapes (16 layers,
  768-wide text), against ``sd15_dense_seconds``, the textbook dense solve (``W = (…)(…)⁻¹`` per projection) in the
  same process.

The baseline rows (``before``) are the unedited model on the same prompts. ``tokens`` compares the token choices on
the colour words and on ``"<colour> walls"`` phrases; two choices that give identical weights share one evaluation.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from models.base import CrossAttention, Generator, LayerInfo, PromptEncoding, Sample
from studio.concept import (
    DEFAULT_LAMBDA,
    DEFAULT_TOKENS,
    TOKEN_MODES,
    ConceptEdit,
    ConceptEditor,
    ConceptEditSpec,
    ConceptError,
    _one_cpu_thread,
    edit_vectors,
    preserve_rows,
    solve,
)
from studio.core.errors import UnsupportedOperation
from studio.core.rooms import world
from studio.exported import open_model

#: Rooms seeds at or above this are held out from training (studio.rooms.train.HELDOUT_BASE); we start further on.
FIRST_SEED = 1_000_000_000 + 700_000
#: Targets are met or not on the Rooms model (printed beside the figures).
TARGETS = {"efficacy": 0.9, "generality": 0.8, "specificity": 0.95, "sd15_edit_seconds": 2.0}


def register(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser("concept", help="concept edits on the Rooms ground truth, and solve speed",
                           description=__doc__.split("\n\n")[0])
    p.add_argument("--model", "-m", default=None, help="a Rooms model (default: the embedded 'rooms')")
    p.add_argument("--device", default="cpu", help="device for the Rooms renders (default: cpu)")
    p.add_argument("--seeds", type=int, default=8, help="held-out rooms per colour and prompt set (default: 8)")
    p.add_argument("--lambda", dest="lambda_", type=float, default=DEFAULT_LAMBDA, help="lambda of every solve")
    p.add_argument("--tokens", choices=TOKEN_MODES, default=DEFAULT_TOKENS, help="token choice of the main figures")
    p.add_argument("--no-compare", action="store_true", help="skip the comparison of token choices")
    p.add_argument("--sd15-only", action="store_true", help="only time the solve on SD 1.5 shapes")
    p.add_argument("--no-sd15", action="store_true", help="skip the timing on SD 1.5 shapes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {"threads": torch.get_num_threads()}
    if not args.sd15_only:
        generator = open_model(args.model, device=args.device, precision="fp32")
        print(f"model: {generator.name} ({generator.family})", file=sys.stderr)
        bench = RoomsConceptBench(generator, seeds=args.seeds, lambda_=args.lambda_)
        result.update(bench.run(args.tokens))
        if not args.no_compare:
            result["tokens"] = bench.compare()
    if not args.no_sd15:
        result.update(sd15_timing(args.lambda_, args.tokens))
    result["targets"] = {k: v for k, v in TARGETS.items() if k in result}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0


# -- Rooms ground truth ------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One prompt on one held-out room: the sample to render and the scene the detector reads it against."""

    sample: object
    scene: object
    fields: object  # the caption facts the prompt states


class RoomsConceptBench:
    """Replace edits between wall colours, scored by the Rooms world's wall detector."""

    def __init__(self, generator, seeds: int = 8, lambda_: float = DEFAULT_LAMBDA) -> None:

        self.world, self.generator, self.lambda_ = world, generator, lambda_
        self.colours = list(world.WALL_COLOURS)
        self.editor = ConceptEditor(generator)
        n = len(self.colours)
        self.pairs = [(c, self.colours[(i + n // 2) % n]) for i, c in enumerate(self.colours)]
        self.canonical = {c: self._cases(c, seeds, paraphrase=False) for c in self.colours}
        self.paraphrased = {c: self._cases(c, seeds, paraphrase=True) for c in self.colours}
        self._seen: list[tuple[dict[str, torch.Tensor], dict]] = []

    def _cases(self, colour: str, seeds: int, paraphrase: bool) -> list[Case]:
        w = self.world
        offset = self.colours.index(colour) * 1000 + (500 if paraphrase else 0)
        cases = []
        for k in range(seeds):
            seed = FIRST_SEED + offset + k
            rng = np.random.default_rng(seed)
            fields = w.CaptionFields(colour, bool(rng.random() < w.BED_RATE), bool(rng.random() < w.WINDOW_RATE),
                                     int(rng.integers(1, w.MAX_LAMPS + 1)))
            style = 1 + k % w.N_PARAPHRASES if paraphrase else 0
            prompt = w.caption(fields, style)
            scene = w.scene_from(w.sample_latent(seed), fields)
            cases.append(Case(self.generator.sample(seed, prompt), scene, fields))
        return cases

    def read(self, cases: Sequence[Case], batch: int = 16) -> list:
        """The caption facts (wall, bed, window, lamp count) the world's detectors read in each case's render."""
        out: list = []
        with torch.inference_mode():
            for i in range(0, len(cases), batch):
                chunk = cases[i:i + batch]
                images = self.generator.render([c.sample for c in chunk]).float().clamp(0, 1)
                images = images.permute(0, 2, 3, 1).cpu().numpy()
                out += [self.world.detect_fields(img, c.scene) for img, c in zip(images, chunk)]
        return out

    def spec(self, concept: str, target: str, tokens: str, phrase: bool) -> ConceptEditSpec:
        word = (lambda c: f"{c} walls") if phrase else (lambda c: c)
        keep = [word(c) for c in self.colours if c != concept]
        return ConceptEditSpec([ConceptEdit("replace", word(concept), word(target))], keep, self.lambda_,
                               tokens=tokens)

    def before(self) -> dict:
        """The unedited model on the same prompts: how often it draws the named wall, and the other facts."""
        cases = [case for c in self.colours for case in self.canonical[c]]
        seen = self.read(cases)
        seen_p = self.read([case for c in self.colours for case in self.paraphrased[c]])
        walls = [case.fields.wall for c in self.colours for case in self.paraphrased[c]]
        return {"adherence": sum(f.wall == c.fields.wall for f, c in zip(seen, cases)) / len(cases),
                "adherence_paraphrased": sum(f.wall == w for f, w in zip(seen_p, walls)) / len(walls),
                "facts_kept": sum(_other_facts(f) == _other_facts(c.fields) for f, c in zip(seen, cases)) / len(cases)}

    def evaluate(self, tokens: str, phrase: bool = False) -> dict:
        """Efficacy, generality, specificity and solve seconds of all eight replace edits under one token choice."""
        hits = gen_hits = kept = facts = n_eff = n_gen = n_spec = n_facts = 0
        seconds: list[float] = []
        ranks: list[int] = []
        for concept, target in self.pairs:
            print(f"  {concept} -> {target} ({tokens}{', phrase' if phrase else ''})", file=sys.stderr)
            n_eff += len(self.canonical[concept])
            n_gen += len(self.paraphrased[concept])
            try:
                applied = self.editor.apply(self.spec(concept, target, tokens, phrase))
            except ConceptError as error:  # e.g. 'last' on "red walls": the last word does not change
                print(f"  no edit: {error}", file=sys.stderr)
                continue
            try:
                seconds.append(applied.seconds)
                ranks.append(applied.rank)
                others = [case for c in self.colours if c != concept for case in self.canonical[c]]
                edited = self.read(self.canonical[concept])
                kept_seen = self.read(others)
                hits += sum(f.wall == target for f in edited)
                gen_hits += sum(f.wall == target for f in self.read(self.paraphrased[concept]))
                kept += sum(f.wall == c.fields.wall for f, c in zip(kept_seen, others))
                n_spec += len(others)
                pairs = list(zip(edited, self.canonical[concept])) + list(zip(kept_seen, others))
                facts += sum(_other_facts(f) == _other_facts(c.fields) for f, c in pairs)
                n_facts += len(pairs)
            finally:
                self.editor.revert()
        return {"efficacy": hits / max(n_eff, 1), "generality": gen_hits / max(n_gen, 1),
                "specificity": kept / n_spec if n_spec else None, "facts_kept": facts / n_facts if n_facts else None,
                "edit_seconds": statistics.median(seconds) if seconds else None,
                "rank": max(ranks, default=0), "edits": len(self.pairs), "edits_solved": len(seconds)}

    def joint(self, tokens: str) -> dict:
        """All eight replacements in one solve (the palette swapped pairwise), the captions' other words preserved."""
        colours = set(self.colours)
        words = sorted({w for cases in (*self.canonical.values(), *self.paraphrased.values()) for case in cases
                        for w in re.findall(r"[a-z]+", case.sample.prompt) if w not in colours})
        spec = ConceptEditSpec([ConceptEdit("replace", c, t) for c, t in self.pairs], words, self.lambda_,
                               tokens=tokens)
        print(f"  all {len(self.pairs)} colours in one solve ({tokens})", file=sys.stderr)
        applied = self.editor.apply(spec)
        try:
            target = dict(self.pairs)
            cases = [case for c in self.colours for case in self.canonical[c]]
            seen = self.read(cases)
            cases_p = [case for c in self.colours for case in self.paraphrased[c]]
            seen_p = self.read(cases_p)
        finally:
            self.editor.revert()
        return {"efficacy": sum(f.wall == target[c.fields.wall] for f, c in zip(seen, cases)) / len(cases),
                "generality": sum(f.wall == target[c.fields.wall] for f, c in zip(seen_p, cases_p)) / len(cases_p),
                "facts_kept": sum(_other_facts(f) == _other_facts(c.fields) for f, c in zip(seen, cases)) / len(cases),
                "edit_seconds": applied.seconds, "rank": applied.rank, "preserved_words": len(words)}

    def run(self, tokens: str) -> dict:
        start = time.perf_counter()
        result = {"model": self.generator.name, "tokens_mode": tokens, "lambda": self.lambda_,
                  "prompts_per_edit": {"efficacy": len(self.canonical[self.colours[0]]),
                                       "generality": len(self.paraphrased[self.colours[0]]),
                                       "specificity": sum(len(self.canonical[c]) for c in self.colours[1:])}}
        result["before"] = self.before()
        result.update(self.evaluate(tokens))
        result["joint"] = self.joint(tokens)
        result["bench_seconds"] = time.perf_counter() - start
        return result

    def compare(self) -> dict:
        """Every token choice on colour words and on "<colour> walls" phrases (identical weights evaluated once)."""
        table: dict[str, dict] = {}
        for phrase in (False, True):
            for tokens in TOKEN_MODES:
                key = f"{tokens}/{'phrase' if phrase else 'word'}"
                same = self._same_as(tokens, phrase)
                if same is not None:
                    table[key] = {**table[same], "same_weights_as": same}
                    continue
                table[key] = {k: v for k, v in self.evaluate(tokens, phrase).items() if k not in ("edits",)}
        return table

    def _same_as(self, tokens: str, phrase: bool) -> str | None:
        """The key of an evaluated choice whose edits give bit-identical factors, if any."""
        try:
            factors = [solve(self.generator, self.spec(c, t, tokens, phrase)) for c, t in self.pairs]
        except ConceptError:
            factors = None
        for key, other in self._seen:
            if factors is None and other is None or (factors is not None and other is not None and all(
                    torch.equal(a[n].delta(), b[n].delta()) for a, b in zip(factors, other) for n in a)):
                return key
        self._seen.append((f"{tokens}/{'phrase' if phrase else 'word'}", factors))
        return None


def _other_facts(fields) -> tuple:
    return bool(fields.bed), bool(fields.window), int(fields.lamps)


# -- SD 1.5 shapes -----------------------------------------------------------------------------------------------
#: Output widths of SD 1.5's 16 cross-attention (attn2) layers: down 2+2+2, mid 1, up 3+3+3.
SD15_WIDTHS = (320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320)
SD15_TEXT, SD15_TOKENS = 768, 77


class Sd15Shapes(Generator):
    """Random weights in Stable Diffusion 1.5's cross-attention shapes and a CLIP-shaped pseudo text encoder.

    Rows are causal like CLIP's (row i depends on the words up to i), start/end/padding marked as not content.
    Used only to time the solve: it has no image path.
    """

    family = "sd15-shapes"
    takes_prompt = True

    def __init__(self, seed: int = 0, widths: Sequence[int] = SD15_WIDTHS) -> None:
        torch.manual_seed(seed)
        module = nn.ModuleList()
        for width in widths:
            attn = nn.Module()
            attn.to_k = nn.Linear(SD15_TEXT, width, bias=False)
            attn.to_v = nn.Linear(SD15_TEXT, width, bias=False)
            module.append(attn)
        super().__init__(module, name="sd15-shapes", device=torch.device("cpu"), dtype=torch.float32,
                         resolution=(512, 512))
        self._padding = torch.randn(SD15_TOKENS, SD15_TEXT, generator=torch.Generator().manual_seed(seed))

    def layers(self) -> list[LayerInfo]:
        return []

    def render(self, samples: Sequence[Sample]) -> torch.Tensor:
        raise UnsupportedOperation("sd15-shapes only times the solve; it renders nothing.")

    def cross_attention(self) -> list[CrossAttention]:
        return [CrossAttention(f"{i}.attn2", m.to_k, m.to_v) for i, m in enumerate(self.module)]

    def encode_prompt(self, prompt: str) -> PromptEncoding:
        words = prompt.lower().split()[: SD15_TOKENS - 2]
        tokens = ["<|startoftext|>", *words] + ["<|endoftext|>"] * (SD15_TOKENS - 1 - len(words))
        rows = torch.empty(SD15_TOKENS, SD15_TEXT)
        for i in range(len(words) + 2):  # start, words, first end: each a function of the words up to it
            key = " ".join(tokens[: i + 1]).encode()
            rows[i] = torch.randn(SD15_TEXT, generator=torch.Generator().manual_seed(zlib.crc32(key)))
        rows[len(words) + 2:] = rows[len(words) + 1] + 0.1 * self._padding[len(words) + 2:]  # padding ≈ end row
        content = torch.tensor([0 < i <= len(words) for i in range(SD15_TOKENS)])
        return PromptEncoding(rows, tokens, content)


def dense_solve(generator, spec: ConceptEditSpec) -> None:
    """The textbook solve, per projection: W = (λW0 + Σ v* cᵀ + Σ W0 c cᵀ)(λI + Σ c cᵀ + Σ c cᵀ)⁻¹, written in."""

    pairs = [edit_vectors(generator, e, spec.tokens) for e in spec.edits]
    c, t = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    p = preserve_rows(generator, spec.preserve, spec.tokens)
    norms = (c * c).sum(1)
    lam = spec.lambda_ * float(norms[norms > 0].mean())
    for ca in generator.cross_attention():
        for linear in (ca.to_k, ca.to_v):
            w0 = linear.weight.detach().float()
            mat1 = lam * w0 + spec.edit_scale * (w0 @ t.T) @ c + spec.preserve_scale * (w0 @ p.T) @ p
            mat2 = lam * torch.eye(w0.shape[1]) + spec.edit_scale * c.T @ c + spec.preserve_scale * p.T @ p
            with torch.no_grad():
                linear.weight.copy_(mat1 @ torch.inverse(mat2))


def sd15_timing(lambda_: float = DEFAULT_LAMBDA, tokens: str = DEFAULT_TOKENS, repeats: int = 3,
                widths: Sequence[int] = SD15_WIDTHS) -> dict:
    """Seconds of one solve (2 replace edits, 10 preserved concepts) on SD 1.5 shapes: ours (median of
    ``repeats``; the first also keeps a copy of the original weights) against one dense solve, both on one thread."""

    model = Sd15Shapes(widths=widths)
    spec = ConceptEditSpec([ConceptEdit("replace", "a red car", "a blue car"),
                            ConceptEdit("replace", "van gogh", "a photograph")],
                           ["a green car", "a yellow car", "a truck", "a cat", "monet", "a painting", "red",
                            "blue", "a city street", "a portrait of a woman"], lambda_, tokens=tokens)
    editor = ConceptEditor(model)
    ours: list[float] = []
    rank = 0
    for _ in range(repeats):
        start = time.perf_counter()
        rank = editor.apply(spec).rank
        ours.append(time.perf_counter() - start)
        edited = {n: lin.weight.detach().clone() for n, lin in editor.projections.items()}
        editor.revert()
    with _one_cpu_thread(model.device):
        start = time.perf_counter()
        dense_solve(model, spec)
        dense = time.perf_counter() - start
    diff = max((lin.weight - edited[n]).abs().max().item() for n, lin in editor.projections.items())
    o = statistics.median(ours)
    return {"sd15_edit_seconds": o, "sd15_first_edit_seconds": ours[0], "sd15_dense_seconds": dense,
            "sd15_speedup_vs_dense": dense / o, "sd15_max_abs_diff_vs_dense": diff, "sd15_layers": len(widths),
            "sd15_tokens_mode": tokens, "sd15_rank": rank}
