"""Data engine: formats, vocabulary, a tiny build from a synthesised fake package tree, mixtures."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dataengine.augment import AugmentConfig, augment_source, synthetic_rir
from dataengine.build import BuildConfig, assign_splits, build
from dataengine.library import load_library
from dataengine.mixing import MixtureSampler
from dataengine.rcc import RccArchive, RccError, build_rcc
from dataengine.sources import SOURCES, build_cat, read_cat
from dataengine.vocabulary import CATEGORIES, GROUPS, USER_WORDINGS, categorize, heldout_prompts, paraphrase
from encoders.errors import PromptsepError

RATE = 22_050
SOURCES_UNDER_TEST = ("scratch", "openttd", "gcompris")


def _tone(seed: int, seconds: float = 0.8, rate: int = RATE) -> np.ndarray:
    """A short decaying tone plus noise, preceded and followed by silence. Shape ``(N,)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    body = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 2000) * t) * np.exp(-t * rng.uniform(0.5, 3))
    body += 0.05 * rng.standard_normal(len(t))
    silence = np.zeros(int(0.2 * rate))
    return np.concatenate([silence, body, silence]).astype(np.float32)


def _wav_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, _tone(seed), RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    """A fake installed-package tree: scratch sounds, an OpenTTD .cat and a gcompris .rcc."""
    root = tmp_path_factory.mktemp("root")
    sounds = root / "usr/share/scratch/Media/Sounds"
    seed = 0
    for folder, stems in {
        "Animal": ["Dog1", "Dog2", "Dog3", "Dog4", "Cat", "Meow", "Kitten", "Cat2"],
        "Effects": ["DoorClose", "DoorCreak", "DoorSlam", "DoorOpen"],
        "Instruments": ["Trumpet1", "Trumpet2", "Trumpet3"],
        "Human": ["Laugh-male1", "Laugh-female", "Laugh-male2"],
    }.items():
        (sounds / folder).mkdir(parents=True)
        for stem in stems:
            seed += 1
            sf.write(sounds / folder / f"{stem}.wav", _tone(seed), RATE)
    cat = root / "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
    cat.parent.mkdir(parents=True)
    titles = ['"Explosion". By someone. License: CC0.', '"Cow". By someone.', '"Helicopter". By someone.',
              '"Wind". By someone.', '"Heavy wind". By someone.', '"Unknown gizmo". By someone.']
    cat.write_bytes(build_cat([(title, _wav_bytes(100 + i)) for i, title in enumerate(titles)]))
    rcc = root / "usr/share/gcompris-qt/rcc/explore_farm_animals.rcc"
    rcc.parent.mkdir(parents=True)
    prefix = "gcompris/src/activities/explore_farm_animals/resource/animals"
    rcc.write_bytes(build_rcc({f"{prefix}/pig.wav": _wav_bytes(200), f"{prefix}/sheep.wav": _wav_bytes(201),
                               f"{prefix}/dog.wav": _wav_bytes(202), f"{prefix}/info.qml": b"Item {}"}))
    return root


def _config(out: Path, root: Path, seed: int = 0) -> BuildConfig:
    return BuildConfig(out=out, seed=seed, sources=SOURCES_UNDER_TEST, root=root, workers=1,
                       mixtures={"train": 6, "val": 5, "test": 5})


@pytest.fixture(scope="module")
def built(fake_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    return out, build(_config(out, fake_root))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "report.md"}


# --------------------------------------------------------------------------- formats


def test_rcc_round_trip_and_errors():
    files = {"a/b/c.wav": b"RIFF" + bytes(range(200)), "a/d.txt": b"hello", "top.ogg": b"OggS"}
    for compress in (True, False):
        archive = RccArchive(build_rcc(files, compress=compress))
        assert archive.version == 3
        assert sorted(e.path for e in archive.entries) == sorted(files)
        assert {e.path: archive.read(e) for e in archive.entries} == files
    with pytest.raises(RccError, match="qres"):
        RccArchive(b"not an archive at all")


def test_cat_round_trip():
    entries = [("First sound", b"RIFF1234"), ("Second", b"RIFF" + bytes(50))]
    assert read_cat_bytes(build_cat(entries)) == entries


def read_cat_bytes(blob: bytes, tmp=Path(os.environ.get("TMPDIR", "/tmp"))) -> list[tuple[str, bytes]]:
    path = tmp / f"promptsep-test-{os.getpid()}.cat"
    path.write_bytes(blob)
    try:
        return read_cat(path)
    finally:
        path.unlink()


# --------------------------------------------------------------------------- vocabulary


def test_vocabulary_covers_groups_and_phrasings():
    assert len(CATEGORIES) >= 40
    assert {c.group for c in CATEGORIES.values()} == set(GROUPS)
    rng = np.random.default_rng(0)
    for name, entry in CATEGORIES.items():
        assert len(entry.phrasings) >= 3 and entry.visual
        assert not set(heldout_prompts(name)) & set(entry.phrasings)
        assert paraphrase(name, rng) in entry.phrasings
    assert {paraphrase("dog", rng) for _ in range(50)} == set(CATEGORIES["dog"].phrasings)


def test_user_wordings_are_a_second_unseen_set_for_every_category():
    """The search-box wordings cover every category and are neither training phrasings nor held-out paraphrases (as
    the text tower reads them), and the separation benchmark swaps them in per line, reproducibly."""
    from benchmarks.separation import reworded_rows
    from encoders.prompts import canonical_text_prompt

    assert set(USER_WORDINGS) == set(CATEGORIES)
    seen = {canonical_text_prompt(p).lower() for c in CATEGORIES.values() for p in (*c.phrasings, *c.heldout)}
    wordings = [w for pair in USER_WORDINGS.values() for w in pair]
    assert len(wordings) == 2 * len(CATEGORIES) and not {canonical_text_prompt(w).lower() for w in wordings} & seen
    rows = [{"id": f"x-{i}", "category": "dog", "prompt": "dog barking"} for i in range(20)] + [{"id": "y", "prompt": "p"}]
    user, heldout = reworded_rows(rows, "user"), reworded_rows(rows, "heldout")
    assert {r["prompt"] for r in user[:20]} == set(USER_WORDINGS["dog"])  # both wordings drawn over 20 lines
    assert {r["prompt"] for r in heldout[:20]} == set(CATEGORIES["dog"].heldout)
    assert user[-1] == rows[-1] and reworded_rows(rows, "user") == user  # no category: unchanged; same pick each run


@pytest.mark.parametrize("text, expected", [
    ("Dog1", "dog"), ("DoorCreak", "door"), ("drum Kick", "drums"), ("drum Hat Closed", "cymbal"),
    ("Laugh-male2", "laughter"), ("Steam train station departure", "train"), ("heavy wind", "wind"),
    ("default_gravel_footstep.2", "footsteps"), ("instrument horn", "brass"), ("Modern car horn", "horn"),
    ("completely unrelated words", None),
])
def test_categorize_rules(text, expected):
    assert categorize(text) == expected


def test_missing_package_lines_name_the_install_command(tmp_path):
    lines = SOURCES["scratch"].missing(tmp_path)
    assert len(lines) == 1 and "scratch" in lines[0] and "apt-get install scratch" in lines[0]
    with pytest.raises(PromptsepError, match="no data source is available"):
        build(_config(tmp_path / "out", tmp_path))
    with pytest.raises(PromptsepError, match="unknown data source"):
        build(BuildConfig(out=tmp_path / "out", sources=("nonsense",), root=tmp_path))


# --------------------------------------------------------------------------- build


def test_build_library_records(built):
    out, result = built
    clips = load_library(out)
    # 18 scratch + 5 mappable opensfx titles ("Unknown gizmo" dropped) + 3 gcompris sounds (qml ignored)
    assert len(clips) == result.clips == 26
    assert {c.source for c in clips} == {"scratch", "openttd", "gcompris"}
    for clip in clips:
        assert clip.category in CATEGORIES and clip.group == CATEGORIES[clip.category].group
        assert clip.path.is_file() and clip.image is not None and clip.image.is_file()
        info = sf.info(str(clip.path))
        assert info.samplerate == 16_000 and info.channels == 1
        assert info.duration == pytest.approx(clip.duration, abs=1e-3)
        assert clip.duration < 0.8 + 0.4  # silence trimmed
        assert len(clip.captions) >= 3 and clip.visual_caption and clip.av_caption
    wav, _ = sf.read(str(clips[0].path))
    assert 1e-3 < np.sqrt(np.mean(wav**2)) < 0.5  # loudness normalised
    report = (out / "report.md").read_text()
    assert "## Splits" in report and "Distinct training material" in report and "| scratch | 18 |" in report


def test_splits_disjoint_by_source_file(built):
    out, _ = built
    records = [json.loads(line) for line in (out / "library.jsonl").read_text().splitlines()]
    split_of_key: dict[str, set] = {}
    for record in records:
        split_of_key.setdefault(record["key"], set()).add(record["split"])
    assert all(len(splits) == 1 for splits in split_of_key.values())
    assert {r["split"] for r in records} == {"train", "val", "test"}
    # the dog category has >= 3 source files, so val and test each get at least one
    dog_splits = {r["split"] for r in records if r["category"] == "dog"}
    assert dog_splits == {"train", "val", "test"}


def test_assign_splits_depends_on_seed_only():
    records = [{"key": f"k{i}", "category": "dog"} for i in range(40)]
    first = [dict(r) for r in records]
    second = [dict(r) for r in reversed(records)]
    assign_splits(first, seed=3)
    assign_splits(second, seed=3)
    assert {r["key"]: r["split"] for r in first} == {r["key"]: r["split"] for r in second}
    counts = {s: sum(r["split"] == s for r in first) for s in ("train", "val", "test")}
    assert counts == {"train": 32, "val": 4, "test": 4}


def test_a_later_source_never_moves_an_earlier_clip_between_splits():
    earlier = [{"key": f"scratch/k{i}", "category": "dog", "source": "scratch"} for i in range(30)]
    later = [{"key": f"0ad/k{i}", "category": "dog", "source": "0ad"} for i in range(25)]
    alone = [dict(r) for r in earlier]
    together = [dict(r) for r in earlier + later]
    assign_splits(alone, seed=0)
    assign_splits(together, seed=0)
    assert SOURCES["0ad"].cohort > SOURCES["scratch"].cohort
    assert [r["split"] for r in alone] == [r["split"] for r in together[:30]]
    # the later cohort is stratified on its own: 10 % val and 10 % test of its 25 keys
    assert sorted(r["split"] for r in together[30:]).count("test") == 2


def _write_tone(path: Path, seed: int, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _tone(seed), RATE, format=fmt)


def _write_zip(archive: Path, members: list[str], fmt: str) -> None:
    """A game archive (a zip) holding one tone per member, the i-th seeded with i (non-audio names too)."""
    import zipfile

    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as bundle:
        for index, member in enumerate(members):
            buffer = io.BytesIO()
            sf.write(buffer, _tone(index), RATE, format=fmt)
            bundle.writestr(member, buffer.getvalue())


def test_items_with_one_name_get_distinct_clip_ids():
    from dataengine.build import unique_names
    from dataengine.sources import RawItem, slug

    items = [RawItem("tuxpaint", f"tuxpaint/{country}/coins/001penny_desc_el", "001penny-el", "greek speech", "file", {})
             for country in ("us", "canadian")] + [RawItem("tuxpaint", "tuxpaint/dime", "dime-el", "greek speech", "file", {})]
    # one key, two files (wesnoth lists core/sounds/mace from two folders)
    items += [RawItem("wesnoth", "wesnoth/core/sounds/mace", "core/sounds/mace", "impact", "file", {"path": f"/{base}/mace.ogg"})
              for base in ("data", "sounds")]
    named = unique_names(items)
    ids = [slug(item.name) for item in named]
    assert len(set(ids)) == 5 and ids[0].startswith("001penny-el-") and ids[2] == "dime-el"
    assert [item.key for item in named] == [item.key for item in items]


def test_game_sources_list_named_families_and_drop_repeats(tmp_path):
    sound = tmp_path / "usr/share/games/widelands/data/sound"
    for index, name in enumerate(["animals/bird1_00", "animals/bird1_01", "animals/coyote_00", "farm/ox_00",
                                  "woodcutting/tree_falling_00", "click", "farm/farm_animal_00"]):
        _write_tone(sound / f"{name}.ogg", index, "OGG")
    tilesets = tmp_path / "usr/share/games/megaglest/tilesets"
    for tileset in ("forest", "meadow"):  # the same wolf file in two tilesets is one clip
        _write_tone(tilesets / tileset / "sounds/wolf.wav", 7)
    _write_tone(tilesets / "forest/sounds/night.ogg", 8, "OGG")
    widelands = {i.name: i for i in SOURCES["widelands"].lister(tmp_path, False, 0)}
    assert {name: item.category for name, item in widelands.items()} == {
        "sound/animals/bird1_00": "bird", "sound/animals/bird1_01": "bird", "sound/animals/coyote_00": "wolf",
        "sound/farm/ox_00": "cow", "sound/woodcutting/tree_falling_00": "crash"}
    # variants of one recording share a split unit; different recordings do not
    assert widelands["sound/animals/bird1_00"].key == widelands["sound/animals/bird1_01"].key
    assert widelands["sound/animals/bird1_00"].key != widelands["sound/animals/coyote_00"].key
    megaglest = SOURCES["megaglest"].lister(tmp_path, False, 0)
    assert sorted((i.name, i.category) for i in megaglest) == [("forest/sounds/night", "nature"), ("forest/sounds/wolf", "wolf")]
    stereo = tmp_path / "usr/share/sounds/freedesktop/stereo"
    _write_tone(stereo / "bell.oga", 9, "OGG")
    _write_tone(stereo / "device-added.oga", 10, "OGG")
    (stereo / "power-plug.oga").symlink_to("device-added.oga")  # the theme links names to one file
    freedesktop = SOURCES["freedesktop"].lister(tmp_path, False, 0)
    assert sorted((i.name, i.category) for i in freedesktop) == [("bell", "bell"), ("device-added", "beep")]


def test_hedgewars_is_held_out_and_keeps_only_voice_lines_it_can_name(tmp_path):
    """The held-out source: left out of a default build; its voice packs give laughs, coughs and grunts from every
    pack, every line of the Spanish and Russian packs and nothing else of the English ones; game sounds and music go
    through the table and the vocabulary."""
    from dataengine.build import BuildConfig
    from dataengine.sources import DEFAULT_SOURCES, HEDGEWARS_DATA

    assert SOURCES["hedgewars"].held_out and "hedgewars" not in DEFAULT_SOURCES
    assert BuildConfig(out=tmp_path).sources == DEFAULT_SOURCES and "0ad" in DEFAULT_SOURCES
    base = tmp_path / HEDGEWARS_DATA
    names = ["Sounds/voices/Pirate/Laugh", "Sounds/voices/Pirate/Hello", "Sounds/voices/Pirate/Ow1",
             "Sounds/voices/Default_es/Hello", "Sounds/voices/Russian/Byebye", "Sounds/voices/Default_uk/PoisonCough",
             "Sounds/explosion", "Sounds/shotgunfire", "Sounds/hog_freeze", "Sounds/steps", "Music/Castle"]
    for index, name in enumerate(names):
        _write_tone(base / f"{name}.ogg", index, "OGG")
    items = SOURCES["hedgewars"].lister(tmp_path, False, 0)
    assert sorted((i.name, i.category) for i in items) == sorted([
        ("Sounds/voices/Pirate/Laugh", "laughter"), ("Sounds/voices/Pirate/Ow1", "grunt"),
        ("Sounds/voices/Default_es/Hello", "spanish speech"), ("Sounds/voices/Russian/Byebye", "russian speech"),
        ("Sounds/voices/Default_uk/PoisonCough", "cough"), ("Sounds/explosion", "explosion"),
        ("Sounds/shotgunfire", "gunshot"), ("Sounds/steps", "footsteps"), ("Music/Castle", "music")])


def test_warzone_keeps_sound_effects_and_laughs_of_its_zip(tmp_path):
    """The second held-out source reads Warzone 2100's base.wz (a zip): effects by the table (a ricochet filed under
    explosions is an impact), the taunting voices' laughs, and no briefing or other voice line."""
    from dataengine.sources import DEFAULT_SOURCES, WARZONE_ARCHIVE

    assert SOURCES["warzone2100"].held_out and "warzone2100" not in DEFAULT_SOURCES
    _write_zip(tmp_path / WARZONE_ARCHIVE, ["audio/sfx/explons/richet1.ogg", "audio/sfx/explons/lrgexpl.ogg",
                "audio/sfx/weapons/mgbar1.ogg", "audio/sfx/misc/silence.ogg",
                "audio/taunts/taunt1/haha1.ogg", "audio/taunts/taunt1/gmeover1.ogg",
                "audio/memressp/res1.ogg", "texpages/page.png"], "OGG")
    items = SOURCES["warzone2100"].lister(tmp_path, False, 0)
    assert sorted((i.name, i.category) for i in items) == [
        ("audio/sfx/explons/lrgexpl", "explosion"), ("audio/sfx/explons/richet1", "impact"),
        ("audio/sfx/weapons/mgbar1", "gunshot"), ("audio/taunts/taunt1/haha1", "laughter")]


def test_extra_sources_stay_out_of_the_default_build_and_widen_it_on_request():
    """The extra training sources are read only when named; ``default`` and ``extra`` expand to their groups, in
    order and without repeats, and they split in a cohort of their own (the default library's clips keep theirs)."""
    from dataengine.sources import DEFAULT_SOURCES, EXTRA_SOURCES, resolve_sources

    assert set(EXTRA_SOURCES) == {"lincity", "supertux", "freeciv", "bzflag", "redeclipse", "etr"}
    assert not set(EXTRA_SOURCES) & set(DEFAULT_SOURCES)
    assert resolve_sources("") == DEFAULT_SOURCES
    assert resolve_sources("default,extra,lincity") == DEFAULT_SOURCES + EXTRA_SOURCES
    assert resolve_sources("hedgewars, default") == ("hedgewars",) + DEFAULT_SOURCES
    cohorts = {SOURCES[name].cohort for name in EXTRA_SOURCES}
    assert len(cohorts) == 1 and cohorts.isdisjoint({SOURCES[name].cohort for name in DEFAULT_SOURCES})


def test_extra_sources_name_their_sounds_by_table_and_drop_the_rest(tmp_path):
    """LinCity-NG's loops and Red Eclipse's sounds get their categories from the tables; names the tables do not
    know are dropped instead of going to the vocabulary's keyword rules (which would file "OrganicFarm" under organ
    and "Health" under laser); variants of one sound share a key, so they land in one split."""
    from dataengine.sources import LINCITY_DATA, REDECLIPSE_DATA

    lincity = ["TraficHigh1", "TraficHigh2", "RailTrain1", "OrganicFarm1", "Health1", "SportsCroud1", "Water3"]
    for index, name in enumerate(lincity):
        _write_tone(tmp_path / LINCITY_DATA / f"{name}.wav", index)
    items = SOURCES["lincity"].lister(tmp_path, False, 0)
    assert sorted((i.name, i.category) for i in items) == [
        ("RailTrain1", "train"), ("SportsCroud1", "crowd"), ("TraficHigh1", "engine"), ("TraficHigh2", "engine"),
        ("Water3", "water")]
    assert len({i.key for i in items if i.category == "engine"}) == 1
    redeclipse = ["ambience/nightcrickets", "ambience/morph/machine12", "ambience/morph/ambient3", "weapons/rifle/primary2",
                  "weapons/rifle/reload", "weapons/mine/explode", "player/pain3", "announcer/victory", "music/track_01"]
    for index, name in enumerate(redeclipse):
        _write_tone(tmp_path / REDECLIPSE_DATA / f"{name}.ogg", index + 20, "OGG")
    items = SOURCES["redeclipse"].lister(tmp_path, False, 0)
    assert sorted((i.name, i.category) for i in items) == [
        ("ambience/morph/machine12", "machine"), ("ambience/nightcrickets", "insect"), ("music/track_01", "music"),
        ("player/pain3", "grunt"), ("weapons/mine/explode", "explosion"), ("weapons/rifle/primary2", "gunshot")]


def test_openarena_is_held_out_and_reads_the_sound_folder_of_its_pk3(tmp_path):
    """The third held-out source reads OpenArena's pak0.pk3 (a zip whose sounds live under ``sound/``): footsteps,
    the default voice's pain cries, guns and ambient loops by the table; menu and item sounds are dropped. It splits
    in a cohort of its own, so building it beside the other held-out sources moves none of their clips."""
    from dataengine.sources import DEFAULT_SOURCES, OPENARENA_ARCHIVE

    assert SOURCES["openarena"].held_out and "openarena" not in DEFAULT_SOURCES
    assert SOURCES["openarena"].cohort not in {SOURCES["hedgewars"].cohort, SOURCES["warzone2100"].cohort}
    _write_zip(tmp_path / OPENARENA_ARCHIVE, ["sound/player/footsteps/boot1.wav", "sound/player/sarge/pain25_1.wav",
                "sound/weapons/machinegun/machgf1b.wav", "sound/world/wind1.wav",
                "sound/misc/menu1.wav", "sound/items/haste.wav", "audio/other.wav"], "WAV")
    items = SOURCES["openarena"].lister(tmp_path, False, 0)
    assert sorted((i.name, i.category) for i in items) == [
        ("sound/player/footsteps/boot1", "footsteps"), ("sound/player/sarge/pain25_1", "grunt"),
        ("sound/weapons/machinegun/machgf1b", "gunshot"), ("sound/world/wind1", "wind")]


def test_0ad_sounds_load_from_the_game_archive(tmp_path):
    from dataengine.sources import ZERO_AD_ARCHIVE, load_item

    _write_zip(tmp_path / ZERO_AD_ARCHIVE, ["audio/actor/fauna/animal/cattle_01.ogg", "audio/actor/fauna/animal/goat_10.ogg",
                "audio/ambient/water/river_slow_21.ogg", "audio/voice/greek/civ/civ_male_attack.ogg",
                "art/textures/skies/readme.txt"], "OGG")
    items = SOURCES["0ad"].lister(tmp_path, False, 0)
    assert [(i.name, i.category) for i in items] == [
        ("audio/actor/fauna/animal/cattle_01", "cow"), ("audio/actor/fauna/animal/goat_10", "sheep"),
        ("audio/ambient/water/river_slow_21", "stream")]
    (stem,) = load_item(items[0])
    assert stem.rate == RATE and abs(len(stem.wav) - len(_tone(0))) < RATE // 100
    assert SOURCES["0ad"].missing(tmp_path / "elsewhere")[0].startswith("missing Debian package 0ad-data")


def test_mixture_manifests(built):
    out, _ = built
    for split, count in (("train", 6), ("val", 5), ("test", 5)):
        rows = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        assert len(rows) == count
        for row in rows:
            mix, rate = sf.read(str(out / row["audio"]), dtype="float32")
            target, _ = sf.read(str(out / row["target"]), dtype="float32")
            residual, _ = sf.read(str(out / row["residual"]), dtype="float32")
            assert rate == 16_000 and mix.shape == target.shape == residual.shape == (64_000,)
            assert np.abs(mix - (target + residual)).max() < 1e-5
            snr = 10 * np.log10(np.sum(target.astype(np.float64) ** 2) / np.sum(residual.astype(np.float64) ** 2))
            assert -5.01 <= snr <= 5.01 and snr == pytest.approx(row["snr_db"], abs=0.01)
            assert row["category"] in CATEGORIES and row["prompt"] in CATEGORIES[row["category"]].phrasings
            assert 2 <= len(row["sources"]) <= 4
            assert len({s["category"] for s in row["sources"]}) == len(row["sources"])
            assert row["sources"][0]["category"] == row["category"]
            assert (out / row["image"]).is_file()
            assert row["spans"] and all(0 <= a < b <= 4.0 for a, b in row["spans"])


def test_long_probe_places_each_lines_sounds_in_a_longer_window(built, tmp_path, capsys):
    from app.cli import main

    out = tmp_path / "data"
    shutil.copytree(built[0], out)
    assert main(["data", "long", "--data", str(out), "--split", "test", "--seconds", "10"]) == 0
    assert "test_long10.jsonl (5 mixtures of 10 s)" in capsys.readouterr().out
    short = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (out / "test_long10.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"test_long10-{i:05d}" for i in range(5)]
    for row, four in zip(rows, short, strict=True):
        assert [s["id"] for s in row["sources"]] == [s["id"] for s in four["sources"]]
        assert row["category"] == four["category"]
        mix, rate = sf.read(str(out / row["audio"]), dtype="float32")
        target, _ = sf.read(str(out / row["target"]), dtype="float32")
        residual, _ = sf.read(str(out / row["residual"]), dtype="float32")
        assert rate == 16_000 and mix.shape == target.shape == residual.shape == (160_000,)
        assert np.abs(mix - (target + residual)).max() < 1e-5
        assert row["spans"] and all(0 <= a < b <= 10.0 for a, b in row["spans"])
    # the split's own mixtures are untouched, and an unbuilt folder is named
    assert _digest(built[0]) == {k: v for k, v in _digest(out).items() if "long" not in k}
    assert main(["data", "long", "--data", str(tmp_path / "nothing")]) == 2
    assert "run `promptsep data build" in capsys.readouterr().err


def test_build_is_deterministic(built, fake_root, tmp_path):
    out, _ = built
    build(_config(tmp_path / "again", fake_root))
    assert _digest(out) == _digest(tmp_path / "again")


def test_incremental_rebuild_skips_work(fake_root, tmp_path):
    out = tmp_path / "inc"
    build(_config(out, fake_root))
    mix = out / "val.jsonl"
    before = (mix.stat().st_mtime_ns, _digest(out))
    again = build(_config(out, fake_root))
    assert sorted(again.cached_sources) == sorted(SOURCES_UNDER_TEST) and again.built_sources == []
    assert (mix.stat().st_mtime_ns, _digest(out)) == before
    # a changed source rebuilds only that source
    extra = fake_root / "usr/share/scratch/Media/Sounds/Animal/Dog5.wav"
    sf.write(extra, _tone(999), RATE)
    try:
        third = build(_config(out, fake_root))
        assert third.built_sources == ["scratch"]
        assert len(load_library(out)) == 27
    finally:
        extra.unlink()


def test_mixture_sampler_on_the_fly(built):
    out, _ = built
    sampler = MixtureSampler(out, split="train", seed=1, seconds=2.0, augment=True)
    rng = np.random.default_rng(5)
    for _ in range(4):
        item = sampler.sample(rng)
        assert item.mixture.shape == item.target.shape == item.residual.shape == (32_000,)
        assert item.mixture.dtype == np.float32
        np.testing.assert_allclose(item.mixture, item.target + item.residual, atol=1e-6)
        assert item.prompt in CATEGORIES[item.category].phrasings and item.group == CATEGORIES[item.category].group
    first = next(iter(MixtureSampler(out, seed=2, augment=False)))
    second = next(iter(MixtureSampler(out, seed=2, augment=False)))
    np.testing.assert_array_equal(first.mixture, second.mixture)


def test_mixture_sampler_takes_its_own_rooms(built, capsys):
    """An AugmentConfig of one's own reaches the sources; separator-pool's --reverb-p/--wet build one and refuse nonsense."""
    from app.cli import build_parser
    from dataengine.augment import AugmentConfig

    out, _ = built
    quiet = dict(eq_p=0.0, speed_p=0.0, noise_p=0.0, gain_db=(0.0, 0.0))
    dry = MixtureSampler(out, seed=3, seconds=2.0, augment=AugmentConfig(reverb_p=0.0, **quiet))
    wet = MixtureSampler(out, seed=3, seconds=2.0, augment=AugmentConfig(reverb_p=1.0, wet=(0.9, 0.9), **quiet))
    assert dry.augment.reverb_p == 0.0 and wet.augment.wet == (0.9, 0.9)
    a, b = dry.sample(np.random.default_rng(4)), wet.sample(np.random.default_rng(4))
    assert a.category == b.category and a.target.shape == b.target.shape
    active = np.abs(a.target) > 1e-4
    corr = np.corrcoef(a.target[active], b.target[active])[0, 1]
    assert corr < 0.6  # mostly reverberant tail: the dry signal is only a tenth of it

    parser = build_parser()
    args = parser.parse_args(["train", "separator-pool", "--out", "x", "--minutes", "1", "--reverb-p", "0.5", "--wet", "0.1,0.8"])
    assert args.reverb_p == 0.5 and args.wet == (0.1, 0.8)
    for bad, message in ((["--wet", "0.8,0.1"], "need 0 <= LO <= HI < 1"), (["--wet", "loud"], "use LO,HI"), (["--reverb-p", "2"], "probability")):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "separator-pool", "--out", "x", "--minutes", "1", *bad])
        assert message in capsys.readouterr().err


def test_pool_shards_feed_a_training_pool(built, tmp_path):
    """Shards written by the pool producer hold encoded fresh mixtures; the trainer's feed reads each once."""
    import torch

    from encoders.codec import Codec, CodecConfig
    from separation.train import LatentPool, PoolFeed, write_pool_shards

    out, _ = built
    torch.manual_seed(0)
    codec = Codec(CodecConfig(encoder_dim=4, latent_dim=8, decoder_dim=16)).eval()
    codec.save_pretrained(tmp_path / "codec")
    with pytest.raises(ValueError, match="shard count or a time budget"):
        write_pool_shards(str(out), tmp_path / "feed", str(tmp_path / "codec"))
    written = write_pool_shards(str(out), tmp_path / "feed", str(tmp_path / "codec"), shard_size=3, shards=2, seconds=1.0)
    assert written == 2 and sorted(p.name for p in (tmp_path / "feed").iterdir()) == ["shard-1-00000.pt", "shard-1-00001.pt"]
    feed = PoolFeed(tmp_path / "feed")
    examples = feed.new_examples()
    assert len(examples) == 6 and feed.new_examples() == []
    first = examples[0]
    assert first.mixture.shape == (25, 8) and first.sources.shape == (25, 16) and first.waves.shape == (2, 16000)
    with torch.no_grad():
        again = codec.encode(first.waves[:1].float()[None])[0].T  # the stored latents are the mixture's encoding
    torch.testing.assert_close(again, first.mixture, atol=2e-3, rtol=1e-2)
    pool = LatentPool(sampler=None, codec=codec, initial=[], size=0, rng=np.random.default_rng(0), device=torch.device("cpu"))
    pool.add(examples[:3], limit=4)
    assert len(pool.items) == 3
    pool.add(examples[3:], limit=4)
    assert len(pool.items) == 4 and sum(e is ex for e in pool.items for ex in examples[3:]) >= 1
    # shards written from another copy of the data folder find their pictures in this one
    from separation.train import load_examples, save_examples

    first.image = str(tmp_path / "gone" / "images" / "emoji" / "x.png")
    save_examples(tmp_path / "old.pt", [first])
    assert load_examples(tmp_path / "old.pt", out)[0].image == str(out / "images" / "emoji" / "x.png")
    assert load_examples(tmp_path / "old.pt")[0].image == first.image


def test_augmentations_keep_length_and_level():
    rng = np.random.default_rng(0)
    wav = _tone(7, seconds=1.0, rate=16_000)
    rir = synthetic_rir(rng, 16_000, 0.5)
    assert rir.shape == (8000,) and np.sum(rir**2) == pytest.approx(1.0, rel=1e-4)
    always = AugmentConfig(reverb_p=1, eq_p=1, speed_p=1, gain_db=(0.0, 0.0))
    out = augment_source(wav, rng, 16_000, always)
    assert out.shape == wav.shape and np.isfinite(out).all()
    assert np.sqrt(np.mean(out**2)) == pytest.approx(np.sqrt(np.mean(wav**2)), rel=0.35)


def test_build_from_installed_packages(tmp_path):
    wanted = ("openttd", "scratch")
    missing = [line for name in wanted for line in SOURCES[name].missing(Path("/"))]
    if missing:
        pytest.skip("installed data packages absent: " + "; ".join(missing))
    config = BuildConfig(out=tmp_path / "real", sources=wanted, small=True, workers=1)
    config.mixtures = {"train": 2, "val": 0, "test": 0}
    result = build(config)
    clips = load_library(tmp_path / "real")
    assert result.clips == len(clips) >= 8
    assert {c.source for c in clips} == set(wanted)
    assert all(c.category in CATEGORIES for c in clips)


def test_clipart_probe_reprompts_the_mixtures_whose_category_has_clip_art(tmp_path):
    """`promptsep data clipart`: lines of a category with clip art get one of its pictures (cut to the drawing and
    fitted on white), everything else on the line stays; categories without clip art, pictures in other folders of
    the collection and excluded files are left out; the choice is reproducible."""
    import json

    from PIL import Image

    from app.cli import main
    from dataengine.clipart import CLIPART_ROOT, list_clipart

    base = tmp_path / "root" / CLIPART_ROOT
    for relative in ("animals/dog_01.png", "animals/birds/dog_02.png", "animals/jonathon_s_duck_01.png",
                     "recreation/music/piano_keys.png", "computer/icons/piano.png"):
        page = Image.new("RGBA", (400, 300), (0, 0, 0, 0))
        page.paste((200, 40, 40, 255), (10, 10, 50, 40))  # a small drawing in the corner of a large page
        (base / relative).parent.mkdir(parents=True, exist_ok=True)
        page.save(base / relative)
    found = list_clipart(tmp_path / "root")
    assert {c: [p.name for p in ps] for c, ps in found.items()} == {"dog": ["dog_02.png", "dog_01.png"], "piano": ["piano_keys.png"]}  # sorted by path
    data = tmp_path / "data"
    data.mkdir()
    lines = [{"id": f"t{k}", "audio": f"mix/t{k}.wav", "prompt": p, "image": "images/emoji/x.png", "category": c}
             for k, (p, c) in enumerate([("a dog", "dog"), ("wolf howl", "wolf"), ("piano", "piano"), ("dog", "dog")])]
    (data / "test.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = ["data", "clipart", "--manifest", str(data / "test.jsonl"), "--root", str(tmp_path / "root")]
    assert main([*args, "--out", str(data / "a.jsonl")]) == 0
    assert main([*args, "--out", str(data / "b.jsonl")]) == 0
    assert (data / "a.jsonl").read_text() == (data / "b.jsonl").read_text()
    rows = [json.loads(line) for line in (data / "a.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["t0", "t2", "t3"]
    for row, line in zip(rows, [lines[0], lines[2], lines[3]], strict=True):
        assert row["image"].startswith("images/openclipart/") and row["video"] is None
        assert {k: v for k, v in row.items() if k not in ("image", "video")} == {k: v for k, v in line.items() if k != "image"}
        picture = Image.open(data / row["image"])
        assert picture.mode == "RGB" and picture.size == (160, 160)
        left, top, right, bottom = Image.eval(picture.convert("L"), lambda v: 255 - v).getbbox()
        assert right - left >= 150  # the drawing, cut from its page, fills the width
    assert main([*args, "--pictures", "train", "--out", str(data / "t.jsonl")]) == 0
    train_rows = [json.loads(line) for line in (data / "t.jsonl").read_text().splitlines()]
    assert [r["id"] for r in train_rows] == ["t0", "t3"]  # piano's one picture is the probe's
    assert {r["image"] for r in train_rows}.isdisjoint({r["image"] for r in rows})
    assert main([*args[:-2], "--root", str(tmp_path / "empty"), "--out", str(data / "c.jsonl")]) != 0
    assert not (data / "c.jsonl").exists()


def test_gcompris_probe_reads_photos_from_the_archives(tmp_path):
    """`promptsep data gcompris`: pictures of the table are read out of the .rcc archives (other entries and
    other archives ignored), mapped to their categories, fitted on white, and only lines of those categories kept;
    a style without installed pictures is an error that writes nothing."""
    import io
    import json

    from PIL import Image

    from app.cli import main
    from dataengine.gcompris import RCC_ROOT, list_gcompris_pictures
    from dataengine.rcc import build_rcc

    def webp(colour, size=(300, 200)):
        buffer = io.BytesIO()
        Image.new("RGB", size, colour).save(buffer, format="WEBP")
        return buffer.getvalue()

    rcc = tmp_path / "root" / RCC_ROOT
    rcc.mkdir(parents=True)
    animals = "gcompris/src/activities/explore_farm_animals/resource/animals"
    (rcc / "explore_farm_animals.rcc").write_bytes(build_rcc({
        f"{animals}/dog.webp": webp((200, 150, 90)), f"{animals}/dog.svg": b"<svg/>",
        f"{animals}/giraffe.webp": webp((1, 2, 3)),  # not in the table
    }))
    world = "gcompris/src/activities/explore_world_animals/resource/animals"
    (rcc / "explore_world_animals.rcc").write_bytes(build_rcc({f"{world}/jaguar.webp": webp((90, 90, 20))}))
    found = list_gcompris_pictures(tmp_path / "root", "photos")
    assert {c: [p.name for p in ps] for c, ps in found.items()} == {"dog": ["dog_dog.png"], "big cat": ["big-cat_jaguar.png"]}
    assert list_gcompris_pictures(tmp_path / "root", "drawings") == {}  # no lang archive

    data = tmp_path / "data"
    data.mkdir()
    lines = [{"id": f"t{k}", "audio": f"mix/t{k}.wav", "prompt": p, "image": "images/emoji/x.png", "category": c}
             for k, (p, c) in enumerate([("a dog", "dog"), ("a lion", "big cat"), ("piano", "piano")])]
    (data / "test.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = ["data", "gcompris", "--manifest", str(data / "test.jsonl"), "--root", str(tmp_path / "root")]
    assert main([*args, "--out", str(data / "p.jsonl")]) == 0
    rows = [json.loads(line) for line in (data / "p.jsonl").read_text().splitlines()]
    assert [(r["id"], r["image"], r["video"]) for r in rows] == [
        ("t0", "images/gcompris-photos/dog_dog.png", None), ("t1", "images/gcompris-photos/big-cat_jaguar.png", None)]
    picture = Image.open(data / rows[0]["image"])
    assert picture.size == (160, 160)
    assert max(abs(a - b) for a, b in zip(picture.getpixel((80, 80)), (200, 150, 90), strict=True)) <= 3  # lossy webp
    assert picture.getpixel((80, 2)) == (255, 255, 255)  # a 3:2 photo fitted on white
    assert main([*args, "--pictures", "drawings", "--out", str(data / "d.jsonl")]) != 0
    assert not (data / "d.jsonl").exists()
