"""Class maps from logits on the CPU: torch's ``argmax(dim=1)`` over NCHW against the same argmax over the last dim
of a channels-last copy (what :func:`unetseg.metrics.logits_to_classes` does on the CPU), side by side.

    python benchmarks/argmax.py

Prints ms per call for the shapes validation (a CamVid batch), evaluate / predict (CamVid and Carvana sizes) and the
resolution ceiling (Carvana at full size) meet, in fp32 and bf16, and checks that both give the same classes.
"""

from __future__ import annotations

import time

import torch

SHAPES = ((8, 11, 224, 304), (1, 11, 360, 480), (1, 11, 1280, 1918), (1, 2, 1280, 1918))


def timed(fn, repeats: int = 5) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - t0) / repeats


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'shape':22s} {'dtype':9s} {'argmax(1) ms':>13s} {'channels-last ms':>17s} {'ratio':>6s}")
    for shape in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(shape).to(dtype)
            assert torch.equal(x.argmax(1), x.movedim(1, -1).contiguous().argmax(-1))
            plain = timed(lambda: x.argmax(1))
            last = timed(lambda: x.movedim(1, -1).contiguous().argmax(-1))
            print(f"{str(tuple(shape)):22s} {str(dtype).split('.')[-1]:9s} {plain:13.1f} {last:17.1f} "
                  f"{plain / last:6.1f}")


if __name__ == "__main__":
    main()
