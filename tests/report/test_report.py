"""Learning curves, error overlays and the HTML report (read back in a real browser where Chromium is installed)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetseg import RunConfig, fit, write_report
from unetseg.cli.main import main
from unetseg.data.encoding import IGNORE
from unetseg.drawing.curves import plot_curves
from unetseg.drawing.overlays import EDGE, EXTRA, MISSED, error_overlay
from tests.train.test_fit import tiny_config


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, synthetic_dir: Path) -> tuple[Path, Path]:
    """Two tiny runs that differ in learning rate and width: 2 and 3 epochs, 6 validation images each."""
    root = tmp_path_factory.mktemp("runs")
    a = fit(tiny_config(synthetic_dir, epochs=2), root / "narrow")
    cfg = tiny_config(synthetic_dir, epochs=3, lr=1e-2)
    cfg.model.base_channels = 8
    b = fit(cfg, root / "wide")
    return a, b


def test_curves_are_drawn_after_the_first_epoch_and_redrawn_after_the_next(synthetic_dir, tmp_path):
    run = fit(tiny_config(synthetic_dir, epochs=1), tmp_path / "run")
    first = (run / "curves.png").read_bytes()
    with Image.open(io.BytesIO(first)) as image:
        assert image.format == "PNG" and image.size == (1200, 360)
    cfg = RunConfig.load(run / "config.json")
    cfg.train.epochs = 2
    fit(cfg, run, resume=True)
    assert (run / "curves.png").read_bytes() != first


def test_curves_are_redrawn_within_their_share_of_the_training_time(tmp_path):
    from unetseg.drawing.curves import CurvesPainter

    metrics = tmp_path / "metrics.jsonl"
    line = {"epoch": 1, "train_loss": 0.5, "lr": 1e-3, "val_loss": 0.6, "val_dice": 0.7}
    metrics.write_text(json.dumps(line) + "\n")
    painter = CurvesPainter(tmp_path, share=1e-9)  # after a drawing, the next only at the end
    painter()
    first = (tmp_path / "curves.png").read_bytes()
    metrics.write_text(metrics.read_text() + json.dumps({**line, "epoch": 2, "train_loss": 0.3}) + "\n")
    painter()
    assert (tmp_path / "curves.png").read_bytes() == first
    painter(final=True)
    assert (tmp_path / "curves.png").read_bytes() != first


def test_curves_of_several_runs_and_per_class_dice_draw_one_png():
    records = [{"epoch": e, "train_loss": 1 / e, "lr": 1e-3, "val_loss": 1.2 / e, "val_dice": 1 - 1 / (e + 1),
                "val_dice_per_class": [0.5, None if e == 2 else 0.7]} for e in range(1, 5)]
    png = plot_curves({"a": records, "b": records[:2], "empty": []})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_curves({"a": records}) != plot_curves({"a": records[:3]})  # the data reaches the picture


def test_error_overlay_colours_missed_and_extra_pixels_and_dims_what_is_not_scored():
    image = np.full((6, 8, 3), 100, dtype=np.uint8)
    target = np.zeros((6, 8), dtype=np.uint8)
    target[:, :4] = 1                    # left half is foreground
    predicted = np.zeros((6, 8), dtype=np.int64)
    predicted[:, 2:6] = 1                # columns 2-3 right, 0-1 missed, 4-5 extra
    target[0, 7] = IGNORE
    out = np.asarray(error_overlay(image, predicted, target, alpha=1.0))
    assert [tuple(out[3, c]) == MISSED for c in range(8)] == [True, True] + [False] * 6
    assert [tuple(out[3, c]) == EXTRA for c in range(8)] == [False] * 4 + [True, True, False, False]
    # the predicted edge: two pixels inside the prediction (columns 2-5), drawn where the prediction is right
    assert [tuple(out[3, c]) == EDGE for c in range(8)] == [False, False, True, True, False, False, False, False]
    assert tuple(out[3, 6]) == (100, 100, 100) and tuple(out[3, 7]) == (100, 100, 100)  # right: the image itself
    assert tuple(out[0, 7]) == (35, 35, 35)             # not scored: dimmed


def test_evaluate_out_writes_the_overlays_of_the_worst_and_best_images(two_runs, tmp_path, capsys):
    run = two_runs[1]
    assert main(["evaluate", "--model", str(run), "--split", "val", "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["split"] == "val" and summary["images"] == 6
    scores = sorted(float(r) for r in re.findall(r"^[^,]+,([^,]+),", (tmp_path / "eval" / "per_image.csv")
                                                  .read_text(), re.M)[1:] if r != "nan")
    worst, best = summary["worst"], summary["best"]
    assert len(worst) + len(best) == len(scores)  # 6 images: each drawn once, 3 worst and 3 best
    assert [w["dice"] for w in worst] == scores[:len(worst)]
    assert [b["dice"] for b in best] == scores[::-1][:len(best)]
    for item in worst + best:
        with Image.open(tmp_path / "eval" / item["overlay"]) as image:
            assert image.size == (64, 48)


def test_report_of_two_runs_names_both_shows_their_differences_and_embeds_every_image(two_runs, tmp_path):
    out = write_report(list(two_runs), tmp_path / "report.html")
    page = out.read_text()
    assert "unetseg report: narrow, wide" in page
    images = re.findall(r'<img [^>]*src="data:image/(png|jpeg);base64,', page)
    overlays = [json.loads((r / "eval" / "summary.json").read_text()) for r in two_runs]
    assert images.count("png") == 1  # both runs' curves on one plot
    assert images.count("jpeg") == sum(len(s["worst"]) + len(s["best"]) for s in overlays) > 0
    diff_rows = re.findall(r"<tr class=diff><th>([^<]+)</th>", page)
    assert {"model.base_channels", "train.lr", "train.epochs"} <= set(diff_rows)
    for summary in overlays:
        assert f'{summary["mean_dice"]:.4f}' in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "<script" not in page  # nothing to fetch or run


def test_report_command_defaults_to_the_run_folder_and_names_a_missing_run(two_runs, tmp_path, capsys):
    assert main(["report", str(two_runs[0])]) == 0
    assert (two_runs[0] / "report.html").is_file()
    assert str(two_runs[0] / "report.html") in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert f"{tmp_path / 'nothing'}: not a run folder" in capsys.readouterr().err


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    pytest.skip("Chromium is not installed (make test installs Debian's chromium where it runs as root with "
                "apt-get): the report is not checked in a browser")


# Appended to a copy of the report: after the page has loaded, it writes what the browser rendered into the DOM,
# which --dump-dom prints. The report itself holds no script.
_PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({title: document.title, images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    text: document.body.innerText});
  document.body.appendChild(out);
});
</script>"""


def test_the_report_renders_in_headless_chromium_with_every_image_loaded(two_runs, tmp_path):
    browser = _chromium()
    report = write_report(list(two_runs), tmp_path / "report.html")
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", _PROBE + "</body>"))
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no rendered page: {done.stderr[-500:]}"
    import html as html_lib

    seen = json.loads(html_lib.unescape(found.group(1)))
    assert seen["title"] == "unetseg report: narrow, wide"
    assert seen["images"] == len(re.findall(r"<img ", report.read_text())) > 1
    assert seen["loaded"] == seen["images"]  # every embedded image decoded: naturalWidth > 0
    for run in two_runs:
        summary = json.loads((run / "eval" / "summary.json").read_text())
        assert f'{summary["mean_dice"]:.4f}' in seen["text"]
    assert "narrow" in seen["text"] and "wide" in seen["text"] and "Learning curves" in seen["text"]


def test_report_embeds_only_the_evaluations_own_files_and_evaluate_keeps_other_jpegs(two_runs, tmp_path):
    run = two_runs[0]
    write_report([run], tmp_path / "first.html")  # makes RUN/eval
    (run / "eval" / "overlays" / "mine.jpg").write_bytes(b"not ours")
    secret = run / "secret.jpg"
    Image.new("RGB", (8, 8)).save(secret)
    summary_file = run / "eval" / "summary.json"
    summary = json.loads(summary_file.read_text())
    summary["worst"][0]["overlay"] = "../secret.jpg"  # a crafted summary pointing outside the evaluation
    summary_file.write_text(json.dumps(summary))
    page = write_report([run], tmp_path / "report.html").read_text()
    assert page.count("data:image/jpeg") == len(summary["worst"]) + len(summary["best"]) - 1
    assert main(["evaluate", "--model", str(run), "--split", "val", "--out", str(run / "eval")]) == 0
    assert (run / "eval" / "overlays" / "mine.jpg").read_bytes() == b"not ours"  # only its own overlays replaced


def test_a_runs_own_inference_settings_are_evaluated_once_and_named(two_runs, tmp_path):
    import shutil

    run = Path(shutil.copytree(two_runs[0], tmp_path / "scene"))
    shutil.rmtree(run / "eval", ignore_errors=True)
    config = json.loads((run / "config.json").read_text())
    config["data"].update(predict_scales=[1.0, 1.5], predict_tta=True)  # as the plan's scene recipe records them
    (run / "config.json").write_text(json.dumps(config))
    page = write_report([run], tmp_path / "first.html").read_text()
    summary_file = run / "eval" / "summary.json"
    summary = json.loads(summary_file.read_text())
    assert (summary["scales"], summary["tta"]) == ([1.0, 1.5], True) and "flip TTA, scales 1 1.5" in page
    made = summary_file.stat().st_mtime_ns
    write_report([run], tmp_path / "second.html")
    assert summary_file.stat().st_mtime_ns == made  # fresh: not evaluated again
    config["data"].update(predict_scales=[1.0])  # other settings now: evaluated again
    (run / "config.json").write_text(json.dumps(config))
    write_report([run], tmp_path / "third.html")
    assert json.loads(summary_file.read_text())["scales"] == [1.0]
