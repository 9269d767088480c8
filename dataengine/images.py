"""Visual prompts: emoji rendered per category (with variants) and copies of stamp pictures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from dataengine.seeding import keyed_rng
from dataengine.vocabulary import CATEGORIES

EMOJI_FONT = "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_SIZE = 109  # the only size the bitmap colour font has
IMAGE_SIZE = 160
VARIANTS = 4


def render_glyph(text: str, font: ImageFont.FreeTypeFont | None) -> Image.Image:
    """The emoji as an RGBA image cropped to its content; a text label when the font lacks it."""
    canvas = Image.new("RGBA", (EMOJI_SIZE * 3, EMOJI_SIZE * 2), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    if font is not None:
        draw.text((8, 8), text, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return canvas
    return canvas.crop(box)


def render_variant(glyph: Image.Image, label: str, rng: np.random.Generator) -> Image.Image:
    """Place a glyph on a random pastel background with a random scale and rotation. ``(S, S)`` RGB."""
    background = tuple(int(v) for v in rng.integers(150, 256, size=3))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    if glyph.getbbox() is None:  # no glyph: write the label
        ImageDraw.Draw(image).text((10, IMAGE_SIZE // 2 - 6), label, fill=(0, 0, 0))
        return image
    scale = float(rng.uniform(0.55, 0.95)) * IMAGE_SIZE / max(glyph.size)
    glyph = glyph.resize((max(1, int(glyph.width * scale)), max(1, int(glyph.height * scale))), Image.LANCZOS)
    glyph = glyph.rotate(float(rng.uniform(-25, 25)), resample=Image.BICUBIC, expand=True)
    x = int(rng.integers(0, max(1, IMAGE_SIZE - glyph.width + 1)))
    y = int(rng.integers(0, max(1, IMAGE_SIZE - glyph.height + 1)))
    image.paste(glyph, (x, y), glyph)
    return image


def emoji_path(out: Path, category: str, variant: int) -> Path:
    return out / "images" / "emoji" / f"{category.replace(' ', '-')}_{variant}.png"


def emoji_paths(out: Path, variants: int = VARIANTS) -> dict[str, list[str]]:
    """Category -> the relative paths its emoji variants have (rendered or not yet)."""
    return {name: [str(emoji_path(out, name, v).relative_to(out)) for v in range(variants)] for name in CATEGORIES}


def render_emoji_set(out: Path, root: Path, seed: int, variants: int = VARIANTS,
                     categories: list[str] | None = None) -> dict[str, list[str]]:
    """Render ``variants`` PNGs per category (all, or ``categories``) under ``out/images/emoji``;
    existing files are kept. Returns category -> relative paths. Without the emoji font, the
    category name is drawn instead.
    """
    font_path = root / EMOJI_FONT
    font = None
    if font_path.is_file():
        try:
            font = ImageFont.truetype(str(font_path), EMOJI_SIZE)
        except OSError:
            font = None
    result: dict[str, list[str]] = {}
    for name in categories if categories is not None else list(CATEGORIES):
        entry = CATEGORIES[name]
        glyph = None
        paths = []
        for variant in range(variants):
            path = emoji_path(out, name, variant)
            if not path.exists():
                if glyph is None:
                    glyph = render_glyph(entry.emoji, font)
                path.parent.mkdir(parents=True, exist_ok=True)
                render_variant(glyph, name, keyed_rng(seed, name, variant)).save(path)
            paths.append(str(path.relative_to(out)))
        result[name] = paths
    return result


def copy_picture(source: Path | bytes, destination: Path, size: int = IMAGE_SIZE, crop: bool = False) -> None:
    """Copy a stamp picture (a file, or an image file's bytes) as an RGB PNG on white, fitted into ``size`` x ``size``
    (made smaller, never larger); ``crop``: cut it to its drawing (the bounding box of its opaque pixels) and scale
    that to fit, larger or smaller, for pictures drawn small on a large transparent page."""
    if destination.exists():
        return
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as picture:
        picture = picture.convert("RGBA")
        box = picture.getchannel("A").getbbox() if crop else None
        if box:
            picture = ImageOps.contain(picture.crop(box), (size, size), Image.LANCZOS)
        picture.thumbnail((size, size), Image.LANCZOS)
        canvas = Image.new("RGB", (size, size), (255, 255, 255))
        canvas.paste(picture, ((size - picture.width) // 2, (size - picture.height) // 2), picture)
        destination.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(destination)
