"""One decode per node under torchrun: the node's local rank 0 decodes the dataset into memory-mapped files, the
other processes of the node wait and map them read-only, so N processes hold one copy (in the page cache) instead
of N.

The files are written into ``<folder>.tmp-<pid>/`` and the folder is renamed to ``<folder>/`` only once complete, so
a process killed while decoding leaves nothing that a restart would use (the restart removes the leftover and decodes
again). A complete cache records a key of the data and settings it was made from; a restart of the same run reuses
it, a cache of anything else is replaced.

Every node decodes the whole dataset: each step's batch is drawn from the whole training split by the step's
generator (exact resume and the equivalence of N processes with one process accumulating N micro-batches depend
on it), so every node may need any image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np

from unetseg.config import RunConfig
from unetseg.data.check import scan
from unetseg.data.dataset import ArrayDataset, DataReport
from unetseg.data.encoding import MaskEncoding
from unetseg.data.pairing import Pairing

logger = logging.getLogger(__name__)

DONE_FILE = "done.json"


def cache_prefix(run_dir: Path) -> str:
    """``.cache-<8 hex digits of the run folder>``: runs sharing a ``--cache-dir`` never touch each other's caches."""
    return ".cache-" + hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]


def node_cache_folder(cfg: RunConfig, run_dir: Path, key: str) -> Path:
    """This node's cache folder for the data and settings of ``key``: in ``cfg.data.cache_dir`` (e.g. a node-local
    disk) or the run folder, named after the run, the key and the node (torchrun's GROUP_RANK), so that nodes sharing
    a file system do not share a cache."""
    root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir
    return root / f"{cache_prefix(run_dir)}-{key[:12]}-node{os.environ.get('GROUP_RANK', '0')}"


def cache_key(cfg: RunConfig, pairing: Pairing) -> str:
    """What a cache was decoded from: the decoding and split settings and each file's path, size and modification
    time."""
    data = cfg.data.to_dict()
    settings = {k: data[k] for k in ("image_size", "invert_mask", "snap_masks", "mask_values", "mask_mode",
                                     "mask_palette", "follow_channels", "follow_classes", "val_fraction",
                                     "split_seed", "group_pattern", "ignore_index", "classes", "class_names",
                                     "split", "val_data", "val_images", "val_masks", "val_ignore_masks")}
    if cfg.data.classes and Path(cfg.data.classes).is_file():  # an edited classes file decodes afresh
        stat = Path(cfg.data.classes).stat()
        settings["classes_file"] = [stat.st_size, stat.st_mtime_ns]
    settings["model"] = (cfg.model.in_channels, cfg.model.num_classes)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for pair in pairing.pairs:
        for path in (pair.image, pair.mask, pair.ignore):
            if path is not None:
                stat = path.stat()
                digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _attempt() -> str:
    """This start of the job: torchrun's run id and restart count (a cache holding errors serves only it)."""
    return f"{os.environ.get('TORCHELASTIC_RUN_ID', '')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def _report_to_json(report: DataReport) -> dict:
    enc = report.encoding
    return {"rule": report.rule, "pairs": report.pairs, "channels": report.channels,
            "image_sizes": [[w, h, n] for (w, h), n in report.image_sizes.items()],
            "encoding": None if enc is None else {"values": list(enc.values), "mode": enc.mode,
                                                  "palette": list(enc.palette) if enc.palette else None,
                                                  "ignore": list(enc.ignore)},
            "class_pixels": report.class_pixels, "void_pixels": report.void_pixels, "names": report.names,
            "ignore_masks": report.ignore_masks, "ignored_share": report.ignored_share, "errors": report.errors,
            "warnings": report.warnings, "notes": report.notes}


def _report_from_json(d: dict) -> DataReport:
    enc = d["encoding"]
    encoding = None if enc is None else MaskEncoding(tuple(enc["values"]), enc["mode"],
                                                       tuple(enc["palette"]) if enc["palette"] else None,
                                                       tuple(enc.get("ignore", ())))
    return DataReport(d["rule"], d["pairs"], Counter({(w, h): n for w, h, n in d["image_sizes"]}), d["channels"],
                      encoding, class_pixels=d["class_pixels"], void_pixels=d.get("void_pixels", 0),
                      names=d.get("names", []), ignore_masks=d["ignore_masks"], ignored_share=d["ignored_share"],
                      errors=d["errors"], warnings=d["warnings"], notes=d["notes"])


def _read_done(folder: Path) -> dict | None:
    try:
        return json.loads((folder / DONE_FILE).read_text())
    except (OSError, json.JSONDecodeError):  # absent, or being replaced
        return None


def _decode(cfg: RunConfig, pairing: Pairing, folder: Path, key: str, progress: bool) -> None:
    """Decode into ``<folder>.tmp-<pid>`` and rename it to ``folder`` when complete; remove this run's other caches
    on this node (other settings, or a decode killed before it finished)."""
    prefix, run, _, node = folder.name.split("-")
    for pattern in (f"{prefix}-{run}-*-{node}", f"{prefix}-{run}-*-{node}.tmp-*"):
        for old in folder.parent.glob(pattern):
            shutil.rmtree(old, ignore_errors=True)
    tmp = folder.parent / f"{folder.name}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    data, report = scan(cfg, progress=progress, cache_file=tmp / "images.npy", pairing=pairing)
    if data is not None:
        masks = np.lib.format.open_memmap(tmp / "masks.npy", mode="w+", dtype=data.masks.dtype,
                                          shape=data.masks.shape)
        masks[:] = data.masks
        for array in (masks, data.images):
            array.flush()
        del masks
    (tmp / DONE_FILE).write_text(json.dumps({"key": key, "report": _report_to_json(report), "pid": os.getpid(),
                                             "attempt": _attempt(),
                                             "seconds": round(time.perf_counter() - started, 2)}))
    for file in tmp.iterdir():
        with open(file, "rb") as fh:
            os.fsync(fh.fileno())
    os.rename(tmp, folder)
    logger.info("decoded %d pairs once for this node's processes into %s (%.1f s)", len(pairing.pairs), folder,
                time.perf_counter() - started)


def _usable(done: dict | None, key: str) -> bool:
    """A complete cache of ``key``; one that found errors only for the start that made it (the files may be fixed
    before the next, or a limit such as --max-image-pixels raised)."""
    return done is not None and done["key"] == key and (not done["report"]["errors"] or done["attempt"] == _attempt())


def load_node_cache(cfg: RunConfig, pairing: Pairing, run_dir: Path, local_rank: int,
                    progress: bool = False) -> tuple[ArrayDataset | None, DataReport, Path]:
    """The dataset decoded once per node: local rank 0 decodes (or reuses a complete cache of the same key), the
    others wait for it; every process maps the files read-only.

    Returns:
        (dataset or None when the checks found errors, report, the cache folder), the same on every process.
    """
    key = cache_key(cfg, pairing)
    folder = node_cache_folder(cfg, run_dir, key)
    if local_rank == 0:
        if _usable(_read_done(folder), key):
            logger.info("reusing this node's decoded images in %s", folder)
        else:
            _decode(cfg, pairing, folder, key, progress)
    while True:  # the other processes of the node: wait for local rank 0 (torchrun stops all if it fails)
        done = _read_done(folder)
        if _usable(done, key):
            break
        time.sleep(0.2)
    report = _report_from_json(done["report"])
    if report.errors or report.encoding is None:
        return None, report, folder
    images = np.load(folder / "images.npy", mmap_mode="r")
    masks = np.load(folder / "masks.npy", mmap_mode="r")
    return ArrayDataset(images, masks, list(pairing.pairs), report.encoding), report, folder
