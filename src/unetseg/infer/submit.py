"""Carvana submissions: ``img,rle_mask`` rows, one per image, the mask at the photo's size run-length encoded.

The competition's format: pixels numbered from 1 in row-major order (left to right, then top to bottom), each run of
foreground pixels written as ``start length``, the pairs separated by spaces; an empty mask is an empty string.

Rows are written as the images are predicted, to ``OUT.partial`` (plain CSV, flushed as it goes), so a killed run
loses at most the rows in flight: started again with the same command, it keeps the complete rows there, skips their
images and goes on (``OUT.partial.json`` records the model, threshold, TTA and tiles: other settings are refused). At the end the file is compressed to ``OUT`` (gzip when OUT ends in ``.gz``) and the partial one
removed. Memory stays flat: one batch of images and its logits at a time, whatever the number of images.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
from collections import deque
from concurrent.futures import Future
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unetseg.data.io import DECODE_THREADS
from unetseg.infer.pipeline import sized_writers
from unetseg.infer.predict import WRITE_BOUND, Predictor, list_images

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


def _settings(predictor: Predictor) -> dict:
    """What decides a row: a partial file written with other settings cannot be continued."""
    return {"model": predictor.source, "threshold": predictor.threshold, "tta": predictor.tta,
            "tile": list(predictor.tile) if predictor.tile else None, "overlap": predictor.overlap,
            **({"scales": list(predictor.scales)} if predictor.scales != (1.0,) else {})}


def _resume_partial(partial: Path, settings: dict, names: set[str]) -> set[str]:
    """The images already written to ``partial`` (read line by line: memory stays flat); a last line cut off by a
    kill is dropped from the file. A new (or empty) partial file gets the header and its settings file.

    Raises:
        ValueError: when the partial file was written with other settings, or holds rows of other images.
    """
    manifest = partial.with_name(partial.name + ".json")
    if not partial.is_file() or partial.stat().st_size <= len(HEADER) + 1:  # nothing written yet
        manifest.write_text(json.dumps(settings) + "\n")
        partial.write_text(HEADER + "\n")
        return set()
    if not manifest.is_file() or json.loads(manifest.read_text()) != settings:
        raise ValueError(f"{partial}: written with other settings ({manifest.name}: model, threshold, tta, tile); "
                         f"delete both files to start afresh, or run the command that wrote them")
    done: set[str] = set()
    complete = 0
    with open(partial, "rb") as fh:
        if fh.readline() != (HEADER + "\n").encode():
            raise ValueError(f"{partial}: not a submission in progress (no {HEADER} header); delete it")
        complete = fh.tell()
        for line in fh:
            if not line.endswith(b"\n"):
                break  # cut off by the kill
            name = line.split(b",", 1)[0].decode()
            if name not in names:
                raise ValueError(f"{partial}: holds a row for {name}, which is not among the images; delete it to "
                                 f"start afresh")
            done.add(name)
            complete += len(line)
    if complete != partial.stat().st_size:
        with open(partial, "r+b") as fh:
            fh.truncate(complete)
    return done


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
    done = _resume_partial(partial, _settings(predictor), {p.name for p in paths})
    todo = [p for p in paths if p.name not in done]
    if done:
        logger.info("%s: %d images written before, %d to go", partial, len(paths) - len(todo), len(todo))
    with open(partial, "a", encoding="ascii") as fh, tqdm(total=len(paths), initial=len(paths) - len(todo),
                                                          desc="submit", unit="img", disable=not progress) as bar:
        written = 0
        pending: deque[tuple[str, Future]] = deque()

        def write_next() -> None:  # in the images' order, whatever order the encodings finish in
            nonlocal written
            name, job = pending.popleft()
            fh.write(f"{name},{job.result()}\n")
            written += 1
            if written % flush_every == 0:
                fh.flush()
                os.fsync(fh.fileno())
            bar.update()

        with sized_writers(predictor.decode_times.median, DECODE_THREADS, WRITE_BOUND, "submit",
                           "run-length encoding") as writers:  # beside the model
            for path, mask in predictor.predict_classes(todo):  # the run's threshold, as predict uses it
                pending.append((path.name, writers.submit(rle_encode, mask)))
                while len(pending) > WRITE_BOUND:
                    write_next()
            while pending:
                write_next()
    tmp = out.with_name(f".{out.name}.tmp")
    opener = gzip.open if out.suffix == ".gz" else open
    with open(partial, "rb") as src, opener(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
    os.replace(tmp, out)
    partial.unlink()
    partial.with_name(partial.name + ".json").unlink(missing_ok=True)
    logger.info("wrote %d rows to %s", len(paths), out)
    return out
