"""Training loop of the separator on data-engine mixtures drawn on the fly.

The pool starts from the data engine's fixed training mixtures (``DIR/train.jsonl``, quick to read)
and is then refreshed with mixtures drawn on the fly by ``dataengine.mixing.MixtureSampler`` (new
combinations and augmentation at every draw). Codec latents are computed once per pooled mixture
with the frozen codec, so CPU training spends its time in the separator rather than re-encoding
audio. Fresh mixtures can also be encoded by another process (:func:`write_pool_shards`, ``promptsep
train separator-pool``) into a folder the trainer reads as shards appear (``pool_feed``), so the pool
turns over quickly without the trainer encoding anything. Every time an example is used its prompt
is re-phrased (a new paraphrase of its category), so the model never learns one wording per category.

The loss is an L1 on the normalised [target | residual] latents plus (``wave_weight``) the negative
SI-SDR of the *mixture-consistent output*: the predicted latents are decoded by the frozen codec
decoder, their magnitudes make the ratio mask that inference applies to the mixture's STFT, and the
masked mixture is scored against the true target. That trains exactly what the user hears.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from tqdm import tqdm

from encoders.errors import WeightsError, require_checkpoint
from separation.inference import InferenceConfig, span_anchors
from separation.masking import ratio_mask_separate
from separation.metrics import si_sdr
from separation.model import SeparatorConfig, SeparatorModel
from separation.objectives import Conditioning, flow_matching_loss, regression_loss


@dataclass
class TrainConfig:
    data: str = "data"
    out: str = "runs/separator"
    objective: str = "regression"
    steps: int = 20000
    minutes: float = 0.0  # training-time budget over all resumes (ends the LR schedule and the run) when > 0
    batch: int = 8
    seconds: float = 4.0
    lr: float = 4e-4
    warmup: int = 200
    pool: int = 2000
    refresh_every: int = 2  # draw one fresh on-the-fly mixture every this many steps
    prompt_dropout: float = 0.1
    # > 0: each text prompt's embedding and token states get Gaussian noise of a relative size drawn from
    # [0, prompt_noise] (0.6 leaves a cosine of about 0.86 to the clean embedding, as far as a new wording of the
    # same sound typically lies from its nearest training phrasing), so the separator learns to follow prompts
    # near, not only at, the phrasings it was trained on
    prompt_noise: float = 0.0
    pooled_token_prob: float = 0.3
    visual_prob: float = 0.3
    # share of batch items made sparse: a random first or last part of the item (a quarter to all of it) is replaced
    # by another item's mixture, in which the prompted sound is silent (the target there is the codec's latents of
    # silence). Real recordings hold a sound now and then, where 4 s training mixtures mostly hold it throughout
    splice_prob: float = 0.0
    span_prob: float = 0.3
    seed: int = 0
    save_every: int = 250
    device: str = "cpu"
    threads: int = 2
    hidden_dim: int = 256
    num_layers: int = 6
    dropout: float | None = None  # block dropout of the model trained (None: keep a resumed/--init model's, 0 for a new one)
    latent_weight: float = 1.0
    wave_weight: float = 0.2  # weight of -SI-SDR (dB) of the mixture-consistent target; 0 turns it off
    wave_items: int = 4  # examples per batch that get the waveform loss (decoding is the costly part)
    wave_frames: int = 50  # latent frames (2 s) of each, at a random offset
    codec: str = ""  # codec folder; empty: the default bundle's
    pool_cache: str = ""  # file keeping the encoded initial pool, shared between runs with the same codec
    pool_feed: str = ""  # folder of encoded shards written by write_pool_shards (another process); read as they appear
    feed_every: int = 20  # steps between looks into pool_feed
    init: str = ""  # a saved separator folder to start from (its weights and latent statistics; fresh optimizer and schedule)
    # > 0: the codec's decoder trains with the separator at this peak LR (the encoder stays frozen, so latents
    # do not change); the oracle latents' masked SI-SDR and mel loss keep it a codec; writes OUT/codec
    decoder_lr: float = 0.0
    decoder_mel_weight: float = 1.0
    # > 0: also keep an exponential moving average of the weights with this decay (per step); ``final`` is then
    # the average (the last raw weights stay in ``checkpoint``) and a resume continues it from ``checkpoint/ema``
    ema: float = 0.0
    # a mask refiner folder (``promptsep train refiner``): the waveform loss scores its refined mask instead of
    # the plain ratio mask, so the separator learns to feed the refiner; the refiner stays frozen
    refiner: str = ""
    # a saved PE-AV folder (``promptsep train encoders``' OUT/bundle) whose embeddings condition the separator;
    # default: the bundle's towers. A separator trained on one visual tower reads pictures only through it
    peav: str = ""


@dataclass
class _Example:
    mixture: torch.Tensor  # (T, D) raw latents
    sources: torch.Tensor  # (T, 2D) raw latents [target | residual]
    category: str
    image: str | None
    spans: list
    waves: torch.Tensor | None = None  # (2, N) float16 mixture and target waveforms


@dataclass
class _Stored:
    """A fixed mixture read from a manifest line (the fields of ``dataengine.mixing.Mixture`` used here)."""

    mixture: np.ndarray
    target: np.ndarray
    residual: np.ndarray
    category: str
    image: str | None
    spans: list


def manifest_mixtures(manifest: Path, limit: int) -> list[_Stored]:
    """Read up to ``limit`` fixed mixtures of a data-engine manifest (mono, the manifest's rate)."""
    import soundfile as sf

    root, items = manifest.parent, []
    for line in manifest.read_text().splitlines()[:limit]:
        row = json.loads(line)
        wavs = [sf.read(str(root / row[key]), dtype="float32")[0] for key in ("audio", "target", "residual")]
        image = str(root / row["image"]) if row.get("image") else None
        items.append(_Stored(*wavs, category=row["category"], image=image, spans=row.get("spans") or []))
    return items


class PromptCache:
    """Embeds each distinct prompt string or image once (the text and visual towers are frozen)."""

    def __init__(self, prompt_encoder) -> None:
        self.encoder = prompt_encoder
        self.text: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.image: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def warm(self, prompts: list[str], batch: int = 64) -> None:
        """Embed many prompt strings in batches (much cheaper than one by one)."""
        todo = sorted(set(prompts) - set(self.text))
        for start in tqdm(range(0, len(todo), batch), desc="embedding prompts", leave=False):
            texts = todo[start : start + batch]
            states, masks = self.encoder.text_states(texts)
            embeds = self.encoder.embed_text_states(states, masks)
            for i, text in enumerate(texts):
                self.text[text] = (embeds[i], states[i], masks[i].bool())

    def warm_vocabulary(self) -> None:
        """Embed every training phrasing of every category (what :func:`~dataengine.vocabulary.paraphrase` draws)."""
        from dataengine.vocabulary import CATEGORIES

        self.warm([phrase for category in CATEGORIES.values() for phrase in category.phrasings])

    @torch.no_grad()
    def text_item(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if prompt not in self.text:
            states, mask = self.encoder.text_states([prompt])
            self.text[prompt] = (self.encoder.embed_text_states(states, mask)[0], states[0], mask[0].bool())
        return self.text[prompt]

    @torch.no_grad()
    def image_item(self, path: str) -> torch.Tensor:
        if path not in self.image:
            self.image[path] = self.encoder.embed_image([path])[0]
        return self.image[path]


def _visual_tower_trained(prompt_encoder) -> bool:
    return bool(getattr(prompt_encoder, "visual_trained", True))


@torch.no_grad()
def encode_examples(codec, mixes: list, device: torch.device) -> list[_Example]:
    """Encode mixtures (their mixture, target and residual; cut to the shortest) with the frozen codec."""
    length = min(len(m.mixture) for m in mixes)
    wav = torch.stack(
        [torch.from_numpy(np.stack([m.mixture[:length], m.target[:length], m.residual[:length]])).float() for m in mixes]
    )  # (B, 3, N)
    latents = codec.encode(rearrange(wav, "b s n -> (b s) 1 n").to(device))
    latents = rearrange(latents, "(b s) d t -> b s t d", s=3).cpu()
    return [
        _Example(
            mixture=latents[i, 0].clone(),  # a copy, not a view of the whole batch's storage
            sources=torch.cat([latents[i, 1], latents[i, 2]], dim=-1),
            category=m.category,
            image=str(m.image) if m.image else None,
            spans=list(m.spans or []),
            waves=wav[i, :2].half().clone(),
        )
        for i, m in enumerate(mixes)
    ]


def save_atomically(obj, path: Path) -> None:
    """``torch.save`` to a temporary name, then rename: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def save_examples(path: Path, examples: list[_Example]) -> None:
    """Write encoded examples to ``path`` (atomically: readers never see half a file)."""
    save_atomically([asdict(e) for e in examples], path)


def load_examples(path: Path, data: str | Path | None = None) -> list[_Example]:
    """Read examples written by :func:`save_examples`. With ``data``, a picture path that no longer exists
    (the shards were written from another copy of the data folder) is looked up under ``data/images``."""
    examples = [_Example(**item) for item in torch.load(path, weights_only=True)]
    if data is not None:
        for example in examples:
            if example.image and not Path(example.image).is_file():
                example.image = _rebased_image(example.image, Path(data))
    return examples


def _rebased_image(image: str, data: Path) -> str:
    """``image``'s path from its last ``images/`` folder on, under ``data`` (unchanged without one)."""
    parts = Path(image).parts
    if "images" not in parts:
        return image
    last = max(i for i, part in enumerate(parts) if part == "images")
    return str(data.joinpath(*parts[last:]))


class LatentPool:
    """A streaming pool of encoded training examples."""

    def __init__(self, sampler, codec, initial: list, size: int, rng: np.random.Generator, device: torch.device) -> None:
        self.sampler, self.codec, self.rng, self.device = sampler, codec, rng, device
        self.items: list[_Example] = []
        with tqdm(total=size, desc="encoding latent pool", leave=False) as bar:
            while len(self.items) < size:
                count = min(32, size - len(self.items))
                start = len(self.items)
                mixes = initial[start : start + count] if start < len(initial) else None
                self.items.extend(encode_examples(codec, mixes or [sampler.sample(rng) for _ in range(count)], device))
                bar.update(count)

    def refresh(self, count: int) -> None:
        if count <= 0:
            return
        self.add(encode_examples(self.codec, [self.sampler.sample(self.rng) for _ in range(count)], self.device), len(self.items))

    def batch(self, size: int) -> list[_Example]:
        return [self.items[int(i)] for i in self.rng.integers(0, len(self.items), size)]

    def add(self, examples: list[_Example], limit: int) -> None:
        """Grow the pool up to ``limit`` items, then replace random ones."""
        for example in examples:
            if len(self.items) < limit:
                self.items.append(example)
            else:
                self.items[int(self.rng.integers(len(self.items)))] = example


SHARD_GLOB = "shard-*.pt"


class PoolFeed:
    """Reads the encoded shards another process writes into a folder, each one once."""

    def __init__(self, folder: Path, data: str | Path | None = None) -> None:
        self.folder, self.data = folder, data
        self.seen: set[str] = set()

    def new_examples(self) -> list[_Example]:
        examples = []
        for path in sorted(self.folder.glob(SHARD_GLOB)):
            if path.name in self.seen:
                continue
            self.seen.add(path.name)
            examples += load_examples(path, self.data)
        return examples


def shard_targets(folder: Path, hop: int, limit: int = 0, floor_db: float = -35.0) -> list[tuple[torch.Tensor, str]]:
    """The target sources of the encoded shards in ``folder`` as ``(latents (D, T) float16, category)``.

    Each target is cut to the latent frames from its first to its last sounding one (frame RMS of the
    target wave within ``floor_db`` of its loudest frame; ``hop`` samples a frame), since a drawn target
    may sound for only part of its mixture. These are augmented (gain, EQ, reverb) crops of training
    clips, already encoded: extra audio for the PE-AV audio tower (``promptsep train encoders
    --extra-audio``). ``limit`` > 0 stops after that many.
    """
    from dataengine.audio import frame_db

    pairs: list[tuple[torch.Tensor, str]] = []
    for path in sorted(folder.glob(SHARD_GLOB)):
        for example in load_examples(path):
            target = example.sources[:, : example.mixture.shape[-1]]  # (T, D)
            frames = target.shape[0]
            # one energy per latent frame: frames of exactly `hop` samples ("rate" hop, 1 s frames)
            energies = frame_db(example.waves[1].float().numpy()[: frames * hop], rate=hop, frame_seconds=1.0)
            if len(energies) != frames or energies.max() < -80:  # a short wave or a silent target
                continue
            sounding = np.flatnonzero(energies >= energies.max() + floor_db)
            first, last = int(sounding[0]), int(sounding[-1]) + 1
            pairs.append((target[first:last].T.contiguous().half(), example.category))
            if limit and len(pairs) >= limit:
                return pairs
    return pairs


def write_pool_shards(
    data: str, out: Path, codec_dir: str = "", shard_size: int = 16, shards: int = 0, minutes: float = 0.0,
    seed: int = 1, seconds: float = 4.0, threads: int = 1, device: str = "cpu", augment=True,
) -> int:
    """Encode fresh augmented training mixtures into ``out/shard-<seed>-<n>.pt`` files for a separator run's
    ``pool_feed``, so that drawing and encoding mixtures runs beside training instead of inside it.

    Stops after ``shards`` shards or ``minutes`` minutes (whichever is set and comes first). Each shard is
    written with :func:`save_examples`, so a reader never sees half a file. ``augment`` is passed to
    :class:`~dataengine.mixing.MixtureSampler` (an ``AugmentConfig`` for other rooms). Returns the shard count.
    """
    from dataengine.mixing import MixtureSampler
    from encoders.codec import Codec, load_default_codec

    if not shards and not minutes:
        raise ValueError("write_pool_shards needs a shard count or a time budget")
    torch.set_num_threads(threads)
    target = torch.device(device)
    codec = (Codec.from_pretrained(codec_dir) if codec_dir else load_default_codec()).to(target).eval()
    rng = np.random.default_rng(seed)
    sampler = MixtureSampler(data, split="train", seed=seed, seconds=seconds, rate=codec.sample_rate, augment=augment)
    out.mkdir(parents=True, exist_ok=True)
    started, written = time.monotonic(), 0
    with tqdm(total=shards or None, desc="encoding pool shards", unit="shard") as bar:
        while not shards or written < shards:
            if minutes and (time.monotonic() - started) / 60 > minutes:
                break
            examples = encode_examples(codec, [sampler.sample(rng) for _ in range(shard_size)], target)
            save_examples(out / f"shard-{seed}-{written:05d}.pt", examples)
            written += 1
            bar.update(1)
    return written


def _latent_stats(pool: LatentPool) -> tuple[torch.Tensor, torch.Tensor]:
    stacked = torch.cat([torch.cat([e.mixture, *e.sources.chunk(2, -1)]) for e in pool.items[:512]])
    return stacked.mean(0), stacked.std(0).clamp(min=1e-3)


def _conditioning(
    examples: list[_Example], cache: PromptCache, cfg: TrainConfig, frames: int, frame_rate: float, rng: random.Random,
    np_rng: np.random.Generator, use_images: bool, device: torch.device,
) -> Conditioning:
    from dataengine.vocabulary import paraphrase

    conds, token_list, spans = [], [], []
    for example in examples:
        embed, states, mask = cache.text_item(paraphrase(example.category, np_rng))
        tokens = states[mask]
        if use_images and example.image and rng.random() < cfg.visual_prob:
            embed = cache.image_item(example.image)
            tokens = embed[None]
        else:
            if cfg.prompt_noise > 0:  # text prompts only: a picture is not a wording
                embed, tokens = _displaced(embed, np_rng, cfg.prompt_noise), _displaced(tokens, np_rng, cfg.prompt_noise)
            if rng.random() < cfg.pooled_token_prob:
                tokens = embed[None]
        if rng.random() < cfg.prompt_dropout:
            embed = torch.zeros_like(embed)
            tokens = embed[None]
        conds.append(embed)
        token_list.append(tokens)
        use_spans = example.spans and rng.random() < cfg.span_prob
        spans.append(span_anchors(example.spans if use_spans else None, 0.0, frames, frame_rate))
    length = max(t.shape[0] for t in token_list)
    tokens = torch.zeros(len(examples), length, token_list[0].shape[-1])
    token_mask = torch.zeros(len(examples), length, dtype=torch.bool)
    for i, t in enumerate(token_list):
        tokens[i, : t.shape[0]] = t
        token_mask[i, : t.shape[0]] = True
    return Conditioning(
        cond=torch.stack(conds).to(device),
        tokens=tokens.to(device),
        token_mask=token_mask.to(device),
        spans=torch.stack(spans).to(device),
    )


def spliced(example: _Example, other: _Example, cut: int, present_first: bool, silence: torch.Tensor, hop: int) -> _Example:
    """``example`` with its frames from ``cut`` on (``present_first``), or before ``cut``, replaced by ``other``'s
    mixture, which is all residual there: the target is ``silence`` (raw latents of silence, ``(T, D)``).
    Waveforms, when both have them, are spliced at sample ``cut * hop``; span anchors are dropped.

    Shape: latents ``(T, D)`` mixture and ``(T, 2D)`` sources in and out.
    """
    swap = slice(cut, None) if present_first else slice(0, cut)
    mixture, sources = example.mixture.clone(), example.sources.clone()
    mixture[swap] = other.mixture[swap]
    sources[swap] = torch.cat([silence, other.mixture], dim=-1)[swap]
    waves = None
    if example.waves is not None and other.waves is not None:
        samples = slice(cut * hop, None) if present_first else slice(0, cut * hop)
        waves = example.waves.clone()
        waves[0, samples], waves[1, samples] = other.waves[0, samples], 0
    return _Example(mixture, sources, example.category, example.image, [], waves)


def _maybe_spliced(
    example: _Example, pool: LatentPool, prob: float, silence: torch.Tensor, hop: int, rng: np.random.Generator
) -> _Example:
    """With probability ``prob``, :func:`spliced` with a pool item of another category at a cut drawn so that the
    prompted sound keeps between none and three quarters of the frames."""
    frames = example.mixture.shape[0]
    if rng.random() >= prob or silence.shape[0] != frames:
        return example
    for _ in range(4):
        other = pool.items[int(rng.integers(len(pool.items)))]
        if other.category != example.category and other.mixture.shape[0] == frames:
            break
    else:
        return example
    present_first = bool(rng.random() < 0.5)
    kept = int(rng.integers(0, 3 * frames // 4 + 1))  # frames the prompted sound keeps
    cut = kept if present_first else frames - kept
    return spliced(example, other, cut, present_first, silence, hop)


def _displaced(x: torch.Tensor, rng: np.random.Generator, most: float) -> torch.Tensor:
    """``x`` plus Gaussian noise whose size relative to each vector's (last axis) is drawn from ``[0, most]``."""
    size = float(rng.uniform(0.0, most))
    noise = torch.from_numpy(rng.standard_normal(x.shape)).to(x.dtype)
    rms = x.pow(2).mean(dim=-1, keepdim=True).sqrt()
    return x + size * rms * noise


def decode_pairs(codec, sources: torch.Tensor) -> torch.Tensor:
    """Decode raw ``[target | residual]`` latents ``(B, T, 2D)`` to ``(2B, T * hop)``: the B targets,
    then the B residuals (the graph is kept, so losses can reach the latents and the decoder)."""
    latents = rearrange(torch.cat(sources.chunk(2, -1)), "b t d -> b d t")  # (2B, D, T)
    return codec.decode(latents)[:, 0]


def masked_target_sisdr(decoded: torch.Tensor, waves: torch.Tensor, refiner=None) -> torch.Tensor:
    """SI-SDR (dB) of the mixture-consistent target, the ratio mask of decoded target and residual
    applied to the mixture with the settings inference uses (:class:`~separation.inference.InferenceConfig`),
    or the mask of ``refiner`` (a :class:`~separation.refiner.MaskRefiner`) when one is given.

    Shape:
        decoded ``(2B, N)`` from :func:`decode_pairs`; waves ``(B, 2, N)`` mixture and true target -> ``(B,)``.
    """
    mask = InferenceConfig()
    batch, length = waves.shape[0], min(decoded.shape[-1], waves.shape[-1])
    target_est, residual_est = decoded[:batch, :length], decoded[batch:, :length]
    mixture, target = waves[:, 0, :length], waves[:, 1, :length]
    if refiner is not None:
        return si_sdr(refiner.separate(mixture, target_est, residual_est), target)
    output, _ = ratio_mask_separate(mixture, target_est, residual_est, mask.n_fft, mask.hop, mask.mask_power)
    return si_sdr(output, target)


def consistent_output_loss(
    model: SeparatorModel, codec, estimate: torch.Tensor, waves: torch.Tensor, refiner=None
) -> torch.Tensor:
    """Mean negative SI-SDR (dB) of the mixture-consistent target built from predicted latents.

    Shape:
        estimate ``(B, T, 2D)`` normalised [target | residual] latents; waves ``(B, 2, N)`` mixture and
        true target at the codec rate -> scalar.
    """
    raw = torch.cat([model.denormalize(part) for part in estimate.chunk(2, -1)], dim=-1)
    return -masked_target_sisdr(decode_pairs(codec, raw), waves, refiner).clamp(min=-30).mean()


def learning_rate(cfg: TrainConfig, step: int, minutes: float) -> float:
    """Warm-up, then cosine to 5% over the steps or the time budget (``minutes`` trained so far, over all
    resumes), whichever ends first."""
    from encoders.schedule import warmup_cosine

    # a Python float: a numpy scalar in the optimizer state cannot be read back with weights_only
    return float(cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup, minutes, cfg.minutes, floor=0.05))


def _save_checkpoint(
    out: Path, model: SeparatorModel, optimizer, step: int, cfg: TrainConfig, losses: list[float], minutes: float,
    codec=None, ema=None,
) -> None:
    """Write ``out/checkpoint`` (with ``codec/`` when the decoder trains too, ``ema/`` with a weight average)."""
    ckpt = out / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(ckpt, dtype=torch.float32)
    if ema is not None:
        ema.module.save_pretrained(ckpt / "ema", dtype=torch.float32)
    if codec is not None:
        codec.save_pretrained(ckpt / "codec")
    save_atomically(optimizer.state_dict(), ckpt / "optimizer.pt")
    (ckpt / "state.json").write_text(json.dumps({"step": step, "minutes": minutes, "train": asdict(cfg), "losses": losses[-2000:]}))


def _initial_separator(cfg: TrainConfig, latent_dim: int) -> SeparatorModel:
    """The saved separator ``cfg.init`` a run starts from, refused when it does not fit the run."""
    model = SeparatorModel.from_pretrained(cfg.init)
    if model.config.latent_dim != latent_dim or model.config.objective != cfg.objective:
        raise WeightsError(
            f"--init {cfg.init}: a {model.config.objective} separator over {model.config.latent_dim}-dim latents "
            f"cannot start a {cfg.objective} run over this codec's {latent_dim}-dim latents"
        )
    return model


def _weight_average(model: SeparatorModel, decay: float, saved: Path | None):
    """An exponential moving average of ``model``'s weights (torch's ``AveragedModel``), continued from the
    separator folder ``saved`` when it exists; ``None`` when ``decay`` is 0."""
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if saved is not None and saved.is_dir():
        ema.module.load_state_dict(SeparatorModel.from_pretrained(saved).state_dict())
        ema.n_averaged.fill_(1)  # not 0, which would make the next update copy the raw weights over it
    return ema


def train_separator(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train (or resume) a separator; writes ``cfg.out/checkpoint`` and ``cfg.out/final``."""
    from dataengine.mixing import MixtureSampler
    from encoders.codec import Codec, load_default_codec
    from encoders.peav import PromptEncoder, load_default_prompt_encoder

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    out = Path(cfg.out)
    ckpt = out / "checkpoint"
    if resume:
        require_checkpoint(ckpt / "state.json")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.decoder_lr > 0 and resume and (ckpt / "codec").is_dir():
        codec = Codec.from_pretrained(ckpt / "codec")  # the decoder as trained so far
    else:
        codec = Codec.from_pretrained(cfg.codec) if cfg.codec else load_default_codec()
    codec = codec.float().to(device).eval()
    codec.requires_grad_(False)
    decoder_params = []
    if cfg.decoder_lr > 0:
        from encoders.codec_train import MultiScaleMelLoss
        from separation.decoder_tune import decoder_parameters, oracle_mask_loss

        decoder_params = decoder_parameters(codec)
        for p in decoder_params:
            p.requires_grad_(True)
        mel_loss = MultiScaleMelLoss(codec.sample_rate).to(device)
    # checked before the prompt cache and the pool are built, which can take minutes
    initial = _initial_separator(cfg, codec.latent_dim) if cfg.init and not resume else None
    refiner = None
    if cfg.refiner:
        from separation.refiner import MaskRefiner

        refiner = MaskRefiner.from_pretrained(cfg.refiner).to(device).eval().requires_grad_(False)
    prompt_encoder = PromptEncoder.from_pretrained(cfg.peav, codec=codec) if cfg.peav else load_default_prompt_encoder(codec=codec)
    cache = PromptCache(prompt_encoder)
    cache.warm_vocabulary()
    np_rng = np.random.default_rng(cfg.seed)
    py_rng = random.Random(cfg.seed)
    sampler = MixtureSampler(cfg.data, split="train", seed=cfg.seed, seconds=cfg.seconds, rate=codec.sample_rate, augment=True)
    cache_file = Path(cfg.pool_cache) if cfg.pool_cache else None
    if cache_file is not None and cache_file.is_file():
        pool = LatentPool(sampler, codec, [], 0, np_rng, device)
        pool.items = load_examples(cache_file, cfg.data)[: cfg.pool]
    else:
        manifest = Path(cfg.data) / "train.jsonl"
        fixed = manifest_mixtures(manifest, cfg.pool) if manifest.is_file() else []
        pool = LatentPool(sampler, codec, fixed, cfg.pool, np_rng, device)
        if cache_file is not None:
            save_examples(cache_file, pool.items)

    feed = PoolFeed(Path(cfg.pool_feed), cfg.data) if cfg.pool_feed else None
    step, losses, minutes_before = 0, [], 0.0
    if resume:
        model = SeparatorModel.from_pretrained(ckpt).train()
        state = json.loads((ckpt / "state.json").read_text())
        step, losses = state["step"], state.get("losses", [])
        minutes_before = float(state.get("minutes", 0.0))
    elif initial is not None:
        model = initial
    else:
        model = SeparatorModel(
            SeparatorConfig(
                latent_dim=codec.latent_dim,
                cond_dim=prompt_encoder.embed_dim,
                token_dim=prompt_encoder.embed_dim,
                visual_dim=prompt_encoder.embed_dim,
                hidden_dim=cfg.hidden_dim,
                num_layers=cfg.num_layers,
                objective=cfg.objective,
            )
        )
        mean, std = _latent_stats(pool)
        model.latent_mean.copy_(mean)
        model.latent_std.copy_(std)
    if cfg.dropout is not None:
        model.set_dropout(cfg.dropout)
    model = model.to(device).train()
    # each group's share of the scheduled rate; kept here, not in the groups, whose saved state a resume restores
    lr_scales = [1.0]
    groups = [{"params": list(model.parameters())}]
    if decoder_params:
        lr_scales.append(cfg.decoder_lr / cfg.lr if cfg.lr else 0.0)
        groups.append({"params": decoder_params, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.01)
    if resume and (ckpt / "optimizer.pt").exists():
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    use_images = _visual_tower_trained(prompt_encoder)
    ema = _weight_average(model, cfg.ema, ckpt / "ema" if resume else None)
    started = time.monotonic()

    def minutes_trained() -> float:
        return minutes_before + (time.monotonic() - started) / 60

    bar = tqdm(total=cfg.steps, initial=step, desc=f"train separator ({cfg.objective})")
    silence = None
    if cfg.splice_prob > 0:
        frames = pool.items[0].mixture.shape[0]
        with torch.no_grad():
            silence = codec.encode(torch.zeros(1, 1, frames * codec.hop_length, device=device))[0].T.cpu()
    while step < cfg.steps:
        examples = pool.batch(cfg.batch)
        if silence is not None:
            examples = [_maybe_spliced(e, pool, cfg.splice_prob, silence, codec.hop_length, np_rng) for e in examples]
        mixture = model.normalize(torch.stack([e.mixture for e in examples]).to(device))
        raw = torch.stack([e.sources for e in examples]).to(device)
        sources = torch.cat([model.normalize(s) for s in raw.chunk(2, -1)], dim=-1)
        conditioning = _conditioning(
            examples, cache, cfg, mixture.shape[1], codec.frame_rate, py_rng, np_rng, use_images, device
        )
        if cfg.objective == "flow":
            loss, estimate = flow_matching_loss(model, mixture, sources, conditioning)
        else:
            loss, estimate = regression_loss(model, mixture, sources, conditioning)
        loss = cfg.latent_weight * loss
        if cfg.wave_weight > 0 and all(e.waves is not None for e in examples):
            items = min(cfg.wave_items, len(examples))
            frames = min(cfg.wave_frames, estimate.shape[1])
            offset = int(np_rng.integers(estimate.shape[1] - frames + 1))
            hop = codec.hop_length
            waves = torch.stack([e.waves for e in examples[:items]]).float().to(device)
            waves = waves[..., offset * hop : (offset + frames) * hop]
            crop = estimate[:items, offset : offset + frames]
            loss = loss + cfg.wave_weight * consistent_output_loss(model, codec, crop, waves, refiner)
            if decoder_params:  # the decoder also learns from the true latents, and stays a codec
                oracle = oracle_mask_loss(codec, raw[:items, offset : offset + frames], waves, mel_loss)
                loss = loss - cfg.wave_weight * oracle["sisdr"] + cfg.decoder_mel_weight * oracle["mel"]
        rate = learning_rate(cfg, step, minutes_trained())
        for group, scale in zip(optimizer.param_groups, lr_scales, strict=True):
            group["lr"] = rate * scale
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if decoder_params:
            torch.nn.utils.clip_grad_norm_(decoder_params, 1.0)
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if cfg.refresh_every and step % cfg.refresh_every == 0:
            pool.refresh(1)
        if feed is not None and step % cfg.feed_every == 0:
            pool.add(feed.new_examples(), cfg.pool)
        if step % cfg.save_every == 0:
            _save_checkpoint(out, model, optimizer, step, cfg, losses, minutes_trained(), codec if decoder_params else None, ema)
        if cfg.minutes and minutes_trained() > cfg.minutes:
            break
    bar.close()
    _save_checkpoint(out, model, optimizer, step, cfg, losses, minutes_trained(), codec if decoder_params else None, ema)
    (model if ema is None else ema.module).eval().save_pretrained(out / "final")
    if decoder_params:
        codec.eval().requires_grad_(False)
        codec.save_pretrained(out / "codec", dtype=torch.float16)
    return out / "final"
