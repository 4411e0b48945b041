"""The prediction pipeline: the same files as a plain one-image-at-a-time loop, stages bounded, masks packed."""

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from unetseg import Predictor, RunConfig, UNet, predict_folder
from unetseg.data.io import read_image
from unetseg.infer import pipeline
from unetseg.infer.predict import PNG_LEVEL, overlay
from unetseg.infer.submit import rle_encode, write_submission
from unetseg.metrics import logits_to_classes

GUARD = 60  # seconds: a wait that should end at once fails the test instead of hanging it


def _mixed_folder(root: Path) -> Path:
    """Images of three sizes, RGB and greyscale, PNG and JPEG."""
    rng = np.random.default_rng(0)
    folder = root / "images"
    folder.mkdir(parents=True)
    for i, (w, h) in enumerate([(96, 64), (96, 64), (80, 72), (96, 64), (61, 47), (80, 72), (96, 64)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pixels[h // 4:3 * h // 4, w // 4:3 * w // 4] //= 3  # something to find
        image = Image.fromarray(pixels)
        if i % 3 == 1:
            image = image.convert("L")
        image.save(folder / f"img{i}.{'jpg' if i % 2 else 'png'}")
    return folder


def _predictor(classes: int) -> Predictor:
    cfg = RunConfig()
    cfg.model.base_channels, cfg.model.depth, cfg.model.num_classes = 4, 2, classes
    cfg.data.image_size = (48, 32)
    if classes > 1:
        cfg.data.mask_values, cfg.data.mask_mode = list(range(classes)), "L"
    torch.manual_seed(classes)
    return Predictor(UNet(cfg.model), cfg, device="cpu", batch_size=3, amp="off")


def _plain(predictor: Predictor, paths: list[Path], out: Path) -> None:
    """The reference: no threads, no queues; the model's batches as the pipeline's (a batch's numerics may depend
    on its size), each image enlarged, classified, encoded and written in turn."""
    for start in range(0, len(paths), predictor.batch_size):
        chunk = paths[start:start + predictor.batch_size]
        loaded = [predictor._load(path) for path in chunk]
        scores = predictor.logits(np.stack([image for image, _ in loaded]))
        for path, (_, (width, height)), one in zip(chunk, loaded, scores.split(1)):
            one = F.interpolate(one, size=(height, width), mode="bilinear", align_corners=False)
            classes = logits_to_classes(one, predictor.threshold, torch.uint8)[0].numpy()
            predictor.encoding.to_image(classes).save(out / "masks" / f"{path.stem}.png", compress_level=PNG_LEVEL)
            full = read_image(path, None, predictor.config.model.in_channels)
            overlay(full, classes, predictor.encoding).save(out / "overlays" / f"{path.stem}.jpg", quality=90)


@pytest.mark.parametrize("classes", [1, 4], ids=["binary", "four-class"])
def test_the_pipeline_writes_the_files_of_a_plain_loop_byte_for_byte(tmp_path, classes):
    folder = _mixed_folder(tmp_path)
    predictor = _predictor(classes)
    written = predict_folder(predictor, folder, tmp_path / "pipeline", overlays=True)
    reference = tmp_path / "plain"
    (reference / "masks").mkdir(parents=True)
    (reference / "overlays").mkdir()
    paths = sorted(folder.iterdir())
    _plain(predictor, paths, reference)
    assert [p.name for p in written] == [f"{p.stem}.png" for p in paths]
    for sub in ("masks", "overlays"):
        names = sorted(p.name for p in (reference / sub).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "pipeline" / sub).iterdir())
        for name in names:
            assert (reference / sub / name).read_bytes() == (tmp_path / "pipeline" / sub / name).read_bytes(), name
    if classes == 1:  # submit: the same masks, in the images' order
        out = write_submission(predictor, folder, tmp_path / "submission.csv")
        rows = out.read_text().splitlines()[1:]
        expected = [f"{p.name},{rle_encode(np.asarray(Image.open(reference / 'masks' / f'{p.stem}.png')) > 0)}"
                    for p in paths]
        assert rows == expected


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 5), (3, 17, 29), (2, 8, 8)])
def test_binary_masks_pack_eight_pixels_a_byte_and_unpack_exactly(shape):
    masks = torch.from_numpy(np.random.default_rng(1).integers(0, 2, shape, dtype=np.uint8))
    packed = pipeline.pack_binary(masks)
    assert packed.dtype == torch.uint8 and packed.shape == (shape[0], -(-shape[1] * shape[2] // 8))
    assert np.array_equal(pipeline.unpack_binary(packed.numpy(), shape[1], shape[2]), masks.numpy())


def test_a_stalled_caller_leaves_the_producer_at_its_bound_then_everything_arrives_in_order():
    """The model's thread runs ahead until its queue is full and one more item is in its hands, never further: memory
    stays that of the bound."""
    produced = []
    changed = threading.Condition()

    def produce():
        for i in range(20):
            with changed:
                produced.append(i)
                changed.notify_all()
            yield i

    ahead = pipeline.Ahead(produce(), bound=3)
    with changed:
        assert changed.wait_for(lambda: len(produced) == 4, timeout=GUARD)  # 3 queued, the 4th waiting to be put
    assert ahead._queue.full() and len(produced) == 4
    assert list(ahead) == list(range(20))


def test_an_error_on_the_model_thread_reaches_the_caller_and_leaving_early_stops_it():
    def broken():
        yield 1
        raise RuntimeError("CUDA out of memory (on purpose)")

    with pytest.raises(RuntimeError, match="on purpose"):
        list(pipeline.Ahead(broken(), 2))
    endless = pipeline.Ahead(iter(range(10 ** 9)), 2)
    for item in endless:
        if item == 5:
            break
    assert not endless._thread.is_alive()  # leaving the loop stopped the thread and joined it


def test_writers_hold_at_most_their_bound_in_flight():
    release, started = threading.Event(), threading.Event()
    order: list[str] = []

    def slow() -> None:
        started.set()
        assert release.wait(GUARD)
        order.append("first write done")

    with pipeline.Writers(workers=1, bound=2) as writers:
        writers.submit(slow)
        assert started.wait(GUARD)
        writers.submit(order.append, "second")  # 2 in flight: returns at once
        third = threading.Thread(target=lambda: (writers.submit(order.append, "third"),
                                                 order.append("third submitted")))
        third.start()
        release.set()
        third.join(GUARD)
    assert order.index("first write done") < order.index("third submitted")


def test_a_failed_write_raises_at_the_next_submit_or_at_close(tmp_path):
    def fail() -> None:
        raise OSError("disk full (on purpose)")

    with pytest.raises(OSError, match="on purpose"):
        with pipeline.Writers(workers=1, bound=1) as writers:
            writers.submit(fail)
            writers.submit(lambda: None)  # waits for the failed one: raises here


def test_a_bad_file_stops_the_model_thread_with_the_error(tmp_path):
    """predict (an ignore mask that does not fit its image) and evaluate (a mask that does not): the error, and no
    model thread left behind, though the traceback keeps the functions' locals."""
    from unetseg import evaluate_pairs, find_pairs
    from unetseg.config import DataConfig
    from unetseg.data.errors import DataError

    folder = _mixed_folder(tmp_path / "d")
    for sub in ("masks", "fov"):
        (tmp_path / "d" / sub).mkdir()
    for i, path in enumerate(sorted(folder.iterdir())):
        w, h = Image.open(path).size
        size = (w, h) if i != 2 else (w + 1, h)  # the third image's mask and ignore mask do not fit it
        for sub in ("masks", "fov"):
            Image.fromarray(np.full(size[::-1], 255, np.uint8)).save(tmp_path / "d" / sub / f"{path.stem}.png")
    predictor = _predictor(1)
    with pytest.raises(DataError, match="img2.png: ignore mask is") as err:
        predict_folder(predictor, folder, tmp_path / "out", overlays=False,
                       ignore=DataConfig(ignore_masks=str(tmp_path / "d" / "fov")))
    assert err.value.__traceback__ is not None
    assert not [t for t in threading.enumerate() if t.name == "unetseg-model"]
    with pytest.raises(DataError, match="img2.png: mask is"):
        evaluate_pairs(predictor, find_pairs(tmp_path / "d"))
    assert not [t for t in threading.enumerate() if t.name == "unetseg-model"]


class _StalledEncoding:
    """The predictor's mask encoding, whose writes after the first wait for ``release`` (not for a time)."""

    def __init__(self, encoding, release: threading.Event, finished: list) -> None:
        self._encoding, self._release, self._finished = encoding, release, finished

    def to_image(self, classes):
        if self._finished:  # the first write sizes the pool, in the caller: let it through
            assert self._release.wait(GUARD)
        self._finished.append(1)
        return self._encoding.to_image(classes)

    def __getattr__(self, name):
        return getattr(self._encoding, name)


def test_a_stalled_writer_lets_decoding_and_the_model_run_to_their_bounds_and_no_further(tmp_path, monkeypatch):
    """predict_folder with every write after the first stalled: the decoders and the model keep going until their
    queues are full, then wait; the images in flight never exceed what the queues hold."""
    from unetseg.infer import predict as predict_module

    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(60):
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    monkeypatch.setattr(predict_module, "WRITE_BOUND", 3)
    predictor = _predictor(1)
    predictor.batch_size = 2
    release, finished = threading.Event(), []
    predictor.encoding = _StalledEncoding(predictor.encoding, release, finished)
    loaded, in_flight = [], []
    changed = threading.Condition()
    load = predictor._load

    def counted(path):
        result = load(path)
        with changed:
            loaded.append(path)
            in_flight.append(len(loaded) - len(finished))
            changed.notify_all()
        return result

    monkeypatch.setattr(predictor, "_load", counted)
    batch, writes = predictor.batch_size, predict_module.WRITE_BOUND
    # held while the writers stall: the writes queued and the one waiting to be queued, the caller's batch, the
    # model's queue and the batch in its hands, the batches decoded ahead and the one being decoded
    bound = writes + 1 + batch * (1 + pipeline.MODEL_AHEAD + 1 + pipeline.DECODE_AHEAD + 1)
    worker = threading.Thread(target=predict_folder, args=(predictor, folder, tmp_path / "out"),
                              kwargs={"overlays": False})
    worker.start()
    with changed:  # the model and the decoders went on past the caller's batch and the writers' queue
        assert changed.wait_for(lambda: len(loaded) >= writes + 1 + batch * (1 + pipeline.MODEL_AHEAD), GUARD)
    assert len(loaded) < 60 and len(finished) == 1
    release.set()
    worker.join(GUARD)
    assert not worker.is_alive()
    assert len(loaded) == 60 and len(list((tmp_path / "out" / "masks").iterdir())) == 60
    assert max(in_flight) <= bound, (max(in_flight), bound)


@pytest.mark.parametrize("decode_ms, write_ms, decoders, most, expected", [
    (2.2, 6.2, 8, 16, 16),   # the H200's host: writes cost 3x, capped
    (2.2, 6.2, 2, 16, 6),    # 2 x 6.2 / 2.2 = 5.6 -> 6
    (4.0, 2.0, 2, 4, 1),     # writes cheaper than decodes: fewer threads
    (4.0, 0.01, 8, 16, 1),   # at least one
    (3.0, 6.0, 2, 4, 4),     # exactly in proportion
])
def test_writer_threads_follow_the_measured_costs(decode_ms, write_ms, decoders, most, expected):
    assert pipeline.write_threads(decode_ms, write_ms, decoders, most) == expected


def test_sized_writers_time_the_first_write_then_size_their_pool(caplog):
    caplog.set_level("INFO", logger="unetseg.infer.pipeline")
    done = []
    with pipeline.sized_writers(lambda: 1e-6, decoders=2, bound=4, command="predict", what="mask") as writers:
        first = writers.submit(done.append, "first")
        assert first.done() and done == ["first"]  # run by the caller, timed
        assert writers.workers == pipeline.WRITE_THREADS  # decodes cost nothing here: as many writers as allowed
        for i in range(5):
            writers.submit(done.append, i)
    assert sorted(map(str, done)) == ["0", "1", "2", "3", "4", "first"]
    assert "stage costs on this machine: decode 0.0 ms, write (mask)" in caplog.text


def test_the_predictors_decode_opens_each_file_once_and_reads_what_read_image_reads(tmp_path, monkeypatch):
    import PIL.Image

    folder = _mixed_folder(tmp_path)
    opens = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: (opens.append(a[0]), real_open(*a, **k))[1])
    predictor = _predictor(1)
    for path in sorted(folder.iterdir()):
        opens.clear()
        image, size = predictor._load(path)
        assert len(opens) == 1
        assert size == real_open(path).size
        assert np.array_equal(image, read_image(path, predictor.config.data.image_size, 3))
