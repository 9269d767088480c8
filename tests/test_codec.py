"""Tests of the DAC-VAE codec: shapes, persistence, chunking, foreign layouts, PE-AV mapping, masking."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from encoders.codec import (
    DEFAULT_CODEC_DIR,
    Codec,
    CodecConfig,
    codec_to_pe_audio_encoder_state,
    load_default_codec,
    overlap_add,
    pe_audio_dac_config,
)
from encoders.errors import WeightsError
from separation.masking import ratio_mask_separate

warnings.filterwarnings("ignore", message=".*weight_norm.*")

MEL_BOUND = 6.0  # DAC multi-scale mel distance of the shipped codec on check.wav must stay below this
TINY = dict(encoder_dim=2, decoder_dim=16, latent_dim=8)


def tiny_codec(**overrides) -> Codec:
    torch.manual_seed(0)
    return Codec(CodecConfig(**{**TINY, **overrides})).eval()


@pytest.mark.parametrize("head", ["istft", "waveform"])
def test_shapes_and_latent_rate(head):
    codec = tiny_codec(decoder_head=head, decoder_rates=[4] if head == "istft" else [10, 8, 4, 2])
    assert codec.hop_length == 640 and codec.sample_rate == 16000
    assert codec.frame_rate == 25.0
    n = 16000 + 123
    wav = torch.randn(2, 1, n)
    with torch.inference_mode():
        latents = codec.encode(wav)
        assert latents.shape == (2, 8, math.ceil(n / 640))
        assert codec.decode(latents).shape == (2, 1, latents.shape[-1] * 640)
        assert codec.decode(latents, length=n).shape == (2, 1, n)
        recon, mean, scale = codec(wav)
    assert recon.shape == wav.shape and mean.shape == scale.shape == latents.shape
    assert bool((scale > 0).all())
    torch.testing.assert_close(mean, latents)


def test_istft_head_inverts_a_same_padded_stft():
    """The overlap-add of the iSTFT head is an exact inverse of a Hann STFT with "same" padding."""
    n_fft, hop = 640, 160
    window = torch.hann_window(n_fft)
    wav = torch.randn(2, 8 * hop)
    pad = (n_fft - hop) // 2
    frames = torch.nn.functional.pad(wav, (pad, pad)).unfold(-1, n_fft, hop)  # (B, frames, n_fft)
    spectrum = torch.fft.rfft(frames * window, dim=-1).transpose(1, 2)
    out = overlap_add(spectrum, window, hop)
    assert out.shape == (2, 1, frames.shape[1] * hop)
    torch.testing.assert_close(out[:, 0, : wav.shape[-1]], wav, atol=1e-5, rtol=0)


def test_decoder_config_errors_are_clear():
    with pytest.raises(WeightsError, match="decoder_head"):
        tiny_codec(decoder_head="griffin-lim")
    with pytest.raises(WeightsError, match="must divide the hop"):
        tiny_codec(decoder_head="istft", decoder_rates=[3])
    with pytest.raises(WeightsError, match="upsample by the hop"):
        tiny_codec(decoder_head="waveform", decoder_rates=[4])


def test_rejects_multichannel_and_bad_latents():
    codec = tiny_codec()
    with pytest.raises(ValueError, match="mono"):
        codec.encode(torch.randn(1, 2, 640))
    with pytest.raises(ValueError, match="latents"):
        codec.decode(torch.randn(1, 3, 4))


def test_save_load_round_trip(tmp_path: Path):
    codec = tiny_codec()
    wav = torch.randn(1, 1, 6400)
    codec.save_pretrained(tmp_path / "fp32")
    config = json.loads((tmp_path / "fp32" / "config.json").read_text())
    assert config["latent_dim"] == 8 and config["encoder_rates"] == [2, 4, 8, 10]
    loaded = Codec.from_pretrained(tmp_path / "fp32")
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encode(wav), codec.encode(wav))
    codec.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
    half = Codec.from_pretrained(tmp_path / "fp16")
    assert next(half.parameters()).dtype == torch.float32
    with torch.inference_mode():
        torch.testing.assert_close(half.encode(wav), codec.encode(wav), atol=2e-2, rtol=2e-2)


def test_missing_files_raise_weights_error(tmp_path: Path):
    with pytest.raises(WeightsError, match="config.json"):
        Codec.from_pretrained(tmp_path)


def test_chunked_matches_unchunked_on_60s():
    """Chunked encode/decode of 60 s (10 s chunks, 1.28 s crossfades) vs one pass.

    Tolerance: relative L2 error below 1e-3 for latents and waveforms (random-init tiny model).
    """
    codec = tiny_codec(encoder_dim=1)
    torch.manual_seed(1)
    wav = torch.randn(1, 1, 60 * 16000) * 0.1
    with torch.inference_mode():
        chunked = codec.encode(wav)
        whole = codec._encode_mean(codec.pad_to_hop(wav))
        assert chunked.shape == whole.shape == (1, 8, 1500)
        assert ((chunked - whole).norm() / whole.norm()).item() < 1e-3
        decoded = codec.decode(whole)
        whole_wav = codec._decode_full(whole)
        assert decoded.shape == whole_wav.shape == wav.shape
        assert ((decoded - whole_wav).norm() / whole_wav.norm()).item() < 1e-3


SAM_AUDIO_DACVAE = dict(
    sample_rate=48000,
    encoder_dim=64,
    encoder_rates=[2, 8, 10, 12],
    latent_dim=128,
    decoder_dim=1536,
    decoder_rates=[12, 10, 8, 2],
    decoder_head="waveform",
)


def test_sam_audio_dacvae_layout_loads_without_missing_keys():
    """SAM-Audio's DAC-VAE size, built on the meta device (no memory), in its key layout."""
    with torch.device("meta"):
        official = Codec(CodecConfig(**SAM_AUDIO_DACVAE))
        ours = Codec(CodecConfig(**SAM_AUDIO_DACVAE))
    state = official.state_dict()
    assert {k.split(".")[0] for k in state} == {"encoder", "quantizer", "decoder"}
    assert {"quantizer.in_proj.weight_g", "quantizer.in_proj.weight_v", "quantizer.out_proj.bias"} <= set(
        state
    )
    assert state["quantizer.in_proj.weight_v"].shape == (256, 1024, 1)
    assert state["quantizer.out_proj.weight_v"].shape == (1024, 128, 1)
    assert ours.hop_length == 1920
    ours.load_state(state)


def test_sam_layout_with_parametrization_keys_round_trips(tmp_path: Path):
    """SAM-Audio rates at small widths, saved with torch's newer weight-norm key names."""
    config = CodecConfig(**{**SAM_AUDIO_DACVAE, "encoder_dim": 2, "decoder_dim": 16, "latent_dim": 8})
    torch.manual_seed(0)
    official = Codec(config).eval()
    renamed = {
        k.replace(".weight_g", ".parametrizations.weight.original0").replace(
            ".weight_v", ".parametrizations.weight.original1"
        ): v
        for k, v in official.state_dict().items()
    }
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    save_file(renamed, str(tmp_path / "model.safetensors"))
    loaded = Codec.from_pretrained(tmp_path)
    wav = torch.randn(1, 1, 1920 * 3)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encode(wav), official.encode(wav))
    bad = dict(renamed)
    bad["decoder.extra.weight"] = torch.zeros(1)
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match="1 unexpected"):
        Codec.from_pretrained(tmp_path)


def test_official_dac_pth_loads_with_continuous_latent(tmp_path: Path):
    from dac.model.dac import DAC

    torch.manual_seed(0)
    dac_model = DAC(
        encoder_dim=4,
        encoder_rates=[2, 4, 5, 8],
        decoder_dim=16,
        decoder_rates=[8, 5, 4, 2],
        n_codebooks=2,
        codebook_size=16,
        codebook_dim=4,
        sample_rate=16000,
    ).eval()
    path = tmp_path / "weights_16khz.pth"
    dac_model.save(str(path), package=False)  # the official layout: {"state_dict", "metadata"}
    codec = Codec.from_dac_pth(path)
    assert codec.sample_rate == 16000 and codec.hop_length == 320 and codec.latent_dim == 64
    wav = torch.randn(1, 1, 3200)
    with torch.inference_mode():
        latents = codec.encode(wav)
        torch.testing.assert_close(latents, dac_model.encoder(wav), atol=1e-5, rtol=1e-4)
        expected = dac_model.decoder(latents)
        decoded = codec.decode(latents)
        torch.testing.assert_close(decoded[..., : expected.shape[-1]], expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(WeightsError, match="not found"):
        Codec.from_dac_pth(tmp_path / "nope.pth")


def test_pe_audio_encoder_reuses_codec_encoder():
    from transformers import PeAudioEncoder, PeAudioEncoderConfig

    codec = tiny_codec(encoder_dim=4, latent_dim=16)
    config = PeAudioEncoderConfig(
        dac_config=pe_audio_dac_config(codec.config),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
    )
    model = PeAudioEncoder(config).eval()
    result = model.load_state_dict(codec_to_pe_audio_encoder_state(codec), strict=False)
    assert result.unexpected_keys == []
    assert not [
        k for k in result.missing_keys if k.startswith(("embedder.dac_encoder", "embedder.bottleneck"))
    ]
    wav = torch.randn(1, 1, 640 * 5)
    with torch.inference_mode():
        features = model.embedder.bottleneck(model.embedder.dac_encoder(wav))
        torch.testing.assert_close(features, codec.encode(wav), atol=1e-5, rtol=1e-4)


def test_ratio_mask_output_sums_to_mixture():
    torch.manual_seed(0)
    time = torch.arange(8000) / 16000
    target = torch.sin(2 * math.pi * 440 * time).expand(2, 1, -1)
    residual = 0.3 * torch.randn(2, 1, 8000)
    mixture = target + residual
    est_t, est_r = ratio_mask_separate(mixture, target + 0.1 * residual, residual, n_fft=512, hop=128)
    assert est_t.shape == mixture.shape
    torch.testing.assert_close(est_t + est_r, mixture)
    ideal_t, _ = ratio_mask_separate(mixture, target, residual, n_fft=512, hop=128)
    from separation.metrics import si_sdr

    assert si_sdr(ideal_t.flatten(1), target.flatten(1)).mean().item() > 15.0


@pytest.mark.skipif(
    not (DEFAULT_CODEC_DIR / "model.safetensors").is_file(), reason="default codec not shipped yet"
)
def test_shipped_codec_round_trips_a_real_clip():
    from encoders.audio_io import load_audio
    from encoders.codec import mel_distance

    clip = Path(__file__).resolve().parent.parent / "promptsep_assets" / "default" / "codec" / "check.wav"
    codec = load_default_codec()
    wav, _ = load_audio(clip, sample_rate=codec.sample_rate, channels=1)
    wav = wav[None]
    torch.manual_seed(0)
    untrained = Codec(codec.config).eval()
    with torch.inference_mode():
        recon = codec.decode(codec.encode(wav), length=wav.shape[-1])
        baseline = untrained.decode(untrained.encode(wav), length=wav.shape[-1])
    assert recon.shape == wav.shape
    trained_mel = mel_distance(recon[:, 0], wav[:, 0], codec.sample_rate).item()
    untrained_mel = mel_distance(baseline[:, 0], wav[:, 0], codec.sample_rate).item()
    # the shipped codec (short CPU training) clearly beats its untrained twin on the mel distance
    assert trained_mel < 0.85 * untrained_mel, (trained_mel, untrained_mel)
    assert trained_mel < MEL_BOUND


def test_cli_roundtrip_keeps_rate_channels_and_length(tmp_path: Path):
    import soundfile

    from app.cli import main

    tiny_codec().save_pretrained(tmp_path / "codec")
    stereo = 0.1 * torch.randn(22050 + 17, 2).numpy()
    soundfile.write(tmp_path / "clip.wav", stereo, 22050)
    common = ["--codec", str(tmp_path / "codec")]
    assert (
        main(["codec", "roundtrip", str(tmp_path / "clip.wav"), "--out", str(tmp_path / "rt"), *common]) == 0
    )
    out, rate = soundfile.read(tmp_path / "rt" / "clip.wav")
    assert rate == 22050 and out.shape == stereo.shape
    assert main(["codec", "encode", str(tmp_path / "clip.wav"), "--out", str(tmp_path / "lat"), *common]) == 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "lat" / "clip.safetensors"), framework="pt") as handle:
        assert handle.get_tensor("latents").shape == (2, 8, math.ceil(16000 * (22050 + 17) / 22050 / 640))
        assert handle.metadata()["source_sample_rate"] == "22050"
    lat = str(tmp_path / "lat" / "clip.safetensors")
    assert main(["codec", "decode", lat, "--out", str(tmp_path / "dec"), *common]) == 0
    decoded, rate = soundfile.read(tmp_path / "dec" / "clip.wav")
    assert rate == 22050 and decoded.shape == stereo.shape
    assert main(["codec", "roundtrip", str(tmp_path / "missing.wav"), "--out", str(tmp_path), *common]) == 2
    # two inputs with one stem keep apart (the second is another length, so an overwrite would show)
    soundfile.write(tmp_path / "clip.flac", stereo[:8000], 22050)
    inputs = [str(tmp_path / "clip.wav"), str(tmp_path / "clip.flac")]
    assert main(["codec", "roundtrip", *inputs, "--out", str(tmp_path / "both"), *common]) == 0
    lengths = {p.name: soundfile.info(p).frames for p in (tmp_path / "both").iterdir()}
    assert lengths == {f"{tmp_path.name}_clip_wav.wav": 22050 + 17, f"{tmp_path.name}_clip_flac.wav": 8000}


def test_warm_start_copies_the_encoder_into_a_new_decoder_head():
    from encoders.codec_train import warm_start

    source = tiny_codec(decoder_head="waveform", decoder_rates=[10, 8, 4, 2])
    target = tiny_codec(decoder_head="istft", decoder_rates=[4])
    torch.manual_seed(5)
    target = Codec(target.config)
    head_before = target.state_dict()["decoder.model.3.weight_v"].clone()
    copied = warm_start(target, source)
    wanted = {k for k in source.state_dict() if k.startswith(("encoder.", "quantizer."))}
    assert wanted <= set(copied)
    torch.testing.assert_close(target.state_dict()["decoder.model.3.weight_v"], head_before)  # new head kept
    wav = torch.randn(1, 1, 3200)
    with torch.inference_mode():
        torch.testing.assert_close(target.encode(wav), source.encode(wav))


def test_train_codec_lowers_the_mel_loss_and_resumes(tmp_path):
    import dataclasses

    import numpy as np
    import soundfile as sf

    from encoders.codec_train import MultiScaleMelLoss, TrainConfig, train_codec
    from encoders.errors import PromptsepError

    audio = tmp_path / "audio"
    audio.mkdir()
    t = np.arange(32000) / 16000
    for i, freq in enumerate((220.0, 440.0, 990.0)):
        sf.write(audio / f"tone{i}.wav", (0.4 * np.sin(2 * np.pi * freq * t)).astype("float32"), 16000)
    codec_config = dict(TINY, decoder_dim=32)
    config = TrainConfig(steps=20, batch=2, seconds=0.5, lr=3e-3, warmup_steps=1, save_every=1000, codec=codec_config)
    wav = torch.from_numpy(sf.read(audio / "tone1.wav", dtype="float32")[0][:8000])[None, None]
    mel = MultiScaleMelLoss(16000)
    torch.manual_seed(config.seed)  # the run's own initialisation
    with torch.no_grad():
        before = mel(Codec(CodecConfig(**codec_config)).eval()(wav)[0], wav).item()
    trained = train_codec(tmp_path / "run", config, audio_dirs=[audio])
    with torch.no_grad():
        after = mel(trained.eval()(wav)[0], wav).item()
    assert after < 0.8 * before, (before, after)
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 20
    assert Codec.from_pretrained(tmp_path / "run" / "codec").latent_dim == 8
    # resume continues the step count; the optional adversarial loss runs with DAC's discriminator
    resumed = dataclasses.replace(config, steps=21, adversarial=True)
    train_codec(tmp_path / "run", resumed, audio_dirs=[audio], resume=True)
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 21
    with pytest.raises(PromptsepError, match="no training audio"):
        train_codec(tmp_path / "empty", config, audio_dirs=[])


def test_building_a_codec_does_not_warn_about_dac_weight_norm():
    """descript-audio-codec's layers use torch's deprecated weight_norm; every CLI run built a codec and printed that
    FutureWarning. The codec silences that one warning while it builds its modules, and only that one."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_codec()
        torch.nn.utils.weight_norm(torch.nn.Linear(2, 2))  # outside the codec the warning still shows
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert len(messages) == 1 and "weight_norm" in messages[0]


def test_eager_snake_replaces_transformers_snake_with_the_same_values():
    """``use_eager_snake`` swaps the PE-Audio encoder's own Snake copies for ours (fewer buffers at inference): the
    state-dict keys stay, no Snake1d is left, and the front end's features do not move; our inference path matches
    the differentiable formula."""
    from transformers import PeAudioEncoder, PeAudioEncoderConfig

    from encoders.codec import Snake, use_eager_snake

    codec = tiny_codec(encoder_dim=4, latent_dim=16)
    config = PeAudioEncoderConfig(dac_config=pe_audio_dac_config(codec.config), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, head_dim=16)
    model = PeAudioEncoder(config).eval()
    model.load_state_dict(codec_to_pe_audio_encoder_state(codec), strict=False)
    for module in model.modules():
        if type(module).__name__ == "Snake1d":
            module.alpha.data.uniform_(0.5, 2.0)
    keys = sorted(model.state_dict())
    wav = torch.randn(1, 1, 640 * 5)
    with torch.inference_mode():
        before = model.embedder.dac_encoder(wav)
    use_eager_snake(model)
    assert sorted(model.state_dict()) == keys
    assert not [m for m in model.modules() if type(m).__name__ == "Snake1d"]
    assert any(isinstance(m, Snake) for m in model.modules())
    with torch.inference_mode():
        torch.testing.assert_close(model.embedder.dac_encoder(wav), before, atol=1e-5, rtol=1e-5)
    snake = Snake(3)
    snake.alpha.data = torch.tensor([0.5, 1.0, 3.0]).reshape(1, 3, 1)
    x = torch.randn(2, 3, 50, requires_grad=True)
    trained = snake(x)
    trained.sum().backward()  # the differentiable path still carries gradients
    assert x.grad is not None and snake.alpha.grad is not None
    with torch.inference_mode():
        torch.testing.assert_close(snake(x.detach()), trained.detach(), atol=1e-6, rtol=1e-6)


def test_channels_last_encoder_matches_the_plain_layout_and_trains():
    """``use_channels_last`` runs DAC's and PE-Audio's encoders on ``(B, C, 1, T)`` channels-last activations: every
    convolution sees that layout, the output is the plain ``(B, D, T)`` to float rounding (forward and gradients),
    the state-dict keys stay, and an encoder still holding DAC's Snake1d is refused."""
    from dac.model.dac import Encoder
    from transformers import PeAudioEncoder, PeAudioEncoderConfig

    from encoders.codec import use_channels_last, use_eager_snake

    torch.manual_seed(0)
    codec = tiny_codec(encoder_dim=4, latent_dim=16)
    assert codec.encoder._forward_pre_hooks  # the codec's own encoder runs channels-last
    config = PeAudioEncoderConfig(dac_config=pe_audio_dac_config(codec.config), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, head_dim=16)
    for build in (lambda: Encoder(4, [2, 4], 16), lambda: PeAudioEncoder(config).embedder.dac_encoder):
        plain, fast = build(), build()
        for module in plain.modules():
            if hasattr(module, "alpha"):
                module.alpha.data.uniform_(0.5, 2.0)
        fast.load_state_dict(plain.state_dict())
        use_eager_snake(plain)
        use_eager_snake(fast)
        use_channels_last(fast)
        assert sorted(fast.state_dict()) == sorted(plain.state_dict())
        layouts = []
        for conv in (m for m in fast.modules() if isinstance(m, torch.nn.Conv1d)):
            conv.register_forward_hook(lambda m, a, out, seen=layouts: seen.append(
                out.dim() == 4 and out.is_contiguous(memory_format=torch.channels_last)))
        wav = torch.randn(2, 1, 640 * 3, requires_grad=True)
        expected, got = plain(wav), fast(wav)
        assert layouts and all(layouts)
        assert got.shape == expected.shape and got.is_contiguous()
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        (grad_plain,) = torch.autograd.grad(expected.square().sum(), wav)
        (grad_fast,) = torch.autograd.grad(got.square().sum(), wav)
        torch.testing.assert_close(grad_fast, grad_plain, atol=1e-4, rtol=1e-3)
    with pytest.raises(TypeError, match="use_eager_snake first"):
        use_channels_last(Encoder(4, [2, 4], 16))
