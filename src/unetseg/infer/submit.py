"""Carvana submissions: ``img,rle_mask`` rows, one per image, the mask at the photo's size run-length encoded.

The competition's format: pixels numbered from 1 in row-major order (left to right, then top to bottom), each run of
foreground pixels written as ``start length``, the pairs separated by spaces; an empty mask is an empty string.

Rows are written as the images are predicted, to ``OUT.partial`` (plain CSV, flushed as it goes), so a killed run
loses at most the rows in flight: started again with the same command, it keeps the complete rows there, skips their
images and goes on. At the end the file is compressed to ``OUT`` (gzip when OUT ends in ``.gz``) and the partial one
removed. Memory stays flat: one batch of images and its logits at a time, whatever the number of images.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unetseg.infer.predict import Predictor, list_images

logger = logging.getLogger(__name__)

HEADER = "img,rle_mask"


def rle_encode(mask: np.ndarray) -> str:
    """Run-length encode a binary mask (H, W): ``"start length start length ..."``, 1-based starts in row-major
    order; ``""`` for an empty mask."""
    pixels = np.concatenate([[False], np.asarray(mask).ravel() > 0, [False]])
    edges = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1  # 1-based positions where a run starts or ends + 1
    starts, ends = edges[::2], edges[1::2]
    return " ".join(f"{s} {n}" for s, n in zip(starts.tolist(), (ends - starts).tolist()))


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """The binary mask (H, W) uint8 {0, 1} of an :func:`rle_encode` string.

    Raises:
        ValueError: when the string is not pairs of integers or a run falls outside the image.
    """
    numbers = np.array(rle.split(), dtype=np.int64)
    if len(numbers) % 2:
        raise ValueError(f"run-length string has an odd number of values ({len(numbers)})")
    flat = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for start, length in zip(numbers[::2].tolist(), numbers[1::2].tolist()):
        if start < 1 or length < 1 or start - 1 + length > flat.size:
            raise ValueError(f"run {start} {length} falls outside a {shape[1]}x{shape[0]} image")
        flat[start - 1:start - 1 + length] = 1
    return flat.reshape(shape)


def _resume_partial(partial: Path) -> set[str]:
    """The images already written to ``partial``; a last line cut off by a kill is dropped from the file."""
    if not partial.is_file():
        partial.write_text(HEADER + "\n")
        return set()
    data = partial.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(partial, "r+b") as fh:
            fh.truncate(len(complete))
    lines = complete.decode().splitlines()
    if not lines or lines[0] != HEADER:
        raise ValueError(f"{partial}: not a submission in progress (no {HEADER} header); delete it to start afresh")
    return {line.split(",", 1)[0] for line in lines[1:]}


def write_submission(predictor: Predictor, images: str | Path, out: str | Path, progress: bool = False,
                     flush_every: int = 32) -> Path:
    """Predict every image of ``images`` (a folder or a file) and write the submission ``out``.

    Args:
        predictor: a binary model (one output class).
        flush_every: rows between flushes of the partial file (a kill loses at most these).

    Returns:
        ``out``.

    Raises:
        ValueError: for a model with several classes, or when ``out`` exists already (nothing to resume).
    """
    out = Path(out)
    if predictor.config.model.num_classes != 1:
        raise ValueError(f"submit writes binary masks; this model has {predictor.config.model.num_classes} classes")
    partial = out.with_name(out.name + ".partial")
    if out.exists() and not partial.exists():
        raise ValueError(f"{out}: exists already; delete it to write it again")
    paths = list_images(images)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _resume_partial(partial)
    todo = [p for p in paths if p.name not in done]
    if done:
        logger.info("%s: %d images written before, %d to go", partial, len(paths) - len(todo), len(todo))
    with open(partial, "a", encoding="ascii") as fh, tqdm(total=len(paths), initial=len(paths) - len(todo),
                                                          desc="submit", unit="img", disable=not progress) as bar:
        for i, (path, logits) in enumerate(predictor.predict_paths(todo)):
            mask = (logits[0] > 0).cpu().numpy()
            fh.write(f"{path.name},{rle_encode(mask)}\n")
            if (i + 1) % flush_every == 0:
                fh.flush()
                os.fsync(fh.fileno())
            bar.update()
    tmp = out.with_name(f".{out.name}.tmp")
    opener = gzip.open if out.suffix == ".gz" else open
    with open(partial, "rb") as src, opener(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
    os.replace(tmp, out)
    partial.unlink()
    logger.info("wrote %d rows to %s", len(paths), out)
    return out
