"""The picture of a separation: mel spectrograms of the mixture, each target and the residual."""

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from app.spectrogram import MELS, _hz_to_mel, plot_separation, separation_spectra
from encoders.errors import AudioError

RATE = 16000


def _tracks(tmp_path, seconds=10.0, rate=RATE):
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    noise = (0.05 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
    paths = [tmp_path / "target.wav", tmp_path / "residual.wav"]
    for path, track in zip(paths, (tone, noise), strict=True):
        sf.write(path, track, rate, subtype="FLOAT")
    return paths


def test_spectra_put_a_tone_in_its_mel_band_and_sum_the_tracks_into_the_mixture(tmp_path):
    paths = _tracks(tmp_path)
    spectra = separation_spectra(paths, ["target: tone", "residual"])
    assert spectra.labels == ["mixture", "target: tone", "residual"]
    assert spectra.db.shape == (3, MELS, 10 * RATE // 512)  # one column per frame (1024-sample window, hop 512)
    assert spectra.duration == pytest.approx(10.0) and spectra.top_hz == RATE / 2
    band = round(_hz_to_mel(1000) / _hz_to_mel(RATE / 2) * (MELS + 1)) - 1  # the band centred nearest 1 kHz
    tone = spectra.db[1].mean(axis=1)
    assert abs(int(tone.argmax()) - band) <= 1
    assert tone.max() - np.median(tone) > 40  # the tone's band stands 40 dB above the tone track's typical band
    assert np.ptp(spectra.db[1, tone.argmax()]) < 1.0  # and is as loud in every column, the last (no zeros read) too
    noise = spectra.db[2].mean(axis=1)
    assert noise.max() - noise.min() < 10  # white noise: no band stands out
    # the mixture is the tracks' sum: in the tone's band it is the tone, elsewhere the noise
    assert spectra.db[0, tone.argmax()].mean() == pytest.approx(tone.max(), abs=0.5)
    quiet = np.argsort(tone)[: MELS // 2]
    assert np.abs(spectra.db[0, quiet] - spectra.db[2, quiet]).mean() < 0.5


def test_long_recordings_fold_into_at_most_width_columns(tmp_path):
    paths = _tracks(tmp_path, seconds=30.0)
    spectra = separation_spectra(paths, ["t", "r"], width=50)
    assert spectra.db.shape == (3, MELS, 50)
    tone = spectra.db[1]
    assert np.ptp(tone[tone.mean(axis=1).argmax()]) < 1.0  # a steady tone is steady across every column, the last too


def test_tracks_must_share_rate_and_length_and_have_labels(tmp_path):
    paths = _tracks(tmp_path)
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(RATE, np.float32), RATE)
    with pytest.raises(AudioError, match=r"short.wav: 16000 samples at 16000 Hz, unlike target.wav \(160000 at 16000 Hz\)"):
        separation_spectra([paths[0], short], ["a", "b"])
    with pytest.raises(AudioError, match="one label per track"):
        separation_spectra(paths, ["only one"])
    out = tmp_path / "pictures" / "spectrogram.png"
    with pytest.raises(AudioError):
        plot_separation([paths[0], short], ["a", "b"], out)
    assert not out.exists()


def test_plot_writes_one_png_with_a_panel_per_track(tmp_path):
    paths = _tracks(tmp_path, seconds=2.0, rate=44100)
    out = plot_separation(paths, ["target: tone", "residual"], tmp_path / "spectrogram.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["residual.wav", "spectrogram.png", "target.wav"]  # no temp left
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.size == (1000, 500)  # 10 x (1.5 per panel + 0.5) inches at 100 dpi
