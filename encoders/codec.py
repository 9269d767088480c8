"""DAC-VAE: the audio codec whose continuous latents every other component works in.

The encoder and decoder are descript-audio-codec's (``dac.model.dac.Encoder``/``Decoder``: Snake
activations, weight-normalised convolutions). Between them sits a VAE bottleneck like SAM-Audio's
DAC-VAE: ``quantizer.in_proj`` maps encoder features to a mean and a scale, ``quantizer.out_proj``
maps a latent back to decoder features. At inference the latent is the mean (no sampling).

Long audio is encoded and decoded in hop-aligned chunks with overlap and a linear crossfade, so the
working memory does not grow with the length of the input.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from dac.model.dac import Decoder, DecoderBlock, Encoder
from dac.nn.layers import Snake1d, WNConv1d
from safetensors.torch import load_file
from torch import Tensor, nn

from encoders.errors import WeightsError
from encoders.files import save_tensors
from encoders.runtime import keep_freed_memory

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INITIAL_SCALE_BIAS = -6.0
DEFAULT_CODEC_DIR = Path(__file__).resolve().parent.parent / "promptsep_assets" / "default" / "codec"


@dataclass
class CodecConfig:
    """Architecture and inference settings of a :class:`Codec` (serialised to ``config.json``).

    ``encoder_out_dim`` is the width of the encoder's output (the input of ``quantizer.in_proj``);
    ``None`` means DAC's default ``encoder_dim * 2 ** len(encoder_rates)``, which is also what
    transformers' ``PeAudioEncoder`` expects.

    ``decoder_head`` picks the decoder: ``"waveform"`` is DAC's decoder (transposed convolutions all
    the way to the sample rate, the layout SAM-Audio's DAC-VAE uses); ``"istft"`` runs DAC decoder
    blocks up to an STFT frame rate (``decoder_rates`` multiply to ``hop_length / stft_hop``) and a
    Vocos-style head that predicts log-magnitude and phase per bin, turned into audio by an inverse
    STFT with ``n_fft`` (default ``4 * stft_hop``). The second learns magnitudes far faster on a CPU.
    """

    sample_rate: int = 16000
    encoder_dim: int = 8
    encoder_rates: list[int] = field(default_factory=lambda: [2, 4, 8, 10])
    latent_dim: int = 64
    decoder_dim: int = 512
    decoder_rates: list[int] = field(default_factory=lambda: [4])
    encoder_out_dim: int | None = None
    decoder_head: str = "istft"
    n_fft: int | None = None
    chunk_seconds: float = 10.0
    overlap_seconds: float = 1.28
    min_scale: float = 1e-4

    @property
    def hop_length(self) -> int:
        return math.prod(self.encoder_rates)

    @property
    def stft_hop(self) -> int:
        """Hop of the iSTFT head (only meaningful for ``decoder_head == "istft"``)."""
        return self.hop_length // math.prod(self.decoder_rates)

    @property
    def stft_size(self) -> int:
        return self.n_fft or 4 * self.stft_hop

    @property
    def encoder_features(self) -> int:
        """Width of the encoder output / decoder input features."""
        if self.encoder_out_dim is not None:
            return self.encoder_out_dim
        return self.encoder_dim * 2 ** len(self.encoder_rates)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CodecConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WeightsError(
                f"codec config has unknown keys {unknown}; is it a promptsep codec config.json?"
            )
        return cls(**data)


class Snake(nn.Module):
    """Snake activation ``x + sin(alpha x)^2 / alpha`` per channel, in eager PyTorch.

    Same parameter (``alpha`` of shape ``(1, C, 1)``) as ``dac.nn.layers.Snake1d``, which it replaces:
    DAC's TorchScript version re-profiles for every new input length (slow for chunked inference).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, T)`` -> ``(B, C, T)``, or ``(B, C, 1, T)`` -> ``(B, C, 1, T)`` inside a channels-last encoder
        (:func:`use_channels_last`)."""
        alpha = self.alpha if x.dim() == 3 else self.alpha.unsqueeze(-1)
        if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad):
            wave = torch.sin(alpha * x)
            return torch.addcmul(x, wave, wave * (alpha + 1e-9).reciprocal())
        # inference: one buffer instead of four (each a full activation; allocating them costs as much as the math)
        wave = torch.mul(x, alpha).sin_().square_()
        return wave.mul_((alpha + 1e-9).reciprocal()).add_(x)


def use_eager_snake(module: nn.Module) -> None:
    """Swap every Snake activation inside ``module`` for :class:`Snake` (state-dict keys unchanged): DAC's
    ``Snake1d`` and the same-named copies in transformers' DAC and PE-Audio encoders, which allocate four
    activation-sized buffers per call where :class:`Snake` allocates one at inference."""
    for name, child in module.named_children():
        if type(child).__name__ == "Snake1d":  # dac.nn.layers' and transformers' copies share the name and ``alpha``
            replacement = Snake(child.alpha.shape[1])
            replacement.alpha = child.alpha
            setattr(module, name, replacement)
        else:
            use_eager_snake(child)


def _conv_over_rows(conv: nn.Conv1d, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv``'s convolution of a ``(B, C, 1, T)`` channels-last input, as a 2-D convolution with a ``1 x k``
    kernel (the 1-D form of a 3-D input is unchanged)."""
    if x.dim() == 3:
        return nn.Conv1d._conv_forward(conv, x, weight, bias)
    if conv.padding_mode != "zeros":
        raise NotImplementedError(f"channels-last encoder: padding_mode {conv.padding_mode!r} is not supported")
    kernel = weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    out = F.conv2d(x, kernel, bias, (1, conv.stride[0]), (0, conv.padding[0]), (1, conv.dilation[0]), conv.groups)
    return out.contiguous(memory_format=torch.channels_last)  # a no-op except after a one-channel input


def _to_rows(module: nn.Module, args: tuple) -> tuple:
    wav, *rest = args
    return (wav.unsqueeze(2).contiguous(memory_format=torch.channels_last), *rest)


def _from_rows(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
    return out.squeeze(2).contiguous()


def use_channels_last(encoder: nn.Module) -> None:
    """Run a DAC encoder (``dac.model.dac.Encoder`` or transformers' ``PeAudioDacEncoder``; ``(B, 1, N)`` in,
    ``(B, D, T)`` out, as before) on ``(B, C, 1, T)`` channels-last activations.

    oneDNN's convolutions with DAC's few channels (8 and 16 at the full and half rate) are about three times
    faster in that layout than on ``(B, C, T)``; the Snakes (:class:`Snake`) and the residual adds do not care.
    Weights, state-dict keys and training are unchanged; values agree to float rounding (about 1e-6).
    """
    for module in encoder.modules():
        if type(module).__name__ == "Snake1d":  # DAC's and transformers' copies
            raise TypeError("use_channels_last needs the eager Snake; call use_eager_snake first")
        if isinstance(module, nn.Conv1d):
            module._conv_forward = partial(_conv_over_rows, module)  # instance attribute; the class is untouched
    encoder.register_forward_pre_hook(_to_rows)
    encoder.register_forward_hook(_from_rows)


class VAEBottleneck(nn.Module):
    """Continuous bottleneck: features -> (mean, scale) and latent -> features.

    ``in_proj``: weight-normalised 1x1 conv ``features -> 2 * latent_dim`` (mean first, then the
    pre-activation of the scale); ``out_proj``: 1x1 conv ``latent_dim -> features``.
    """

    def __init__(self, features: int, latent_dim: int, min_scale: float = 1e-4) -> None:
        super().__init__()
        self.in_proj = WNConv1d(features, 2 * latent_dim, kernel_size=1)
        self.out_proj = WNConv1d(latent_dim, features, kernel_size=1)
        self.min_scale = min_scale
        # start with tiny posterior noise (scale ~0.0025): with more, the input-dependent part of a fresh
        # encoder's output (~0.02) drowns in it, the decoder learns to ignore the latent and it collapses
        with torch.no_grad():
            self.in_proj.bias[latent_dim:] = INITIAL_SCALE_BIAS

    def posterior(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, F, T)`` encoder features -> mean ``(B, D, T)`` and positive scale ``(B, D, T)``."""
        mean, scale = self.in_proj(features).chunk(2, dim=1)
        return mean, F.softplus(scale) + self.min_scale


MAX_LOG_MAGNITUDE = math.log(100.0)


class SpectralDecoder(nn.Module):
    """DAC decoder blocks up to an STFT frame rate, then an inverse-STFT head (as in Vocos).

    ``model``: a conv from the latent features to ``channels``, one DAC ``DecoderBlock`` per rate
    (channels halve each time), Snake and a conv to ``n_fft + 2`` channels per frame: the first half
    is the log-magnitude of each bin, the second its phase (an angle). The frames are inverted with a
    Hann-windowed overlap-add ("same" padding), giving exactly ``frames * hop`` samples.
    """

    def __init__(self, input_channel: int, channels: int, rates: list[int], n_fft: int, hop: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [WNConv1d(input_channel, channels, kernel_size=7, padding=3)]
        dim = channels
        for index, stride in enumerate(rates):
            out_dim = channels // 2 ** (index + 1)
            layers.append(DecoderBlock(dim, out_dim, stride))
            dim = out_dim
        layers += [Snake1d(dim), WNConv1d(dim, n_fft + 2, kernel_size=7, padding=3)]
        self.model = nn.Sequential(*layers)
        self.hop = hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)  # its length is n_fft

    def forward(self, x: Tensor) -> Tensor:
        """Decoder features ``(B, F, T)`` -> waveform ``(B, 1, T * prod(rates) * hop)``."""
        log_magnitude, phase = self.model(x).float().chunk(2, dim=1)
        magnitude = log_magnitude.clamp(max=MAX_LOG_MAGNITUDE).exp()
        spectrum = torch.polar(magnitude, phase)
        return overlap_add(spectrum, self.window, self.hop)


def overlap_add(spectrum: Tensor, window: Tensor, hop: int) -> Tensor:
    """Inverse STFT with "same" padding: ``(B, n_fft // 2 + 1, T)`` complex -> ``(B, 1, T * hop)``.

    Each frame is inverse-FFT'd, windowed and overlap-added; the sum is divided by the summed squared
    window and ``(n_fft - hop) / 2`` samples are trimmed from each end.
    """
    n_fft = window.shape[0]
    frames = torch.fft.irfft(spectrum, n=n_fft, dim=1) * window[:, None]
    count = frames.shape[-1]
    size = (count - 1) * hop + n_fft
    fold = dict(output_size=(1, size), kernel_size=(1, n_fft), stride=(1, hop))
    signal = F.fold(frames, **fold).reshape(frames.shape[0], 1, size)
    envelope = F.fold(window.pow(2)[None, :, None].expand(1, n_fft, count), **fold).reshape(1, 1, size)
    pad = (n_fft - hop) // 2
    signal = signal[..., pad : pad + count * hop]
    return signal / envelope[..., pad : pad + count * hop].clamp_min(1e-8)


def _crossfade_window(length: int, overlap_left: int, overlap_right: int) -> Tensor:
    """Weights ``(length,)`` of one chunk for overlap-add.

    Over each overlap with a neighbour the weight is 0 for the outer quarter (the chunk's edge,
    where zero padding distorts the output), ramps linearly over the middle half and is 1 for the
    inner quarter; the weights of two neighbours sum to 1 across their shared overlap.
    """
    window = torch.ones(length)
    if overlap_left > 0:
        position = (torch.arange(overlap_left) + 0.5) / overlap_left
        window[:overlap_left] = ((position - 0.25) / 0.5).clamp(0.0, 1.0)
    if overlap_right > 0:
        position = (torch.arange(overlap_right) + 0.5) / overlap_right
        window[length - overlap_right :] = ((0.75 - position) / 0.5).clamp(0.0, 1.0)
    return window


def chunked_apply(
    fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int, overlap: int, ratio: float
) -> Tensor:
    """Apply ``fn`` to overlapping chunks of ``x`` along its last axis and crossfade the outputs.

    Args:
        fn: maps ``(B, C, n)`` to ``(B, C', round(n * ratio))``.
        x: input ``(B, C, N)``.
        chunk: chunk length in input steps (> overlap).
        overlap: overlap of neighbouring chunks in input steps; ``overlap * ratio`` must be whole.
        ratio: output steps per input step.

    Returns:
        ``(B, C', round(N * ratio))``; only the output buffer grows with ``N``.
    """
    length = x.shape[-1]
    if length <= chunk:
        return fn(x)
    step = chunk - overlap
    out_overlap = round(overlap * ratio)
    starts = list(range(0, length - overlap, step))
    out = None
    for index, start in enumerate(starts):
        end = min(start + chunk, length)
        piece = fn(x[..., start:end])
        if out is None:
            out = piece.new_zeros(piece.shape[0], piece.shape[1], round(length * ratio))
        out_start = round(start * ratio)
        overlap_left = out_overlap if index > 0 else 0
        overlap_right = out_overlap if index < len(starts) - 1 else 0
        window = _crossfade_window(piece.shape[-1], overlap_left, overlap_right).to(piece)
        out[..., out_start : out_start + piece.shape[-1]] += piece * window
    return out


class Codec(nn.Module):
    """DAC encoder -> VAE bottleneck -> DAC decoder, mono waveform <-> latents ``(B, D, T)``.

    ``T = ceil(N / hop_length)`` latent frames for ``N`` samples.
    """

    def __init__(self, config: CodecConfig | None = None) -> None:
        super().__init__()
        self.config = config or CodecConfig()
        c = self.config
        with warnings.catch_warnings():  # descript-audio-codec's WNConv1d uses the deprecated weight_norm
            warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning)
            features = c.encoder_features
            self.encoder = Encoder(c.encoder_dim, list(c.encoder_rates), features)
            self.quantizer = VAEBottleneck(features, c.latent_dim, c.min_scale)
            if c.decoder_head == "waveform":
                if math.prod(c.decoder_rates) != c.hop_length:
                    raise WeightsError(
                        f"codec config: decoder_rates {c.decoder_rates} must upsample by the hop {c.hop_length}"
                    )
                self.decoder = Decoder(features, c.decoder_dim, list(c.decoder_rates))
            elif c.decoder_head == "istft":
                if c.hop_length % math.prod(c.decoder_rates) or c.stft_size < c.stft_hop:
                    raise WeightsError(
                        f"codec config: decoder_rates {c.decoder_rates} must divide the hop {c.hop_length} "
                        f"and n_fft {c.stft_size} must be at least the STFT hop {c.stft_hop}"
                    )
                self.decoder = SpectralDecoder(
                    features, c.decoder_dim, list(c.decoder_rates), c.stft_size, c.stft_hop
                )
            else:
                raise WeightsError(f"codec config: unknown decoder_head {c.decoder_head!r} (waveform or istft)")
        use_eager_snake(self)
        use_channels_last(self.encoder)

    # ------------------------------------------------------------------ properties
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop_length

    def _chunk_sizes(self) -> tuple[int, int]:
        """Chunk and overlap in latent frames (hop aligned, overlap < chunk)."""
        chunk = max(2, round(self.config.chunk_seconds * self.frame_rate))
        overlap = min(chunk - 1, max(1, round(self.config.overlap_seconds * self.frame_rate)))
        return chunk, overlap

    def pad_to_hop(self, wav: Tensor) -> Tensor:
        """Right-pad ``(B, 1, N)`` with zeros to a multiple of the hop."""
        pad = -wav.shape[-1] % self.hop_length
        return F.pad(wav, (0, pad)) if pad else wav

    # ------------------------------------------------------------------ encode
    def _check_wav(self, wav: Tensor) -> Tensor:
        if wav.dim() == 2:
            wav = wav.unsqueeze(1)
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"codec expects mono audio (B, 1, N), got shape {tuple(wav.shape)}")
        return wav

    def _features(self, wav: Tensor) -> Tensor:
        """``(B, 1, n)`` hop-aligned -> encoder features ``(B, F, n / hop)``."""
        return self.encoder(wav)

    def encode_posterior(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior of the latents, unchunked (for training).

        Shape:
            wav ``(B, 1, N)`` -> mean ``(B, D, T)``, scale ``(B, D, T)``, ``T = ceil(N / hop)``.
        """
        wav = self.pad_to_hop(self._check_wav(wav))
        return self.quantizer.posterior(self._features(wav))

    def _encode_mean(self, wav: Tensor) -> Tensor:
        return self.quantizer.posterior(self._features(wav))[0]

    def encode(self, wav: Tensor) -> Tensor:
        """Waveform ``(B, 1, N)`` at ``sample_rate`` -> mean latents ``(B, D, ceil(N / hop))``.

        Inputs longer than ``chunk_seconds`` are encoded in overlapping hop-aligned chunks.
        """
        wav = self.pad_to_hop(self._check_wav(wav))
        chunk, overlap = self._chunk_sizes()
        hop = self.hop_length
        return chunked_apply(self._encode_mean, wav, chunk * hop, overlap * hop, 1.0 / hop)

    # ------------------------------------------------------------------ decode
    def _decode_full(self, latents: Tensor) -> Tensor:
        wav = self.decoder(self.quantizer.out_proj(latents))
        target = latents.shape[-1] * self.hop_length
        if wav.shape[-1] < target:
            wav = F.pad(wav, (0, target - wav.shape[-1]))
        return wav[..., :target]

    def decode(self, latents: Tensor, length: int | None = None) -> Tensor:
        """Latents ``(B, D, T)`` -> waveform ``(B, 1, N)``; ``N = length`` if given, else ``T * hop``.

        Long latent sequences are decoded in overlapping chunks with a crossfade.
        """
        if latents.dim() != 3 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"codec expects latents (B, {self.latent_dim}, T), got {tuple(latents.shape)}")
        chunk, overlap = self._chunk_sizes()
        wav = chunked_apply(self._decode_full, latents, chunk, overlap, float(self.hop_length))
        if length is not None:
            if wav.shape[-1] < length:
                wav = F.pad(wav, (0, length - wav.shape[-1]))
            wav = wav[..., :length]
        return wav

    def forward(self, wav: Tensor, sample: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: ``(B, 1, N)`` -> reconstruction ``(B, 1, N)``, mean and scale ``(B, D, T)``."""
        length = wav.shape[-1]
        mean, scale = self.encode_posterior(wav)
        latents = mean + scale * torch.randn_like(mean) if sample else mean
        return self._decode_full(latents)[..., :length], mean, scale

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (weights cast to ``dtype`` if given)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        state = {}
        for key, value in self.state_dict().items():
            value = value.detach().cpu()
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            state[key] = value.contiguous()
        save_tensors(state, path / WEIGHTS_NAME, metadata={"format": "pt", "model": "promptsep-dacvae"})
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Codec:
        """Load a folder written by :meth:`save_pretrained` (fp16 weights are cast to float32).

        Every bundle loads its codec first, so this is also where the process's allocator is tuned for
        inference (:func:`encoders.runtime.keep_freed_memory`).
        """
        keep_freed_memory()
        path = Path(path)
        config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        for needed in (config_file, weights_file):
            if not needed.is_file():
                raise WeightsError(
                    f"codec file {needed} is missing; pass a folder with {CONFIG_NAME} and {WEIGHTS_NAME} "
                    "(see `promptsep train codec`)"
                )
        config = CodecConfig.from_dict(json.loads(config_file.read_text()))
        model = cls(config)
        model.load_state(load_file(str(weights_file), device=str(map_location)))
        return model.eval()

    def load_state(self, state: dict[str, Tensor]) -> None:
        """Strictly load a state dict in our layout or SAM-Audio's DAC-VAE layout.

        Both weight-norm spellings are accepted (``weight_g``/``weight_v`` of
        ``torch.nn.utils.weight_norm`` and ``parametrizations.weight.original0/1``).
        Raises :class:`WeightsError` naming missing or unexpected keys.
        """
        own = self.state_dict()
        converted = {}
        for key, value in state.items():
            key = _canonical_weight_norm_key(key, own)
            converted[key] = value.to(own[key].dtype) if key in own else value
        missing = sorted(set(own) - set(converted))
        unexpected = sorted(set(converted) - set(own))
        if missing or unexpected:
            raise WeightsError(
                f"codec weights do not match the config: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        wrong = [k for k, v in converted.items() if v.shape != own[k].shape]
        if wrong:
            k = wrong[0]
            raise WeightsError(
                f"codec weight {k} has shape {tuple(converted[k].shape)}, config expects {tuple(own[k].shape)}"
            )
        self.load_state_dict(converted, strict=True)

    @classmethod
    def from_dac_pth(
        cls, path: str | Path, chunk_seconds: float = 10.0, overlap_seconds: float = 0.64
    ) -> Codec:
        """Wrap an official descript-audio-codec ``.pth`` (16/24/44 kHz) as a continuous codec.

        The latent is DAC's continuous pre-quantisation encoder output: the residual VQ is dropped
        and the VAE bottleneck is set to the identity (mean = features, tiny constant scale,
        ``out_proj`` = identity), so ``decode(encode(x))`` runs DAC's decoder on the unquantised
        latent, which the RVQ (all codebooks) approximates during DAC's training.
        Read with ``torch.load(weights_only=True)``.
        """
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"DAC checkpoint {path} not found")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad file for the user
            raise WeightsError(
                f"cannot read DAC checkpoint {path} with weights_only=True: {error}"
            ) from error
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "metadata" not in checkpoint:
            raise WeightsError(f"{path} is not a DAC .pth (expected keys 'state_dict' and 'metadata')")
        kwargs = dict(checkpoint["metadata"].get("kwargs", {}))
        encoder_dim = int(kwargs.get("encoder_dim", 64))
        encoder_rates = list(kwargs.get("encoder_rates", [2, 4, 8, 8]))
        latent_dim = kwargs.get("latent_dim") or encoder_dim * 2 ** len(encoder_rates)
        config = CodecConfig(
            sample_rate=int(kwargs.get("sample_rate", 44100)),
            encoder_dim=encoder_dim,
            encoder_rates=encoder_rates,
            latent_dim=int(latent_dim),
            decoder_dim=int(kwargs.get("decoder_dim", 1536)),
            decoder_rates=list(kwargs.get("decoder_rates", [8, 8, 4, 2])),
            decoder_head="waveform",
            encoder_out_dim=int(latent_dim),
            chunk_seconds=chunk_seconds,
            overlap_seconds=overlap_seconds,
        )
        model = cls(config)
        source = checkpoint["state_dict"]
        state = {k: v for k, v in source.items() if k.startswith(("encoder.", "decoder."))}
        identity_bottleneck = _identity_bottleneck_state(int(latent_dim), config.min_scale)
        model.load_state({**state, **identity_bottleneck})
        return model.eval()


def _canonical_weight_norm_key(key: str, own: dict[str, Tensor]) -> str:
    """Map ``parametrizations.weight.original0/1`` keys to ``weight_g``/``weight_v`` when we use those."""
    if key in own:
        return key
    for new, old in (
        (".parametrizations.weight.original0", ".weight_g"),
        (".parametrizations.weight.original1", ".weight_v"),
    ):
        if key.endswith(new):
            candidate = key[: -len(new)] + old
            if candidate in own:
                return candidate
        if key.endswith(old):
            candidate = key[: -len(old)] + new
            if candidate in own:
                return candidate
    return key


def _identity_bottleneck_state(dim: int, min_scale: float) -> dict[str, Tensor]:
    """Weight-normed state of a ``VAEBottleneck(dim, dim)`` whose mean and out_proj are the identity.

    The scale half has zero weights and a bias making ``softplus(bias) + min_scale`` about ``min_scale``.
    """
    eye = torch.eye(dim).unsqueeze(-1)
    v_in = torch.cat([eye, torch.full((dim, dim, 1), 1.0 / math.sqrt(dim))], dim=0)
    g_in = torch.cat([torch.ones(dim, 1, 1), torch.zeros(dim, 1, 1)])
    scale_bias = math.log(math.expm1(min_scale))
    return {
        "quantizer.in_proj.weight_v": v_in,
        "quantizer.in_proj.weight_g": g_in,
        "quantizer.in_proj.bias": torch.cat([torch.zeros(dim), torch.full((dim,), scale_bias)]),
        "quantizer.out_proj.weight_v": eye.clone(),
        "quantizer.out_proj.weight_g": torch.ones(dim, 1, 1),
        "quantizer.out_proj.bias": torch.zeros(dim),
    }


def load_default_codec(map_location: str | torch.device = "cpu") -> Codec:
    """The embedded default codec (16 kHz mono, hop 640) from ``promptsep_assets/default/codec``."""
    if not (DEFAULT_CODEC_DIR / WEIGHTS_NAME).is_file():
        raise WeightsError(
            f"the default codec is missing from {DEFAULT_CODEC_DIR}; reinstall promptsep or train one with "
            "`promptsep train codec --out DIR` and pass --codec DIR"
        )
    return Codec.from_pretrained(DEFAULT_CODEC_DIR, map_location=map_location)


# ---------------------------------------------------------------------- PE-AV audio tower mapping
def pe_audio_dac_config(codec_config: CodecConfig) -> dict:
    """The ``dac_config`` of transformers' ``PeAudioEncoderConfig`` whose DAC encoder + bottleneck
    compute exactly our ``encode`` (unchunked)."""
    if codec_config.encoder_out_dim not in (
        None,
        codec_config.encoder_dim * 2 ** len(codec_config.encoder_rates),
    ):
        raise WeightsError("PeAudioEncoder needs encoder_out_dim == encoder_dim * 2 ** len(encoder_rates)")
    return {
        "encoder_hidden_size": codec_config.encoder_dim,
        "downsampling_ratios": list(codec_config.encoder_rates),
        "decoder_hidden_size": codec_config.decoder_dim,
        "codebook_dim": codec_config.latent_dim,
        "sampling_rate": codec_config.sample_rate,
    }


def _fold_weight_norm(state: dict[str, Tensor], prefix: str) -> tuple[Tensor, Tensor]:
    """Plain conv ``(weight, bias)`` of a weight-normed conv whose keys start with ``prefix``."""
    g, v = state[prefix + "weight_g"], state[prefix + "weight_v"]
    weight = torch._weight_norm(v, g, 0)
    return weight, state[prefix + "bias"]


def codec_to_pe_audio_encoder_state(codec: Codec) -> dict[str, Tensor]:
    """Our encoder + the mean half of ``quantizer.in_proj`` as ``PeAudioEncoder`` weights.

    Returns keys ``embedder.dac_encoder.*`` and ``embedder.bottleneck.*`` (weight norm folded) to
    load with ``strict=False`` into a ``PeAudioEncoder`` built from :func:`pe_audio_dac_config`.
    """
    pe_audio_dac_config(codec.config)
    state = {k: v.detach().float() for k, v in codec.state_dict().items()}
    out: dict[str, Tensor] = {}

    def conv(src: str, dst: str) -> None:
        weight, bias = _fold_weight_norm(state, src)
        out[dst + "weight"], out[dst + "bias"] = weight, bias

    enc, dst = "encoder.block.", "embedder.dac_encoder."
    n_blocks = len(codec.config.encoder_rates)
    conv(enc + "0.", dst + "conv1.")
    for i in range(n_blocks):
        src_block, dst_block = f"{enc}{i + 1}.block.", f"{dst}block.{i}."
        for unit in range(3):
            src_unit, dst_unit = f"{src_block}{unit}.block.", f"{dst_block}res_unit{unit + 1}."
            out[dst_unit + "snake1.alpha"] = state[src_unit + "0.alpha"]
            conv(src_unit + "1.", dst_unit + "conv1.")
            out[dst_unit + "snake2.alpha"] = state[src_unit + "2.alpha"]
            conv(src_unit + "3.", dst_unit + "conv2.")
        out[dst_block + "snake1.alpha"] = state[src_block + "3.alpha"]
        conv(src_block + "4.", dst_block + "conv1.")
    out[dst + "snake1.alpha"] = state[f"{enc}{n_blocks + 1}.alpha"]
    conv(f"{enc}{n_blocks + 2}.", dst + "conv2.")
    weight, bias = _fold_weight_norm(state, "quantizer.in_proj.")
    latent = codec.latent_dim
    out["embedder.bottleneck.weight"] = weight[:latent].clone()
    out["embedder.bottleneck.bias"] = bias[:latent].clone()
    return out


# ---------------------------------------------------------------------- metric
DAC_MEL_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
DAC_MEL_BANDS = (5, 10, 20, 40, 80, 160, 320)


def mel_distance(estimate: Tensor, reference: Tensor, sample_rate: int) -> Tensor:
    """Multi-scale log-mel L1 distance as in DAC's paper and training config (its 0.93 at 8 kbps).

    descript-audio-codec's ``MelSpectrogramLoss`` with windows 32..2048 and 5..320 mel bands,
    log10 of clamped magnitudes, no linear-magnitude term; summed over the 7 scales.

    Shape:
        estimate, reference: ``(B, N)`` or ``(B, C, N)`` -> scalar tensor (mean over the batch).
    """
    from audiotools import AudioSignal
    from dac.nn.loss import MelSpectrogramLoss

    if estimate.dim() == 2:
        estimate, reference = estimate[:, None], reference[:, None]
    loss = MelSpectrogramLoss(
        n_mels=list(DAC_MEL_BANDS),
        window_lengths=list(DAC_MEL_WINDOWS),
        mel_fmin=[0.0] * len(DAC_MEL_BANDS),
        mel_fmax=[None] * len(DAC_MEL_BANDS),
        pow=1.0,
        mag_weight=0.0,
        clamp_eps=1e-5,
    )
    with torch.no_grad():
        return loss(AudioSignal(estimate.float(), sample_rate), AudioSignal(reference.float(), sample_rate))
