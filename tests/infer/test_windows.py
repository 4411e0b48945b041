import numpy as np
import pytest
import torch

from tests.train.test_fit import tiny_config
from unetseg import Predictor, fit, predict_folder
from unetseg.cli.main import main
from unetseg.data.io import read_mask
from unetseg.infer.windows import gaussian_weights, sliding_window_logits, window_starts


def test_windows_cover_the_image_with_the_overlap_asked():
    assert window_starts(100, 40, 0.5) == [0, 20, 40, 60]
    assert window_starts(100, 40, 0.0) == [0, 40, 60]  # the last window ends at the edge
    assert window_starts(30, 40, 0.5) == [0]
    w = gaussian_weights(24, 32)
    assert w.shape == (24, 32) and w.max() == 1.0 and w.min() > 0
    assert torch.equal(w, w.flip(0)) and torch.equal(w, w.flip(1)) and w[12, 16] > w[0, 0]


@pytest.mark.parametrize("size", [(70, 50), (20, 10), (32, 24)])
def test_every_pixel_gets_the_score_of_its_own_place(size):
    """With a 'model' that scores each pixel by its own value, the blended windows give the image back exactly:
    windows are placed, weighted and padded right."""
    w, h = size
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    calls = []

    def forward(windows):
        calls.append(len(windows))
        return torch.from_numpy(windows[..., :2].astype(np.float32)).permute(0, 3, 1, 2)

    out = sliding_window_logits(forward, image, (32, 24), overlap=0.5, batch_size=3)
    assert out.shape == (2, h, w)
    torch.testing.assert_close(out, torch.from_numpy(image[..., :2].astype(np.float32)).permute(2, 0, 1))
    assert max(calls) <= 3


def test_windows_agree_with_whole_image_prediction(carvana_like, tmp_path):
    run = fit(tiny_config(carvana_like, epochs=4), tmp_path / "run")
    whole = Predictor.from_run(run, device="cpu", amp="off")
    one = Predictor.from_run(run, device="cpu", amp="off", tile=(64, 48))  # one window: the whole input
    image = sorted((carvana_like / "train").iterdir())[0]
    (_, a), (_, b) = next(whole.predict_paths([image])), next(one.predict_paths([image]))
    torch.testing.assert_close(a, b)
    tiled = Predictor.from_run(run, device="cpu", amp="off", tile=(48, 32), overlap=0.5)  # 2 x 2 windows
    for photo in sorted((carvana_like / "train").iterdir())[:4]:
        (_, a), (_, b) = next(whole.predict_paths([photo])), next(tiled.predict_paths([photo]))
        # the same scores up to the windows' borders (windows misplaced or mirrored: about 0.6-0.8 here)
        assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.98
    written = predict_folder(tiled, carvana_like / "train", tmp_path / "pred", overlays=False)
    assert read_mask(written[0]).values.shape == (64, 96)  # the photo's own size
    assert main(["predict", "--model", str(run), "--input", str(image), "--out", str(tmp_path / "cli"), "--tile",
                 "48x32", "--overlap", "0.25"]) == 0


def test_a_large_image_is_predicted_by_windows_in_bounded_memory(tmp_path):
    """A 3000 x 3000 photo through a patch run's predictor, in a fresh process: the growth of its peak memory stays
    near the maps the windows need (image, scores, weights, mask: ~0.15 GB), far below a whole-image forward pass
    (several GB at this size). The 10,000 x 10,000 figure is benchmarks/large_image.py's."""
    import subprocess
    import sys

    from PIL import Image

    side = 3000
    yy, xx = np.mgrid[0:side, 0:side]
    Image.fromarray(np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)).save(tmp_path / "big.jpg")
    script = f"""
import resource, torch
from unetseg import Predictor, RunConfig, UNet, predict_folder
cfg = RunConfig(); cfg.model.base_channels = 8; cfg.data.image_size = cfg.data.patch = (128, 128)
torch.manual_seed(0)
predictor = Predictor(UNet(cfg.model), cfg, device="cpu", batch_size=8)
predictor.logits(__import__("numpy").zeros((8, 128, 128, 3), "uint8"))  # warm-up: kernels and allocator
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
predict_folder(predictor, r"{tmp_path / 'big.jpg'}", r"{tmp_path / 'pred'}", overlays=False)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    growth_gib = float(out.stdout.strip().splitlines()[-1])
    assert growth_gib < 0.6, growth_gib
    assert read_mask(tmp_path / "pred" / "masks" / "big.png").values.shape == (side, side)
