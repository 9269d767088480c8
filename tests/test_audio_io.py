"""Audio I/O: formats, resampling, channels, atomic save and one clear error for every bad input."""

import math
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from encoders.audio_io import load_audio, resample, save_audio, set_channels, to_mono
from encoders.errors import AudioError


def tone(seconds=0.5, rate=16000, freq=440.0, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    wav = 0.5 * np.sin(2 * math.pi * freq * t).astype(np.float32)
    return np.stack([wav] * channels, axis=1)


@pytest.mark.parametrize("suffix,subtype", [(".wav", "PCM_16"), (".flac", "PCM_16"), (".ogg", "VORBIS")])
def test_load_formats_shape_and_dtype(tmp_path, suffix, subtype):
    path = tmp_path / f"a{suffix}"
    sf.write(path, tone(channels=2), 16000, subtype=subtype)
    wav, rate = load_audio(path)
    assert rate == 16000 and wav.dtype == torch.float32
    assert wav.shape[0] == 2 and abs(wav.shape[1] - 8000) <= 1024  # vorbis may pad
    assert 0.3 < wav.abs().max() < 0.6


def test_load_mp3(tmp_path):
    path = tmp_path / "a.mp3"
    try:
        sf.write(path, tone(), 16000, format="MP3")
    except (sf.LibsndfileError, TypeError, ValueError):
        pytest.skip("this libsndfile cannot write mp3")
    wav, rate = load_audio(path, channels=1)
    assert wav.shape[0] == 1 and rate == 16000 and wav.shape[1] > 7000


def test_load_resamples_and_downmixes(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, tone(seconds=1.0, rate=44100, channels=2), 44100)
    wav, rate = load_audio(path, sample_rate=16000, channels=1)
    assert rate == 16000 and wav.shape == (1, 16000)


def test_video_soundtrack(tmp_path):
    video = tmp_path / "clip.mp4"
    cmd = [
        "ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=blue:s=64x64:d=1",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=1",
        "-shortest", "-c:v", "mpeg4", "-c:a", "aac", str(video),
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True)
    except (FileNotFoundError, subprocess.CalledProcessError) as error:
        pytest.skip(f"ffmpeg cannot make a test video here: {error}")
    wav, rate = load_audio(video, sample_rate=16000, channels=1)
    assert wav.shape[0] == 1 and 14000 < wav.shape[1] < 18000
    assert wav.abs().max() > 0.1


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        load_audio(path)


def test_zero_length(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioError, match="zero-length"):
        load_audio(path)


def test_corrupt_and_truncated_header(tmp_path):
    path = tmp_path / "bad.wav"
    path.write_bytes(b"RIFF\x00\x00garbage-not-a-wave-file" * 4)
    with pytest.raises(AudioError, match="bad.wav: cannot decode"):
        load_audio(path)
    good = tmp_path / "good.wav"
    sf.write(good, tone(), 16000)
    truncated = tmp_path / "trunc.wav"
    truncated.write_bytes(good.read_bytes()[:20])
    with pytest.raises(AudioError, match="trunc.wav"):
        load_audio(truncated)


def test_unsupported_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not audio at all\n" * 20)
    with pytest.raises(AudioError, match="notes.txt"):
        load_audio(path)


def test_nan_samples(tmp_path):
    path = tmp_path / "nan.wav"
    data = tone()
    data[100] = np.nan
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or Inf"):
        load_audio(path)


def test_absurd_sample_rate(tmp_path):
    path = tmp_path / "slow.wav"
    sf.write(path, tone(rate=16000), 10)
    with pytest.raises(AudioError, match="absurd sample rate 10 Hz"):
        load_audio(path)


def test_save_round_trip_and_atomic(tmp_path):
    wav = torch.from_numpy(tone(channels=2).T.copy())
    out = save_audio(tmp_path / "sub" / "out.wav", wav, 16000)
    back, rate = load_audio(out)
    assert rate == 16000 and torch.allclose(back, wav, atol=1e-6)
    bad = wav.clone()
    bad[0, 10] = float("inf")
    with pytest.raises(AudioError, match="NaN or Inf"):
        save_audio(tmp_path / "sub" / "out.wav", bad, 16000)
    # the earlier file is intact and no temp file is left behind
    assert torch.allclose(load_audio(out)[0], wav, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["out.wav"]


def test_written_files_take_the_umask_mode(tmp_path):
    """Audio and tensors are written with the mode an ordinary file gets under the user's umask, not the owner-only
    0600 of mkstemp and safetensors."""
    import os

    from encoders.files import save_tensors

    mask = os.umask(0)  # read the umask (setting it is the only way), then put it back
    os.umask(mask)
    expected = 0o666 & ~mask  # 0644 under the usual 022
    audio = save_audio(tmp_path / "a.wav", torch.zeros(1, 160), 16000)
    tensors = save_tensors({"x": torch.zeros(2)}, tmp_path / "t.safetensors")
    assert audio.stat().st_mode & 0o777 == expected
    assert tensors.stat().st_mode & 0o777 == expected


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(AudioError, match="cannot write format"):
        save_audio(tmp_path / "x.xyz", torch.zeros(1, 10), 16000)


def test_channel_helpers_and_resample():
    stereo = torch.stack([torch.ones(100), -torch.ones(100)])
    assert to_mono(stereo).abs().max() == 0
    assert set_channels(torch.ones(1, 50), 2).shape == (2, 50)
    assert resample(torch.randn(2, 48000), 48000, 16000).shape == (2, 16000)
    with pytest.raises(AudioError, match="absurd sample rate"):
        resample(torch.randn(1, 100), 16000, 5)
