"""Synthetic motion benchmark: determinism, motion semantics, and the proof that single frames carry no class.

The generator's claims are checked three ways: by construction (the frames of a video are literally the
same multiset under every label, so an order-blind TSN gives identical outputs), statistically (per-frame
pose and per-frame random-conv-net features at every time step do not depend on the class, with a positive
control showing that the same test catches a naive generator), and geometrically (the named direction of
every class is the direction the object really moves on screen, measured on rendered pixels).
"""
import math

import numpy as np
import pytest
import torch

from rsanet.config import load_config
from rsanet.data.records import VideoRecord
from rsanet.data.synthetic import (CLASS_NAMES, NUM_VARS, SyntheticDecoder, SyntheticSpec, build_synthetic,
                                   class_motion, clip_states, make_content, render_clip, render_frames,
                                   row_order, video_label)

SPEC = SyntheticSpec(seed=3, frames=8, height=32, width=32, num_classes=8)


def synthetic_cfg(*opts):
    return load_config(None, ["data.dataset=synthetic", "data.train_size=24", "data.val_size=16",
                              "data.synthetic_frames=8", "data.synthetic_resolution=[32,32]",
                              "data.synthetic_classes=8", "data.synthetic_seed=5", *opts])


# ------------------------------------------------------------------------------------------ determinism
def test_videos_are_a_pure_function_of_seed_split_index():
    a = render_clip(SPEC, "train", 7)
    assert a.dtype == np.uint8 and a.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(a, render_clip(SPEC, "train", 7))
    assert not np.array_equal(a, render_clip(SPEC, "train", 8))
    assert not np.array_equal(a, render_clip(SPEC, "val", 7))
    assert not np.array_equal(render_clip(SPEC, "val", 7), render_clip(SPEC, "test", 7))
    other_seed = SyntheticSpec(seed=4, frames=8, height=32, width=32, num_classes=8)
    assert not np.array_equal(a, render_clip(other_seed, "train", 7))
    # requested frames are the same frames as in the whole video, in the requested order (repeats allowed)
    np.testing.assert_array_equal(render_clip(SPEC, "train", 7, indices=[5, 0, 0, 7]), a[[5, 0, 0, 7]])


def test_decoder_and_records_follow_the_contract():
    cfg = synthetic_cfg()
    records, decoder, classes = build_synthetic(cfg, "train")
    assert classes == list(CLASS_NAMES) and len(records) == 24
    assert [r.label for r in records] == [i % 8 for i in range(24)]  # balanced
    r = records[13]
    assert r.path == "synthetic://train/13" and r.num_frames == 8 and r.clip_frames == 8
    spec = SyntheticSpec.from_config(cfg)
    np.testing.assert_array_equal(decoder.decode(r, [1, 3, 5]), render_clip(spec, "train", 13, indices=[1, 3, 5]))
    val, _, _ = build_synthetic(cfg, "val")
    test, _, _ = build_synthetic(cfg, "test")
    assert len(val) == len(test) == 16
    assert not np.array_equal(decoder.decode(val[0], range(8)), decoder.decode(test[0], range(8)))
    two, _, two_classes = build_synthetic(synthetic_cfg("data.synthetic_classes=2"), "val")
    assert two_classes == ["moving left", "moving right"] and {x.label for x in two} == {0, 1}


def test_bad_input_is_named():
    dec = SyntheticDecoder(SPEC)
    with pytest.raises(ValueError, match="not a synthetic video path: 'clips/7.mp4'"):
        dec.decode(VideoRecord("clips/7.mp4", 8), [0])
    with pytest.raises(IndexError, match=r"synthetic://train/7: frame indices \[0, 8\]"):
        dec.decode(VideoRecord("synthetic://train/7", 8), [0, 8])
    with pytest.raises(ValueError, match="unknown synthetic split 'dev'"):
        build_synthetic(synthetic_cfg(), "dev")
    with pytest.raises(ValueError, match="data.synthetic_classes must be in 2..8, got 9"):
        SyntheticSpec(num_classes=9)
    with pytest.raises(ValueError, match="data.synthetic_frames must be at least 2"):
        SyntheticSpec(frames=1)


# ------------------------------------------------------------------------- the no-single-frame-cue proof
def _frame_multiset(clip: np.ndarray) -> list[bytes]:
    return sorted(f.tobytes() for f in clip)


@pytest.mark.parametrize("index", [0, 1, 2, 11])
def test_every_label_shows_exactly_the_same_frames_in_another_order(index):
    clips = [render_clip(SPEC, "train", index, label=c) for c in range(SPEC.num_classes)]
    reference = _frame_multiset(clips[0])
    assert len(set(reference)) == SPEC.frames  # the frames are distinct (not a static video)
    for c, clip in enumerate(clips):
        assert _frame_multiset(clip) == reference, f"label {c} shows other frames"
    orders = {tuple(row_order(make_content(SPEC, "train", index), c)) for c in range(SPEC.num_classes)}
    assert len(orders) == SPEC.num_classes  # ... but every label orders them differently
    # reversal pairs are exact time reversals
    for c in range(0, SPEC.num_classes, 2):
        np.testing.assert_array_equal(clips[c], clips[c + 1][::-1])


def _frames_to_input(clip: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(clip).permute(3, 0, 1, 2).float() / 255.0  # (T, H, W, 3) -> (3, T, H, W)
    return (x - 0.45) / 0.225


def test_tsn_output_is_identical_under_every_label_while_a_temporal_model_differs():
    from rsanet.models import build_model

    def model(kind, positions):
        cfg = load_config(None, ["model.arch=resnet18", "model.width=8", "model.num_classes=8",
                                 "model.num_segments=8", f"model.transform.type={kind}",
                                 f"model.transform.positions={positions}", "model.transform.kernel_size=[3,3,3]"])
        net = build_model(cfg).eval()
        for m in net.modules():  # the init zeroes the last BN of every block and the classifier: undo both
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                torch.nn.init.uniform_(m.weight, 0.5, 1.5)
        torch.nn.init.normal_(net.fc.weight, std=1.0)
        return net

    tsn, c3d = model("conv2d", "[[],[],[],[]]"), model("conv3d", "[[1],[],[],[]]")
    for index in (0, 5):
        batch = torch.stack([_frames_to_input(render_clip(SPEC, "val", index, label=c)) for c in range(8)])
        with torch.no_grad():
            out_tsn, out_c3d = tsn(batch), c3d(batch)
        assert out_tsn.abs().max() > 1e-3
        torch.testing.assert_close(out_tsn, out_tsn[:1].expand_as(out_tsn), rtol=1e-5, atol=1e-6)
        # control: a model that sees frame order tells the same frames apart
        assert (out_c3d - out_c3d[:1]).abs().amax(dim=1)[1:].min() > 1e-4


def _uniformity_ks(samples: np.ndarray, period: float) -> float:
    """Kolmogorov-Smirnov distance of ``samples`` (on a circle of ``period``) from the uniform law."""
    u = np.sort(np.mod(samples, period) / period)
    n = len(u)
    return float(max(np.max(np.arange(1, n + 1) / n - u), np.max(u - np.arange(n) / n)))


def test_pose_of_every_frame_is_uniform_for_every_class_and_time_step():
    """The pose of frame t of class c is uniform on each circle (KS test, Bonferroni over 256 tests)."""
    n = 160  # videos per class
    spec = SyntheticSpec(seed=11, frames=8, height=32, width=32, num_classes=8)
    states = np.zeros((8, n, spec.frames, NUM_VARS))
    for c in range(8):
        for j in range(n):
            index = c + 8 * j  # the videos whose label is c
            assert video_label(spec, index) == c
            states[c, j] = clip_states(make_content(spec, "train", index), c)
    # P(KS > d) <= 2 exp(-2 n d^2); 256 tests at 1e-4 each
    crit = math.sqrt(-math.log(1e-4 / 2) / (2 * n))
    worst = max(_uniformity_ks(states[c, :, t, k], spec.periods[k])
                for c in range(8) for t in range(spec.frames) for k in range(NUM_VARS))
    assert worst < crit
    # power check: a generator without the torus (start uniform over the 75 % of the width that leaves room
    # for the 25 % travel) is rejected by the same bound
    naive_x0 = np.random.default_rng(0).uniform(0, 0.75 * spec.width, size=n)
    assert _uniformity_ks(naive_x0, spec.width) > crit


def _random_features(frames: np.ndarray) -> np.ndarray:
    """Per-frame features of a fixed random conv net pooled over 2 x 2 cells: (N, H, W, 3) uint8 -> (N, 64)."""
    g = torch.Generator().manual_seed(1234)
    w1 = torch.randn(8, 3, 5, 5, generator=g) / 8
    w2 = torch.randn(16, 8, 3, 3, generator=g) / 8
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # (N, H, W, 3) -> (N, 3, H, W)
    x = torch.relu(torch.nn.functional.conv2d(x, w1, stride=2))
    x = torch.relu(torch.nn.functional.conv2d(x, w2, stride=2))
    x = torch.nn.functional.adaptive_avg_pool2d(x, 2)  # (N, 16, h, w) -> (N, 16, 2, 2)
    return x.flatten(1).double().numpy()  # (N, 16, 2, 2) -> (N, 64)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..N of a 1-D array, ties sharing their average rank."""
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def _max_class_z(feats: np.ndarray) -> float:
    """feats (C, n, F): the largest |z| of a rank-sum (Mann-Whitney) test of one class against the others.

    Ranks make the normal approximation valid whatever the features' tails: ReLU features and object-area
    statistics are skewed and partly discrete, and a z-test on their means overstates significance at n=96.
    """
    c, n, f = feats.shape
    total = c * n
    flat = feats.reshape(total, f)  # (C, n, F) -> (C*n, F)
    ranks = np.stack([_average_ranks(flat[:, j]) for j in range(f)], 1).reshape(c, n, f)
    sd = np.sqrt((total + 1) * (total - n) / (12.0 * n))  # sd of a class's mean rank under no class effect
    z = np.abs(ranks.mean(1) - (total + 1) / 2.0) / sd  # (C, F)
    return float(np.nanmax(z))


def _frame_statistics(frames: np.ndarray, backgrounds: np.ndarray) -> np.ndarray:
    """Per-frame statistics (N, 72): mean colour (3), random conv features (64), and where the object is:
    the area of the pixels that differ from the video's background and their circular moments in x and y."""
    n, h, w, _ = frames.shape
    colour = frames.reshape(n, -1, 3).mean(1)  # (N, H*W, 3) -> (N, 3)
    moving = (np.abs(frames.astype(np.int16) - backgrounds.astype(np.int16)).max(-1) > 8).astype(np.float64)
    ax = 2 * np.pi * (np.arange(w) + 0.5) / w  # the image is a torus: positions are angles
    ay = 2 * np.pi * (np.arange(h) + 0.5) / h
    location = np.stack([moving.mean((1, 2)),
                         (moving * np.cos(ax)).mean((1, 2)), (moving * np.sin(ax)).mean((1, 2)),
                         (moving * np.cos(ay)[:, None]).mean((1, 2)), (moving * np.sin(ay)[:, None]).mean((1, 2))], 1)
    return np.concatenate([colour, _random_features(frames), location], 1)


def _background_frames(spec, split, indices):
    """The static background of each video as uint8 (N, H, W, 3) (the frame without the object)."""
    return np.stack([np.clip(make_content(spec, split, i).background * 255 + 0.5, 0, 255).astype(np.uint8)
                     for i in indices])


def test_frame_pixels_at_every_time_step_do_not_depend_on_the_class():
    """Colour, random-conv features and object location of frame t: class means agree within a z bound."""
    n = 96
    spec = SyntheticSpec(seed=12, frames=8, height=32, width=32, num_classes=8)
    index = np.arange(8)[:, None] + 8 * np.arange(n)[None, :]  # (C, n): videos of class c
    clips = np.stack([np.stack([render_clip(spec, "val", i) for i in row]) for row in index])  # (C, n, T, H, W, 3)
    bgs = _background_frames(spec, "val", index.ravel())  # (C*n, H, W, 3)
    z_bound = 4.75  # two-sided p = 2e-6 per test; 8 classes x 8 steps x 72 statistics = 4.6e3 tests
    for t in range(spec.frames):
        frames = clips[:, :, t].reshape(-1, 32, 32, 3)  # (C, n, H, W, 3) -> (C*n, H, W, 3)
        stats = _frame_statistics(frames, bgs).reshape(8, n, -1)  # (C*n, S) -> (C, n, S)
        assert _max_class_z(stats) < z_bound, f"time step {t}"
    # positive control: the same test catches a generator whose first frame shows the object on the left
    # for "moving right" and on the right for "moving left"
    biased = []
    for c in range(2):
        rows = []
        for i in index[c]:
            content = make_content(spec, "val", i)
            state = clip_states(content, c)[:1].copy()
            state[0, 0] = 8.0 if c == 1 else 24.0
            rows.append(render_frames(spec, content, state)[0])
        biased.append(np.stack(rows))
    stats = _frame_statistics(np.concatenate(biased), _background_frames(spec, "val", index[:2].ravel()))
    assert _max_class_z(stats.reshape(2, n, -1)) > 2 * z_bound


# ---------------------------------------------------------------------------------- motion semantics
def test_the_class_variable_moves_at_constant_speed_and_the_others_are_shuffled():
    content = make_content(SPEC, "train", 3)
    for c in range(SPEC.num_classes):
        var, direction = class_motion(c)
        grid = content.grid[row_order(content, c)]  # (T, 4) grid index per time step
        steps = np.diff(grid[:, var])
        assert np.all(steps == direction)
        for k in range(NUM_VARS):
            assert sorted(grid[:, k]) == list(range(SPEC.frames))  # each variable visits its whole grid


def _object_mask(spec, content, state):
    """Pixels that the object covers (rendered over a flat background so that nothing else differs)."""
    flat = content.__class__(**{**content.__dict__, "background": np.full_like(content.background, 0.5)})
    flat.colors = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    img = render_frames(spec, flat, state[None])[0].astype(int)
    body = (img[..., 0] > 200) & (img[..., 2] < 60)
    spot = (img[..., 2] > 200) & (img[..., 0] < 60)
    return body | spot, spot


def test_named_directions_are_the_directions_seen_on_screen():
    spec = SyntheticSpec(seed=0, frames=8, height=64, width=64, num_classes=8)
    content = make_content(spec, "train", 0)
    base = np.array([32.0, 32.0, 0.3, 0.2])
    yy, xx = np.mgrid[0:64, 0:64] + 0.5

    def centroid(mask):
        return np.array([xx[mask].mean(), yy[mask].mean()])

    for c, name in enumerate(CLASS_NAMES):
        var, direction = class_motion(c)
        step = np.zeros(4)
        step[var] = direction * [3.0, 3.0, 0.4, 0.25][var]
        body0, spot0 = _object_mask(spec, content, base)
        body1, spot1 = _object_mask(spec, content, base + step)
        shift = centroid(body1) - centroid(body0)
        if name == "moving left":
            assert shift[0] < -2.5 and abs(shift[1]) < 0.5
        elif name == "moving right":
            assert shift[0] > 2.5 and abs(shift[1]) < 0.5
        elif name == "moving up":  # image rows grow downwards
            assert shift[1] < -2.5 and abs(shift[0]) < 0.5
        elif name == "moving down":
            assert shift[1] > 2.5 and abs(shift[0]) < 0.5
        elif name.startswith("rotating"):
            # the spot turns around the object's centre; on screen (y down) clockwise means that the
            # cross product of the spot offsets (x0 * y1 - y0 * x1) is positive
            o0, o1 = centroid(spot0) - base[:2], centroid(spot1) - base[:2]
            cross = o0[0] * o1[1] - o0[1] * o1[0]
            assert (cross > 0) == (name == "rotating clockwise"), name
            assert body1.sum() == pytest.approx(body0.sum(), rel=0.05)  # turning keeps the size
        else:  # approaching grows, receding shrinks, by exp(2 * 0.25) in area
            ratio = body1.sum() / body0.sum()
            assert ratio == pytest.approx(math.exp(2 * step[3]), rel=0.08), name


def test_unused_pose_variables_stay_still():
    spec = SyntheticSpec(seed=1, frames=8, height=32, width=32, num_classes=2)  # left vs right only
    for index in range(4):
        states = clip_states(make_content(spec, "train", index), video_label(spec, index))
        assert np.ptp(states[:, 1:], axis=0).max() == 0.0  # y, angle and scale are fixed
        assert np.ptp(states[:, 0]) > 0


def test_wraps_around_the_torus():
    """An object that leaves at the right edge comes back at the left: the image is a torus."""
    spec = SyntheticSpec(seed=0, frames=8, height=64, width=64, num_classes=8)
    content = make_content(spec, "train", 0)
    inside, _ = _object_mask(spec, content, np.array([32.0, 32.0, 0.3, 0.2]))
    edge, _ = _object_mask(spec, content, np.array([0.0, 32.0, 0.3, 0.2]))
    assert edge[:, :8].any() and edge[:, -8:].any()
    assert edge.sum() == pytest.approx(inside.sum(), rel=0.05)
