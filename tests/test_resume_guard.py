"""Every trainer's ``--resume`` without a checkpoint is an error (not a silent fresh start) and leaves nothing behind."""

from __future__ import annotations

import pytest

from encoders.errors import WeightsError


def _codec(out):
    from encoders.codec_train import TrainConfig, train_codec

    train_codec(out, TrainConfig(steps=1), resume=True)


def _encoders(out):
    from encoders.peav_train import EncoderTrainConfig, train_encoders

    train_encoders(EncoderTrainConfig(data=str(out.parent / "no-data"), out=str(out), steps=1), resume=True)


def _separator(out):
    from separation.train import TrainConfig, train_separator

    train_separator(TrainConfig(data=str(out.parent / "no-data"), out=str(out), steps=1), resume=True)


def _refiner(out):
    from separation.refiner_train import RefinerTrainConfig, train_refiner

    train_refiner(RefinerTrainConfig(shards=(str(out.parent / "no-shards"),), out=str(out), steps=1), resume=True)


def _decoder(out):
    from separation.decoder_tune import DecoderTuneConfig, tune_decoder

    tune_decoder(DecoderTuneConfig(codec="unused", feeds=[str(out.parent / "no-feed")], out=str(out), steps=1), resume=True)


@pytest.mark.parametrize("trainer", [_codec, _encoders, _separator, _refiner, _decoder])
def test_resume_without_a_checkpoint_fails_before_writing(trainer, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(WeightsError, match="--resume: no checkpoint in .*run"):
        trainer(out)
    assert not out.exists()
