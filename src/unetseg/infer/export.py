"""Export a trained run to ONNX (dynamic batch, height and width) and check it against PyTorch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from unetseg.checkpoint import load_model
from unetseg.data.errors import DataError
from unetseg.data.io import read_image
from unetseg.data.transforms import to_float
from unetseg.model.unet import ENCODER_STRIDE

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise DataError("onnxruntime is not installed: pip install 'unetseg[onnx]'") from None
    return onnxruntime


def export_onnx(run_dir: str | Path, out: str | Path | None = None, image: str | Path | None = None) -> tuple[Path, float]:
    """Write the run's model as ONNX (opset 18, input ``image`` (N, C, H, W) float, output ``logits``) and compare
    ONNX Runtime with PyTorch on one image.

    Args:
        run_dir: a run folder.
        out: the .onnx file (default ``run_dir/model.onnx``).
        image: the image to check on (default: a random one at the training size).

    Returns:
        (path of the ONNX file, max abs difference of the logits).
    """
    ort = _onnxruntime()
    model, cfg = load_model(run_dir)
    out = Path(out) if out else Path(run_dir) / ONNX_FILE
    width, height = cfg.data.image_size
    if cfg.model.pretrained():  # traced at a multiple of the encoder's stride (at others torch.export cannot prove
        # its padding guards); the graph pads any size (tests: 37x51 and 480x320 match PyTorch)
        width, height = (max(64, -(-v // ENCODER_STRIDE) * ENCODER_STRIDE) for v in (width, height))
    example = torch.randn(1, cfg.model.in_channels, height, width)
    dims = {0: torch.export.Dim("batch", max=4096), 2: torch.export.Dim("height", min=16, max=16384),
            3: torch.export.Dim("width", min=16, max=16384)}
    torch.onnx.export(model, (example,), str(out), input_names=["image"], output_names=["logits"],
                      dynamic_shapes={"x": dims}, dynamo=True, verbose=False)
    if image is not None:
        pixels = read_image(image, cfg.data.image_size, cfg.model.in_channels)[None]
        x = to_float(torch.from_numpy(pixels), cfg.data.mean, cfg.data.std)
    else:
        x = torch.rand(2, cfg.model.in_channels, height + 3, width + 5)  # odd size, batch 2: the dynamic axes
    with torch.inference_mode():
        ref = model(x).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    diff = float(np.abs(got - ref).max())
    logger.info("wrote %s; ONNX Runtime vs PyTorch on %s: max abs difference %.3g", out, image or "a random input", diff)
    return out, diff


class OnnxModel:
    """An ONNX Runtime session that stands in for the torch model: (N, C, H, W) float tensor -> logits tensor."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: not found; write it with: unetseg export --model {path.parent} --format onnx")
        ort = _onnxruntime()
        self.session = ort.InferenceSession(str(path), providers=ort.get_available_providers())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"image": x.float().contiguous().cpu().numpy()})[0])
