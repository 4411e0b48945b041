import pytest
import torch

from unetseg.data.transforms import random_affine, to_float


def _batch(n=4, h=24, w=40):
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(n, h, w, generator=g) > 0.5).long()
    images = torch.cat([masks[:, None].float(), torch.rand(n, 2, h, w, generator=g)], dim=1)
    return images, masks


def test_no_augmentation_is_identity():
    images, masks = _batch()
    out_i, out_m = random_affine(images, masks, 0.0, 0.0, 0.0)
    assert torch.equal(out_i, images) and torch.equal(out_m, masks)


def test_certain_flips_are_exact_flips():
    images, masks = _batch()
    out_i, out_m = random_affine(images, masks, 0.0, 1.0, 0.0)
    torch.testing.assert_close(out_i, images.flip(-1), atol=1e-5, rtol=0)
    assert torch.equal(out_m, masks.flip(-1))
    out_i, out_m = random_affine(images, masks, 0.0, 0.0, 1.0)
    assert torch.equal(out_m, masks.flip(-2))


def test_rotation_moves_image_and_mask_together_and_keeps_labels():
    n, h, w = 6, 64, 96
    masks = torch.zeros(n, h, w, dtype=torch.long)
    masks[:, 20:44, 30:70] = 2
    images = masks[:, None].float().repeat(1, 3, 1, 1)
    out_i, out_m = random_affine(images, masks, 35.0, 0.5, 0.1, generator=torch.Generator().manual_seed(1))
    assert set(out_m.unique().tolist()) <= {0, 2}
    assert not torch.equal(out_m, masks)  # something rotated
    agree = ((out_i[:, 0] > 1.0).long() * 2 == out_m).float().mean()
    assert agree > 0.98  # bilinear image and nearest mask differ only on the boundary


def test_same_generator_gives_same_draws():
    images, masks = _batch()
    a = random_affine(images, masks, 35.0, 0.5, 0.1, generator=torch.Generator().manual_seed(5))
    b = random_affine(images, masks, 35.0, 0.5, 0.1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_to_float_normalises_nhwc_uint8():
    x = torch.tensor([[[[0, 255, 51]]]], dtype=torch.uint8)  # (1, 1, 1, 3)
    out = to_float(x, (0.0, 0.5, 0.0), (1.0, 0.5, 0.2))
    assert out.shape == (1, 3, 1, 1)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 1.0, 1.0]))


def _config(**kw):
    from unetseg.config import DataConfig

    return DataConfig(**{"rotate_limit": 0.0, "hflip_p": 0.0, "vflip_p": 0.0, **kw})


def test_augment_without_photometric_draws_what_the_seed_recipe_drew():
    from unetseg.config import DataConfig
    from unetseg.data.transforms import augment

    images = (torch.rand(4, 24, 40, 3, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    masks = (images[..., 0] > 128).long()
    cfg = DataConfig()  # the seed's rotation and flips
    x, y = augment(images, masks, cfg, torch.Generator().manual_seed(5))
    ref_x, ref_y = random_affine(to_float(images, cfg.mean, cfg.std), masks, cfg.rotate_limit, cfg.hflip_p,
                                 cfg.vflip_p, generator=torch.Generator().manual_seed(5))
    assert torch.equal(y, ref_y) and torch.allclose(x, ref_x, atol=1e-6)


def test_photometric_changes_colours_not_masks_and_stays_in_range():
    from unetseg.data.transforms import augment

    g = torch.Generator().manual_seed(0)
    images = (torch.rand(8, 16, 16, 3, generator=g) * 255).to(torch.uint8)
    masks = (images[..., 0] > 128).long()
    cfg = _config(brightness=0.3, contrast=0.3, saturation=0.5, gamma=0.3, grayscale_p=0.5, noise_std=0.05)
    x, y = augment(images, masks, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(y, masks) and x.min() >= 0 and x.max() <= 1
    plain = images.permute(0, 3, 1, 2).float() / 255
    assert (x - plain).abs().mean() > 0.02
    x2, _ = augment(images, masks, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(x, x2)  # all draws come from the step's generator


def test_channel_shuffle_permutes_channels_and_greyscale_equalises_them():
    from unetseg.data.transforms import photometric

    x = torch.stack([torch.full((8, 8), v) for v in (0.1, 0.5, 0.9)])[None].repeat(16, 1, 1, 1)
    out = photometric(x.clone(), _config(channel_shuffle_p=1.0), torch.Generator().manual_seed(0))
    assert all(sorted(out[i, :, 0, 0].tolist()) == pytest.approx([0.1, 0.5, 0.9]) for i in range(16))
    assert len({tuple(out[i, :, 0, 0].tolist()) for i in range(16)}) > 2  # several permutations drawn
    grey = photometric(x.clone(), _config(grayscale_p=1.0), torch.Generator().manual_seed(0))
    assert torch.allclose(grey[:, 0], grey[:, 2]) and grey[0, 0, 0, 0] == pytest.approx(0.299 * 0.1 + 0.587 * 0.5 + 0.114 * 0.9)


def test_zoom_scales_the_centre_within_its_limit_both_ways():
    images = torch.zeros(64, 1, 65, 65)
    images[..., 24:41, 24:41] = 1.0  # a 17x17 square in the middle
    masks = images[:, 0].long()
    _, out_m = random_affine(images, masks, 0.0, 0.0, 0.0, generator=torch.Generator().manual_seed(0),
                             scale_limit=1.0)  # zoom in [1/2, 2]: the square's area in [1/4, 4] x
    ratio = out_m.sum(dim=(1, 2)).float() / masks[0].sum()
    assert (ratio > 1.5).any() and (ratio < 0.67).any()  # zoomed in and out
    assert ratio.min() > 0.25 * 0.8 and ratio.max() < 4 * 1.2


def _coordinates(n=4, h=36, w=48):
    """Images whose channels hold each pixel's x and y, and masks with a label per (x mod 11, y mod 7)."""
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    images = torch.stack([xx, yy, torch.zeros_like(xx)])[None].repeat(n, 1, 1, 1)
    masks = (xx.long() % 11 + 20 * (yy.long() % 7))[None].repeat(n, 1, 1).to(torch.uint8)
    return images, masks


def test_a_crop_without_zoom_is_an_exact_window_at_a_random_place():
    images, masks = _coordinates()
    out_i, out_m = random_affine(images, masks, 0.0, 0.0, 0.0, out_size=(31, 24),
                                 generator=torch.Generator().manual_seed(0))
    assert out_i.shape == (4, 3, 24, 31) and out_m.shape == (4, 24, 31) and out_m.dtype == torch.uint8
    corners = set()
    for i in range(4):
        x0, y0 = round(out_i[i, 0, 0, 0].item()), round(out_i[i, 1, 0, 0].item())
        corners.add((x0, y0))
        assert 0 <= x0 <= 48 - 31 and 0 <= y0 <= 36 - 24
        torch.testing.assert_close(out_i[i], images[i, :, y0:y0 + 24, x0:x0 + 31], atol=1e-4, rtol=0)
        assert torch.equal(out_m[i], masks[i, y0:y0 + 24, x0:x0 + 31])
    assert len(corners) > 1  # the windows move


def test_a_zoomed_out_crop_pads_masks_with_void_and_images_with_black():
    from unetseg.data.encoding import IGNORE

    images, masks = _coordinates(n=64)
    images = images + 1  # no pixel of the frame is black
    out_i, out_m = random_affine(images, masks, 0.0, 0.5, 0.0, generator=torch.Generator().manual_seed(3),
                                 scale_limit=1.0, out_size=(48, 36))
    void = out_m == IGNORE
    share = void.float().mean(dim=(1, 2))
    assert share.max() > 0.5 and share.min() == 0.0  # zoomed out by up to 2 (3/4 of the window outside), and in
    black = (out_i[:, 0] == 0) & (out_i[:, 1] == 0)
    assert (black & ~void).sum() == 0  # black only outside the frame
    assert (void == black).float().mean() > 0.97  # the same pixels outside in both, but for the bilinear border
    labels = set(out_m[~void].unique().tolist())
    assert labels <= set(masks.unique().tolist())  # nearest sampling: only labels that exist


def test_crops_follow_the_zoom_range_of_road_scene_recipes():
    # a 0.5-2.0 zoom: the window spans between half and twice its size in frame pixels
    images, masks = _coordinates(n=256, h=96, w=128)
    out_i, _ = random_affine(images, masks, 0.0, 0.0, 0.0, generator=torch.Generator().manual_seed(4),
                             scale_limit=1.0, out_size=(32, 24))
    span = out_i[:, 0, 12, -1] - out_i[:, 0, 12, 0]  # frame pixels between the window's first and last column
    zoom = 31 / span
    assert 0.49 < zoom.min() < 0.6 and 1.7 < zoom.max() < 2.01
