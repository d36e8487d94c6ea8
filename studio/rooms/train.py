"""Train the Rooms generator on freshly drawn Rooms-world scenes (no fixed dataset: every step sees new scenes).

    python -m studio.rooms.train --config resources/rooms/train.json --out resources/rooms/rooms.safetensors

Reproducible: torch and the scene stream are seeded from the config; training scenes come from seeds below
``HELDOUT_BASE`` and held-out scenes from seeds at or above it. The run stops at ``steps`` or, earlier, when
``max_minutes`` of wall time are spent (the LR schedule follows whichever is further along), checkpointing the
weights atomically every ``checkpoint_minutes``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from studio.core.rooms import text as rtext
from studio.core.rooms import world
from studio.core.rooms.model import RoomsConfig, RoomsGenerator, load_weights, save_weights

#: Scene seeds at or above this are held out from training (evaluation draws from here).
HELDOUT_BASE = 1_000_000_000
#: A step between neighbouring pixels above this (in [0, 1], any channel) counts as an edge for ``edge_weight``.
EDGE_THRESHOLD = 0.06


@dataclass
class Example:
    """One training pair: model inputs, exact target image and a per-pixel loss weight."""

    latent: np.ndarray  # (LATENT_DIM,) float32
    tokens: np.ndarray  # (MAX_TOKENS,) int64
    caption: str
    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    weight: np.ndarray  # (H, W) float32
    scene: object


def draw_example(seed: int, size: int = 128, light_weight: float = 4.0, style: int | None = None,
                 lamp_weight: float = 0.0, edge_weight: float = 0.0) -> Example:
    """Seed -> scene -> (latent, caption tokens, exact render); lamps and glow up-weighted in the loss.

    Loss weight per pixel: 1, plus ``light_weight`` on lamps and where their light falls, plus ``lamp_weight`` on the
    lamps themselves (shade and pole: small, and what the lamp-count detector reads), plus ``edge_weight`` on the
    target's edges in and around the lamps, lit or unlit (``lamp_edges``: a shade's outline, the pool's rim).

    >>> ex = draw_example(1_000_000_007)
    >>> ex.image.shape, ex.tokens.shape
    ((128, 128, 3), (16,))
    """
    rng = np.random.default_rng(seed)
    scene = world.sample_scene(rng)
    latent = np.asarray(world.encode_latent(scene), dtype=np.float32)
    flds = world.fields(scene)
    style = int(rng.integers(world.N_PARAPHRASES + 1)) if style is None else style  # styles 0..N_PARAPHRASES
    cap = world.caption(flds, style=style)
    scene = world.scene_from(latent, flds)  # the target is exactly a function of the model's inputs
    if light_weight > 0 or lamp_weight > 0 or edge_weight > 0:
        t = world.truth(scene, size=size)
        image = np.asarray(t.image, dtype=np.float32)
        weight = loss_weight(t, light_weight, lamp_weight, edge_weight)
    else:
        image = np.asarray(world.render(scene, size=size), dtype=np.float32)
        weight = np.ones(image.shape[:2], dtype=np.float32)
    return Example(latent, np.asarray(rtext.encode(cap), dtype=np.int64), cap, image, weight, scene)


def loss_weight(truth, light_weight: float, lamp_weight: float = 0.0, edge_weight: float = 0.0,
                also_light: np.ndarray | None = None) -> np.ndarray:
    """(H, W) float32 loss weight of one truth render (see :func:`draw_example`): 1, plus ``light_weight`` on lamps and
    their light (and on ``also_light``, e.g. a switched lamp's light region, lit or not), plus ``lamp_weight`` on the
    lamps, plus ``edge_weight`` on the target's edges there."""
    image = np.asarray(truth.image, dtype=np.float32)
    lamps = np.zeros(image.shape[:2], dtype=bool)
    light = np.zeros(image.shape[:2], dtype=bool)
    for i in range(world.MAX_LAMPS):
        lamps |= np.asarray(truth.masks[f"lamp{i}"], dtype=bool)
        light |= np.asarray(truth.masks[f"glow{i}"], dtype=bool)
    near = lamps | light if also_light is None else lamps | light | also_light
    weight = 1.0 + light_weight * near.astype(np.float32) + lamp_weight * lamps.astype(np.float32)
    if edge_weight > 0:
        weight = weight + edge_weight * lamp_edges(image, near).astype(np.float32)
    return weight.astype(np.float32)


def lamp_edges(image: np.ndarray, region: np.ndarray, threshold: float = EDGE_THRESHOLD, grow: int = 2) -> np.ndarray:
    """(H, W) bool: pixels of ``region`` grown by ``grow`` px where the image steps by more than ``threshold`` to a
    4-neighbour in some channel (the crisp edges a blurry render loses).

    >>> img = np.zeros((8, 8, 3), np.float32); img[:, 4:] = 1.0
    >>> lamp_edges(img, np.ones((8, 8), bool))[0].tolist()
    [False, False, False, True, True, False, False, False]
    """
    step = np.zeros(image.shape[:2], dtype=np.float32)
    dx = np.abs(np.diff(image, axis=1)).max(-1)
    dy = np.abs(np.diff(image, axis=0)).max(-1)
    step[:, :-1] = np.maximum(step[:, :-1], dx)
    step[:, 1:] = np.maximum(step[:, 1:], dx)
    step[:-1] = np.maximum(step[:-1], dy)
    step[1:] = np.maximum(step[1:], dy)
    near = region.copy()
    for _ in range(grow):  # grow by one 4-neighbour per round
        g = near.copy()
        g[1:] |= near[:-1]
        g[:-1] |= near[1:]
        g[:, 1:] |= near[:, :-1]
        g[:, :-1] |= near[:, 1:]
        near = g
    return near & (step > threshold)


def batch(seeds: list[int], size: int, light_weight: float, lamp_weight: float = 0.0,
          edge_weight: float = 0.0) -> tuple[torch.Tensor, ...]:
    """Stacked (latent, tokens, image (B,3,H,W), weight (B,1,H,W)) for ``seeds``."""
    exs = [draw_example(s, size, light_weight, lamp_weight=lamp_weight, edge_weight=edge_weight) for s in seeds]
    latent = torch.from_numpy(np.stack([e.latent for e in exs]))
    tokens = torch.from_numpy(np.stack([e.tokens for e in exs]))
    image = torch.from_numpy(np.stack([e.image for e in exs])).permute(0, 3, 1, 2)  # NHWC memory = channels_last
    weight = torch.from_numpy(np.stack([e.weight for e in exs]))[:, None]
    return latent, tokens, image, weight


def step_seeds(cfg: dict, step: int) -> list[int]:
    """The training scene seeds of one step: a pure function of (config seed, step), all below HELDOUT_BASE."""
    rng = np.random.default_rng([cfg["seed"], step])
    return [int(s) for s in rng.integers(0, HELDOUT_BASE, size=cfg["batch"])]


class BatchFeed:
    """Renders the next batches in a background thread (numpy/cv2 release the GIL) while the net trains."""

    def __init__(self, cfg: dict, size: int, first_step: int = 0, depth: int = 3) -> None:
        self.cfg, self.size = cfg, size
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(first_step,), daemon=True)
        self.thread.start()

    def _run(self, step: int) -> None:
        while not self.stopped.is_set():
            item = (step, batch(step_seeds(self.cfg, step), self.size, self.cfg["light_weight"],
                                self.cfg.get("lamp_weight", 0.0), self.cfg.get("edge_weight", 0.0)))
            while not self.stopped.is_set():
                try:
                    self.queue.put(item, timeout=0.5)
                    break
                except queue.Full:
                    continue
            step += 1

    def get(self, step: int) -> tuple[torch.Tensor, ...]:
        got, tensors = self.queue.get()
        assert got == step, f"feed out of order: {got} != {step}"
        return tensors

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1]: (B,)."""
    mse = (pred.clamp(0, 1) - target).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10.0 * torch.log10(1.0 / mse)


def model_config(cfg: dict) -> RoomsConfig:
    """The network config: the world's sizes plus the architecture keys of the training config."""
    arch = dict(cfg.get("model", {}))
    return RoomsConfig.from_json(
        {**arch, "latent_dim": int(world.LATENT_DIM), "vocab_size": len(rtext.VOCAB), "max_tokens": rtext.MAX_TOKENS}
    )


def hoyer_ratio(h: torch.Tensor) -> torch.Tensor:
    """Per position, ``|h|_1 / (|h|_2 sqrt(C))`` over the units (dim 1): 1 if all are equally active, 1/sqrt(C) if
    one is; unchanged when ``h`` is scaled."""
    return h.abs().sum(1) / (h.pow(2).sum(1).sqrt() + 1e-6) / h.shape[1] ** 0.5


def forward_with_sparsity(net: RoomsGenerator, latent: torch.Tensor, tokens: torch.Tensor,
                          act_l1: dict) -> tuple[torch.Tensor, torch.Tensor | float]:
    """The image and a sparsity penalty on chosen blocks' outputs (``act_l1``: block index -> weight).

    The penalty is the mean over positions of ``|h|_1 / (|h|_2 sqrt(C))`` across units (Hoyer's measure: 1 when
    every unit is equally active, ``1/sqrt(C)`` when one is): it cannot be dodged by shrinking the activations and
    growing the next layer's weights, as a plain L1 can. A sparse layer is one where a concept (a lamp's light) is
    carried by few units, which is what switching off the ranking's top units relies on.
    """
    if not act_l1:
        return net(latent, tokens), 0.0
    weights = {int(k): float(v) for k, v in act_l1.items()}
    cond = net.prepare(latent, tokens)
    h, penalty = cond.stem, 0.0
    for i in range(len(net.blocks)):
        h = net.run_block(i, h, cond)
        if i in weights:
            penalty = penalty + weights[i] * hoyer_ratio(h).mean()
    return net.to_image(h), penalty


def freeze_prefix(net: RoomsGenerator, first_trained: int) -> list[str]:
    """Hold fixed everything that computes ``blocks.<first_trained - 1>``'s output (word embeddings, stem, the FiLM
    and weights of the earlier blocks, their cross-attention); returns the frozen parameter names.

    The frozen prefix's activations stay bit-identical, so knobs and rankings on those layers keep their meaning.
    0 freezes nothing.
    """
    if not 0 <= first_trained <= len(net.blocks):
        raise ValueError(f"train_from_block must be 0 to {len(net.blocks)}, got {first_trained}")
    if first_trained == 0:
        return []
    prefix = ("text.", "stem.") + tuple(f"film.{i}." for i in range(first_trained)) \
        + tuple(f"blocks.{i}." for i in range(first_trained))
    frozen = []
    for name, param in net.named_parameters():
        if name.startswith(prefix):
            param.requires_grad_(False)  # autograd then skips the prefix: only the trained blocks are back-propagated
            frozen.append(name)
    return frozen


def grown_convs(start: RoomsConfig, config: RoomsConfig) -> list[str] | None:
    """The parameter names ``config`` adds to ``start`` when it only has more extra residual convs in some blocks
    (the rest identical): they start at zero, so the grown net renders exactly as ``start``. ``None`` when the
    architectures differ otherwise (or ``config`` has fewer extra convs).

    >>> grown_convs(RoomsConfig(widths=(8, 4)), RoomsConfig(widths=(8, 4), extra_convs=(0, 1)))
    ['blocks.1.extra.0.weight', 'blocks.1.extra.0.bias']
    """
    n = len(config.widths)
    old = list(start.extra_convs) + [0] * (n - len(start.extra_convs))
    new = list(config.extra_convs) + [0] * (n - len(config.extra_convs))
    if len(old) != n or len(new) != n or any(b < a for a, b in zip(old, new)) \
            or replace(start, extra_convs=()) != replace(config, extra_convs=()):
        return None
    return [f"blocks.{i}.extra.{j}.{part}" for i in range(n) for j in range(old[i], new[i]) for part in ("weight", "bias")]


def image_loss(pred: torch.Tensor, image: torch.Tensor, weight: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Weighted L1 + ``mse_weight`` MSE, plus ``grad_weight`` times the weighted L1 between the images' horizontal and
    vertical pixel steps (a blurred edge costs even where its mean colour is right)."""
    diff = pred - image
    err = diff.abs() + cfg["mse_weight"] * diff.pow(2)
    loss = (err * weight).mean() / weight.mean()
    grad_weight = cfg.get("grad_weight", 0.0)
    if grad_weight > 0:
        wx = torch.maximum(weight[..., :, 1:], weight[..., :, :-1])
        wy = torch.maximum(weight[..., 1:, :], weight[..., :-1, :])
        ex = (diff[..., :, 1:] - diff[..., :, :-1]).abs()
        ey = (diff[..., 1:, :] - diff[..., :-1, :]).abs()
        loss = loss + grad_weight * 0.5 * ((ex * wx).mean() / wx.mean() + (ey * wy).mean() / wy.mean())
    return loss


def lr_at(progress: float, cfg: dict) -> float:
    """Linear warmup then cosine decay to ``lr * min_lr_ratio``; ``progress`` in [0, 1]."""
    warm = cfg["warmup_fraction"]
    if progress < warm:
        return cfg["lr"] * progress / warm
    t = min(1.0, (progress - warm) / max(1e-8, 1.0 - warm))
    floor = cfg["lr"] * cfg["min_lr_ratio"]
    return floor + (cfg["lr"] - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


@torch.inference_mode()
def heldout_psnr(net: RoomsGenerator, held: tuple[torch.Tensor, ...]) -> float:
    was = net.training
    net.eval()
    latent, tokens, image, _ = held
    out = torch.cat([net(latent[i : i + 32], tokens[i : i + 32]) for i in range(0, len(latent), 32)])
    net.train(was)
    return float(psnr(out, image).mean())


def train(cfg: dict, out: Path, log=print, state_path: Path | None = None, init: Path | None = None) -> dict:
    """Run one training job from a config dict; returns a summary (steps, minutes, final held-out PSNR).

    ``init`` starts from earlier weights (a second, fine-tuning stage) instead of a fresh network. A ``knob_edits``
    entry (with ``train_from_block`` past every layer a lamp knob edits) adds, each step, a batch of knob-edited inputs
    of the first trained block rendered against the truth with that lamp switched (:mod:`studio.rooms.knob_edits`;
    the edited inputs are drawn once, at the start, and not kept in ``state_path``).
    """
    torch.manual_seed(cfg["seed"])
    torch.set_num_threads(cfg.get("threads", 2))
    mcfg = model_config(cfg)
    size = mcfg.image_size
    net = RoomsGenerator(mcfg)
    if init is not None:
        start_net, start_meta = load_weights(init)
        grown = grown_convs(start_net.config, mcfg)
        if start_net.config != mcfg and grown is None:
            raise ValueError(f"{init} has another architecture than this config: {start_net.config}")
        missing, unexpected = net.load_state_dict(start_net.state_dict(), strict=False)
        if unexpected or set(missing) != set(grown or []):
            raise ValueError(f"{init} does not fit this config's network (missing {sorted(missing)[:4]}, "
                             f"unexpected {sorted(unexpected)[:4]}).")
        with torch.no_grad():  # a zero residual conv adds silu(0) = 0: the grown net starts as the init exactly
            for name in missing:
                net.get_parameter(name).zero_()
        if missing:
            log(f"grown from {init}: {len(missing)} new zero tensors ({', '.join(sorted(missing))})")
        log(f"starting from {init} (trained {start_meta.get('steps')} steps)")
    net = net.to(memory_format=torch.channels_last).train()
    first_trained = int(cfg.get("train_from_block", 0))
    if first_trained and init is None:
        raise ValueError("train_from_block freezes earlier weights, so it needs --init weights to start from")
    frozen = freeze_prefix(net, first_trained)
    if frozen:
        log(f"frozen up to blocks.{first_trained - 1}: {len(frozen)} tensors, "
            f"{sum(p.numel() for p in net.parameters() if not p.requires_grad) / 1e6:.2f}M params")
    trained = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    decay = [p for n, p in trained if p.ndim >= 2 and not n.startswith("text.")]
    no_decay = [p for n, p in trained if not (p.ndim >= 2 and not n.startswith("text."))]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lr"], betas=(0.9, 0.99),
    )
    step, spent = 0, 0.0
    edit_rng = torch.Generator().manual_seed(int(cfg["seed"]))  # which knob-edited scenes each step draws
    if state_path is not None and state_path.exists():
        state = torch.load(state_path, weights_only=True)  # our own file, still no pickled code
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        if "edit_rng" in state:  # state files written before it was kept resume with a fresh draw
            edit_rng.set_state(state["edit_rng"])
        step, spent = state["step"], state["spent"]
        log(f"resumed from {state_path} at step {step} ({spent / 60:.1f} min spent)")
    edits, edit_spec = None, None
    if cfg.get("knob_edits") is not None:
        from studio.rooms import knob_edits  # the knob machinery only for a stage that asks for it

        if init is None or first_trained == 0:
            raise ValueError("knob_edits trains on knob-edited activations of a frozen prefix, so it needs --init "
                             "weights and train_from_block.")
        edit_spec = knob_edits.spec_of(cfg["knob_edits"])
        edits = knob_edits.edited_inputs(init, first_trained, edit_spec, log)
    held_seeds = [HELDOUT_BASE + i for i in range(cfg["eval_scenes"])]
    held = batch(held_seeds, size, 0.0)
    log(f"model {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M params, config {mcfg.to_json()}")
    feed = BatchFeed(cfg, size, first_step=step)
    budget = cfg["max_minutes"] * 60.0
    start = time.perf_counter() - spent
    last_ckpt = time.perf_counter()
    loss_avg, best = None, None

    def save(final: bool = False) -> None:
        extra = {"steps": str(step), "train_minutes": f"{(time.perf_counter() - start) / 60:.1f}",
                 "train_config": json.dumps(cfg, sort_keys=True)}
        if init is not None:
            extra["init"] = str(init)
        save_weights(net, out, list(rtext.VOCAB), extra)
        if state_path is not None:
            tmp = state_path.with_name(state_path.name + ".tmp")
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(),
                        "torch_rng": torch.get_rng_state(), "edit_rng": edit_rng.get_state(), "step": step,
                        "spent": time.perf_counter() - start}, tmp)
            os.replace(tmp, state_path)
        log(f"{'final weights' if final else 'checkpoint'} -> {out} at step {step}")

    try:  # an error or Ctrl+C mid-run must not leave the feed's thread rendering
        while True:
            elapsed = time.perf_counter() - start
            progress = max(step / cfg["steps"], elapsed / budget)
            if progress >= 1.0:
                break
            lr = lr_at(progress, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            latent, tokens, image, weight = feed.get(step)
            pred, sparsity = forward_with_sparsity(net, latent, tokens, cfg.get("act_l1", {}))
            loss = image_loss(pred, image, weight, cfg) + sparsity
            if edits is not None:  # the same rendering from a knob-edited input, against the switched lamp's truth
                inputs, e_latent, e_tokens, e_image, e_weight = knob_edits.edited_batch(edits, cfg["batch"], edit_rng)
                cond = net.prepare(e_latent, e_tokens)  # with grad: the trained blocks' FiLM learns from it too
                pred = net.forward_from(first_trained - 1, inputs, cond=cond)
                loss = loss + edit_spec["weight"] * image_loss(pred, e_image, e_weight, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in trained], cfg["grad_clip"])
            opt.step()
            step += 1
            value = loss.item()
            loss_avg = value if loss_avg is None else 0.95 * loss_avg + 0.05 * value
            if step % cfg["log_every"] == 0:
                log(f"step {step} loss {loss_avg:.4f} lr {lr:.2e} {elapsed / 60:.1f} min "
                    f"{step * cfg['batch'] / max(elapsed, 1e-6):.1f} img/s")
            if step % cfg["eval_every"] == 0:
                best = heldout_psnr(net, held)
                log(f"step {step} held-out PSNR {best:.2f} dB ({len(held_seeds)} scenes)")
            if time.perf_counter() - last_ckpt > cfg["checkpoint_minutes"] * 60:
                save()
                last_ckpt = time.perf_counter()
    finally:
        feed.close()
    final_psnr = heldout_psnr(net, held)
    minutes = (time.perf_counter() - start) / 60
    log(f"done: {step} steps, {minutes:.1f} min, held-out PSNR {final_psnr:.2f} dB")
    save(final=True)
    return {"steps": step, "minutes": minutes, "heldout_psnr": final_psnr}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="training config JSON")
    parser.add_argument("--out", type=Path, required=True, help="where to write the .safetensors weights")
    parser.add_argument("--init", type=Path, default=None, help="start from these weights (a fine-tuning stage)")
    parser.add_argument("--state", type=Path, default=None, help="optional resumable state file (optimizer, RNGs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a config key, e.g. --set steps=200 --set max_minutes=3")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    for item in args.set:
        key, _, value = item.partition("=")
        cfg[key] = json.loads(value)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    stages = cfg.get("stages")
    if not stages:
        log(f"config {json.dumps(cfg, sort_keys=True)}")
        print(json.dumps(train(cfg, args.out, log, args.state, args.init)), flush=True)
        return 0
    # A multi-stage config lists stage configs (relative to it); each stage starts from the previous one's weights.
    init = args.init
    for number, name in enumerate(stages, start=1):
        stage_cfg = json.loads((args.config.parent / name).read_text())
        for item in args.set:
            key, _, value = item.partition("=")
            stage_cfg[key] = json.loads(value)
        last = number == len(stages)
        out = args.out if last else args.out.with_name(f"{args.out.stem}.stage{number}{args.out.suffix}")
        log(f"stage {number}/{len(stages)} ({name}) config {json.dumps(stage_cfg, sort_keys=True)}")
        print(json.dumps(train(stage_cfg, out, log, None, init)), flush=True)
        if init is not None and init != args.init:
            init.unlink(missing_ok=True)  # intermediate weights are not kept
        init = out
    return 0


if __name__ == "__main__":
    sys.exit(main())
