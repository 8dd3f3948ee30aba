"""The epoch loop's file cadence: weights and checkpoint at an epoch's end once --save-interval seconds
have passed, and always at the last epoch."""

import pytest

import fastgen
from fastgen.training import loop


@pytest.mark.parametrize(("save_interval", "expected"), [(0.0, [2, 3, 4]), (1e9, [4])])
def test_run_state_is_written_when_due_and_at_the_last_epoch(mnist, tmp_path, monkeypatch, save_interval, expected):
    written = []
    save = loop.run_state.save
    monkeypatch.setattr(
        loop.run_state,
        "save",
        lambda path, trainer, position, *args, **kwargs: (
            written.append(position.epoch),
            save(path, trainer, position, *args, **kwargs),
        ),
    )
    fastgen.train(
        fastgen.TrainConfig(
            model="vae",
            epochs=3,
            train_images=200,
            data_dir=str(mnist),
            download=False,
            out=str(tmp_path / "run"),
            quiet=True,
            compile=False,
            save_interval=save_interval,
        )
    )
    assert written == expected  # the epoch a resume would start from
    resumed = fastgen.train(fastgen.TrainConfig(resume=str(tmp_path / "run"), epochs=4, quiet=True))
    assert resumed["resumed_from_step"] == 3 * (200 // 100) and resumed["steps"] == 4 * (200 // 100)


def test_a_negative_save_interval_is_refused():
    with pytest.raises(fastgen.FastgenError, match="--save-interval"):
        fastgen.TrainConfig(model="gan", save_interval=-1).resolved()
