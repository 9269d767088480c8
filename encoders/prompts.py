"""Prompt preprocessing: text prompts reduced to the sound they name, and pictures and video frames read
into the tensors the PE-AV visual tower reads.

People phrase a text prompt as a request ("Can you isolate the dog barking?", "extract the piano from
this recording, please"); training prompts name the sound ("dog barking"). :func:`canonical_text_prompt`
strips the request around the name, so both embed alike.

A picture becomes one frame, a video a few frames sampled uniformly over its length; both come out
as float32 ``(F, 3, S, S)`` tensors normalised with the tower's mean/std. Pictures are letterboxed
(fitted into the square, padded with white) rather than cropped: the visual prompts of the data
engine (stamps, emoji) are objects on a transparent background and must stay whole. Transparent
pixels are composited onto white.

Every failure a user can cause raises :class:`~encoders.errors.PromptError` naming the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from encoders.errors import PromptError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".svg"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".ogv", ".mpg", ".mpeg"}
BACKGROUND_RGB = (255, 255, 255)
MAX_PIXEL = 255.0


# A request's wrapping, matched case-insensitively and stripped repeatedly from either end of a text
# prompt. No training or held-out phrasing of the vocabulary starts or ends with one of them (tested).
_REQUEST_PREFIX = re.compile(
    r"^(?:please|kindly|hey|ok(?:ay)?|now|"
    r"(?:can|could|would|will|do) you(?: please)?(?: mind)?|(?:can|could|may) i (?:get|have|hear)|"
    r"i(?:'d| would)(?: only| just)? (?:like|love)(?: you)?(?: to)?|"
    r"(?:i )?(?:only |just )?(?:want|need|wanna)(?: you)?(?: to)?|"
    r"(?:i am |i'm |we are |we're )?(?:looking|searching|listening) (?:for|to)|(?:i am |i'm )?trying to|"
    r"let me|help me|try to|show me|"
    r"(?:isolat|extract|separat|pull|split|single|filter|bring|keep|find|enhanc|boost)(?:e|es|ed|ing)?(?: out)?|"
    r"get(?: me)?|give me|detect|focus(?:ing)? on|"
    r"(?:only )?(?:hear|listen to)|only|just|"
    r"remove (?:the )?(?:background|noise|rest|everything(?: else)?)(?: (?:and|but|except)(?: keep)?)?|"
    r"(?:mute|drop|cut|remove|suppress) everything(?: else)? (?:but|except)(?: for)?)"
    r"\b[\s,:;-]*",
    re.IGNORECASE,
)
_REQUEST_SUFFIX = re.compile(
    r"[\s,;:-]*\b(?:please|thanks|thank you|only|alone|by itself|on its own|out|isolated|isolate it|"
    r"to the front|(?:from|in|out of|off) (?:the|this|that|my|a) (?:recording|audio|clip|mix|mixture|track|file|video|sound|song)|"
    r"from (?:the |all )?(?:rest|background|noise|others|other sounds|everything else)|"
    r"(?:and|but) (?:remove|mute|drop|cut|suppress|silence|discard|lose) (?:everything else|the rest|all else|the background)|"
    r"and nothing else|for me)$",
    re.IGNORECASE,
)
_EDGE_PUNCTUATION = " \t\n\"'`.,!?;:"


def canonical_text_prompt(text: str) -> str:
    """The sound a text prompt names, without the request around it.

    ``"Can you isolate the dog barking, please?"`` -> ``"the dog barking"``; a prompt that only names a
    sound comes back unchanged (apart from surrounding whitespace, quotes and end punctuation). A
    prompt that is nothing but a request (``"isolate"``) comes back stripped of punctuation only.
    """
    typed = current = text.strip(_EDGE_PUNCTUATION) or text.strip()  # "?" stays "?", as typed
    while True:
        shorter = _REQUEST_SUFFIX.sub("", _REQUEST_PREFIX.sub("", current, count=1), count=1).strip(_EDGE_PUNCTUATION)
        if not shorter:
            return typed
        if shorter == current:
            return current
        current = shorter


@dataclass(frozen=True)
class VisualPreprocessing:
    """How a picture is turned into pixels for the visual tower.

    Attributes:
        image_size: side ``S`` of the square input.
        mean, std: per-channel normalisation applied to pixels in ``[0, 1]``.
        num_frames: frames sampled from a video.
    """

    image_size: int = 48
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    num_frames: int = 8


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has a picture suffix."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_video_path(path: str | os.PathLike) -> bool:
    """True when the file name has a video-container suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """RGB copy of ``image`` with transparency composited onto white."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND_RGB + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def require_prompt_file(path: str | os.PathLike, kind: str) -> Path:
    """``path`` as a Path when it is an existing file; ``kind`` ("image" or "video") names it in the error.

    Raises:
        PromptError: there is no such file.
    """
    path = Path(path)
    if not path.is_file():
        noun = "picture" if kind == "image" else kind
        raise PromptError(f"{path}: {kind} prompt not found; pass an existing {noun} file")
    return path


def read_image(source: str | os.PathLike | Image.Image) -> Image.Image:
    """Open a picture as an RGB PIL image (transparency on white).

    Raises:
        PromptError: the file is missing, empty or not a picture PIL can decode.
    """
    if isinstance(source, Image.Image):
        return _flatten_alpha(source)
    path = require_prompt_file(source, "image")
    if path.stat().st_size == 0:
        raise PromptError(f"{path}: image prompt is an empty file")
    try:
        with Image.open(path) as image:
            image.load()
            return _flatten_alpha(image)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise PromptError(f"{path}: cannot decode the image prompt ({error}); use a PNG or JPEG picture") from error


def letterbox(image: Image.Image, size: int) -> Image.Image:
    """Fit ``image`` into a ``size`` x ``size`` square keeping its aspect ratio, padding with white."""
    width, height = image.size
    scale = size / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = image.resize(new_size, Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), BACKGROUND_RGB)
    canvas.paste(resized, ((size - new_size[0]) // 2, (size - new_size[1]) // 2))
    return canvas


def pixels_to_tensor(image: Image.Image, prep: VisualPreprocessing) -> torch.Tensor:
    """Letterbox and normalise one RGB image.

    Returns:
        float32 tensor ``(3, S, S)``.
    """
    square = letterbox(image, prep.image_size)
    array = torch.from_numpy(np.asarray(square, dtype=np.float32) / MAX_PIXEL)
    tensor = array.permute(2, 0, 1)
    mean = torch.tensor(prep.mean).view(3, 1, 1)
    std = torch.tensor(prep.std).view(3, 1, 1)
    return (tensor - mean) / std


def load_image_frames(
    images: Sequence[str | os.PathLike | Image.Image], prep: VisualPreprocessing
) -> torch.Tensor:
    """Read pictures as one-frame videos.

    Returns:
        float32 tensor ``(B, 1, 3, S, S)``.
    """
    if len(images) == 0:
        raise PromptError("no image prompt given")
    frames = [pixels_to_tensor(read_image(image), prep) for image in images]
    return torch.stack(frames).unsqueeze(1)


def read_video_frames(path: str | os.PathLike, prep: VisualPreprocessing) -> torch.Tensor:
    """Sample ``prep.num_frames`` frames uniformly over a video file (fewer if the video is shorter).

    Returns:
        float32 tensor ``(F, 3, S, S)``.

    Raises:
        PromptError: the file is missing or has no decodable video stream.
    """
    import av

    path = require_prompt_file(path, "video")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise PromptError(f"{path}: the file has no video stream; use a picture or a video prompt")
            decoded = [frame.to_image() for frame in container.decode(video=0)]
    except PromptError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise PromptError(f"{path}: cannot decode the video prompt ({error})") from error
    if not decoded:
        raise PromptError(f"{path}: the video prompt has no frames")
    count = min(prep.num_frames, len(decoded))
    picks = np.linspace(0, len(decoded) - 1, count).round().astype(int)
    return torch.stack([pixels_to_tensor(_flatten_alpha(decoded[i]), prep) for i in picks])


def load_video_frames(path: str | os.PathLike, prep: VisualPreprocessing | None = None) -> torch.Tensor:
    """Frames ``(F, 3, S, S)`` of a video (or a picture) with the embedded default's preprocessing
    unless ``prep`` is given (prefer ``PromptEncoder.video_frames``, which uses the model's own)."""
    return load_visual_prompt(path, prep or VisualPreprocessing())


def load_visual_prompt(path: str | os.PathLike, prep: VisualPreprocessing) -> torch.Tensor:
    """Read a picture or a video file, whichever ``path`` is.

    Returns:
        float32 tensor ``(F, 3, S, S)`` (``F = 1`` for a picture).
    """
    if is_video_path(path):
        return read_video_frames(path, prep)
    return load_image_frames([path], prep)[0]


def pad_frames(videos: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch videos of different lengths.

    Args:
        videos: tensors ``(F_i, 3, S, S)``.

    Returns:
        frames ``(B, F, 3, S, S)`` zero-padded, and mask ``(B, F)`` (1 = real frame).
    """
    longest = max(video.shape[0] for video in videos)
    frames = videos[0].new_zeros(len(videos), longest, *videos[0].shape[1:])
    mask = torch.zeros(len(videos), longest, dtype=torch.long)
    for index, video in enumerate(videos):
        frames[index, : video.shape[0]] = video
        mask[index, : video.shape[0]] = 1
    return frames, mask
