"""train --log tensorboard / mlflow: the trackers' own readers see the run's metrics at the steps of metrics.jsonl; a
resumed run continues the same tracker run; a tracker that fails costs one warning, never the training; a missing
tracker library is one line before anything is written."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.test_resume import _run_until
from unetseg.cli.main import main
from unetseg.train.trackers import Trackers, flatten, scalars

FLAGS = ["--base-channels", "4", "--depth", "2", "--image-size", "64x48", "--batch-size", "8", "--lr", "3e-3",
         "--no-progress"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_scalars_and_parameters_name_every_value():
    record = {"epoch": 2, "step": 6, "train_loss": 0.5, "val_dice": None, "val_dice_per_class": [0.2, 0.9],
              "val_iou_per_class": {"sky": 0.8, "road": None}, "lr": 1e-3}
    assert scalars(record) == {"train_loss": 0.5, "val_dice/class0": 0.2, "val_dice/class1": 0.9,
                               "val_iou/sky": 0.8, "lr": 1e-3}
    flat = flatten({"train": {"lr": 1e-4, "log": ["mlflow"], "plan": {"rule": "x"}}, "data": {"mean": [0.5]}})
    assert flat == {"train.lr": "0.0001", "train.log": '["mlflow"]', "data.mean": "[0.5]"}


def test_tensorboard_holds_the_metrics_at_their_steps_and_a_resume_continues_them(synthetic_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import shutil

    run = tmp_path / "run"
    assert main(["train", "--data", str(synthetic_dir), "--out", str(run), "--epochs", "1", "--log", "tensorboard",
                 *FLAGS]) == 0
    shutil.copy(run / "last.pt", tmp_path / "epoch1.pt")
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    # a crash after epoch 3 was logged but whose last checkpoint was epoch 1's: the resume logs epochs 2-3 again,
    # and the events keep each step once
    shutil.copy(tmp_path / "epoch1.pt", run / "last.pt")
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    rows = _metrics(run)
    for key in ("train_loss", "val_dice", "val_loss", "images_per_s"):
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in got] == [r["step"] for r in rows], key  # each step once, the resumed epoch too
        assert [v for _, v in got] == pytest.approx([r[key] for r in rows], rel=1e-6), key
    assert "curves" in events.Tags()["images"]


def test_a_failing_tracker_costs_one_warning_and_training_finishes(synthetic_dir, tmp_path, caplog):
    class Broken:
        name = "mlflow"
        calls = 0

        def start(self, run, config, resume_id, step):
            return "id-1"

        def metrics(self, values, step):
            Broken.calls += 1
            raise ConnectionError("server at 127.0.0.1:5000 refused the connection")

        def files(self, paths):
            raise AssertionError("not called once the tracker failed")

        def finish(self):
            raise AssertionError("not called once the tracker failed")

    trackers = Trackers(tmp_path, ["mlflow"], {"train": {}}, made=[Broken()])
    with caplog.at_level("WARNING"):
        for step in range(5):
            trackers.log({"step": step, "train_loss": 1.0})
        trackers.files([tmp_path / "trackers.json"])
        trackers.close()
    warnings = [r for r in caplog.records if "--log mlflow failed" in r.getMessage()]
    assert len(warnings) == 1 and "refused the connection" in warnings[0].getMessage() and Broken.calls == 1
    assert json.loads((tmp_path / "trackers.json").read_text()) == {"mlflow": "id-1"}


def test_a_missing_tracker_library_is_one_line_and_writes_nothing(synthetic_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    assert main(["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "run"), "--log", "mlflow",
                 *FLAGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --log mlflow: mlflow is not installed: pip install 'unetseg[mlflow]'"], err
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exit_:  # a typo: argparse's one line with the choices
        main(["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "run"), "--log", "mlfow", *FLAGS])
    assert exit_.value.code == 2 and "invalid choice: 'mlfow'" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on 127.0.0.1, read until it listens, stopped by the test."""
    pytest.importorskip("mlflow")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                             "--default-artifact-root", str(tmp_path / "artifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _listening(proc, port)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        _kill(proc)


def _kill(proc: subprocess.Popen) -> None:
    """The server and the workers it started (its process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def _listening(proc: subprocess.Popen, port: int) -> None:
    """Read the server's log until it says it listens on ``port`` (no sleeping: the log is the clock)."""
    for line in proc.stderr:
        if f"127.0.0.1:{port}" in line and ("Listening" in line or "running on" in line.lower()):
            return
    raise AssertionError(f"mlflow server ended (code {proc.wait()}) before listening")


@pytest.mark.slow
def test_mlflow_server_gets_params_and_metrics_a_resume_continues_the_run_and_a_dead_server_costs_one_warning(
        mlflow_server, synthetic_dir, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    server, uri = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    run = tmp_path / "run"
    assert main(["train", "--data", str(synthetic_dir), "--out", str(run), "--epochs", "2", "--log", "mlflow",
                 *FLAGS]) == 0
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    assert json.loads((run / "trackers.json").read_text())["mlflow"] == run_id  # the same MLflow run
    client = MlflowClient(uri)
    got = client.get_run(run_id)
    assert got.data.params["train.lr"] == "0.003" and got.data.params["model.base_channels"] == "4"
    history = client.get_metric_history(run_id, "train_loss")
    rows = _metrics(run)
    assert sorted(m.step for m in history) == [r["step"] for r in rows]
    assert sorted(m.value for m in history) == pytest.approx(sorted(r["train_loss"] for r in rows))
    assert {a.path for a in client.list_artifacts(run_id)} >= {"config.json", "curves.png"}
    assert got.info.status == "FINISHED"

    # the server dies in the middle of a run: the run finishes, and says so once
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "unetseg", "train", "--data", str(synthetic_dir), "--out",
                             str(tmp_path / "second"), "--epochs", "4", "--log", "mlflow", *FLAGS],
                            stderr=subprocess.PIPE, text=True, env=env)
    _run_until(proc, "epoch 1/4")
    _kill(server)
    log = proc.stderr.read()
    assert proc.wait() == 0
    assert log.count("--log mlflow failed") == 1, log
    assert len(_metrics(tmp_path / "second")) == 4
