"""Bad input is refused early with a message naming the fix; runs are deterministic."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tradeoff.paths import conf_dir
from tradeoff.train import ConfigError, run


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _compose(overrides: list[str]):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def test_same_config_and_seed_give_the_same_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts artifacts in ./mlruns next to a sqlite store
    overrides = [
        "data=digits",
        "train.epochs=2",
        "train.batch_size=64",
        "train.threads=1",
        "optim.lr=3e-3",
        "tracking.log_model=false",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    first = run(_compose(overrides))
    second = run(_compose(overrides))
    for key in ("val/accuracy", "val/mean_certificate", "test/accuracy", "test/mean_certificate"):
        assert second[key] == pytest.approx(first[key], abs=1e-6), key
    third = run(_compose([*overrides, "train.seed=1"]))
    assert third["test/mean_certificate"] != pytest.approx(first["test/mean_certificate"], abs=1e-6)


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epochs=0", "train.epochs=0 is invalid: it must be an integer >= 1"),
        ("train.batch_size=-5", "train.batch_size=-5 is invalid"),
        ("train.device=tpu", "train.device must be cpu, cuda or auto"),
        ("tracking.resume=maybe", "tracking.resume='maybe' is invalid"),
        ("eval.eps=[0.5,-1]", "eval.eps contains -1"),
        ("model.pooling=median", "pooling must be one of"),
        ("loss=tau_cce loss.tau=0", "tau must be > 0"),
        ("optim.lr=-1", "optim.lr=-1 is invalid: it must be a finite number > 0"),
        ("optim.lr=inf", "optim.lr=inf is invalid: it must be a finite number > 0"),
        ("optim.lr=nan", "optim.lr=nan is invalid"),
        ("optim.lr=fast", "optim.lr='fast' is invalid: it must be a number"),
        ("optim=sgd optim.momentum=x", "optim.momentum='x' is invalid: it must be a number"),
        ("optim.weight_decay=-1", "optim.weight_decay=-1 is invalid"),
        ("schedule=onecycle schedule.pct_start=x", "schedule.pct_start='x' is invalid"),
        ("eval.batch_size=x", "eval.batch_size='x' is invalid"),
        ("data.val_size=2.5", "val_size"),
    ],
)
def test_invalid_values_are_refused_before_training(tmp_path, monkeypatch, override, message):
    monkeypatch.chdir(tmp_path)
    overrides = ["data=digits", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    overrides += override.split()
    with pytest.raises((ConfigError, ValueError), match=None) as info:
        run(_compose(overrides))
    assert message in str(info.value)
    assert not (tmp_path / "mlflow.db").exists() or _no_running(tmp_path / "mlflow.db")


def _no_running(db: Path) -> bool:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{db}")
    runs = mlflow.search_runs(search_all_experiments=True)
    return runs.empty or "RUNNING" not in set(runs["status"])


def test_unreachable_tracking_server_fails_before_training(tmp_path):
    proc = _cli(["tradeoff-train", "data=digits", "tracking.uri=http://127.0.0.1:9"], tmp_path)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and "unreachable" in lines[-1] and "127.0.0.1:9" in lines[-1]
    assert "epoch" not in proc.stdout


def test_missing_dataset_files_offline_name_the_files(tmp_path):
    proc = _cli(
        ["tradeoff-train", "data=mnist", f"data.root={tmp_path}", "data.download=false"], tmp_path
    )
    assert proc.returncode == 2
    assert "train-images-idx3-ubyte.gz" in proc.stderr and str(tmp_path) in proc.stderr


def test_corrupt_dataset_file_is_refused(tmp_path):
    folder = tmp_path / "kmnist"
    folder.mkdir()
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        (folder / name).write_bytes(b"not the real file")
    proc = _cli(
        ["tradeoff-train", "data=kmnist", f"data.root={tmp_path}", "data.download=false"], tmp_path
    )
    assert proc.returncode == 2
    assert "SHA-256" in proc.stderr or "sha256" in proc.stderr.lower()


@pytest.mark.parametrize(
    ("override", "message", "listed"),
    [
        ("loss=nosuch", "Could not find 'loss/nosuch'", "offset_ce"),
        ("data=nosuch", "Could not find 'data/nosuch'", "fashion_mnist"),
        ("model.name=nosuch", "unknown model 'nosuch'", "lipconvnet"),
    ],
)
def test_unknown_loss_dataset_or_model_lists_the_valid_ones(tmp_path, override, message, listed):
    proc = _cli(["tradeoff-train", "data=digits", override], tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr and listed in proc.stderr
    assert not (tmp_path / "mlflow.db").exists() or _no_running(tmp_path / "mlflow.db")


@pytest.mark.parametrize("multirun", [False, True])
def test_unwritable_output_folder_stops_before_any_run(tmp_path, multirun):
    """A run (or sweep) folder that cannot be created: one line naming the option, exit 2,
    and no MLflow run, not even a sweep's parent run, left behind."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    args = ["tradeoff-train", "data=digits", "train.epochs=1", f"{key}={blocker / 'out'}"]
    if multirun:
        args[1:1] = ["-m", "loss.tau=1,10"]
    proc = _cli(args, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = f"tradeoff-train: error: {key}='{blocker / 'out'}' cannot be written (Not a directory)"
    assert proc.stderr.strip().splitlines() == [f"{line}; set {key} to a writable folder"]
    db = tmp_path / "mlflow.db"
    if db.exists():
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{db}")
        assert mlflow.search_runs(search_all_experiments=True).empty


def test_unwritable_tracking_folder_is_refused_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    uri = f"sqlite:///{blocker / 'sub' / 'mlflow.db'}"
    proc = _cli(["tradeoff-train", "data=digits", f"tracking.uri={uri}"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"tradeoff-train: error: tracking.uri={uri!r}: folder '{blocker / 'sub'}' does not exist "
        "or is not writable; create it or point tracking.uri elsewhere"
    ]
