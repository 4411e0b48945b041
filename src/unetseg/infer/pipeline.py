"""The prediction pipeline shared by predict, evaluate and submit.

Files are decoded on a pool of threads into each batch's staging buffer. The model runs on a thread of its own, a
bounded number of batches ahead of the caller. The caller enlarges the scores to each image's size, classifies them
and brings the masks to host memory, and writers encode and write them on a pool of their own. Each stage waits
only where its bounded queue is full or empty, so the slowest stage sets the pace. The model no longer waits for a
batch's enlargement or for the writes (the lockstep the pipeline had before).

Masks leave a GPU small: a binary model's masks bit-packed (8x fewer bytes), class maps as uint8, copied into pinned
host buffers.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import time
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

import numpy as np
import torch

logger = logging.getLogger(__name__)
T = TypeVar("T")
Item = TypeVar("Item")

#: Batches the model may run ahead of the enlargement (each holds the scores of one batch at the model's size).
MODEL_AHEAD = 2
#: Batches decoded ahead of the model.
DECODE_AHEAD = 2
#: The most threads that encode and write: a mask's PNG costs about 3x a draft decode (benchmarks/predict_speed.py
#: --stages: 6.2 against 2.2 ms a Carvana photo on the H200's host), so writers may get twice the decoders' threads.
WRITE_THREADS = min(16, 2 * (os.cpu_count() or 1))


def write_threads(decode_ms: float, write_ms: float, decoders: int, most: int = WRITE_THREADS) -> int:
    """Writer threads that keep pace with ``decoders`` decoding threads, from the measured costs of one image in
    each stage: the threads in proportion to the costs (so both pools finish an image in the same time), at least 1,
    at most ``most``."""
    need = math.ceil(decoders * write_ms / max(decode_ms, 1e-3) - 1e-9)
    return max(1, min(most, need))


class Ahead(Generic[T]):
    """Iterate ``produce`` on a thread of its own, at most ``bound`` items ahead of the caller. Its exceptions reach
    the caller; a caller that stops early (an error, a ``break``) stops it. ``starved`` counts the caller's waits on
    an empty queue, ``taken`` the items taken: the producer bounds the pace where most takes wait.

    Args:
        produce: the producing iterator (run on the thread, closed there).
        bound: the most items waiting.
    """

    _DONE = object()

    def __init__(self, produce: Iterator[T], bound: int) -> None:
        self._queue: queue.Queue = queue.Queue(max(1, bound))
        self._stop = threading.Event()
        self.starved = self.taken = 0
        self._thread = threading.Thread(target=self._work, args=(produce,), daemon=True, name="unetseg-model")
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, produce: Iterator[T]) -> None:
        try:
            for item in produce:
                if not self._put((True, item)):
                    break
            else:
                self._put((True, self._DONE))
        except BaseException as err:  # noqa: BLE001 - handed to the caller, raised there
            self._put((False, err))
        finally:
            close = getattr(produce, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                self.starved += self._queue.empty()
                ok, item = self._queue.get()
                if not ok:
                    raise item
                if item is self._DONE:
                    return
                self.taken += 1
                yield item
        finally:
            self._stop.set()
            self._thread.join()

    def bound_by(self) -> str:
        """Which side set the pace so far: "model" (the caller waited on most takes) or "enlarge/write"."""
        return "model" if self.starved * 2 > max(1, self.taken) else "enlarge/write"


def decoded_batches(items: Sequence[Item], load: Callable[[Item], tuple[np.ndarray, object]], batch_size: int,
                    workers: int, ahead: int = DECODE_AHEAD) -> Iterator[tuple[np.ndarray | list[np.ndarray], list]]:
    """Per batch of ``items``: the images ``load`` decoded, written by the decoding threads into one staging buffer
    (N, H, W, C) where they share a shape (else a list), and the second values ``load`` returned. The next
    ``ahead`` batches decode while the caller works."""

    def batch_of(chunk: Sequence[Item]) -> tuple[list[Future], dict]:
        slot: dict = {"buffer": None, "lock": threading.Lock()}

        def one(index: int, item: Item) -> tuple[np.ndarray | None, object]:
            image, extra = load(item)
            with slot["lock"]:
                if slot["buffer"] is None:
                    slot["buffer"] = np.empty((len(chunk), *image.shape), dtype=image.dtype)
                buffer = slot["buffer"]
            if buffer.shape[1:] == image.shape:
                buffer[index] = image
                return None, extra
            return image, extra  # another shape: this batch is a list

        return [pool.submit(one, i, item) for i, item in enumerate(chunk)], slot

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unetseg-decode") as pool:
        pending: deque[tuple[list[Future], dict]] = deque()

        def finished() -> tuple[np.ndarray | list[np.ndarray], list]:
            futures, slot = pending.popleft()
            results = [f.result() for f in futures]
            if all(image is None for image, _ in results):
                return slot["buffer"], [extra for _, extra in results]
            images = [slot["buffer"][i] if image is None else image for i, (image, _) in enumerate(results)]
            return images, [extra for _, extra in results]

        for start in range(0, len(items), batch_size):
            pending.append(batch_of(items[start:start + batch_size]))
            if len(pending) > ahead:
                yield finished()
        while pending:
            yield finished()


class Writers:
    """A pool that encodes and writes outputs beside the pipeline, with at most ``bound`` jobs in flight: a caller
    with more waits for the oldest (memory stays that of ``bound`` masks). The first failure is raised at the next
    :meth:`submit` or at :meth:`close`.

    Args:
        workers: the pool's threads; or a function of the first job's milliseconds giving them, the first job then
            run by the caller and timed (the pool is sized by the cost measured on this machine).
        bound: the most jobs in flight.
    """

    def __init__(self, workers: int | Callable[[float], int], bound: int) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._size = workers
        self._pending: deque[Future] = deque()
        self._bound = max(1, bound)
        if isinstance(workers, int):
            self._start(workers)

    def _start(self, workers: int) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unetseg-write")

    def submit(self, fn: Callable[..., T], *args: object) -> Future:
        if self._pool is None:  # the first job, timed here, sizes the pool
            start = time.perf_counter()
            first: Future = Future()
            first.set_result(fn(*args))
            assert callable(self._size)
            self._start(self._size(1000 * (time.perf_counter() - start)))
            return first
        job = self._pool.submit(fn, *args)
        self._pending.append(job)
        while len(self._pending) > self._bound:
            self._pending.popleft().result()
        return job

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Writers:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:  # an error elsewhere: the writes submitted still finish (their errors give way to it)
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            return
        self.close()


def sized_writers(decode_ms: Callable[[], float | None], decoders: int, bound: int, command: str, what: str
                  ) -> Writers:
    """:class:`Writers` whose threads come from the costs measured on this machine: the first write (timed, of
    ``what``) against ``decode_ms()``, the decodes' median so far; logged once."""

    def size(write_ms: float) -> int:
        decode = decode_ms()
        workers = write_threads(write_ms if decode is None else decode, write_ms, decoders)
        logger.info("%s: stage costs on this machine: decode %s, write (%s) %.1f ms an image: %d decoding and %d "
                    "writing threads", command, "?" if decode is None else f"{decode:.1f} ms", what, write_ms,
                    decoders, workers)
        return workers

    return Writers(size, bound)


class DecodeTimes:
    """Milliseconds of each decode, from any thread (list appends are atomic); :meth:`median` of those so far."""

    def __init__(self) -> None:
        self._ms: list[float] = []

    def timed(self, load: Callable[[Item], T]) -> Callable[[Item], T]:
        def run(item: Item) -> T:
            start = time.perf_counter()
            result = load(item)
            self._ms.append(1000 * (time.perf_counter() - start))
            return result

        return run

    def median(self) -> float | None:
        return float(np.median(self._ms)) if self._ms else None


def pack_binary(classes: torch.Tensor) -> torch.Tensor:
    """(N, H, W) masks of 0 and 1 -> (N, ceil(H*W / 8)) uint8, eight pixels a byte, the first the highest bit (as
    ``np.unpackbits`` reads them)."""
    n = classes.shape[0]
    flat = classes.reshape(n, -1).to(torch.uint8)
    pad = (-flat.shape[1]) % 8
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    shifts = torch.arange(7, -1, -1, device=flat.device, dtype=torch.uint8)
    return (flat.view(n, -1, 8) << shifts).sum(-1, dtype=torch.uint8)


def unpack_binary(packed: np.ndarray, height: int, width: int) -> np.ndarray:
    """:func:`pack_binary`'s (N, B) bytes -> (N, H, W) uint8 masks of 0 and 1."""
    return np.unpackbits(packed, axis=1, count=height * width).reshape(len(packed), height, width)


class HostCopy:
    """Masks to host memory. On a GPU through one pinned buffer (grown to the largest batch seen, reused: no page
    faults, no pinning per batch), a binary model's masks bit-packed; elsewhere as they are. Safe to call from
    several threads (they take turns with the buffer)."""

    def __init__(self) -> None:
        self._pinned: torch.Tensor | None = None
        self._lock = threading.Lock()

    def __call__(self, classes: torch.Tensor, binary: bool) -> np.ndarray:
        """(N, H, W) uint8 class indices on any device -> a NumPy array (N, H, W) uint8 of the same values."""
        if classes.device.type != "cuda":
            return classes.cpu().numpy()
        n, height, width = classes.shape
        small = pack_binary(classes) if binary else classes
        with self._lock:
            if self._pinned is None or self._pinned.numel() < small.numel():
                self._pinned = torch.empty(small.numel(), dtype=torch.uint8, pin_memory=True)
            buffer = self._pinned[:small.numel()].view(small.shape)
            buffer.copy_(small, non_blocking=True)
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(classes.device))
            done.synchronize()  # the host waits for this copy (and the work queued before it on the stream) only
            host = buffer.numpy()
            return unpack_binary(host, height, width) if binary else host.copy()
