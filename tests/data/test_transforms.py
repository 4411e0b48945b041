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
