"""Precision, layout and micro-batch choices (the speed itself is measured in benchmarks/, not in tests)."""

import json

import pytest
import torch

from tests.train.test_fit import tiny_config
from unetseg import fit
from unetseg._device import autocast_dtype, cpu_has_native_bf16, memory_format
from unetseg.train import loop


def test_cpu_precision_follows_native_bf16():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") == (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert autocast_dtype(cpu, "off") is None and autocast_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="needs a CUDA device"):
        autocast_dtype(cpu, "fp16")


@pytest.mark.parametrize("capability, emulated_says, expected", [((7, 0), True, torch.float16),  # V100
                                                                   ((7, 5), True, torch.float16),  # T4
                                                                   ((8, 0), True, torch.bfloat16),  # A100
                                                                   ((9, 0), True, torch.bfloat16)])  # H100
def test_cuda_bf16_only_where_it_is_native(monkeypatch, capability, emulated_says, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: emulated_says)  # what it says by default
    assert autocast_dtype(torch.device("cuda"), "auto") == expected


def test_layouts():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert memory_format(cpu, "auto", training=True) == torch.contiguous_format
    assert memory_format(cpu, "auto", training=False) == torch.channels_last
    assert memory_format(cuda, "auto", training=True) == torch.channels_last
    assert memory_format(cpu, "channels_last", training=True) == torch.channels_last


def test_auto_micro_batch_fits_free_memory(synthetic_dir, monkeypatch):
    cfg = tiny_config(synthetic_dir)
    cfg.model.base_channels, cfg.data.image_size, cfg.train.batch_size = 64, (480, 320), 16
    monkeypatch.setattr(loop, "free_memory", lambda device: 24 << 30)
    assert loop.auto_micro_batch(cfg, torch.device("cpu")) == 16  # 24 GiB hold the seed recipe's batch
    monkeypatch.setattr(loop, "free_memory", lambda device: 4 << 30)
    assert loop.auto_micro_batch(cfg, torch.device("cpu")) == 3
    monkeypatch.setattr(loop, "free_memory", lambda device: 0)
    assert loop.auto_micro_batch(cfg, torch.device("cpu")) == 1
    # the estimate reads the model that is built: a ResNet-50 encoder ignores --base-channels 8 (34.5)
    monkeypatch.setattr(loop, "free_memory", lambda device: 4 << 30)
    cfg.model.base_channels, cfg.model.encoder = 8, "resnet50"
    assert loop.auto_micro_batch(cfg, torch.device("cpu")) == 8  # from base 8 alone: 16 (the batch)
    cfg.model.encoder = ""
    assert loop.auto_micro_batch(cfg, torch.device("cpu")) == 16


def test_the_inference_batch_is_estimated_from_the_model_built(monkeypatch):
    import unetseg._device as device_module
    from unetseg.config import RunConfig, UNetConfig
    from unetseg.infer.predict import auto_batch
    from unetseg.model import UNet

    monkeypatch.setattr(device_module, "free_memory", lambda device: (2 << 30) + (1 << 30))  # 2 GiB past resizing
    cfg = RunConfig(model=UNetConfig(base_channels=8, encoder="resnet50"))
    cfg.data.image_size = (480, 320)
    wide = auto_batch(cfg, torch.device("cuda"), model=UNet(cfg.model))
    narrow = auto_batch(cfg, torch.device("cuda"), model=UNet(UNetConfig(base_channels=8)))
    assert narrow == 36 and wide == 10  # from base 8 alone, both 36


def test_training_with_micro_batches_learns(synthetic_dir, tmp_path):
    cfg = tiny_config(synthetic_dir, epochs=6, lr=1e-2, micro_batch=3)
    cfg.model.base_channels = 8
    fit(cfg, tmp_path / "run")
    losses = [json.loads(line)["train_loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.7 * losses[0]


def test_disk_cache_trains_like_the_memory_cache(synthetic_dir, tmp_path):
    runs = {}
    for cache in ("memory", "disk"):
        cfg = tiny_config(synthetic_dir, epochs=2)
        cfg.data.cache = cache
        runs[cache] = fit(cfg, tmp_path / cache)
    rows = {k: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for k, run in runs.items()}
    assert [r["train_loss"] for r in rows["disk"]] == [r["train_loss"] for r in rows["memory"]]
    assert not list(runs["disk"].glob(".cache-*"))  # the memory-mapped file is removed at the end
