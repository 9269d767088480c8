"""Render music21 corpus scores part by part with fluidsynth: true instrument stems.

Each part is written as its own MIDI file with one General MIDI program, then rendered dry
(no reverb/chorus) to a wav. Parts that carry a real instrument keep it; vocal or unnamed
parts get an instrument drawn (deterministically from the seed and the score) from a pool
that suits their pitch range, with distinct categories within a piece where possible.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile

import numpy as np

from dataengine.audio import read_file

# (GM program, category) pools by the median pitch of the part.
HIGH = [(73, "flute"), (40, "strings"), (56, "brass"), (68, "woodwinds"), (71, "woodwinds"), (0, "piano"),
        (52, "choir"), (11, "bells"), (81, "synthesizer"), (19, "organ"), (24, "guitar"), (46, "harp"),
        (21, "accordion"), (72, "flute")]
MIDDLE = [(41, "strings"), (65, "woodwinds"), (60, "brass"), (0, "piano"), (4, "piano"), (52, "choir"),
          (19, "organ"), (25, "guitar"), (46, "harp"), (89, "synthesizer"), (71, "woodwinds"), (12, "bells"),
          (21, "accordion"), (48, "strings")]
LOW = [(42, "strings"), (32, "bass"), (33, "bass"), (58, "brass"), (70, "woodwinds"), (57, "brass"), (0, "piano"),
       (19, "organ"), (52, "choir"), (38, "synthesizer"), (43, "strings")]
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


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha1(f"{seed}:{key}".encode()).digest()[:8], "little"))


def render_parts(score_path: str, soundfont: str, seed: int, max_parts: int = 4,
                 rate: int = 16_000) -> list[tuple[str, str, np.ndarray, int, str]]:
    """Render up to ``max_parts`` parts of a score. Returns ``(suffix, category, wav (N,), rate, detail)``."""
    from music21 import converter, instrument, tempo

    name = os.path.basename(score_path)
    rng = _rng(seed, name)
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
            if program is not None and not vocal:
                category = program_category(program)
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
            wav_path = os.path.join(folder, f"p{index}.wav")
            try:
                part.write("midi", fp=midi)
                subprocess.run(["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", str(rate),
                                "-F", wav_path, soundfont, midi], capture_output=True, check=True, timeout=300)
                wav, wav_rate = read_file(wav_path)
            except (subprocess.SubprocessError, OSError, ValueError):
                continue
            stems.append((f"p{index}", category, wav, wav_rate, f"{label or 'part'} of {name} as GM program {program}"))
    return stems
