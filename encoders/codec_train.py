"""Training of the DAC-VAE codec: audio pool, random crops and mixtures, spectral losses, checkpoints.

The recipe favours the *magnitude* of the reconstruction (promptsep only uses decoded tracks to build
ratio masks on the mixture's STFT): a multi-scale log-mel L1 (DAC's scales, weight 15), a
multi-resolution STFT log+linear magnitude L1, a small waveform L1 and a small KL term on the VAE
posterior. DAC's multi-scale discriminator can be switched on (``adversarial``) where a GPU is at hand.
The losses are written with torchaudio transforms so that training runs wherever torch does.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn
from tqdm import tqdm

from encoders.codec import Codec, CodecConfig
from encoders.errors import PromptsepError, require_checkpoint
from encoders.schedule import warmup_cosine

AUDIO_SUFFIXES = {".wav", ".ogg", ".oga", ".flac", ".mp3", ".aiff", ".aif", ".au"}
GROUPS = ("speech", "music", "events")
PCM_SCALE = 32767.0


@dataclass
class TrainConfig:
    """Settings of one codec training run (saved beside the checkpoints as ``train_config.json``)."""

    steps: int = 20000
    batch: int = 8
    seconds: float = 1.0
    lr: float = 5e-4
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 50
    grad_clip: float = 100.0
    mel_weight: float = 15.0
    stft_weight: float = 1.0
    wave_weight: float = 1.0
    kl_weight: float = 1e-3
    adversarial: bool = False
    adv_weight: float = 1.0
    feature_weight: float = 2.0
    mix_prob: float = 0.5
    max_clip_seconds: float = 30.0
    save_every: int = 500
    seed: int = 0
    max_minutes: float | None = None  # training-time budget over all resumes (schedule + stop)
    stop_after_minutes: float | None = None  # stop this invocation early; the schedule is unchanged
    init_from: str | None = None  # codec folder whose same-shaped weights (e.g. the encoder) start the run
    codec: dict = field(default_factory=dict)


# ---------------------------------------------------------------------- data
@dataclass
class AudioPool:
    """All training audio in memory: int16 samples concatenated, with clip offsets and groups."""

    samples: np.ndarray  # (total,) int16
    offsets: np.ndarray  # (clips + 1,) int64
    groups: np.ndarray  # (clips,) int8 index into GROUPS
    sample_rate: int

    def save(self, path: Path) -> None:
        """``.npz`` (raw int16), or ``.flac`` (lossless, about half the size) plus a ``.json`` index."""
        path = Path(path)
        if path.suffix == ".flac":
            import soundfile

            soundfile.write(path, self.samples, self.sample_rate, subtype="PCM_16")
            index = {
                "offsets": self.offsets.tolist(),
                "groups": self.groups.tolist(),
                "sample_rate": self.sample_rate,
            }
            path.with_suffix(".json").write_text(json.dumps(index))
            return
        np.savez(
            path, samples=self.samples, offsets=self.offsets, groups=self.groups, sample_rate=self.sample_rate
        )

    @classmethod
    def load(cls, path: Path) -> AudioPool:
        path = Path(path)
        if path.suffix == ".flac":
            import soundfile

            index = json.loads(path.with_suffix(".json").read_text())
            samples, rate = soundfile.read(path, dtype="int16")
            return cls(
                samples, np.asarray(index["offsets"], np.int64), np.asarray(index["groups"], np.int8), rate
            )
        data = np.load(path)
        return cls(data["samples"], data["offsets"], data["groups"], int(data["sample_rate"]))

    def subset(self, seconds_per_group: float, max_clip_seconds: float, seed: int = 0) -> AudioPool:
        """A smaller pool: random clips (each cut to ``max_clip_seconds``) up to a duration per group."""
        rng = np.random.default_rng(seed)
        limit, budget = int(max_clip_seconds * self.sample_rate), int(seconds_per_group * self.sample_rate)
        chunks, offsets, groups = [], [0], []
        for group in range(len(GROUPS)):
            used = 0
            for clip in rng.permutation(np.flatnonzero(self.groups == group)):
                if used >= budget:
                    break
                start, end = int(self.offsets[clip]), int(self.offsets[clip + 1])
                if end - start > limit:
                    start = start + int(rng.integers(end - start - limit))
                    end = start + limit
                chunks.append(self.samples[start:end])
                offsets.append(offsets[-1] + end - start)
                groups.append(group)
                used += end - start
        return AudioPool(
            np.concatenate(chunks),
            np.asarray(offsets, np.int64),
            np.asarray(groups, np.int8),
            self.sample_rate,
        )

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate

    def summary(self) -> str:
        parts = []
        for index, name in enumerate(GROUPS):
            mask = self.groups == index
            length = int((self.offsets[1:] - self.offsets[:-1])[mask].sum())
            parts.append(f"{name}: {mask.sum()} clips {length / self.sample_rate / 60:.1f} min")
        return ", ".join(parts)


def group_of_path(path: Path) -> str:
    """Category group guessed from a path (for plain audio folders without a library)."""
    text = str(path).lower()
    if any(word in text for word in ("asterisk", "speech", "voice", "espeak", "flite", "festival")):
        return "speech"
    if any(word in text for word in ("sonic-pi", "hydrogen", "drumkit", "music", "soundfont", "midi")):
        return "music"
    return "events"


def find_audio_files(folders: list[Path]) -> list[Path]:
    files = []
    for folder in folders:
        if not folder.exists():
            raise PromptsepError(f"audio folder {folder} does not exist")
        files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    return files


def build_pool(
    library_dir: Path | None, audio_dirs: list[Path], sample_rate: int, max_clip_seconds: float
) -> AudioPool:
    """Decode the train split of a data-engine library, or every audio file under ``audio_dirs``."""

    items: list[tuple[Path, str]] = []
    if library_dir is not None:
        from dataengine.library import load_library

        items += [(clip.path, clip.group) for clip in load_library(library_dir) if clip.split == "train"]
    items += [(path, group_of_path(path)) for path in find_audio_files(audio_dirs)]
    if not items:
        raise PromptsepError("no training audio: pass --data LIBRARY_DIR or --audio-dir DIR with audio files")
    chunks, offsets, groups = [], [0], []
    limit = int(max_clip_seconds * sample_rate)
    for path, group in tqdm(items, desc="loading audio", unit="file"):
        try:
            wav = _read_head(path, sample_rate, max_clip_seconds)
        except Exception:  # noqa: BLE001 - skip unreadable files in system folders
            continue
        wav = wav[0, :limit].numpy()
        peak = float(np.abs(wav).max()) if wav.size else 0.0
        if wav.size < sample_rate // 10 or peak < 1e-3:
            continue
        chunks.append(np.round(np.clip(wav / peak, -1, 1) * PCM_SCALE).astype(np.int16))
        offsets.append(offsets[-1] + wav.size)
        groups.append(GROUPS.index(group) if group in GROUPS else GROUPS.index("events"))
    if not chunks:
        raise PromptsepError("no readable audio found for codec training")
    return AudioPool(
        np.concatenate(chunks), np.asarray(offsets, np.int64), np.asarray(groups, np.int8), sample_rate
    )


def _read_head(path: Path, sample_rate: int, seconds: float) -> torch.Tensor:
    """The first ``seconds`` of a file as mono ``(1, n)`` at ``sample_rate`` (reads only that part)."""
    import soundfile

    from encoders.audio_io import load_audio, resample, to_mono

    try:
        with soundfile.SoundFile(str(path)) as handle:
            native = handle.samplerate
            data = handle.read(int(seconds * native) + 1, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError):
        wav, _ = load_audio(path, sample_rate=sample_rate, channels=1)
        return wav[:, : int(seconds * sample_rate)]
    wav = to_mono(torch.from_numpy(data.T.copy()))
    return resample(wav, native, sample_rate)


class CropSampler:
    """Random training crops ``(B, 1, n)``: balanced over groups, random gain, sometimes a 2-crop mixture."""

    def __init__(
        self, pool: AudioPool, seconds: float, mix_prob: float, seed: int, device: torch.device
    ) -> None:
        self.pool = pool
        self.samples = torch.from_numpy(pool.samples.astype(np.int16)).to(device)
        self.length = int(seconds * pool.sample_rate)
        self.mix_prob = mix_prob
        self.rng = np.random.default_rng(seed)
        self.device = device
        starts, ends = pool.offsets[:-1], pool.offsets[1:]
        self.by_group = [np.flatnonzero(pool.groups == g) for g in range(len(GROUPS))]
        self.by_group = [g for g in self.by_group if len(g)]
        self.starts, self.ends = starts, ends

    def _crop_start(self) -> tuple[int, int]:
        group = self.by_group[self.rng.integers(len(self.by_group))]
        durations = (self.ends[group] - self.starts[group]).astype(np.float64)
        clip = group[self.rng.choice(len(group), p=np.sqrt(durations) / np.sqrt(durations).sum())]
        start, end = int(self.starts[clip]), int(self.ends[clip])
        if end - start <= self.length:
            return start, end - start
        return start + int(self.rng.integers(end - start - self.length)), self.length

    def _crop(self) -> Tensor:
        for _ in range(8):
            start, size = self._crop_start()
            wav = self.samples[start : start + size].float() / PCM_SCALE
            if wav.abs().max() > 1e-3:
                break
        offset = int(self.rng.integers(self.length - size + 1))
        return F.pad(wav, (offset, self.length - size - offset))

    def batch(self, size: int) -> Tensor:
        """``(size, 1, n)`` float waveforms with peaks between -30 dB and -0.5 dB."""
        rows = []
        for _ in range(size):
            wav = self._crop()
            if self.rng.random() < self.mix_prob:
                other = self._crop()
                gain = 10 ** (self.rng.uniform(-12, 12) / 20)
                wav = wav / (wav.abs().max() + 1e-6) + gain * other / (other.abs().max() + 1e-6)
            peak_db = self.rng.uniform(-30, -0.5)
            rows.append(wav / (wav.abs().max() + 1e-6) * 10 ** (peak_db / 20))
        return torch.stack(rows)[:, None]


# ---------------------------------------------------------------------- losses
class MultiScaleMelLoss(nn.Module):
    """L1 between log10 mel magnitudes at several STFT sizes (DAC's mel loss scales).

    Shape: estimate, target ``(B, 1, N)`` -> scalar.
    """

    def __init__(
        self,
        sample_rate: int,
        windows: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048),
        bands: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320),
        clamp: float = 1e-5,
    ) -> None:
        super().__init__()
        self.clamp = clamp
        self.transforms = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate, n_fft=w, win_length=w, hop_length=w // 4, n_mels=m, power=1.0, center=True
            )
            for w, m in zip(windows, bands, strict=True)
        )

    def forward(self, estimate: Tensor, target: Tensor) -> Tensor:
        loss = estimate.new_zeros(())
        for transform in self.transforms:
            a = transform(estimate).clamp_min(self.clamp).log10()
            b = transform(target).clamp_min(self.clamp).log10()
            loss = loss + F.l1_loss(a, b)
        return loss


class MultiResolutionSTFTLoss(nn.Module):
    """L1 of log magnitudes plus L1 of linear magnitudes, over several STFT sizes.

    Shape: estimate, target ``(B, 1, N)`` -> scalar.
    """

    def __init__(self, windows: tuple[int, ...] = (2048, 1024, 512, 256, 128), clamp: float = 1e-5) -> None:
        super().__init__()
        self.windows = windows
        self.clamp = clamp

    def forward(self, estimate: Tensor, target: Tensor) -> Tensor:
        loss = estimate.new_zeros(())
        for window in self.windows:
            a, b = _magnitude(estimate, window), _magnitude(target, window)
            loss = loss + F.l1_loss(a.clamp_min(self.clamp).log10(), b.clamp_min(self.clamp).log10())
            loss = loss + F.l1_loss(a, b)
        return loss


def _magnitude(wav: Tensor, window: int) -> Tensor:
    """``(B, 1, N)`` -> STFT magnitudes ``(B, F, frames)`` with a Hann window and hop ``window // 4``."""
    hann = torch.hann_window(window, device=wav.device)
    return torch.stft(wav.flatten(0, 1), window, window // 4, window=hann, return_complex=True).abs()


def kl_divergence(mean: Tensor, scale: Tensor) -> Tensor:
    """Mean KL(N(mean, scale^2) || N(0, 1)) per latent element. Shape ``(B, D, T)`` -> scalar."""
    variance = scale.pow(2)
    return 0.5 * (mean.pow(2) + variance - 1.0 - variance.log()).mean()


def warm_start(codec: Codec, source: Codec) -> list[str]:
    """Copy every tensor of ``source`` whose name and shape match into ``codec``; returns their names.

    A new decoder head can so start from a trained encoder and bottleneck.
    """
    own = codec.state_dict()
    matching = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    codec.load_state_dict(matching, strict=False)
    return list(matching)


# ---------------------------------------------------------------------- checkpoints
def save_checkpoint(
    out: Path, codec: Codec, optimizers: dict, step: int, config: TrainConfig, minutes: float = 0.0
) -> Path:
    """Atomically write ``out/checkpoint`` (codec bundle + ``optimizer.pt`` + ``state.json``)."""
    folder, temp = out / "checkpoint", out / "checkpoint.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    codec.save_pretrained(temp)
    torch.save({name: opt.state_dict() for name, opt in optimizers.items()}, temp / "optimizer.pt")
    (temp / "state.json").write_text(
        json.dumps({"step": step, "minutes": minutes, "train_config": asdict(config)}, indent=2)
    )
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(temp, folder)
    return folder


def train_codec(
    out: Path,
    config: TrainConfig,
    library_dir: Path | None = None,
    audio_dirs: list[Path] | None = None,
    pool_file: Path | None = None,
    resume: bool = False,
    device: str = "cpu",
) -> Codec:
    """Train (or resume) a codec; checkpoints go to ``out/checkpoint``, the final model to ``out/codec``."""
    if resume:
        require_checkpoint(out / "checkpoint" / "model.safetensors")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    target_device = torch.device(device)
    if target_device.type == "cpu":
        torch.set_num_threads(2)
    elif target_device.type == "cuda" and not torch.cuda.is_available():
        raise PromptsepError("--device cuda asked for but no CUDA device is visible; use --device cpu")

    codec_config = CodecConfig(**config.codec) if config.codec else CodecConfig()
    pool_path = pool_file or out / "pool.npz"
    if pool_path.is_file():
        pool = AudioPool.load(pool_path)
    else:
        pool = build_pool(
            library_dir, list(audio_dirs or []), codec_config.sample_rate, config.max_clip_seconds
        )
        pool.save(pool_path)
    print(f"audio pool: {pool.seconds / 60:.1f} min ({pool.summary()})", flush=True)

    start_step, minutes_before = 0, 0.0
    checkpoint = out / "checkpoint"
    codec = Codec(codec_config)
    optimizer_state = None
    if resume:
        codec = Codec.from_pretrained(checkpoint)
        state = json.loads((checkpoint / "state.json").read_text())
        start_step, minutes_before = state["step"], float(state.get("minutes", 0.0))
        optimizer_state = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True)
        print(f"resuming from step {start_step}", flush=True)
    elif config.init_from:
        copied = warm_start(codec, Codec.from_pretrained(config.init_from))
        print(f"initialised {len(copied)} tensors from {config.init_from}", flush=True)
    codec.to(target_device).train()
    (out / "train_config.json").write_text(json.dumps(asdict(config), indent=2))

    optimizers = {
        "codec": torch.optim.AdamW(
            codec.parameters(), config.lr, config.betas, weight_decay=config.weight_decay
        )
    }
    discriminator = None
    if config.adversarial:
        from dac.model.discriminator import Discriminator

        discriminator = Discriminator(sample_rate=codec_config.sample_rate).to(target_device).train()
        optimizers["discriminator"] = torch.optim.AdamW(discriminator.parameters(), config.lr, config.betas)
    if optimizer_state:
        for name, optimizer in optimizers.items():
            if name in optimizer_state:
                optimizer.load_state_dict(optimizer_state[name])

    started = time.monotonic()

    def minutes_trained() -> float:
        return minutes_before + (time.monotonic() - started) / 60

    def lr_at(step: int) -> float:
        """Linear warm-up, then cosine to 10% over the steps or the time limit, whichever ends first."""
        return config.lr * warmup_cosine(
            step, config.steps, config.warmup_steps, minutes_trained(), config.max_minutes or 0.0, floor=0.1
        )

    sampler = CropSampler(pool, config.seconds, config.mix_prob, config.seed + start_step, target_device)
    mel_loss = MultiScaleMelLoss(codec_config.sample_rate).to(target_device)
    stft_loss = MultiResolutionSTFTLoss()
    stop_at = time.monotonic() + 60 * config.stop_after_minutes if config.stop_after_minutes else math.inf
    log = (out / "metrics.jsonl").open("a")
    progress = tqdm(
        range(start_step, config.steps), initial=start_step, total=config.steps, desc="codec", mininterval=5
    )
    step = start_step
    for step in progress:
        for optimizer in optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
        wav = sampler.batch(config.batch)
        recon, mean, scale = codec(wav)
        losses = {
            "mel": mel_loss(recon, wav),
            "stft": stft_loss(recon, wav),
            "wave": F.l1_loss(recon, wav),
            "kl": kl_divergence(mean, scale),
        }
        total = (
            config.mel_weight * losses["mel"]
            + config.stft_weight * losses["stft"]
            + config.wave_weight * losses["wave"]
            + config.kl_weight * losses["kl"]
        )
        if discriminator is not None:
            total = total + _adversarial_step(
                discriminator, optimizers["discriminator"], recon, wav, config, losses
            )
        optimizers["codec"].zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), config.grad_clip)
        optimizers["codec"].step()
        if step % 50 == 0:
            record = {"step": step, "total": total.item()} | {k: v.item() for k, v in losses.items()}
            log.write(json.dumps(record) + "\n")
            log.flush()
            progress.set_postfix(
                mel=f"{record['mel']:.3f}", stft=f"{record['stft']:.3f}", kl=f"{record['kl']:.2f}"
            )
        done = time.monotonic() > stop_at or (config.max_minutes and minutes_trained() > config.max_minutes)
        if (step + 1) % config.save_every == 0 or done:
            save_checkpoint(out, codec, optimizers, step + 1, config, minutes_trained())
        if done:
            print(f"time limit reached at step {step + 1}", flush=True)
            break
    save_checkpoint(out, codec, optimizers, step + 1, config, minutes_trained())
    codec.eval().cpu()
    codec.save_pretrained(out / "codec")
    return codec


def _adversarial_step(
    discriminator: nn.Module,
    optimizer: torch.optim.Optimizer,
    recon: Tensor,
    wav: Tensor,
    config: TrainConfig,
    losses: dict,
) -> Tensor:
    """One least-squares GAN update of DAC's discriminator; returns the generator's adversarial loss."""
    fake_d, real_d = discriminator(recon.detach()), discriminator(wav)
    loss_d = sum(
        torch.mean(f[-1] ** 2) + torch.mean((1 - r[-1]) ** 2) for f, r in zip(fake_d, real_d, strict=True)
    )
    optimizer.zero_grad(set_to_none=True)
    loss_d.backward()
    optimizer.step()
    fake, real = discriminator(recon), discriminator(wav)
    gen = sum(torch.mean((1 - f[-1]) ** 2) for f in fake)
    feature = sum(
        F.l1_loss(f_layer, r_layer.detach())
        for f, r in zip(fake, real, strict=True)
        for f_layer, r_layer in zip(f[:-1], r[:-1], strict=True)
    )
    losses["adv"], losses["feature"], losses["disc"] = gen.detach(), feature.detach(), loss_d.detach()
    return config.adv_weight * gen + config.feature_weight * feature


def export_codec(checkpoint: Path, out: Path) -> Path:
    """Write a checkpoint's codec as an fp16 bundle (``config.json`` + ``model.safetensors``)."""
    codec = Codec.from_pretrained(checkpoint)
    return codec.save_pretrained(out, dtype=torch.float16)
