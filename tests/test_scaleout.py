"""Scale-out: parallel launchers, concurrent writers to one MLflow store, a shared Optuna study.

- `hydra/launcher=joblib`: jobs in parallel processes, the cores divided between them;
- four `tradeoff-train` processes at once on one new sqlite MLflow store: no run lost;
- hydra-submitit-launcher: `submitit_local`, and `submitit_slurm` (the `slurm` preset) against
  stand-ins for `sbatch`, `srun` and `sacct` that run the array tasks on this machine;
- hydra-ray-launcher on a local Ray instance (skipped where it is not installed);
- one Optuna study shared by two sweeper processes through a PostgreSQL server started here
  (skipped where Debian's `postgresql` package is not installed).

Every sweep runs through the real command line in a temporary folder, on scikit-learn digits.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from tradeoff.paths import conf_dir
from tradeoff.train import _job_threads

FAST = [
    "data=digits",
    "train.epochs=1",
    "train.batch_size=128",
    "optim.lr=3e-3",
    "tracking.log_model=false",
]
CORES = len(os.sched_getaffinity(0))


def _command(name: str) -> list[str]:
    """The console script installed beside this interpreter, else its module."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", name.replace("tradeoff-", "tradeoff.")]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    for key in ("MLFLOW_TRACKING_URI", "TRADEOFF_PARENT_RUN_ID"):
        env.pop(key, None)
    return env


def _cli(args: list[str], cwd: Path, timeout: int = 400, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout
    )


def _runs(cwd: Path, experiment: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs([exp.experiment_id], max_results=1000)


def _check_sweep(cwd: Path, experiment: str, n_jobs: int) -> tuple:
    """The sweep's parent run and its `n_jobs` children, all FINISHED."""
    runs = _runs(cwd, experiment)
    parents = [r for r in runs if r.data.tags.get("tradeoff.role") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("tradeoff.role") == "job"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert len(jobs) == n_jobs
    for job in jobs:
        assert job.info.status == "FINISHED", job.data.tags.get("error")
        assert job.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert {"test/accuracy", "test/mean_certificate", "val/accuracy"} <= set(job.data.metrics)
    return parent, jobs


def _threads_logged(cwd: Path, parent) -> list[int]:
    """The intra-op thread count each job of the sweep logged in its `train.log`."""
    sweep_dir = cwd / parent.data.tags["sweep_dir"]
    logs = sorted(sweep_dir.glob("*/train.log"))
    found = [re.findall(r"intra-op threads: (\d+)", p.read_text()) for p in logs]
    assert logs and all(found), f"no thread count in {logs}"
    return [int(f[0]) for f in found]


# -- threads per job ---------------------------------------------------------------------------


def _launcher(*overrides: str):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    return cfg.hydra.launcher


_HAS_RAY = importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ([], 8),  # the basic launcher runs one job at a time
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], 4),
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"], 2),
        (["hydra/launcher=joblib"], 1),  # n_jobs=-1: as many jobs as cores
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=-2"], 1),  # 7 jobs on 8 cores
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=16"], 1),
        (["hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=3"], 3),
        (["hydra/launcher=submitit_local"], 8),  # no cpus_per_task: the job's own cores
        (["hydra/launcher=slurm"], 4),  # conf/hydra/launcher/slurm.yaml: cpus_per_task 4
        pytest.param(
            ["hydra/launcher=ray"],
            1,
            marks=pytest.mark.skipif(not _HAS_RAY, reason="hydra-ray-launcher not installed"),
        ),
        pytest.param(
            ["hydra/launcher=ray_cluster"],  # conf/hydra/launcher/ray_cluster.yaml: num_cpus 4
            4,
            marks=pytest.mark.skipif(not _HAS_RAY, reason="hydra-ray-launcher not installed"),
        ),
    ],
)
def test_each_launcher_gets_its_share_of_the_cores(overrides, expected):
    assert _job_threads(8, _launcher(*overrides)) == expected


def test_slurm_preset_is_submitit_slurm_with_resources():
    launcher = _launcher("hydra/launcher=slurm", "hydra.launcher.partition=cpu")
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "cpu"
    assert (launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb) == (120, 4, 8)


# -- joblib ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_processes_with_divided_threads(tmp_path):
    proc = _cli(
        [
            *_command("tradeoff-sweep"),
            "quick",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *FAST,
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stderr + proc.stdout
    parent, jobs = _check_sweep(tmp_path, "quick", 2)
    pids = {job.data.tags["tradeoff.pid"] for job in jobs}
    assert len(pids) == 2 and parent.data.tags["tradeoff.pid"] not in pids  # worker processes
    assert _threads_logged(tmp_path, parent) == [max(1, CORES // 2)] * 2


# -- concurrent writers ------------------------------------------------------------------------


@pytest.mark.slow
def test_four_workers_on_one_new_sqlite_store_lose_no_run(tmp_path):
    """Four processes start at once on a store that does not exist yet: each creates it."""
    taus = ["1", "3", "10", "30"]
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            [
                *_command("tradeoff-train"),
                *FAST,
                "train.threads=1",
                f"loss.tau={tau}",
                "tracking.experiment=concurrent",
            ],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tau in taus
    ]
    outputs = [p.communicate(timeout=400) for p in procs]
    elapsed = time.monotonic() - start
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "database is locked" not in err
    runs = _runs(tmp_path, "concurrent")
    assert sorted(r.data.params["loss.tau"] for r in runs) == sorted(taus)
    expected = {
        "train/loss",
        "val/accuracy",
        "val/mean_certificate",
        "test/accuracy",
        "test/mean_certificate",
        "train/seconds",
    }
    for run in runs:
        assert run.info.status == "FINISHED"
        assert expected <= set(run.data.metrics), set(run.data.metrics)
    print(f"4 concurrent tradeoff-train processes on one new sqlite store: {elapsed:.1f}s")


# -- submitit ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_submitit_local_runs_the_sweep(tmp_path):
    proc = _cli(
        [
            *_command("tradeoff-sweep"),
            "quick",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=5",
            "hydra.launcher.cpus_per_task=1",
            *FAST,
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, jobs = _check_sweep(tmp_path, "quick", 2)
    assert len({job.data.tags["tradeoff.pid"] for job in jobs}) == 2
    assert _threads_logged(tmp_path, parent) == [1, 1]
    assert list((tmp_path / parent.data.tags["sweep_dir"] / ".submitit").glob("*/*_result.pkl"))


# Stand-ins for SLURM's commands: sbatch runs each array task of the batch script at once on this
# machine (srun runs its command with the task's output files), sacct knows no job (submitit
# then waits for each task's result file).
_SBATCH = """\
#!{python}
import os, re, subprocess, sys
script = sys.argv[-1]
text = open(script).read()
open(os.environ["SBATCH_CAPTURE"], "w").write(text)
first, last = map(int, re.search(r"#SBATCH --array=(\\d+)-(\\d+)", text).groups())
job = str(4242 + os.getpid())
for task in range(first, last + 1):
    env = dict(os.environ, SLURM_JOB_ID=f"{{job}}_{{task}}", SLURM_ARRAY_JOB_ID=job,
               SLURM_ARRAY_TASK_ID=str(task), SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1",
               SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0",
               SLURM_JOB_NODELIST="localhost", SLURM_CPUS_PER_TASK="1")
    subprocess.Popen(["bash", script], env=env, start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"Submitted batch job {{job}}")
"""
_SRUN = """\
#!{python}
import os, subprocess, sys
args, files = sys.argv[1:], {{}}
while args[0].startswith("--"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        files[flag] = args.pop(0)
env = os.environ
sub = dict(A=env["SLURM_ARRAY_JOB_ID"], a=env["SLURM_ARRAY_TASK_ID"], t="0", j=env["SLURM_JOB_ID"])
def output(name):
    path = files[name]
    for key, value in sub.items():
        path = path.replace("%" + key, value)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return open(path, "a")
sys.exit(subprocess.call(args, stdout=output("--output"), stderr=output("--error")))
"""
_SACCT = "#!/bin/sh\necho 'JobID|State|NodeList'\n"


@pytest.mark.slow
def test_slurm_preset_submits_an_array_and_collects_results(tmp_path):
    bindir = tmp_path / "slurm-bin"
    bindir.mkdir()
    for name, text in (("sbatch", _SBATCH), ("srun", _SRUN), ("sacct", _SACCT)):
        (bindir / name).write_text(text.format(python=sys.executable))
        (bindir / name).chmod(0o755)
    capture = tmp_path / "batch.sh"
    proc = _cli(
        [
            *_command("tradeoff-sweep"),
            "quick",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=cpu",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.timeout_min=10",
            *FAST,
        ],
        tmp_path,
        PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
        SBATCH_CAPTURE=str(capture),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    batch = capture.read_text()
    for line in (
        "#SBATCH --array=0-1%2",  # min(array_parallelism, jobs)
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --partition=cpu",
        "#SBATCH --time=10",
        "#SBATCH --mem=8GB",
        "-m submitit.core._submit",
    ):
        assert line in batch, batch
    parent, _ = _check_sweep(tmp_path, "quick", 2)
    assert _threads_logged(tmp_path, parent) == [1, 1]


# -- Ray ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not _HAS_RAY, reason="hydra-ray-launcher not installed (pip install -e '.[ray]')"
)
def test_ray_cluster_preset_runs_the_sweep_on_a_ray_cluster(tmp_path):
    """`ray start --head` on loopback stands for the cluster; the sweep joins it."""
    port = _free_port()
    # Token authentication, the token passed in the environment (no ~/.ray/auth_token written).
    ray_env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
    }
    env = _env(**ray_env)
    head = subprocess.Popen(
        [
            *_command("ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        seen = []
        for line in head.stdout:  # ready once it says it blocks
            seen.append(line)
            if "block forever" in line:
                break
        assert head.poll() is None, "".join(seen)[-3000:]
        proc = _cli(
            [
                *_command("tradeoff-sweep"),
                "quick",
                "hydra/launcher=ray_cluster",
                f"hydra.launcher.ray.init.address=127.0.0.1:{port}",
                "+hydra.launcher.ray.init._node_ip_address=127.0.0.1",
                "hydra.launcher.ray.remote.num_cpus=1",
                f"hydra.sweep.dir={tmp_path / 'sweeps' / 'quick'}",  # shared by every node
                *FAST,
            ],
            tmp_path,
            **ray_env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        head.terminate()  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)  # whatever of its session is left
    parent, jobs = _check_sweep(tmp_path, "quick", 2)
    assert len({job.data.tags["tradeoff.pid"] for job in jobs}) == 2
    assert _threads_logged(tmp_path, parent) == [1, 1]  # ray.remote.num_cpus


# -- one Optuna study, two sweeper processes, PostgreSQL ----------------------------------------


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port with databases `optuna` and
    `mlflow`: the URL without the database name."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server not installed (Debian: apt-get install -y postgresql)")
    # The URL names its driver, psycopg 3: SQLAlchemy 2.0 would take psycopg2 for postgresql://.
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install -e '.[postgres]')")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="tradeoff-pg-"))
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        runuser = shutil.which("runuser")
        try:
            shutil.chown(root, "postgres")
        except (LookupError, OSError):
            runuser = None
        if runuser is None:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root without a `postgres` user for runuser")
        as_user = [runuser, "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def pg(tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*as_user, str(bindir / tool), *args], capture_output=True, text=True, timeout=120
        )

    setup = pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
    assert setup.returncode == 0, setup.stderr
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = pg("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-o", options, "-w",
               "-t", "60", "start")  # fmt: skip
    assert start.returncode == 0, start.stderr + (root / "server.log").read_text()
    try:
        for name in ("optuna", "mlflow"):
            made = pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name)
            assert made.returncode == 0, made.stderr
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_sweeper_processes_share_one_study_on_postgresql(tmp_path, postgres):
    import optuna

    postgres_url = f"{postgres}/optuna"
    n_trials = 4
    args = [
        *_command("tradeoff-train"),
        "-m",
        "hydra/sweeper=tradeoff_optuna",
        # No seed: fixed seeds are offset by the study's size when a process starts, so seeds 1
        # and 2 collide when the second process starts one trial later (same draws twice).
        "hydra.sweeper.seed=null",
        f"hydra.sweeper.storage={postgres_url}",
        "hydra.sweeper.study_name=shared",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.heartbeat_interval=5",
        "tracking.experiment=shared",
        "loss.tau=tag(log,interval(0.1,100))",
        *FAST,
    ]
    procs = [
        subprocess.Popen(
            [*args, f"hydra.sweep.dir=multirun/shared/{k}"],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (1, 2)
    ]
    outputs = [p.communicate(timeout=400) for p in procs]
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    # Processes ask for trials independently: up to (processes - 1) x n_jobs over n_trials.
    assert n_trials <= len(complete) <= n_trials + 1, [t.state for t in trials]
    assert len(complete) == len(trials)  # nothing failed, nothing left RUNNING
    assert len({t.number for t in complete}) == len(complete)
    assert len({t.params["loss.tau"] for t in complete}) == len(complete)  # no duplicate trial

    runs = {r.info.run_id: r for r in _runs(tmp_path, "shared")}
    trial_runs = [runs[t.user_attrs["mlflow_run_id"]] for t in complete]
    assert all(r.info.status == "FINISHED" for r in trial_runs)
    assert len({r.data.tags["mlflow.parentRunId"] for r in trial_runs}) == 1  # one study run
    assert len({r.data.tags["tradeoff.pid"] for r in trial_runs}) == 2  # both processes worked
    frame = pd.DataFrame([{"trial": t.number, **t.params} for t in complete])
    print(textwrap.indent(frame.to_string(index=False), "  "))


# -- MLflow server on PostgreSQL ---------------------------------------------------------------


@pytest.mark.slow
def test_parallel_jobs_log_to_an_mlflow_server_on_postgresql(tmp_path, postgres):
    """The setup docs/cluster.md gives past a few workers: workers talk HTTP to one server."""
    port = _free_port()
    server = subprocess.Popen(
        [
            *_command("mlflow"),
            "server",
            "--backend-store-uri",
            f"{postgres}/mlflow",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "w"),  # noqa: SIM115
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
                time.sleep(0.5)
        proc = _cli(
            [
                *_command("tradeoff-sweep"),
                "quick",
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2",
                f"tracking.uri={uri}",
                *FAST,
            ],
            tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("quick")
        runs = client.search_runs([exp.experiment_id])
        jobs = [r for r in runs if r.data.tags.get("tradeoff.role") == "job"]
        assert len(runs) == 3 and len(jobs) == 2
        assert {r.info.status for r in runs} == {"FINISHED"}
        for job in jobs:  # certificates went through the server into its artifact root
            assert any((tmp_path / "artifacts").glob(f"*/{job.info.run_id}/artifacts/certificates"))
            assert [a.path for a in client.list_artifacts(job.info.run_id, "certificates")]
        assert not (tmp_path / "mlflow.db").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
