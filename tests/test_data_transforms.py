"""Clip transforms: uint8 layout, normalization (bitwise equal to the float pipeline it replaced, on the host
and after a batch's trip to the device), test crops, TSN multi-scale crop rule, one crop/flip per clip."""
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from rsanet.data.transforms import FlipPolicy, TestTransform, TrainTransform, multiscale_crop_box, normalize_clip

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def reference_normalize(frames):
    """(T, H, W, 3) uint8 -> (3, T, H, W) float64, literally (x / 255 - mean) / std."""
    x = frames.astype(np.float64) / 255.0
    x = (x - np.array(MEAN)) / np.array(STD)
    return torch.from_numpy(np.transpose(x, (3, 0, 1, 2)))  # (T, H, W, 3) -> (3, T, H, W)


def random_frames(t, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def norm(clip):
    return normalize_clip(clip, MEAN, STD)


def float_pipeline_normalize(clip):
    """The normalization workers used to run (uint8 (T, 3, H, W) -> float32 (3, T, H, W)), kept verbatim as
    the reference: one conversion into the output layout, then an in-place per-channel affine map."""
    t, c, h, w = clip.shape
    out = torch.empty((c, t, h, w), dtype=torch.float32)
    out.copy_(clip.permute(1, 0, 2, 3))  # (T,3,H,W) -> (3,T,H,W), uint8 -> float
    m, s = torch.tensor(MEAN, dtype=torch.float64), torch.tensor(STD, dtype=torch.float64)
    scale = (1.0 / (255.0 * s)).float().view(c, 1, 1, 1)  # (3,) -> (3, 1, 1, 1)
    bias = (-m / s).float().view(c, 1, 1, 1)  # (3,) -> (3, 1, 1, 1)
    return out.mul_(scale).add_(bias)


def test_layout_and_normalization():
    frames = random_frames(4, 16, 16)
    out, label = TestTransform([16, 16], 16, 1)(frames, 5)
    assert out.shape == (3, 4, 16, 16) and out.dtype == torch.uint8 and out.is_contiguous() and label == 5
    assert torch.equal(out, torch.from_numpy(frames).permute(3, 0, 1, 2))  # (T,H,W,3) -> (3,T,H,W)
    assert norm(out).dtype == torch.float32
    torch.testing.assert_close(norm(out).double(), reference_normalize(frames), atol=1e-5, rtol=0)


def test_uint8_handover_gives_bitwise_the_model_inputs_of_the_float_pipeline():
    """Workers now hand over uint8 (a quarter of the shared memory); the engine normalizes the collated batch
    after the copy to the device (rsanet.engine.loaders.to_device). The model sees the same float32 bits as
    when each worker normalized its clip, for every pixel value and channel."""
    from rsanet.engine.loaders import to_device

    frames = [random_frames(3, 20, 24, seed=s) for s in range(2)]
    tr = TestTransform([20, 24], 16, 3)
    items = [tr(f, 0, crop=c)[0] for f in frames for c in range(3)]  # 6 x uint8 (3, 3, 16, 16)
    old = torch.stack([float_pipeline_normalize(x.permute(1, 0, 2, 3)) for x in items])  # (6, 3, 3, 16, 16)
    batch = {"clip": torch.stack(items), "label": torch.zeros(6, dtype=torch.long)}
    clip, _ = to_device(batch, torch.device("cpu"), MEAN, STD)
    assert batch["clip"].element_size() * 4 == clip.element_size()
    assert clip.dtype == torch.float32 and torch.equal(clip, old)
    assert torch.equal(norm(items[0]), old[0])  # one clip (the inference tools) as one batch
    every = torch.arange(256, dtype=torch.uint8).view(16, 16).expand(2, 3, 16, 16).contiguous()  # (T, 3, 16, 16)
    assert torch.equal(norm(every.permute(1, 0, 2, 3)), float_pipeline_normalize(every))  # every value, channel
    with pytest.raises(TypeError, match="expects uint8 clips"):
        norm(old)


@pytest.mark.parametrize("h,w,boxes", [
    (20, 30, [(2, 0), (2, 7), (2, 14)]),  # landscape: left, centre, right
    (30, 20, [(0, 2), (7, 2), (14, 2)]),  # portrait: top, centre, bottom
])
def test_three_crops_and_centre_crop(h, w, boxes):
    frames = random_frames(3, h, w, seed=1)
    ref = reference_normalize(frames)
    for crop, (top, left) in enumerate(boxes):
        out, _ = TestTransform([h, w], 16, 3)(frames, 0, crop=crop)
        torch.testing.assert_close(norm(out).double(), ref[:, :, top:top + 16, left:left + 16], atol=1e-5, rtol=0)
    centre, _ = TestTransform([h, w], 16, 1)(frames, 0)
    top, left = boxes[1]
    torch.testing.assert_close(norm(centre).double(), ref[:, :, top:top + 16, left:left + 16], atol=1e-5, rtol=0)


def test_test_transform_resizes_every_frame_like_torchvision():
    frames = random_frames(3, 24, 40, seed=2)
    out = norm(TestTransform([30, 50], 28, 1)(frames, 0)[0])
    for t in range(3):  # reference: each frame alone through torchvision, then a literal crop and normalization
        img = torch.from_numpy(frames[t]).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
        big = TF.resize(img, [30, 50], antialias=True).permute(1, 2, 0).numpy()  # (3,H,W) -> (H,W,3)
        expect = reference_normalize(big[None, 1:29, 11:39])[:, 0]
        torch.testing.assert_close(out[:, t].double(), expect, atol=1e-5, rtol=0)


def test_multiscale_crop_rule_literal_sets():
    sizes = [240, 210, 180, 158]  # int(240 * s) for s in (1, .875, .75, .66)
    allowed = {(sizes[i], sizes[j]) for i in range(4) for j in range(4) if abs(i - j) <= 1}
    assert len(allowed) == 10
    seen_sizes, seen_grid = set(), set()
    for seed in range(600):
        top, left, h, w = multiscale_crop_box(240, 320, 224, [1, .875, .75, .66], torch.Generator().manual_seed(seed))
        seen_sizes.add((h, w))
        qy = [q for q in range(5) if q * (240 - h) // 4 == top]
        qx = [q for q in range(5) if q * (320 - w) // 4 == left]
        assert qy and qx, (top, left, h, w)
        if h < 240:  # the grid point is identifiable
            seen_grid.add((qx[0], qy[0]))
        assert 0 <= top and top + h <= 240 and 0 <= left and left + w <= 320
    assert seen_sizes == allowed
    assert seen_grid == {(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0),
                         (1, 1), (3, 1), (1, 3), (3, 3)}


def test_multiscale_sizes_snap_to_the_crop_size():
    got = {multiscale_crop_box(256, 340, 226, [1, .875, .75, .66], torch.Generator().manual_seed(s))[2]
           for s in range(300)}
    assert got == {256, 226, 192, 168}  # 224 is within 3 px of 226


def test_train_transform_uses_one_crop_and_flip_for_the_whole_clip():
    base = np.random.default_rng(3).integers(0, 150, (1, 60, 80, 3)).astype(np.uint8)
    frames = base + (10 * np.arange(5, dtype=np.uint8))[:, None, None, None]  # frame k = base + 10 k
    tr = TrainTransform([48, 64], 32, [1, .875, .75, .66], FlipPolicy("all"))
    for seed in range(12):
        out = norm(tr(frames, 0, generator=torch.Generator().manual_seed(seed))[0])
        assert out.shape == (3, 5, 32, 32)
        diff = (out - out[:, :1]) * torch.tensor(STD).view(3, 1, 1, 1) * 255  # (3,) -> (3, 1, 1, 1)
        expect = (10 * torch.arange(5.0)).view(1, 5, 1, 1).expand_as(diff)  # (5,) -> (1, 5, 1, 1)
        torch.testing.assert_close(diff, expect, atol=1.01, rtol=0)  # same geometry on every frame


def test_swap_policy_flips_the_clip_and_swaps_the_label():
    frames = random_frames(2, 48, 64, seed=4)
    kw = dict(resize=[48, 64], crop_size=32, scales=[1, .875, .75, .66])
    plain = TrainTransform(flip=FlipPolicy("none"), **kw)
    swap = TrainTransform(flip=FlipPolicy("swap_left_right", {0: 1, 1: 0}), **kw)
    flipped = 0
    for seed in range(20):
        ref, ref_label = plain(frames, 0, generator=torch.Generator().manual_seed(seed))
        out, label = swap(frames, 0, generator=torch.Generator().manual_seed(seed))
        assert ref_label == 0
        if label == 1:
            flipped += 1
            torch.testing.assert_close(out, ref.flip(-1))
        else:
            assert label == 0
            torch.testing.assert_close(out, ref)
    assert 3 <= flipped <= 17


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="crop_size 256 is larger than the short side"):
        TrainTransform([240, 320], 256, [1.0], FlipPolicy("none"))
    with pytest.raises(ValueError, match="test.crops must be 1 or 3"):
        TestTransform([240, 320], 224, 2)
