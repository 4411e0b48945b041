import gzip
import json

import numpy as np
import pytest

from tests.train.test_fit import tiny_config
from unetseg import Predictor, fit
from unetseg.cli.main import main
from unetseg.infer.submit import HEADER, _settings, rle_decode, rle_encode, write_submission


def test_a_hand_made_mask_encodes_as_counted_by_hand():
    mask = np.array([[0, 1, 1, 0],
                     [0, 0, 0, 1],
                     [1, 0, 0, 0]])
    # row-major, 1-based: pixels 2-3, then 8 (end of row 2) and 9 (start of row 3) form one run
    assert rle_encode(mask) == "2 2 8 2"
    assert rle_encode(np.zeros((3, 4))) == ""
    assert rle_encode(np.ones((3, 4))) == "1 12"
    assert rle_encode(np.eye(3)) == "1 1 5 1 9 1"


def test_encode_then_decode_gives_the_mask_back_exactly():
    rng = np.random.default_rng(0)
    for shape in [(1280, 1918), (7, 5), (1, 1)]:
        mask = (rng.random(shape) < 0.3).astype(np.uint8)
        mask.flat[0], mask.flat[-1] = 1, 1  # runs touching both ends
        assert np.array_equal(rle_decode(rle_encode(mask), shape), mask)
    assert not rle_decode("", (4, 4)).any()
    with pytest.raises(ValueError, match="odd"):
        rle_decode("1 2 3", (4, 4))
    with pytest.raises(ValueError, match="outside"):
        rle_decode("15 3", (4, 4))


def _rows(path):
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def test_submit_writes_every_photo_and_a_killed_run_goes_on_where_it_stopped(carvana_like, tmp_path):
    run = fit(tiny_config(carvana_like, epochs=1), tmp_path / "run")
    predictor = Predictor.from_run(run, device="cpu", batch_size=3)
    photos = carvana_like / "train"
    full = write_submission(predictor, photos, tmp_path / "full.csv.gz")
    rows = _rows(full)
    names = sorted(p.name for p in photos.iterdir())
    assert rows[0] == HEADER and [r.split(",")[0] for r in rows[1:]] == names
    for row in rows[1:4]:
        name, rle = row.split(",")
        expected = predictor.predict_image(photos / name)
        assert np.array_equal(rle_decode(rle, expected.shape), expected)  # the mask at the photo's size

    # a run killed after 5 rows, in the middle of writing the 6th
    out = tmp_path / "again.csv.gz"
    cut = "\n".join(rows[:6]) + "\n" + rows[6][: len(rows[6]) // 2]
    (tmp_path / "again.csv.gz.partial").write_text(cut)
    (tmp_path / "again.csv.gz.partial.json").write_text(json.dumps(_settings(predictor)))  # as the killed run left it
    predicted = []
    original = predictor.predict_classes
    predictor.predict_classes = lambda paths, **kw: (predicted.extend(paths), original(paths, **kw))[1]
    write_submission(predictor, photos, out)
    assert len(predicted) == len(names) - 5  # the five complete rows were kept, not predicted again
    assert _rows(out) == rows and not (tmp_path / "again.csv.gz.partial").exists()
    assert not (tmp_path / "again.csv.gz.partial.json").exists()
    with pytest.raises(ValueError, match="exists already"):
        write_submission(predictor, photos, out)


def test_submit_uses_the_runs_threshold_and_refuses_a_partial_file_it_did_not_write(carvana_like, tmp_path):
    run = fit(tiny_config(carvana_like, epochs=1), tmp_path / "run")
    photos = carvana_like / "train"
    image = sorted(photos.iterdir())[0]
    plain = Predictor.from_run(run, device="cpu")
    _, logits = next(plain.predict_paths([image]))
    probs = logits.sigmoid()
    middle = float(probs.median())  # a threshold that splits this photo's pixels
    strict = Predictor.from_run(run, device="cpu", threshold=middle)
    assert strict.predict_image(image).sum() < plain.predict_image(image).sum()
    out = write_submission(strict, photos, tmp_path / "t.csv.gz")
    name, rle = next(r for r in _rows(out)[1:] if r.startswith(image.name)).split(",")
    assert np.array_equal(rle_decode(rle, (64, 96)), strict.predict_image(image))

    partial = tmp_path / "x.csv.gz.partial"
    partial.write_text("")  # killed before the header: starts afresh
    write_submission(plain, photos, tmp_path / "x.csv.gz")
    assert len(_rows(tmp_path / "x.csv.gz")) == 13
    (tmp_path / "y.csv.gz.partial").write_text(HEADER + "\nother_car_01.jpg,1 5\n")
    (tmp_path / "y.csv.gz.partial.json").write_text(json.dumps(_settings(plain)))  # same settings, another image
    with pytest.raises(ValueError, match="other_car_01.jpg, which is not among the images"):
        write_submission(plain, photos, tmp_path / "y.csv.gz")
    (tmp_path / "w.csv.gz.partial").write_text(HEADER + "\n" + _rows(out)[1] + "\n")
    (tmp_path / "w.csv.gz.partial.json").write_text('{"model": "elsewhere"}')
    with pytest.raises(ValueError, match="other settings"):
        write_submission(plain, photos, tmp_path / "w.csv.gz")  # rows of another threshold: refused


def test_submit_command(carvana_like, tmp_path, capsys):
    run = fit(tiny_config(carvana_like, epochs=1), tmp_path / "run")
    out = tmp_path / "submission.csv.gz"
    assert main(["submit", "--model", str(run), "--images", str(carvana_like / "train"), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert len(_rows(out)) == 1 + 12
    assert main(["submit", "--model", str(run), "--images", str(carvana_like / "train"), "--out", str(out)]) == 2
    assert "exists already" in capsys.readouterr().err
