"""On a GPU a training step must never wait for the device: no loss read back, no test of a drawn value, no
blocking copy from the host. On the CPU the same calls are counted with a TorchFunctionMode: over the steps of an
epoch, at most one read back per ``sync_every`` steps (the controller's decision)."""

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

from unetseg import RunConfig, fit
from unetseg.config import DataConfig, TrainConfig, UNetConfig

#: Tensor methods that make the host wait for the device's result.
READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu"}


class SyncCounter(TorchFunctionMode):
    """Counts the calls that would block on a GPU: reads back, copies to a named device without
    ``non_blocking=True``, and tensors made from host data straight onto a named device."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in READS:
            self.calls.append(name)
        elif name in ("to", "cuda") and not kwargs.get("non_blocking", False) and (
                "device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args[1:])):
            self.calls.append(f"blocking {name}")
        elif name in ("tensor", "as_tensor") and kwargs.get("device") is not None:
            self.calls.append(f"{name} on a device")
        return func(*args, **kwargs)


def _count(data, out, steps: int, sync_every: int, **data_fields) -> Counter:
    cfg = RunConfig(UNetConfig(base_channels=4, depth=3),
                    DataConfig(data=str(data), image_size=(64, 48), val_fraction=0.0, **data_fields),
                    TrainConfig(epochs=1, max_steps=steps, batch_size=2, device="cpu", progress=False,
                                checkpoint_minutes=600.0, bn_recalibrate=False))
    cfg.train.sync_every = sync_every
    counter = SyncCounter()
    with counter:
        fit(cfg, out, overwrite=True)
    return Counter(counter.calls)


def test_at_most_one_read_back_per_decision(synthetic_dir, tmp_path):
    # 24 images, batch 2: one epoch of 12 steps; the difference between 12 and 4 steps is what the steps cost (the
    # first run also computes the resolution ceiling, which the second reads from its cache)
    short = _count(synthetic_dir, tmp_path / "a", 4, 4)
    long = _count(synthetic_dir, tmp_path / "b", 12, 4)
    assert long - short == Counter(tolist=(12 - 4) // 4), long - short  # one read back per decision, every 4 steps


def test_patches_and_photometric_augmentation_read_nothing_back(synthetic_dir, tmp_path):
    fields = dict(patch=(32, 32), brightness=0.2, contrast=0.2, saturation=0.2, gamma=0.2, channel_shuffle_p=0.1,
                  grayscale_p=0.1, noise_std=0.02, scale_limit=0.1)
    short = _count(synthetic_dir, tmp_path / "a", 4, 4, **fields)
    long = _count(synthetic_dir, tmp_path / "b", 12, 4, **fields)
    assert long - short == Counter(tolist=(12 - 4) // 4), long - short
