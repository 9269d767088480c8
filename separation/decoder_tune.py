"""Fine-tune the codec's decoder for the mixture-consistent output (the encoder stays frozen).

promptsep never plays the decoded tracks: their magnitudes only shape a ratio mask on the mixture's
STFT (:mod:`separation.masking`). A decoder trained for reconstruction alone spends its capacity on
phase, which the mask throws away. This fine-tune trains the decoder (``quantizer.out_proj`` and
``decoder.*``) on the oracle latents of encoded training mixtures (the shards ``promptsep train
separator-pool`` writes), with the SI-SDR of the masked mixture as the main loss and the codec's
multi-scale mel loss on the decoded target and residual as a regulariser that keeps it a codec.

The encoder and the bottleneck's posterior are untouched, so latents, the PE-AV audio tower (which
reads them) and a separator trained on them all stay valid.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from encoders.errors import PromptsepError, require_checkpoint
from separation.train import decode_pairs, masked_target_sisdr

DECODER_PREFIXES = ("quantizer.out_proj.", "decoder.")


@dataclass
class DecoderTuneConfig:
    codec: str  # codec folder to start from
    feeds: list[str] = field(default_factory=list)  # shard folders (promptsep train separator-pool)
    out: str = "runs/decoder"
    steps: int = 100000
    minutes: float = 0.0  # time budget over all resumes; sets the LR schedule (0: run all steps)
    batch: int = 8
    frames: int = 50  # latent frames per example (2 s at 25 frames/s)
    lr: float = 1e-4
    warmup: int = 100
    mel_weight: float = 1.0  # weight of the mel loss (in its own units, about 1-2) against -SI-SDR in dB
    grad_clip: float = 1.0
    save_every: int = 200
    threads: int = 1
    seed: int = 0
    device: str = "cpu"


def decoder_parameters(codec) -> list[torch.nn.Parameter]:
    """The parameters this fine-tune trains; everything else in ``codec`` is frozen."""
    params = [p for name, p in codec.named_parameters() if name.startswith(DECODER_PREFIXES)]
    if not params:
        raise ValueError("codec has no decoder parameters (quantizer.out_proj.*, decoder.*)")
    return params


def load_shards(folders: list[Path], min_frames: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Oracle ``[target | residual]`` latents ``(T, 2D)`` and ``(mixture, target)`` waves ``(2, N)`` of
    every example in the shard folders that is at least ``min_frames`` long."""
    from separation.train import SHARD_GLOB, load_examples

    sources, waves = [], []
    for folder in folders:
        paths = sorted(Path(folder).glob(SHARD_GLOB))
        if not paths:
            raise PromptsepError(f"no {SHARD_GLOB} in {folder}: write some with `promptsep train separator-pool`")
        for path in paths:
            for example in load_examples(path):
                if example.waves is not None and example.sources.shape[0] >= min_frames:
                    sources.append(example.sources.half())
                    waves.append(example.waves)
    if not sources:
        raise PromptsepError(f"no example of {min_frames}+ latent frames with waveforms in {folders}")
    return sources, waves


def oracle_mask_loss(codec, sources: torch.Tensor, waves: torch.Tensor, mel_loss=None) -> dict[str, torch.Tensor]:
    """Losses of the mixture-consistent output built from decoded oracle latents.

    Shape:
        sources ``(B, T, 2D)`` raw [target | residual] latents; waves ``(B, 2, T * hop)`` mixture and
        target -> ``{"sisdr": mean SI-SDR in dB, "mel": mel loss of both decoded tracks}``.
    """
    decoded = decode_pairs(codec, sources)
    losses = {"sisdr": masked_target_sisdr(decoded, waves).clamp(min=-30).mean().float()}
    if mel_loss is not None:
        length = min(decoded.shape[-1], waves.shape[-1])
        mixture, target = waves[:, 0, :length], waves[:, 1, :length]
        losses["mel"] = mel_loss(decoded[:, None, :length], torch.cat([target, mixture - target])[:, None])
    return losses


def tune_decoder(cfg: DecoderTuneConfig, resume: bool = False) -> Path:
    """Fine-tune the decoder; writes ``out/checkpoint`` (resumable) and ``out/codec`` (fp16 bundle)."""
    from encoders.codec import Codec
    from encoders.codec_train import MultiScaleMelLoss, save_checkpoint
    from encoders.schedule import warmup_cosine

    out = Path(cfg.out)
    checkpoint = out / "checkpoint"
    if resume:
        require_checkpoint(checkpoint / "state.json")
    sources, waves = load_shards([Path(f) for f in cfg.feeds], cfg.frames)  # before anything is written
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = torch.device(cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    codec = Codec.from_pretrained(checkpoint if resume else cfg.codec).float().to(device)
    codec.requires_grad_(False)
    params = decoder_parameters(codec)
    for p in params:
        p.requires_grad_(True)
    codec.eval()  # no dropout or norm statistics to update; eval keeps the encoder's behaviour fixed
    optimizer = torch.optim.AdamW(params, cfg.lr, betas=(0.8, 0.99), weight_decay=0.0)
    start, minutes_before = 0, 0.0
    if resume:
        state = json.loads((checkpoint / "state.json").read_text())
        start, minutes_before = state["step"], float(state.get("minutes", 0.0))
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True)["decoder"])
        rng = np.random.default_rng(cfg.seed + start)

    hop = codec.hop_length
    print(f"decoder fine-tune: {len(sources)} encoded mixtures, {sum(p.numel() for p in params) / 1e6:.1f}M parameters", flush=True)
    mel_loss = MultiScaleMelLoss(codec.sample_rate).to(device) if cfg.mel_weight > 0 else None
    (out / "tune_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    started = time.monotonic()

    def minutes_trained() -> float:
        return minutes_before + (time.monotonic() - started) / 60

    log = (out / "metrics.jsonl").open("a")
    progress = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="decoder", mininterval=5)
    step = start
    for step in progress:
        lr = cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup, minutes_trained(), cfg.minutes, floor=0.05)
        for group in optimizer.param_groups:
            group["lr"] = float(lr)
        picks = rng.integers(0, len(sources), cfg.batch)
        src, wav = [], []
        for i in picks:
            offset = int(rng.integers(0, sources[i].shape[0] - cfg.frames + 1))
            src.append(sources[i][offset : offset + cfg.frames].float())
            wav.append(waves[i][:, offset * hop : (offset + cfg.frames) * hop].float())
        losses = oracle_mask_loss(codec, torch.stack(src).to(device), torch.stack(wav).to(device), mel_loss)
        total = -losses["sisdr"] + cfg.mel_weight * losses.get("mel", 0.0)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        if step % 20 == 0:
            record = {"step": step, "lr": lr} | {k: float(v.detach()) for k, v in losses.items()}
            log.write(json.dumps(record) + "\n")
            log.flush()
            progress.set_postfix(sisdr=f"{record['sisdr']:.2f}", mel=f"{record.get('mel', math.nan):.3f}")
        done = bool(cfg.minutes) and minutes_trained() > cfg.minutes
        if (step + 1) % cfg.save_every == 0 or done:
            save_checkpoint(out, codec, {"decoder": optimizer}, step + 1, cfg, minutes_trained())
        if done:
            print(f"time budget reached at step {step + 1}", flush=True)
            break
    save_checkpoint(out, codec, {"decoder": optimizer}, step + 1, cfg, minutes_trained())
    codec.eval().cpu().requires_grad_(False)
    return codec.save_pretrained(out / "codec", dtype=torch.float16)
