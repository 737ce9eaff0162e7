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
        ("model=lipconvnet model.width=wide", "model.width='wide' is invalid: it must be an"),
        ("model=lipconvnet model.width=3.5", "model.width=3.5 is invalid: it must be an integer"),
        ("model=seed_mlp model.hidden=[64,x]", "model.hidden=[64, 'x'] is invalid: it must be"),
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


# -- issue 16: signals, claims, degenerate runs, stores (fast, in-process) ----------------------


@pytest.fixture
def own_signals():
    """Our SIGTERM/SIGINT handlers in the test process, pytest's restored afterwards."""
    import signal

    from tradeoff import signals

    saved = {s: signal.getsignal(s) for s in signals.HANDLED}
    try:
        yield signals
    finally:
        signals.reset()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_a_signal_takes_effect_once_the_store_write_is_done(own_signals):
    import signal
    import time

    signals = own_signals
    assert signals.install()
    finished = False
    with pytest.raises(signals.Interrupted) as info, signals.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        finished = True  # the block is not cut short
    assert finished and signals.received() == signal.SIGTERM
    assert info.value.exit_code == 143 and info.value.name == "SIGTERM"
    assert isinstance(info.value, KeyboardInterrupt)  # `except KeyboardInterrupt` sees it
    signals.reset()
    with pytest.raises(signals.Interrupted) as info:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    assert info.value.exit_code == 130


def test_a_launchers_own_signal_handler_is_left_alone(own_signals):
    import signal

    signal.signal(signal.SIGTERM, lambda *_: None)  # e.g. submitit's, which requeues
    assert not own_signals.install()


def test_a_zombie_process_counts_as_dead():
    import signal
    import sys
    import time

    from tradeoff.watchdog import pid_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(child.pid)  # not waited for yet: a zombie
    finally:
        child.wait()


def test_a_config_is_claimed_by_one_holder_at_a_time(tmp_path):
    from tradeoff.claims import Claim, local_store_path, try_claim

    store = local_store_path(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert store == tmp_path / "mlflow.db"
    assert local_store_path("http://host:5000") is None
    assert local_store_path("postgresql://u@h/db") is None
    first = try_claim(store, "1", "abc")
    assert isinstance(first, Claim)
    second = try_claim(store, "1", "abc")  # another open file: as another process would
    assert second == f"pid {os.getpid()} on {__import__('socket').gethostname()}"
    assert isinstance(try_claim(store, "2", "abc"), Claim)  # another experiment
    first.release()
    again = try_claim(store, "1", "abc")
    assert isinstance(again, Claim)
    again.release()
    assert (tmp_path / "mlflow.db.claims" / "1-abc.lock").exists()


def test_on_a_server_store_the_older_run_holds_the_config(tmp_path, monkeypatch):
    """The claim a server store decides (RunTracker.contested), tried on a sqlite store: the
    younger of two runs of one config is deleted, the older trains; a FINISHED one wins."""
    import mlflow

    from tradeoff.tracking import RunTracker

    monkeypatch.chdir(tmp_path)
    # Two processes in one: MLflow's process-wide active run would end one tracker's run.
    monkeypatch.setattr(mlflow, "start_run", lambda **kwargs: None)
    cfg = _compose(["data=digits", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    older, younger = RunTracker(cfg), RunTracker(cfg)
    older.start()
    younger.start()
    client = older.client
    assert [client.get_run(t.run_id).info.status for t in (older, younger)] == ["RUNNING"] * 2
    assert younger.contested(settle=0) == older.run_id
    assert younger.run_id is None
    assert older.contested(settle=0) is None
    older.end("FINISHED")
    late = RunTracker(cfg)
    late.start()
    assert late.contested(settle=0) == older.run_id
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert list(mlflow.search_runs(search_all_experiments=True)["status"]) == ["FINISHED"]


def test_why_degenerate():
    import torch

    from tradeoff.degenerate import chance_accuracy, diameter, why_degenerate

    labels = torch.tensor([0, 0, 0, 1, 2])
    assert chance_accuracy(labels) == 0.6
    pixels = torch.zeros(2, 1, 8, 8)
    pixels[1] = 1.0
    assert diameter(pixels) == pytest.approx(8.0)  # sqrt(64) pixels in [0, 1]
    small = torch.full((5,), 0.5)
    assert why_degenerate(0.6, labels, small, 8.0) == (
        "test accuracy 0.6 is at or below chance (0.6)"
    )
    assert why_degenerate(0.8, labels, small, 8.0) is None
    assert "a certificate of 9 exceeds the inputs' diameter 8" in why_degenerate(
        0.8, labels, torch.tensor([0.1, 9.0]), 8.0
    )
    assert "exceeds" in why_degenerate(0.8, labels, torch.tensor([float("inf")]), 8.0)


def test_a_run_at_chance_is_tagged_degenerate_and_logs_the_known_metrics(tmp_path, monkeypatch):
    """optim.lr=1e3 on digits: FINISHED at chance accuracy with huge certificates, tagged
    degenerate; the metrics it returns are exactly those `logged_metrics` predicts."""
    import mlflow

    from tradeoff.train import logged_metrics

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = _compose(
        [
            "data=digits",
            "optim.lr=1e3",
            "train.epochs=1",
            "train.threads=1",
            "tracking.log_model=false",
            f"tracking.uri={uri}",
        ]
    )
    metrics = run(cfg)
    assert set(metrics) == logged_metrics(cfg)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True)
    assert list(runs["status"]) == ["FINISHED"]
    assert runs["tags.degenerate"].item().startswith("test accuracy 0.1028 is at or below chance")
    no_val = _compose(["data=digits", "data.val_size=0"])
    assert not any(name.startswith("val/") for name in logged_metrics(no_val))


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("foo://bar", "tracking.uri='foo://bar': unknown scheme 'foo://'"),
        ("http://127.0.0.1:9", "tracking.uri='http://127.0.0.1:9' is unreachable"),
    ],
)
def test_unusable_tracking_uris_are_refused_by_name(uri, message):
    from tradeoff.tracking import check_tracking_uri

    with pytest.raises(ValueError) as info:
        check_tracking_uri(uri)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_damaged_store_is_refused_before_data_or_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"garbage " * 500)
    cfg = _compose(["data=mnist", f"data.root={tmp_path}", f"tracking.uri=sqlite:///{db}"])
    with pytest.raises(ValueError) as info:  # data=mnist would fail on its missing files
        run(cfg)
    assert str(info.value) == (
        f"tracking.uri='sqlite:///{db}': '{db}' is damaged (file is not a database); "
        f"move '{db}' away (MLflow makes a new store) or point tracking.uri elsewhere"
    )


def test_a_later_start_closes_the_parent_run_of_a_dead_sweep(tmp_path):
    """Parent runs (grid and study) carry host and pid like jobs, so the clean-up at the next
    start closes one whose process died; a live process's parent is left alone."""
    import socket
    import sys

    from mlflow.tracking import MlflowClient

    from tradeoff.tracking import open_parent_run, reap_dead_runs

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("e")
    study, _ = open_parent_run(client, exp, {"optuna.study_name": "s"}, run_name="study s", tags={})
    tags = client.get_run(study).data.tags
    assert tags["tradeoff.host"] == socket.gethostname()
    assert tags["tradeoff.pid"] == str(os.getpid())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client.set_tag(study, "tradeoff.pid", str(dead.pid))  # as if another process opened it
    live, _ = open_parent_run(client, exp, {"sweep": "g"}, run_name="sweep g", tags={})
    assert reap_dead_runs(client, exp) == [study]
    assert client.get_run(study).info.status == "FAILED"
    assert client.get_run(study).data.tags["error"] == (
        f"process {dead.pid} on {socket.gethostname()} died while the run was RUNNING"
    )
    assert client.get_run(live).info.status == "RUNNING"
