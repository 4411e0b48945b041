import numpy as np
import pytest

from tests.train.test_fit import tiny_config
from unetseg import Predictor, fit

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'unetseg[onnx]')")


def test_onnx_export_matches_pytorch_and_serves_predict(synthetic_dir, tmp_path):
    from unetseg.infer.export import export_onnx

    run = fit(tiny_config(synthetic_dir, epochs=1), tmp_path / "run")
    path, diff = export_onnx(run, image=synthetic_dir / "images" / "0003.png")
    assert path == run / "model.onnx" and diff < 1e-4
    torch_pred = Predictor.from_run(run, device="cpu", batch_size=3)
    onnx_pred = Predictor.from_run(run, batch_size=5, backend="onnxruntime")
    images = sorted((synthetic_dir / "images").iterdir())[:7]  # batches of 3 / 5: the batch axis is dynamic
    for image in images:
        a, b = torch_pred.predict_image(image), onnx_pred.predict_image(image)
        assert a.shape == (48, 64) and (a == b).mean() > 0.999
    # Any input size: the height and width axes are dynamic too.
    x = np.random.default_rng(0).random((2, 3, 37, 51), dtype=np.float32)
    out = onnx_pred.model.session.run(None, {"image": x})[0]
    assert out.shape == (2, 1, 37, 51)
