"""Training of the embedded default PE-AV towers (``promptsep train encoders``).

The text tower (MiniLM) and its heads are fixed, so the text side of every pair is a lookup in a
cache of pooled MiniLM features; the codec front end is frozen, so every clip is encoded to
latents once. What trains is the audio transformer, the visual tower (a small timm ViT), the
audio-visual fusion encoder and their heads, with PE-AV's sigmoid contrastive loss (SigLIP style,
learnable scale and bias per pair) over:

* audio - text (the clip's captions), visual - text (visual captions), audio - visual,
* audio-visual - text (the audio-visual caption, every ``fusion_every`` steps on a few rows),
* audio+text - visual and visual+text - audio,

plus a category-level softmax term per tower: audio / picture embeddings against the centroid of
each category's prompts (the zero-shot classifier). In short runs on CPU it aligns the towers
with the fixed text space much faster than the sigmoid terms alone.

Labels are category-level (two clips of one category in a batch are both positives), and half of
each batch is hard negatives: categories whose names MiniLM puts nearest to another batch category.
The raw transformers logit scales/biases get their own larger learning rate (they start at
SigLIP's 10 / -10 and must move far).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from encoders.errors import AudioError, PromptsepError, require_checkpoint
from encoders.peav import PromptEncoder, latent_input
from encoders.prompts import VisualPreprocessing, load_image_frames, pixels_to_tensor, read_image

CACHE_NAME = "features.pt"
CHECKPOINT_NAME = "checkpoint.pt"
STATE_NAME = "state.json"
BUNDLE_DIR = "bundle"
METRICS_NAME = "metrics.jsonl"
WHITE = 1.0  # a white pixel after (x - 0.5) / 0.5 normalisation


@dataclass
class EncoderTrainConfig:
    """Settings of ``promptsep train encoders`` (saved in ``OUT/state.json``)."""

    data: str = "data"
    out: str = "runs/peav"
    steps: int = 1500
    minutes: float = 0.0
    batch_size: int = 32
    fusion_rows: int = 8
    fusion_every: int = 4
    category_scale: float = 20.0
    min_crop_seconds: float = 1.0
    max_crop_seconds: float = 3.0
    max_seconds: float = 5.0
    max_clips_per_category: int = 30
    max_eval_clips_per_category: int = 8
    lr: float = 1e-3
    logit_lr: float = 0.05
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    hard_negative_fraction: float = 0.5
    hard_negative_pool: int = 3
    latent_noise: float = 0.1
    image_shift: int = 6
    image_background: float = 0.0  # share of training pictures whose solid background is repainted a random colour
    image_style: float = 0.0  # share of training pictures restyled: colour jitter or greyscale, zoom, blur
    image_scenes: str = ""  # folder of photos: half of the repainted backgrounds become a random one of them
    extra_pictures: str = ""  # JSONL manifest (image, category per line): more training pictures for their categories
    weight_audio_text: float = 1.0
    weight_audio_category: float = 1.0
    weight_visual_text: float = 0.5
    weight_visual_category: float = 1.0
    weight_audio_visual: float = 1.0
    weight_av_text: float = 0.5
    weight_plus_text: float = 0.25
    extra_batch: int = 16  # rows of extra audio (``extra`` of train_encoders) added to each audio-text batch
    train_visual: bool = True  # False: the visual tower stays as it is (the shipped separator reads its embeddings)
    train_audio: bool = True  # False: only the visual tower trains (audio tower, fusion and pair heads stay as they are)
    init: str = ""  # start from this saved PE-AV folder (e.g. a bundle's peav): its weights, a fresh optimizer and schedule
    eval_every: int = 250
    save_every: int = 250
    seed: int = 0
    threads: int = 2
    device: str = "cpu"


# ---------------------------------------------------------------------------------------------- losses
def sigmoid_contrastive_loss(x: Tensor, y: Tensor, labels: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """PE-AV / SigLIP pairwise sigmoid loss.

    Shape:
        x ``(B, E)``, y ``(C, E)`` L2-normalised; labels ``(B, C)`` in ``{0, 1}`` (1 = positive pair);
        scale, bias ``(1,)``. Returns a scalar: the summed binary losses divided by ``B``.
    """
    logits = x @ y.T * scale + bias
    signs = labels.to(logits.dtype) * 2 - 1
    return -F.logsigmoid(signs * logits).sum() / x.shape[0]


# ---------------------------------------------------------------------------------------------- cache
@dataclass
class FeatureCache:
    """Frozen features of a library: latents, pooled MiniLM text features, preprocessed images.

    Attributes:
        clip_ids, clip_splits: per clip.
        categories: sorted category names; ``clip_category`` ``(N,)`` indexes them.
        latents: per clip ``(D, T_i)`` float16 codec latents (first ``max_seconds``).
        texts: every distinct caption/prompt; ``text_features`` ``(M, H)`` their pooled MiniLM states.
        clip_captions: per clip, indices of its audio captions in ``texts``.
        clip_visual_caption, clip_av_caption: per clip, one index in ``texts`` (or -1).
        prompt_text, prompt_category: category-level prompt table (indices in ``texts``, category).
        images: ``(K, 3, S, S)`` float16; ``clip_image`` per clip index in ``images`` (or -1).
    """

    fingerprint: str
    clip_ids: list[str]
    clip_splits: list[str]
    categories: list[str]
    clip_category: Tensor
    latents: list[Tensor]
    texts: list[str]
    text_features: Tensor
    clip_captions: list[list[int]]
    clip_visual_caption: list[int]
    clip_av_caption: list[int]
    prompt_text: Tensor
    prompt_category: Tensor
    images: Tensor
    image_paths: list[str]
    clip_image: list[int]

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save(asdict(self), tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FeatureCache:
        return cls(**torch.load(path, map_location="cpu", weights_only=True))


def _resolve(path, data_dir: Path) -> Path:
    """A library path as given (``load_library`` already joins it to the data folder), else
    relative to the data folder."""
    path = Path(path)
    return path if path.is_absolute() or path.exists() else data_dir / path


def select_clips(clips, per_train: int, per_eval: int, seed: int) -> list:
    """At most ``per_train`` random train clips and ``per_eval`` val/test clips per category (the
    library is very unbalanced: thousands of music stems, a handful of animal calls), so that the
    frozen features of every category are cached in minutes."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list] = {}
    for clip in clips:
        groups.setdefault((clip.split, clip.category), []).append(clip)
    chosen = []
    for (split, _), group in sorted(groups.items()):
        cap = per_train if split == "train" else per_eval
        picks = rng.permutation(len(group))[:cap]
        chosen += [group[i] for i in sorted(picks)]
    return chosen


def _fingerprint(clips, codec, encoder: PromptEncoder, max_seconds: float) -> str:
    digest = hashlib.sha1()
    digest.update(json.dumps(codec.config.to_dict(), sort_keys=True).encode())
    digest.update(json.dumps(asdict(encoder.config.visual), sort_keys=True).encode())
    digest.update(str(max_seconds).encode())
    with torch.no_grad():
        digest.update(str(float(sum(p.float().abs().sum() for p in codec.encoder.parameters()))).encode())
    for clip in clips:
        digest.update(f"{clip.id}|{clip.path}|{clip.category}|{clip.split}|{clip.image}".encode())
    return digest.hexdigest()


def vocabulary_entry(name: str):
    """The data engine's vocabulary entry of a category, or None outside the vocabulary."""
    try:
        from dataengine.vocabulary import category

        return category(name)
    except (ImportError, KeyError):
        return None


def category_prompts(name: str, fallback: list[str]) -> list[str]:
    """Training phrasings of a category (vocabulary phrasings + visual captions), never held-out ones."""
    entry = vocabulary_entry(name)
    if entry is None:
        return list(dict.fromkeys(fallback)) or [name]
    return list(dict.fromkeys([*entry.phrasings, *entry.visual]))


@torch.no_grad()
def pooled_text_features(encoder: PromptEncoder, texts: list[str], batch: int = 128) -> Tensor:
    """Pooled text-tower states ``(M, H)`` of ``texts`` (before the text head)."""
    chunks = []
    for start in tqdm(range(0, len(texts), batch), desc="text features", leave=False):
        states, mask = encoder.text_states(texts[start : start + batch])
        chunks.append(encoder.pool_text(states, mask).float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def build_cache(clips, data_dir: Path, codec, encoder: PromptEncoder, max_seconds: float) -> FeatureCache:
    """Encode every clip once (codec latents), embed every caption once, preprocess every image."""
    from encoders.audio_io import load_audio

    categories = sorted({clip.category for clip in clips})
    cat_index = {name: i for i, name in enumerate(categories)}
    texts: dict[str, int] = {}

    def text_id(text: str | None) -> int:
        if not text:
            return -1
        return texts.setdefault(text, len(texts))

    prep: VisualPreprocessing = encoder.config.visual
    image_index: dict[str, int] = {}
    images: list[Tensor] = []
    latents, captions, visual_caps, av_caps, clip_image = [], [], [], [], []
    max_samples = int(max_seconds * codec.sample_rate)
    kept, skipped = [], []
    for clip in tqdm(clips, desc="caching clip latents"):
        try:
            wav, _ = load_audio(_resolve(clip.path, data_dir), sample_rate=codec.sample_rate, channels=1)
        except AudioError as error:
            skipped.append(str(error))
            continue
        kept.append(clip)
        latents.append(codec.encode(wav[:, :max_samples].unsqueeze(0))[0].half())
        captions.append([text_id(c) for c in (clip.captions or [clip.category])])
        visual_caps.append(text_id(getattr(clip, "visual_caption", None)))
        av_caps.append(text_id(getattr(clip, "av_caption", None)))
        index = -1
        if getattr(clip, "image", None):
            key = str(_resolve(clip.image, data_dir))
            if key not in image_index:
                image_index[key] = len(images)
                images.append(pixels_to_tensor(read_image(key), prep).half())
            index = image_index[key]
        clip_image.append(index)
    if not kept:
        raise PromptsepError(f"none of the {len(clips)} library clips could be read, e.g. {skipped[0]}")
    if skipped:
        tqdm.write(f"skipped {len(skipped)} unreadable clips, e.g. {skipped[0]}")
    clips = kept
    prompt_text, prompt_category = [], []
    for name in categories:
        fallback = [c for clip in clips if clip.category == name for c in clip.captions]
        for prompt in category_prompts(name, fallback):
            prompt_text.append(text_id(prompt))
            prompt_category.append(cat_index[name])
    ordered = sorted(texts, key=texts.get)
    empty_images = torch.zeros(0, 3, prep.image_size, prep.image_size, dtype=torch.float16)
    return FeatureCache(
        fingerprint="",
        clip_ids=[clip.id for clip in clips],
        clip_splits=[clip.split for clip in clips],
        categories=categories,
        clip_category=torch.tensor([cat_index[clip.category] for clip in clips]),
        latents=latents,
        texts=ordered,
        text_features=pooled_text_features(encoder, ordered),
        clip_captions=captions,
        clip_visual_caption=visual_caps,
        clip_av_caption=av_caps,
        prompt_text=torch.tensor(prompt_text),
        prompt_category=torch.tensor(prompt_category),
        images=torch.stack(images) if images else empty_images,
        image_paths=sorted(image_index, key=image_index.get),
        clip_image=clip_image,
    )


# ---------------------------------------------------------------------------------------------- batches
class BatchSampler:
    """Category-balanced batches with hard negatives from MiniLM-nearest categories."""

    def __init__(self, cache: FeatureCache, split: str, cfg: EncoderTrainConfig, text_embeds: Tensor, rng) -> None:
        self.cache, self.cfg, self.rng = cache, cfg, rng
        by_category: dict[int, list[int]] = {}
        for index, (s, c) in enumerate(zip(cache.clip_splits, cache.clip_category.tolist(), strict=True)):
            if s == split:
                by_category.setdefault(c, []).append(index)
        if not by_category:
            raise PromptsepError(f"the library has no clips in the {split!r} split")
        self.by_category = by_category
        self.active = sorted(by_category)
        # Category centroids in the fixed text space, for hard negatives.
        centroids = torch.stack(
            [F.normalize(text_embeds[cache.prompt_text[cache.prompt_category == c]].mean(0), dim=0) for c in self.active]
        )
        similarity = centroids @ centroids.T
        similarity.fill_diagonal_(-2.0)
        pool = min(cfg.hard_negative_pool, max(1, len(self.active) - 1))
        self.neighbours = similarity.topk(pool, dim=1).indices.tolist()
        self.images_by_category: dict[int, list[int]] = {}
        for s, c, image in zip(cache.clip_splits, cache.clip_category.tolist(), cache.clip_image, strict=True):
            if s == split and image >= 0:
                self.images_by_category.setdefault(c, [])
                if image not in self.images_by_category[c]:
                    self.images_by_category[c].append(image)

    def add_pictures(self, cache: FeatureCache, pictures: Tensor, categories: list[str]) -> int:
        """Append ``pictures`` ``(K, 3, S, S)`` to the cache's images (in memory) and to the picture pools of their
        ``categories`` (names); pictures of a category without training clips are dropped. Returns how many joined."""
        index = {name: i for i, name in enumerate(cache.categories)}
        kept = [k for k, name in enumerate(categories) if index.get(name) in self.by_category]
        first = cache.images.shape[0]
        cache.images = torch.cat([cache.images, pictures[kept].to(cache.images.dtype)])
        for offset, k in enumerate(kept):
            self.images_by_category.setdefault(index[categories[k]], []).append(first + offset)
        return len(kept)

    def categories(self, size: int) -> list[int]:
        """``size`` category indices: anchors plus their hard-negative neighbours."""
        n_hard = int(size * self.cfg.hard_negative_fraction)
        n_anchor = size - n_hard
        replace = n_anchor > len(self.active)
        anchors = self.rng.choice(len(self.active), size=n_anchor, replace=replace).tolist()
        hard = [self.neighbours[a][int(self.rng.integers(len(self.neighbours[a])))] for a in anchors[:n_hard]]
        while len(hard) < n_hard:
            hard.append(int(self.rng.integers(len(self.active))))
        return [self.active[i] for i in anchors + hard]

    def clips(self, size: int) -> list[int]:
        return [self.by_category[c][int(self.rng.integers(len(self.by_category[c])))] for c in self.categories(size)]

    def image_for(self, clip: int) -> int:
        """An image of the clip's own pairing, else one of its category's, else -1."""
        own = self.cache.clip_image[clip]
        pool = self.images_by_category.get(int(self.cache.clip_category[clip]), [])
        if pool and (own < 0 or self.rng.random() < 0.5):
            return pool[int(self.rng.integers(len(pool)))]
        return own


class ExtraAudio:
    """Extra encoded audio with a category and no caption or picture (e.g. the augmented target sources
    of separator pool shards): it joins the audio-text and audio-category terms of each batch, with the
    category's training prompts as captions. Categories the feature cache lacks are dropped."""

    def __init__(self, pairs: list[tuple[Tensor, str]], cache: FeatureCache) -> None:
        index = {name: i for i, name in enumerate(cache.categories)}
        self.latents: list[Tensor] = []
        self.by_category: dict[int, list[int]] = {}
        for latents, name in pairs:
            if name in index:
                self.by_category.setdefault(index[name], []).append(len(self.latents))
                self.latents.append(latents)
        # captions: the vocabulary's audio phrasings of the category, not its visual captions ("a photo of a
        # dog" describes no sound); outside the vocabulary the prompt table holds the clips' own captions
        text_index = {text: i for i, text in enumerate(cache.texts)}
        self.prompts: dict[int, list[int]] = {}
        for c in self.by_category:
            entry = vocabulary_entry(cache.categories[c])
            phrasings = [text_index[t] for t in entry.phrasings if t in text_index] if entry else []
            self.prompts[c] = phrasings or cache.prompt_text[cache.prompt_category == c].tolist()

    def __len__(self) -> int:
        return len(self.latents)

    def sample(self, categories: list[int], rng) -> tuple[list[Tensor], list[int], list[int]]:
        """For each of ``categories`` that has extra audio: one item's latents, its category, a caption
        (an index into the cache's texts)."""
        latents, kept, captions = [], [], []
        for c in categories:
            items = self.by_category.get(c)
            if items:
                latents.append(self.latents[items[int(rng.integers(len(items)))]])
                kept.append(c)
                captions.append(self.prompts[c][int(rng.integers(len(self.prompts[c])))])
        return latents, kept, captions


def crop_latents(latents: list[Tensor], frames: int, rng, noise: float) -> Tensor:
    """Random crops of ``frames`` latent frames; clips shorter than that are tiled (a repeated bark
    is still a bark), so batches need no padding mask. Gaussian noise of up to ``noise`` x the
    per-channel std is added. Returns ``(B, D, frames)`` float32."""
    out = torch.empty(len(latents), latents[0].shape[0], frames)
    for i, lat in enumerate(latents):
        length = lat.shape[-1]
        if length < frames:
            lat = lat.repeat(1, math.ceil(frames / length))
            length = lat.shape[-1]
        start = int(rng.integers(length - frames + 1))
        piece = lat[:, start : start + frames].float()
        if noise > 0:
            piece = piece + torch.randn_like(piece) * piece.std(dim=-1, keepdim=True) * noise * float(rng.random())
        out[i] = piece
    return out


def repaint_background(images: Tensor, rng, share: float, tolerance: float = 0.25, scenes: Tensor | None = None) -> Tensor:
    """Repaint the solid background of a ``share`` of ``(B, 3, S, S)`` images (values in [-1, 1]) a random colour,
    or, for half of them when ``scenes`` (``(K, 3, S, S)``, same range) are given, a random scene (mirrored at
    random), so that the drawing stands in front of a photographed place.

    The background is every pixel within ``tolerance`` (summed over channels) of the top-left corner's colour, as
    in the data engine's emoji (a flat tint) and stamps (white). A tower that keyed on that tint has to read the
    drawing instead."""
    if share <= 0:
        return images
    out = images.clone()
    for i in range(images.shape[0]):
        if rng.random() >= share:
            continue
        corner = images[i, :, :1, :1]
        background = (images[i] - corner).abs().sum(0) < tolerance
        if scenes is not None and len(scenes) and rng.random() < 0.5:
            fill = scenes[int(rng.integers(len(scenes)))].to(images.dtype)
            fill = fill.flip(-1) if rng.random() < 0.5 else fill
        else:
            fill = torch.as_tensor(rng.uniform(-1.0, 1.0, size=3), dtype=images.dtype)[:, None, None]
        out[i] = torch.where(background, fill, images[i])
    return out


def load_scenes(folder: str | Path, prep: VisualPreprocessing) -> Tensor:
    """``--image-scenes``: the pictures of ``folder`` (PNG, JPEG, WebP), each cut to its centred square, as
    ``(K, 3, S, S)``.

    Raises:
        PromptsepError: the folder holds no picture.
    """
    from PIL import Image, ImageOps

    paths = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not paths:
        raise PromptsepError(f"{folder}: no scene pictures (.png, .jpg, .webp) for --image-scenes")
    side = prep.image_size
    squares = []
    for path in paths:
        with Image.open(path) as picture:
            squares.append(ImageOps.fit(picture.convert("RGB"), (side, side), Image.LANCZOS))
    return load_image_frames(squares, prep)[:, 0]


def restyle_images(images: Tensor, rng, share: float) -> Tensor:
    """Change the drawing style of a ``share`` of ``(B, 3, S, S)`` images (values in [-1, 1]), so that a picture
    drawn differently from the training ones (a photo, a clip-art stamp, a greyscale scan) still reads as its subject:
    brightness, contrast, saturation (down to greyscale) and hue jitter, then a zoom into a random crop of 55-100 %
    of the side and, for some, a light blur. Each restyled picture draws its own settings from ``rng``."""
    if share <= 0:
        return images
    from torchvision.transforms.v2 import functional as TF  # noqa: PLC0415 - training-only dependency

    out = images.clone()
    size = images.shape[-1]
    for i in range(images.shape[0]):
        if rng.random() >= share:
            continue
        x = ((images[i] + 1) / 2).clamp(0, 1)
        x = TF.adjust_brightness(x, float(rng.uniform(0.6, 1.4)))
        x = TF.adjust_contrast(x, float(rng.uniform(0.6, 1.4)))
        x = TF.adjust_saturation(x, 0.0 if rng.random() < 0.25 else float(rng.uniform(0.3, 1.7)))
        x = TF.adjust_hue(x, float(rng.uniform(-0.08, 0.08)))
        side = int(round(size * rng.uniform(0.55, 1.0)))
        top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        x = TF.resized_crop(x, top, left, side, side, [size, size], antialias=True)
        if rng.random() < 0.3:
            x = TF.gaussian_blur(x, [3, 3], [float(rng.uniform(0.3, 1.2))])
        out[i] = x.clamp(0, 1) * 2 - 1
    return out


def augment_images(images: Tensor, shift: int, rng, background: float = 0.0, style: float = 0.0,
                   scenes: Tensor | None = None) -> Tensor:
    """Random translation (white fill) and horizontal flip of ``(B, 3, S, S)`` images, after repainting the
    background of a ``background`` share of them (:func:`repaint_background`, with ``scenes``) and restyling a
    ``style`` share (:func:`restyle_images`)."""
    images = restyle_images(repaint_background(images, rng, background, scenes=scenes), rng, style)
    if shift <= 0:
        return images
    size = images.shape[-1]
    padded = F.pad(images, (shift, shift, shift, shift), value=WHITE)
    out = torch.empty_like(images)
    for i in range(images.shape[0]):
        dx, dy = (int(v) for v in rng.integers(0, 2 * shift + 1, size=2))
        crop = padded[i, :, dy : dy + size, dx : dx + size]
        out[i] = crop.flip(-1) if rng.random() < 0.5 else crop
    return out


# ---------------------------------------------------------------------------------------------- model pieces
def text_embeddings(encoder: PromptEncoder, features: Tensor, space: str = "audio") -> Tensor:
    """L2-normalised text embeddings ``(M, E)`` from pooled features ``(M, H)`` (fixed heads)."""
    return F.normalize(encoder.text_head(space)(features), dim=-1)


def forward_audio(encoder: PromptEncoder, latents: Tensor) -> tuple[Tensor, Tensor]:
    """Audio tower on latents ``(B, D, T)``: pooled state ``(B, H)`` and L2-normalised embedding ``(B, E)``."""
    audio_model = encoder.model.audio_model
    with latent_input(audio_model.audio_encoder):
        pooled = audio_model.audio_encoder(input_values=latents, return_dict=True).pooler_output
    return pooled, F.normalize(audio_model.audio_head(pooled), dim=-1)


def forward_video(encoder: PromptEncoder, frames: Tensor) -> tuple[Tensor, Tensor]:
    """Visual tower on frames ``(B, F, 3, S, S)``: pooled state ``(B, H)`` and embedding ``(B, E)``."""
    video_model = encoder.model.video_model
    pooled = video_model.video_encoder(pixel_values_videos=frames, return_dict=True).pooler_output
    return pooled, F.normalize(video_model.video_head(pooled), dim=-1)


def forward_audio_video(encoder: PromptEncoder, latents: Tensor, frames: Tensor) -> Tensor:
    """Audio-visual fusion encoder (it runs its own audio and video towers) on latents
    ``(B, D, T)`` and frames ``(B, F, 3, S, S)``: embeddings ``(B, E)``."""
    fusion = encoder.model.audio_video_encoder
    with latent_input(fusion.embedder.audio_encoder):
        outputs = fusion(input_values=latents, pixel_values_videos=frames, return_dict=True)
    return F.normalize(encoder.model.audio_video_head(outputs.pooler_output), dim=-1)


@torch.no_grad()
def standardize_input_projection(encoder: PromptEncoder, latents: list[Tensor]) -> None:
    """Data-dependent init of the audio tower's ``embedder.data_proj``: fold a per-channel
    standardisation of the codec latents into the linear layer, so the tower starts on zero-mean,
    unit-variance inputs whatever the codec's latent statistics (no extra module)."""
    stacked = torch.cat([lat.float() for lat in latents], dim=-1)
    mean, std = stacked.mean(-1), stacked.std(-1).clamp_min(1e-4)
    proj = encoder.model.audio_model.audio_encoder.embedder.data_proj
    mean, std = mean.to(proj.weight.device), std.to(proj.weight.device)
    proj.bias.sub_(proj.weight @ (mean / std))
    proj.weight.div_(std)


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def embed_cached_clips(encoder: PromptEncoder, cache: FeatureCache, indices: list[int], batch: int = 32) -> Tensor:
    """Audio embeddings ``(N, E)`` of whole cached clips (latents path)."""
    device = encoder.device
    out = []
    for start in range(0, len(indices), batch):
        chunk = [cache.latents[i] for i in indices[start : start + batch]]
        longest = max(lat.shape[-1] for lat in chunk)
        latents = torch.zeros(len(chunk), chunk[0].shape[0], longest)
        mask = torch.zeros(len(chunk), longest, dtype=torch.long)
        for i, lat in enumerate(chunk):
            latents[i, :, : lat.shape[-1]] = lat.float()
            mask[i, : lat.shape[-1]] = 1
        out.append(encoder.embed_audio(latents.to(device), is_latents=True, mask=mask.to(device)).cpu())
    return torch.cat(out)


def retrieval_metrics(queries: Tensor, query_labels: Tensor, items: Tensor, item_labels: Tensor) -> dict[str, float]:
    """R@1 / R@5 of query -> item retrieval where a hit is an item of the query's label.

    Shape:
        queries ``(Q, E)``, items ``(N, E)``, labels ``(Q,)`` / ``(N,)``.
    """
    order = (queries @ items.T).argsort(dim=1, descending=True)
    hits = item_labels[order] == query_labels[:, None]
    return {"r1": float(hits[:, :1].any(1).float().mean()), "r5": float(hits[:, :5].any(1).float().mean())}


def zero_shot_accuracy(audio: Tensor, labels: Tensor, class_text: Tensor) -> float:
    """Share of clips whose most similar class prompt embedding ``(C, E)`` is their own class."""
    return float(((audio @ class_text.T).argmax(1) == labels).float().mean())


@torch.no_grad()
def evaluate(encoder: PromptEncoder, cache: FeatureCache, split: str) -> dict[str, float]:
    """Text -> audio R@1/R@5 and zero-shot accuracy (category-name prompts), image -> audio R@1."""
    indices = [i for i, s in enumerate(cache.clip_splits) if s == split]
    if not indices:
        return {}
    was_training = encoder.training
    encoder.eval()
    audio = embed_cached_clips(encoder, cache, indices)
    labels = cache.clip_category[indices]
    present = sorted(set(labels.tolist()))
    names = [cache.categories[c] for c in present]
    class_text = encoder.embed_text(names).cpu()
    metrics = {"clips": len(indices)}
    text_r = retrieval_metrics(class_text, torch.tensor(present), audio, labels)
    metrics.update({"text_audio_r1": text_r["r1"], "text_audio_r5": text_r["r5"]})
    all_text = encoder.embed_text(cache.categories).cpu()
    metrics["zero_shot_acc"] = zero_shot_accuracy(audio, labels, all_text)
    image_ids = sorted({cache.clip_image[i] for i in indices if cache.clip_image[i] >= 0})
    if image_ids:
        image_category = {}
        for i in indices:
            if cache.clip_image[i] >= 0:
                image_category.setdefault(cache.clip_image[i], int(cache.clip_category[i]))
        frames = cache.images[image_ids].float().unsqueeze(1).to(encoder.device)
        image_emb = encoder.embed_video(frames).cpu()
        image_labels = torch.tensor([image_category[i] for i in image_ids])
        metrics["image_audio_r1"] = retrieval_metrics(image_emb, image_labels, audio, labels)["r1"]
    encoder.train(was_training)
    return metrics


# ---------------------------------------------------------------------------------------------- training
def category_centroids(embeddings: Tensor, cache: FeatureCache) -> Tensor:
    """L2-normalised mean embedding ``(C, E)`` of each category's prompts (zero for a category
    without prompts) from the embeddings ``(M, E)`` of every cached text."""
    prompts = embeddings[cache.prompt_text.to(embeddings.device)]
    labels = cache.prompt_category.to(embeddings.device)
    sums = torch.zeros(len(cache.categories), embeddings.shape[1], device=embeddings.device)
    sums.index_add_(0, labels, prompts)
    return F.normalize(sums, dim=-1)


def _lr_factor(step: int, cfg: EncoderTrainConfig, minutes: float = 0.0) -> float:
    """Warm-up, then cosine to ``min_lr_ratio`` over the steps or the ``cfg.minutes`` budget,
    whichever ends first (``minutes``: training time so far, over all resumes)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    if cfg.minutes > 0:
        progress = max(progress, min(1.0, minutes / cfg.minutes))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _audio_text_losses(
    encoder: PromptEncoder, audio: Tensor, category: Tensor, caption: Tensor, frames_count: int,
    sampler: BatchSampler, cfg: EncoderTrainConfig, text: dict[str, Tensor], rng, extra: ExtraAudio | None,
) -> dict[str, Tensor]:
    """The audio-text and audio-category terms of :func:`training_step` on the batch's audio embeddings
    ``(B, E)`` plus up to ``cfg.extra_batch`` items of ``extra``."""
    device = audio.device
    if extra and cfg.extra_batch > 0:
        extra_latents, extra_category, extra_caption = extra.sample(sampler.categories(cfg.extra_batch), rng)
        if extra_latents:
            _, extra_audio = forward_audio(encoder, crop_latents(extra_latents, frames_count, rng, cfg.latent_noise).to(device))
            audio = torch.cat([audio, extra_audio])
            category = torch.cat([category, torch.tensor(extra_category, device=device)])
            caption = torch.cat([caption, torch.tensor(extra_caption, device=device)])
    same = (category[:, None] == category[None, :]).float()
    audio_model = encoder.model.audio_model
    scale, bias = audio_model.text_audio_logit_scale, audio_model.text_audio_logit_bias
    return {
        "audio_text": sigmoid_contrastive_loss(audio, text["audio"][caption], same, scale, bias),
        "audio_category": F.cross_entropy(audio @ text["audio_classes"].T * cfg.category_scale, category),
    }


def training_step(
    encoder: PromptEncoder,
    cache: FeatureCache,
    sampler: BatchSampler,
    cfg: EncoderTrainConfig,
    text: dict[str, Tensor],
    rng,
    fuse: bool = True,
    extra: ExtraAudio | None = None,
    scenes: Tensor | None = None,
) -> dict[str, Tensor]:
    """Losses of one batch (see the module docstring for the pairs).

    ``extra``: up to ``cfg.extra_batch`` of its items join the audio-text and audio-category terms.
    ``scenes``: backgrounds for :func:`repaint_background` (``cfg.image_scenes``, loaded by :func:`load_scenes`).
    With ``cfg.train_visual`` off the visual tower's own terms (visual-text, visual-category) are
    skipped; :func:`train_encoders` has frozen its weights. With ``cfg.train_audio`` off only the
    terms that reach the visual tower directly remain (visual-text, visual-category, audio-visual
    against the fixed audio embeddings); the audio side runs without a graph.

    ``text`` maps a space (``audio``, ``video``, ``audio_video``) to the embeddings ``(M, E)`` of
    every cached text, ``raw`` to their pooled features ``(M, H)`` and ``audio_classes`` /
    ``video_classes`` to the category centroids ``(C, E)``. ``fuse``: also train the audio-visual
    fusion encoder on this batch.
    """
    device = encoder.device
    model = encoder.model
    video_model = model.video_model
    clips = sampler.clips(cfg.batch_size)
    frame_rate = encoder.sample_rate / encoder.hop_length
    seconds = cfg.min_crop_seconds + (cfg.max_crop_seconds - cfg.min_crop_seconds) * float(rng.random())
    frames_count = max(1, round(seconds * frame_rate))
    latents = crop_latents([cache.latents[i] for i in clips], frames_count, rng, cfg.latent_noise).to(device)
    with torch.set_grad_enabled(cfg.train_audio and torch.is_grad_enabled()):
        audio_pool, audio = forward_audio(encoder, latents)

    category = cache.clip_category[clips].to(device)
    same = (category[:, None] == category[None, :]).float()
    caption = torch.tensor([cache.clip_captions[i][int(rng.integers(len(cache.clip_captions[i])))] for i in clips])
    caption = caption.to(device)
    losses = {}
    if cfg.train_audio:
        losses.update(_audio_text_losses(encoder, audio, category, caption, frames_count, sampler, cfg, text, rng, extra))

    image_ids = [sampler.image_for(i) for i in clips]
    rows = [k for k, image in enumerate(image_ids) if image >= 0]
    if rows:
        images = torch.stack([cache.images[image_ids[k]].float() for k in rows])
        frames = augment_images(images, cfg.image_shift, rng, cfg.image_background, cfg.image_style, scenes).unsqueeze(1).to(device)
        video_pool, video = forward_video(encoder, frames)  # no graph when train_encoders froze the tower
        index = torch.tensor(rows, device=device)
        same_v = same[index][:, index]
        visual_caption = torch.tensor(
            [cache.clip_visual_caption[clips[k]] if cache.clip_visual_caption[clips[k]] >= 0 else int(caption[k]) for k in rows],
            device=device,
        )
        if cfg.train_visual:
            scale_vt, bias_vt = video_model.text_video_logit_scale, video_model.text_video_logit_bias
            losses["visual_text"] = sigmoid_contrastive_loss(video, text["video"][visual_caption], same_v, scale_vt, bias_vt)
            losses["visual_category"] = F.cross_entropy(video @ text["video_classes"].T * cfg.category_scale, category[index])
        losses["audio_visual"] = sigmoid_contrastive_loss(
            audio[index], video, same_v, model.audio_video_logit_scale, model.audio_video_logit_bias
        )
    if rows and cfg.train_audio:
        audio_plus_text = F.normalize(
            model.audio_plus_text_head(torch.cat([audio_pool[index], text["raw"][caption[index]]], -1)), dim=-1
        )
        video_plus_text = F.normalize(
            model.video_plus_text_head(torch.cat([video_pool, text["raw"][visual_caption]], -1)), dim=-1
        )
        losses["plus_text"] = 0.5 * (
            sigmoid_contrastive_loss(
                audio_plus_text, video.detach(), same_v, model.audio_plus_text_logit_scale, model.audio_plus_text_logit_bias
            )
            + sigmoid_contrastive_loss(
                video_plus_text, audio[index].detach(), same_v, model.video_plus_text_logit_scale, model.video_plus_text_logit_bias
            )
        )
    if rows and fuse and cfg.train_audio:
        fused = index[: cfg.fusion_rows]
        audio_video = forward_audio_video(encoder, latents[fused], frames[: len(fused)])
        av_caption = torch.tensor(
            [cache.clip_av_caption[clips[k]] if cache.clip_av_caption[clips[k]] >= 0 else int(caption[k]) for k in rows[: len(fused)]],
            device=device,
        )
        losses["av_text"] = sigmoid_contrastive_loss(
            audio_video,
            text["audio_video"][av_caption],
            same[fused][:, fused],
            model.text_audio_video_logit_scale,
            model.text_audio_video_logit_bias,
        )
    weights = {
        "audio_text": cfg.weight_audio_text,
        "audio_category": cfg.weight_audio_category,
        "av_text": cfg.weight_av_text,
        "visual_text": cfg.weight_visual_text,
        "visual_category": cfg.weight_visual_category,
        "audio_visual": cfg.weight_audio_visual,
        "plus_text": cfg.weight_plus_text,
    }
    losses["total"] = sum((weights[k] * v for k, v in losses.items()), torch.zeros((), device=device))
    return losses


def _save_checkpoint(
    out: Path, encoder: PromptEncoder, optimizer, step: int, rng, cfg: EncoderTrainConfig, minutes: float
) -> None:
    state = {
        "model": {k: v.detach().cpu() for k, v in encoder.trainable_state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = out / (CHECKPOINT_NAME + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out / CHECKPOINT_NAME)
    meta = {"step": step, "minutes": minutes, "numpy_rng": rng.bit_generator.state, "config": asdict(cfg)}
    (out / STATE_NAME).write_text(json.dumps(meta, indent=2) + "\n")


def _add_extra_pictures(sampler: BatchSampler, cache: FeatureCache, manifest: Path, prep: VisualPreprocessing) -> None:
    """``train encoders --extra-pictures``: the manifest's pictures join their categories' training pools."""
    from encoders.namer import manifest_pictures

    pictures = manifest_pictures(manifest)
    paths = sorted(pictures)
    images = load_image_frames(paths, prep)[:, 0]
    joined = sampler.add_pictures(cache, images, [pictures[p] for p in paths])
    tqdm.write(f"{joined} of {len(paths)} extra pictures joined the training pools")


def train_encoders(
    cfg: EncoderTrainConfig, resume: bool = False, clips=None, codec=None, extra: list[tuple[Tensor, str]] | None = None
) -> Path:
    """Train (or resume) the default PE-AV towers; writes ``OUT/bundle`` (the fp16 bundle to ship).

    Args:
        cfg: settings.
        clips: library clips (``dataengine.library.load_library(cfg.data)`` if ``None``).
        codec: the frozen codec (the shipped default if ``None``).
        extra: more training audio as ``(codec latents (D, T), category name)`` pairs (see
            :class:`ExtraAudio`), e.g. ``separation.train.shard_targets`` of separator pool shards.

    Returns:
        The bundle folder.
    """
    if not (cfg.train_audio or cfg.train_visual):
        raise PromptsepError("nothing to train: the audio and the visual towers are both frozen")
    if extra and not cfg.train_audio:
        raise PromptsepError("extra audio trains the audio tower, which is frozen (train_audio off)")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    if resume:
        require_checkpoint(out / CHECKPOINT_NAME)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    data_dir = Path(cfg.data)
    if clips is None:
        from dataengine.library import load_library

        clips = load_library(data_dir)
    if codec is None:
        from encoders.codec import load_default_codec

        codec = load_default_codec()
    codec = codec.eval()
    if cfg.init and not resume:  # a saved bundle's towers, loaded (and checked) before any caching work
        encoder = PromptEncoder.from_pretrained(cfg.init, codec=codec)
    else:
        encoder = PromptEncoder.build_default(codec, initialize=not resume)

    clips = select_clips(clips, cfg.max_clips_per_category, cfg.max_eval_clips_per_category, cfg.seed)
    fingerprint = _fingerprint(clips, codec, encoder, cfg.max_seconds)
    cache_file = out / CACHE_NAME
    cache = FeatureCache.load(cache_file) if cache_file.is_file() else None
    if cache is None or cache.fingerprint != fingerprint:
        cache = build_cache(clips, data_dir, codec, encoder, cfg.max_seconds)
        cache.fingerprint = fingerprint
        cache.save(cache_file)

    if not cfg.train_audio and cache.images.shape[0] == 0:
        raise PromptsepError(f"only the visual tower would train, but the clips under {data_dir} have no pictures")
    rng = np.random.default_rng(cfg.seed)
    step, minutes_before = 0, 0.0
    encoder.to(device).train()
    named = [(n, p) for n, p in encoder.model.named_parameters() if p.requires_grad]
    parameters = [p for _, p in named]
    logits = [p for n, p in named if n.endswith(("logit_scale", "logit_bias"))]
    weights = [p for n, p in named if not n.endswith(("logit_scale", "logit_bias"))]
    # The raw logit scales/biases must travel far (10 -> ~50): their own, larger, undecayed rate. The peak
    # rates live here, not in the optimizer's groups, whose saved state a resume would bring back.
    peak_rates = (cfg.lr, cfg.logit_lr)
    optimizer = torch.optim.AdamW(
        [{"params": weights, "weight_decay": cfg.weight_decay}, {"params": logits, "weight_decay": 0.0}]
    )
    if resume:
        checkpoint = torch.load(out / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
        encoder.load_trainable_state(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["torch_rng"])
        meta = json.loads((out / STATE_NAME).read_text())
        step = int(meta["step"])
        minutes_before = float(meta.get("minutes", 0.0))
        rng.bit_generator.state = meta["numpy_rng"]
    elif not cfg.init:  # a bundle from --init brings its own input standardisation
        standardize_input_projection(encoder, [cache.latents[i] for i, s in enumerate(cache.clip_splits) if s == "train"])
    # Frozen after the optimizer is built, so its groups still match a checkpoint's. The visual tower's weights
    # follow train_visual, every other weight train_audio (weights the fusion shares with the tower follow the tower).
    visual = {id(p) for p in encoder.model.video_model.parameters()}
    for parameter in encoder.model.parameters():
        if not (cfg.train_visual if id(parameter) in visual else cfg.train_audio):
            parameter.requires_grad_(False)

    with torch.no_grad():
        raw = cache.text_features.to(device)
        text = {space: text_embeddings(encoder, raw, space) for space in ("audio", "video", "audio_video")}
        text["raw"] = raw
        for space in ("audio", "video"):
            text[f"{space}_classes"] = category_centroids(text[space], cache)
    sampler = BatchSampler(cache, "train", cfg, text["audio"].cpu(), rng)
    if cfg.extra_pictures:
        _add_extra_pictures(sampler, cache, Path(cfg.extra_pictures), encoder.config.visual)
    extra_audio = ExtraAudio(extra, cache) if extra else None
    scenes = load_scenes(cfg.image_scenes, encoder.config.visual) if cfg.image_scenes else None
    eval_split = "val" if "val" in cache.clip_splits else "test"
    encoder.config.visual_trained = bool(cache.images.shape[0] > 0)
    started = time.monotonic()

    def minutes_trained() -> float:
        return minutes_before + (time.monotonic() - started) / 60

    bar = tqdm(total=cfg.steps, initial=step, desc="train encoders")
    metrics_file = (out / METRICS_NAME).open("a")
    while step < cfg.steps:
        factor = _lr_factor(step, cfg, minutes_trained())
        for group, peak in zip(optimizer.param_groups, peak_rates, strict=True):
            group["lr"] = peak * factor
        losses = training_step(
            encoder, cache, sampler, cfg, text, rng, fuse=step % cfg.fusion_every == 0, extra=extra_audio, scenes=scenes
        )
        optimizer.zero_grad(set_to_none=True)
        if losses["total"].requires_grad:  # a visual-only run has nothing to learn from a batch without pictures
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(parameters, cfg.grad_clip)
            optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix({k: f"{v.item():.2f}" for k, v in losses.items() if k in ("total", "audio_text", "visual_category")})
        out_of_time = cfg.minutes > 0 and minutes_trained() > cfg.minutes
        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
            metrics = evaluate(encoder, cache, eval_split)
            metrics.update({"step": step, "split": eval_split, "lr": optimizer.param_groups[0]["lr"],
                            **{k: round(v.item(), 4) for k, v in losses.items()}})
            metrics_file.write(json.dumps(metrics) + "\n")
            metrics_file.flush()
            bar.write(json.dumps(metrics))
        if step % cfg.save_every == 0 or step == cfg.steps or out_of_time:
            _save_checkpoint(out, encoder, optimizer, step, rng, cfg, minutes_trained())
        if out_of_time:
            break
    bar.close()
    metrics_file.close()
    encoder.eval()
    return encoder.to("cpu").save_pretrained(out / BUNDLE_DIR)
