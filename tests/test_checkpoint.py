"""Checkpoints on real digits: a run stopped at any step and resumed from its checkpoint computes
exactly what the uninterrupted run computes (weights, optimiser, schedule, the generator that
orders and augments the batches, the budget); files are written atomically; bad settings and
unreadable files are refused naming the key or the file."""

from __future__ import annotations

import pytest
import torch
from training import compose_config, train_config

from tradeoff import checkpoint
from tradeoff.checkpoint import CheckpointError
from tradeoff.paths import OutputDirError
from tradeoff.train import ConfigError, build, checkpoint_folder, run

# Shifted batches and a OneCycle schedule: every random and scheduled state matters.
RECIPE = [
    "data=digits",
    "train.batch_size=128",
    "optim.lr=3e-3",
    "augment=shift",
    "schedule=onecycle",
    "train.epochs=3",
]
PER_EPOCH = 11  # 1293 training images in batches of 128


def _stop_after(steps: int):
    """A stop request that turns true after `steps` optimiser steps (as a signal would)."""
    seen = {"calls": 0}

    def requested() -> bool:
        seen["calls"] += 1
        return seen["calls"] > steps

    return requested


def _timeless(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in h.items() if k != "train/epoch_seconds"} for h in history]


@pytest.fixture(scope="module")
def uninterrupted():
    return train_config(RECIPE)


@pytest.mark.parametrize("steps", [PER_EPOCH + 4, PER_EPOCH], ids=["mid-epoch", "epoch-end"])
def test_a_stopped_run_resumed_computes_what_the_uninterrupted_run_computes(
    uninterrupted, tmp_path, steps
):
    path = tmp_path / "run.pt"
    saved = []

    def save(state):
        saved.append(state["progress"]["epoch"])
        checkpoint.save(path, state)

    _, stopped = train_config(RECIPE, checkpoint=save, stop_requested=_stop_after(steps))
    assert stopped.interrupted and stopped.test is None
    assert saved == [1]  # the stop's own checkpoint (no periodic ones here)
    state = checkpoint.load(path)
    assert (state["progress"]["order"] is not None) == (steps % PER_EPOCH != 0)

    job, resumed = train_config(RECIPE, resume=state)
    reference, expected = uninterrupted
    assert not resumed.interrupted
    assert _timeless(resumed.history) == _timeless(expected.history)
    assert resumed.test.metrics == expected.test.metrics
    assert resumed.steps == expected.steps == 3 * PER_EPOCH
    weights = reference.model.state_dict()
    for name, value in job.model.state_dict().items():
        assert torch.equal(value, weights[name]), name


def test_periodic_checkpoints_come_before_their_epoch_is_reported(tmp_path):
    order = []
    train_config(
        RECIPE,
        checkpoint=lambda state: order.append(("checkpoint", state["progress"]["epoch"])),
        checkpoint_every=2,
        on_epoch_end=lambda epoch, metrics: order.append(("epoch", epoch)),
    )
    assert order == [("epoch", 1), ("checkpoint", 2), ("epoch", 2), ("epoch", 3)]


def test_a_budget_goes_on_from_what_was_spent(tmp_path):
    constant = [*RECIPE, "schedule=constant"]
    path = tmp_path / "run.pt"
    _, stopped = train_config(
        constant,
        epochs=None,
        budget_seconds=3600.0,
        checkpoint=lambda s: checkpoint.save(path, s),
        stop_requested=_stop_after(5),
    )
    state = checkpoint.load(path)
    spent = state["progress"]["budget_elapsed"]
    assert stopped.interrupted and spent > 0
    # Resumed with a budget already spent: it stops at its next step, as it would have.
    _, resumed = train_config(constant, epochs=None, budget_seconds=spent, resume=state)
    assert resumed.stopped_at_budget and resumed.steps == state["progress"]["steps"] + 1
    assert resumed.cost["train/seconds"] >= state["progress"]["seconds"]


def test_a_write_that_fails_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "exp" / "abc.pt"
    checkpoint.save(path, {"format": checkpoint.FORMAT, "value": torch.ones(3)})

    def broken(obj, handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        checkpoint.save(path, {"format": checkpoint.FORMAT, "value": torch.zeros(3)})
    assert torch.equal(checkpoint.load(path)["value"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["abc.pt"]  # no temporary file left
    checkpoint.remove(path)
    assert not (tmp_path / "exp").exists()


def test_unreadable_checkpoints_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "abc.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"abc.pt' cannot be read .*delete it"):
        checkpoint.load(path)
    torch.save({"format": 99}, path)
    with pytest.raises(CheckpointError, match="has format 99, this version reads 1"):
        checkpoint.load(path)
    assert checkpoint.load(tmp_path / "none.pt") is None


def test_checkpoint_paths_are_keyed_by_experiment_and_config():
    path = checkpoint.checkpoint_path("ck", "my sweep/v2", "0123abcd")
    assert path.as_posix() == "ck/my_sweep_v2/0123abcd.pt"


@pytest.mark.parametrize("value", [-1, 1.5, True, "often"])
def test_a_bad_checkpoint_interval_is_refused_naming_the_key(value):
    cfg = compose_config(["data=digits", f"train.checkpoint_every={value}"])
    with pytest.raises(ConfigError, match=r"^train.checkpoint_every=.* is invalid: it must be an"):
        build(cfg)


def test_an_unwritable_checkpoint_folder_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("")
    cfg = compose_config(["data=digits", f"train.checkpoint_dir={tmp_path / 'file' / 'ck'}"])
    with pytest.raises(OutputDirError, match=r"^train.checkpoint_dir='.*' cannot be written"):
        run(cfg)
    assert not list(tmp_path.glob("mlruns/*/*"))  # no run was started
    # A folder that can be made is checked, not made: a run that writes no checkpoint
    # (skipped, or stopped before its first) leaves nothing behind.
    later = tmp_path / "new" / "ck"
    assert checkpoint_folder(compose_config([f"train.checkpoint_dir={later}"])) == later
    assert not (tmp_path / "new").exists()
