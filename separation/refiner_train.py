"""Training data and training loop of the mask refiner (:mod:`separation.refiner`).

The refiner learns from what the shipped separator really produces: ``write_refiner_shards`` draws
fresh augmented mixtures, prompts the frozen separator with a paraphrase of the target's category (or
the target source's picture), decodes its target and residual estimates and stores the four waveforms
(mixture, true target, target estimate, residual estimate) in shards. ``train_refiner`` then trains
on those shards alone (no codec or separator in the loop), with the negative SI-SDR of the refined
mixture-consistent target as the loss; a validation folder of shards drawn from the ``val`` split
measures the refined mask against the plain ratio mask as it goes.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from encoders.errors import PromptsepError, WeightsError, require_checkpoint
from separation.metrics import si_sdr
from separation.refiner import MaskRefiner, RefinerConfig
from separation.train import save_atomically

SHARD_GLOB = "refine-*.pt"
UNRECORDED_RATE = 16000  # shards written before items recorded their rate all came from the 16 kHz default codec


@torch.no_grad()
def write_refiner_shards(
    data: str, out: Path, bundle: str = "", split: str = "train", shard_size: int = 16, shards: int = 0,
    minutes: float = 0.0, seed: int = 1, seconds: float = 4.0, threads: int = 1, device: str = "cpu",
) -> int:
    """Write ``out/refine-<split>-<seed>-<n>.pt`` shards of ``(4, N)`` float16 waveforms: mixture, true target,
    and the separator's decoded target and residual estimates. Stops after ``shards`` shards or ``minutes``
    minutes, whichever is set and comes first. Returns the shard count."""
    from einops import rearrange

    from dataengine.mixing import MixtureSampler
    from separation.inference import Separator
    from separation.objectives import predict_sources
    from separation.train import (
        PromptCache,
        TrainConfig,
        _conditioning,
        _visual_tower_trained,
        encode_examples,
    )

    if not shards and not minutes:
        raise ValueError("write_refiner_shards needs a shard count or a time budget")
    torch.set_num_threads(threads)
    target = torch.device(device)
    sep = Separator.from_pretrained(bundle or None, device=target)
    codec, model = sep.codec, sep.model
    cache = PromptCache(sep.prompt_encoder)
    cache.warm_vocabulary()
    use_images = _visual_tower_trained(sep.prompt_encoder)
    prompts = TrainConfig(prompt_dropout=0.0)  # paraphrased text, the source's picture 30% of the time, spans 30%
    rng, py_rng = np.random.default_rng(seed), random.Random(seed)
    sampler = MixtureSampler(data, split=split, seed=seed, seconds=seconds, rate=codec.sample_rate, augment=split == "train")
    out.mkdir(parents=True, exist_ok=True)
    started, written = time.monotonic(), 0
    with tqdm(total=shards or None, desc=f"refiner shards ({split})", unit="shard") as bar:
        while not shards or written < shards:
            if minutes and (time.monotonic() - started) / 60 > minutes:
                break
            examples = encode_examples(codec, [sampler.sample(rng) for _ in range(shard_size)], target)
            mixture = model.normalize(torch.stack([e.mixture for e in examples]).to(target))
            conditioning = _conditioning(
                examples, cache, prompts, mixture.shape[1], codec.frame_rate, py_rng, rng, use_images, target
            )
            sources = model.denormalize(
                rearrange(predict_sources(model, mixture, conditioning), "b t (two d) -> b two t d", two=2)
            )
            waves = torch.stack([e.waves.float() for e in examples])  # (B, 2, N)
            decoded = codec.decode(rearrange(sources, "b two t d -> (b two) d t"), length=waves.shape[-1])
            decoded = rearrange(decoded, "(b two) 1 n -> b two n", two=2).cpu()
            items = [
                {"waves": torch.cat([waves[i], decoded[i]]).half().clone(), "category": e.category, "rate": codec.sample_rate}
                for i, e in enumerate(examples)
            ]
            save_atomically(items, out / f"refine-{split}-{seed}-{written:05d}.pt")
            written += 1
            bar.update(1)
    return written


def load_refiner_shards(
    folders: list[str | Path], limit: int = 0, seen: set[Path] | None = None, rate: int = 0
) -> tuple[torch.Tensor, list[str], int]:
    """The shards of ``folders`` as one ``(M, 4, N)`` float16 tensor, the M categories and their sample rate. All
    items must share one rate (``rate``, when given: e.g. a run's, for its validation shards), else PromptsepError.
    With ``seen``, only shards not in it are read (and added to it), so a folder that a writer still fills can be
    re-read cheaply; nothing new then gives an empty tensor (and ``rate``)."""
    waves, categories, rates = [], [], {rate} if rate else set()
    for folder in folders:
        for path in sorted(Path(folder).glob(SHARD_GLOB)):
            if seen is not None:
                if path in seen:
                    continue
                seen.add(path)
            for item in torch.load(path, weights_only=True, mmap=True):  # mapped, so only the stacked copy is resident
                waves.append(item["waves"])
                categories.append(item["category"])
                rates.add(int(item.get("rate", UNRECORDED_RATE)))
                if len(rates) > 1:
                    raise PromptsepError(
                        f"refiner shards of different sample rates {sorted(rates)} (at {path}); train on one codec's"
                    )
                if limit and len(waves) >= limit:
                    return torch.stack(waves), categories, rates.pop()
    if not waves:
        if seen:
            return torch.empty(0, 4, 0, dtype=torch.float16), [], rate
        raise FileNotFoundError(f"no refiner shards ({SHARD_GLOB}) in {', '.join(map(str, folders))}")
    return torch.stack(waves), categories, rates.pop()


def refined_sisdr(refiner: MaskRefiner, waves: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
    """SI-SDR (dB) of the refined mixture-consistent target. Shape: ``(B, 4, N)``, cond ``(B, E)`` -> ``(B,)``."""
    output = refiner.separate(waves[:, 0], waves[:, 2], waves[:, 3], cond)
    return si_sdr(output, waves[:, 1])


class CategoryPrompts:
    """Pooled text embeddings of paraphrases of a category (the bundle's PE-AV text tower, cached)."""

    def __init__(self) -> None:
        from encoders.peav import load_default_prompt_encoder
        from separation.train import PromptCache

        self.cache = PromptCache(load_default_prompt_encoder())
        self.cache.warm_vocabulary()

    @property
    def embed_dim(self) -> int:
        return self.cache.encoder.embed_dim

    def __call__(self, categories: list[str], rng: np.random.Generator) -> torch.Tensor:
        from dataengine.vocabulary import paraphrase

        return torch.stack([self.cache.text_item(paraphrase(c, rng))[0] for c in categories])


@torch.no_grad()
def sisdr_gains(refiner: MaskRefiner, waves: torch.Tensor, batch: int = 16, cond: torch.Tensor | None = None) -> torch.Tensor:
    """SI-SDR improvement (dB) of the refined target over the mixture on ``(M, 4, N)`` -> ``(M,)`` (``cond``
    ``(M, E)``: the items' prompt embeddings for a conditioned refiner)."""
    was_training = refiner.training
    refiner.eval()
    gains = []
    for start in range(0, len(waves), batch):
        part = waves[start : start + batch].float()
        part_cond = cond[start : start + batch] if cond is not None else None
        gains.append(refined_sisdr(refiner, part, part_cond) - si_sdr(part[:, 0], part[:, 1]))
    refiner.train(was_training)
    return torch.cat(gains)


def evaluate(
    refiner: MaskRefiner, waves: torch.Tensor, batch: int = 16, cond: torch.Tensor | None = None,
    plain: torch.Tensor | None = None,
) -> dict:
    """Median / mean SI-SDR improvement (dB) of the refined and of the plain ratio mask on ``(M, 4, N)``
    (``plain``: the plain mask's :func:`sisdr_gains`, computed here when not given)."""
    gain = sisdr_gains(refiner, waves, batch, cond)
    # an untrained refiner of the same settings (zero last layer) is exactly the plain ratio mask
    gain0 = plain if plain is not None else sisdr_gains(MaskRefiner(refiner.config), waves, batch)
    return {
        "refined_median": float(gain.median()), "refined_mean": float(gain.mean()),
        "plain_median": float(gain0.median()), "plain_mean": float(gain0.mean()),
        "wins": float((gain > gain0).float().mean()),
    }


@dataclass
class RefinerTrainConfig:
    shards: tuple[str, ...] = ("runs/refine",)
    val: str = ""  # folder of validation shards (``--split val``); empty: no validation
    out: str = "runs/refiner"
    steps: int = 100000
    minutes: float = 0.0
    batch: int = 8
    lr: float = 1e-3
    warmup: int = 100
    channels: int = 256
    layers: int = 4
    tf_channels: int = 0  # > 0: add the time-frequency branch (see :class:`~separation.refiner.RefinerConfig`)
    tf_layers: int = 3
    tf_freq_layers: int = 0  # frequency-dilated blocks of the time-frequency branch (grown at zero on an --init refiner)
    init: str = ""  # start from this trained refiner folder (its settings, ``cond`` included; a new time-frequency branch starts at zero)
    crop_seconds: float = 0.0  # > 0: train on random crops of this length (cheaper steps for the 2-D branch)
    cond: bool = False  # condition on the pooled prompt embedding (a paraphrase of the item's category)
    cond_dropout: float = 0.1  # share of training items whose prompt embedding is zeroed
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    save_every: int = 200
    eval_every: int = 200
    reload_every: int = 500  # steps between re-reads of the shard folders (a writer may still be adding to them)


def _rate(cfg: RefinerTrainConfig, step: int, minutes: float) -> float:
    from encoders.schedule import warmup_cosine

    return float(cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup, minutes, cfg.minutes, floor=0.05))


def train_refiner(cfg: RefinerTrainConfig, resume: bool = False) -> Path:
    """Train (or resume) a mask refiner on refiner shards; writes ``OUT/checkpoint``, ``OUT/final`` and
    ``OUT/metrics.jsonl`` (loss, and validation SI-SDRi of refined and plain masks)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    out, rng = Path(cfg.out), np.random.default_rng(cfg.seed)
    ckpt = out / "checkpoint"
    step, minutes_before, refiner = 0, 0.0, None
    if resume:
        require_checkpoint(ckpt / "state.json")
        refiner = MaskRefiner.from_pretrained(ckpt)
        state = json.loads((ckpt / "state.json").read_text())
        step, minutes_before = state["step"], state["minutes"]
    elif cfg.init:  # the starting refiner's settings (conditioning included), plus the time-frequency branch asked for
        start = MaskRefiner.from_pretrained(cfg.init)
        refiner = MaskRefiner(start.config.grown(cfg.tf_channels, cfg.tf_layers, cfg.tf_freq_layers)).init_from(start)
    prompts = CategoryPrompts() if (refiner.config.cond_dim if refiner is not None else cfg.cond) else None
    seen: set[Path] = set()
    waves, categories, sample_rate = load_refiner_shards(list(cfg.shards), seen=seen)
    if refiner is None:  # a new refiner is for its shards' rate
        refiner = MaskRefiner(RefinerConfig(
            channels=cfg.channels, layers=cfg.layers, cond_dim=prompts.embed_dim if prompts is not None else 0,
            tf_channels=cfg.tf_channels, tf_layers=cfg.tf_layers, tf_freq_layers=cfg.tf_freq_layers, sample_rate=sample_rate,
        ))
    if refiner.config.sample_rate != sample_rate:
        raise WeightsError(f"the refiner was trained at {refiner.config.sample_rate} Hz, the shards are at {sample_rate} Hz")
    refiner = refiner.to(device).train()
    optimizer = torch.optim.AdamW(refiner.parameters(), lr=cfg.lr, weight_decay=0.01)
    if resume and (ckpt / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    val, val_cond, val_plain = None, None, None
    if cfg.val:
        val, val_categories, _ = load_refiner_shards([cfg.val], rate=sample_rate)
        val_cond = prompts(val_categories, np.random.default_rng(0)) if prompts is not None else None
        val_plain = sisdr_gains(MaskRefiner(refiner.config), val)  # fixed while the refiner trains: once
    started, losses = time.monotonic(), []

    def minutes_trained() -> float:
        return minutes_before + (time.monotonic() - started) / 60

    def save() -> None:
        ckpt.mkdir(parents=True, exist_ok=True)
        refiner.save_pretrained(ckpt, dtype=torch.float32)
        save_atomically(optimizer.state_dict(), ckpt / "optimizer.pt")
        (ckpt / "state.json").write_text(json.dumps({"step": step, "minutes": minutes_trained(), "train": asdict(cfg)}))

    out.mkdir(parents=True, exist_ok=True)  # only now: bad settings, weights or shard folders leave nothing behind
    log = (out / "metrics.jsonl").open("a")
    bar = tqdm(total=cfg.steps, initial=step, desc="train refiner")
    while step < cfg.steps:
        if cfg.reload_every and step and step % cfg.reload_every == 0:  # shards written since the last look
            new_waves, new_categories, _ = load_refiner_shards(list(cfg.shards), seen=seen, rate=sample_rate)
            if new_categories:
                waves, categories = torch.cat([waves, new_waves]), categories + new_categories
        picks = rng.integers(0, len(waves), cfg.batch)
        batch = waves[torch.from_numpy(picks)].float().to(device)
        crop = int(cfg.crop_seconds * sample_rate)
        if 0 < crop < batch.shape[-1]:
            offset = int(rng.integers(0, batch.shape[-1] - crop + 1))
            batch = batch[..., offset : offset + crop]
        cond = None
        if prompts is not None:
            cond = prompts([categories[i] for i in picks], rng)
            cond = (cond * torch.from_numpy(rng.random(cfg.batch) >= cfg.cond_dropout)[:, None]).to(device)
        loss = -refined_sisdr(refiner, batch, cond).clamp(min=-30).mean()
        rate = _rate(cfg, step, minutes_trained())
        for group in optimizer.param_groups:
            group["lr"] = rate
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(refiner.parameters(), 1.0)
        optimizer.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", items=len(waves))
        if step % cfg.eval_every == 0:
            record = {"step": step, "loss": float(np.mean(losses[-cfg.eval_every :])), "lr": rate}
            if val is not None:
                record.update(evaluate(refiner, val, cond=val_cond, plain=val_plain))
                bar.write(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            log.write(json.dumps(record) + "\n")
            log.flush()
        if step % cfg.save_every == 0:
            save()
        if cfg.minutes and minutes_trained() > cfg.minutes:
            break
    bar.close()
    save()
    refiner.eval().save_pretrained(out / "final")
    log.close()
    return out / "final"
