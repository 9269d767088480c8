"""Metrics agree with the libraries they wrap and with the textbook definition."""

import numpy as np
import pytest
import torch

from separation.metrics import bss_eval, si_sdr, si_sdri


def test_si_sdr_matches_definition():
    torch.manual_seed(0)
    ref = torch.randn(16000, dtype=torch.float64)
    est = ref + 0.1 * torch.randn(16000, dtype=torch.float64)
    r, e = ref - ref.mean(), est - est.mean()
    proj = (e @ r) / (r @ r) * r
    expected = 10 * torch.log10((proj @ proj) / ((e - proj) @ (e - proj)))
    assert si_sdr(est, ref).item() == pytest.approx(expected.item(), abs=1e-3)


def test_si_sdr_scale_invariant_and_batched():
    torch.manual_seed(1)
    ref = torch.randn(3, 8000)
    est = ref + 0.3 * torch.randn(3, 8000)
    a = si_sdr(est, ref)
    b = si_sdr(5.0 * est, ref)
    assert a.shape == (3,) and torch.allclose(a, b, atol=1e-4)


def test_si_sdr_matches_torchmetrics():
    torchmetrics = pytest.importorskip("torchmetrics")
    from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

    torch.manual_seed(2)
    ref = torch.randn(2, 4000, dtype=torch.float64)
    est = ref + 0.5 * torch.randn(2, 4000, dtype=torch.float64)
    assert torchmetrics is not None
    # asteroid and torchmetrics place their epsilons differently: agreement to 0.01 dB.
    assert torch.allclose(si_sdr(est, ref), scale_invariant_signal_distortion_ratio(est, ref), atol=1e-2)


def test_si_sdri_of_mixture_is_zero_and_oracle_positive():
    torch.manual_seed(3)
    target, other = torch.randn(8000), torch.randn(8000)
    mixture = target + other
    assert si_sdri(mixture, target, mixture).item() == pytest.approx(0.0, abs=1e-6)
    assert si_sdri(target + 0.05 * other, target, mixture).item() > 20


def test_bss_eval_matches_museval():
    import museval

    rng = np.random.default_rng(0)
    rate = 8000
    target, residual = rng.standard_normal(2 * rate), rng.standard_normal(2 * rate)
    t_est = target + 0.2 * residual
    r_est = residual + 0.2 * target
    scores = bss_eval(t_est, r_est, target, residual, rate)
    sdr, _, sir, sar = museval.evaluate(
        np.stack([target, residual])[..., None], np.stack([t_est, r_est])[..., None], win=rate, hop=rate
    )
    assert scores.sdr == pytest.approx(float(np.median(sdr[0])), abs=1e-6)
    assert scores.sir == pytest.approx(float(np.median(sir[0])), abs=1e-6)
    assert scores.sar == pytest.approx(float(np.median(sar[0])), abs=1e-6)
    assert 10 < scores.sdr < 20  # leakage at -14 dB
