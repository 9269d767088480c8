"""Render music21 corpus scores part by part with fluidsynth: true instrument stems.

Each part is written as its own MIDI file with one General MIDI program, then rendered dry
(no reverb/chorus) to a wav. Parts that carry a real instrument keep it; vocal or unnamed
parts get an instrument drawn (deterministically from the seed and the score) from a pool
that suits their pitch range, with distinct categories within a piece where possible.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import numpy as np

from dataengine.seeding import keyed_rng
from dataengine.vocabulary import categorize

# (GM program, category) pools by the median pitch of the part.
HIGH = [(73, "flute"), (40, "strings"), (56, "brass"), (68, "woodwinds"), (71, "woodwinds"), (0, "piano"),
        (52, "choir"), (11, "bells"), (81, "synthesizer"), (19, "organ"), (24, "guitar"), (46, "harp"),
        (21, "accordion"), (72, "flute")]
MIDDLE = [(41, "strings"), (65, "woodwinds"), (60, "brass"), (0, "piano"), (4, "piano"), (52, "choir"),
          (19, "organ"), (25, "guitar"), (46, "harp"), (89, "synthesizer"), (71, "woodwinds"), (12, "bells"),
          (21, "accordion"), (48, "strings")]
LOW = [(42, "strings"), (32, "bass"), (33, "bass"), (58, "brass"), (70, "woodwinds"), (57, "brass"), (0, "piano"),
       (19, "organ"), (52, "choir"), (38, "synthesizer"), (43, "strings")]
TAIL_SECONDS = 2.0
CATEGORY_PROGRAM = {"piano": 0, "bells": 11, "organ": 19, "accordion": 21, "guitar": 24, "bass": 32, "strings": 40,
                    "harp": 46, "choir": 52, "brass": 56, "woodwinds": 68, "flute": 73, "synthesizer": 81}
VOCAL_WORDS = ("soprano", "alto", "tenor", "bass", "voice", "cantus", "quintus", "sextus", "superius",
               "contratenor", "bassus", "altus", "discantus", "triplum", "motetus", "canto", "vox")


def program_category(program: int) -> str:
    """The vocabulary category of a General MIDI program number (0-127)."""
    families = [(8, "piano"), (16, "bells"), (21, "organ"), (24, "accordion"), (32, "guitar"), (40, "bass"),
                (46, "strings"), (47, "harp"), (48, "percussion"), (52, "strings"), (56, "choir"), (64, "brass"),
                (72, "woodwinds"), (80, "flute"), (104, "synthesizer"), (112, "guitar"), (120, "percussion")]
    for upper, name in families:
        if program < upper:
            return name
    return "laser"


def render_midi(midi: str, soundfont: str, rate: int, seconds: float) -> np.ndarray:
    """Render a MIDI file with fluidsynth to mono float32 ``(N,)``, at most ``seconds`` long.

    fluidsynth writes raw 16-bit stereo PCM to a pipe; reading stops (and the synth is
    killed) after ``seconds``, which also guards against hanging notes that never end.
    """
    limit = int(seconds * rate) * 2 * 2
    command = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", str(rate), "-T", "raw",
               "-O", "s16", "-F", "-", soundfont, midi]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    chunks, size = [], 0
    try:
        while size < limit:
            chunk = process.stdout.read(min(1 << 16, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        process.kill()
        process.wait()
    data = b"".join(chunks)
    data = data[: len(data) // 4 * 4]
    pcm = np.frombuffer(data, dtype="<i2").reshape(-1, 2).astype(np.float32) / 32768.0
    return pcm.mean(axis=1)


def render_parts(score_path: str, soundfont: str, seed: int, max_parts: int = 4, rate: int = 16_000,
                 max_seconds: float = 65.0) -> list[tuple[str, str, np.ndarray, int, str]]:
    """Render up to ``max_parts`` parts of a score. Returns ``(suffix, category, wav (N,), rate, detail)``."""
    from music21 import converter, instrument, tempo

    name = os.path.basename(score_path)
    rng = keyed_rng(seed, name)
    score = converter.parse(score_path)
    parts = list(score.parts)
    # drop parts that double another one note for note (e.g. a cornet doubling the soprano)
    distinct, signatures = [], set()
    for part in parts:
        notes = tuple(n.pitch.midi for n in part.recurse().notes if n.isNote)[:64]
        if len(notes) < 8 or notes in signatures:
            continue
        signatures.add(notes)
        distinct.append(part)
    distinct = distinct[:max_parts]
    bpm = float(rng.integers(60, 121))
    used: set[str] = set()
    stems = []
    with tempfile.TemporaryDirectory(prefix="promptsep-music-") as folder:
        for index, part in enumerate(distinct):
            existing = part.getInstrument(returnDefault=False)
            label = (part.partName or (existing.instrumentName if existing else "") or "").lower()
            program = existing.midiProgram if existing is not None else None
            vocal = any(word in label for word in VOCAL_WORDS) or not label
            named = categorize(label, groups=("music",)) if not vocal else None
            if program is not None and not vocal:
                category = program_category(program)
            elif named in CATEGORY_PROGRAM:
                program, category = CATEGORY_PROGRAM[named], named
            else:
                pitches = [n.pitch.midi for n in part.recurse().notes if n.isNote]
                median = float(np.median(pitches)) if pitches else 60.0
                pool = HIGH if median >= 64 else MIDDLE if median >= 52 else LOW
                fresh = [entry for entry in pool if entry[1] not in used] or pool
                program, category = fresh[int(rng.integers(len(fresh)))]
            used.add(category)
            for old in list(part.recurse().getElementsByClass("Instrument")):
                old.activeSite.remove(old)
            for old in list(part.recurse().getElementsByClass("MetronomeMark")):
                old.activeSite.remove(old)
            new = instrument.Instrument()
            new.midiProgram = int(program)
            new.midiChannel = 0
            part.insert(0, new)
            part.insert(0, tempo.MetronomeMark(number=bpm))
            midi = os.path.join(folder, f"p{index}.mid")
            seconds = min(float(part.highestTime) * 60.0 / bpm + TAIL_SECONDS, max_seconds)
            try:
                part.write("midi", fp=midi)
                wav = render_midi(midi, soundfont, rate, seconds)
            except (subprocess.SubprocessError, OSError, ValueError):
                continue
            if wav.size == 0:
                continue
            stems.append((f"p{index}", category, wav, rate, f"{label or 'part'} of {name} as GM program {program}"))
    return stems
