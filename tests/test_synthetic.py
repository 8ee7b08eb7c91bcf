"""Synthetic motion benchmark: determinism, motion semantics, and the proof that single frames carry no class.

The generator's claims are checked three ways: by construction (the two classes of a pair show literally
the same frames in reverse order, so an order-blind TSN gives identical outputs), statistically (the wave
parameters a frame shows, and per-frame colour, object and random-conv-net features, at every time step do
not depend on the class, with positive controls showing that the same tests catch a naive generator), and
geometrically (every class moves the scene on screen the way its name says, measured on rendered pixels by
block matching).
"""
import math

import numpy as np
import pytest
import torch

from rsanet.config import load_config
from rsanet.data.records import VideoRecord
from rsanet.data.sets import synthetic
from rsanet.data.synthetic import (
    CLASS_NAMES,
    SyntheticDecoder,
    SyntheticSpec,
    class_motion,
    clip_states,
    make_content,
    render_background,
    render_clip,
    render_frames,
    render_object,
    video_label,
)

SPEC = SyntheticSpec(seed=3, frames=8, height=32, width=32, num_classes=8)


def build_synthetic(cfg, split):
    """(records, decoder, classes) of a split through the dataset's module (rsanet.data.sets.synthetic)."""
    classes = synthetic.class_names(cfg)
    return synthetic.records(cfg, split, classes), synthetic.decoder(cfg), classes


def synthetic_cfg(*opts):
    return load_config(None, ["data.dataset=synthetic", "data.synthetic.train_size=24", "data.synthetic.val_size=16",
                              "data.synthetic.frames=8", "data.synthetic.resolution=[32,32]",
                              "data.synthetic.classes=8", "data.synthetic.seed=5", *opts])


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
    spec = synthetic.spec(cfg)
    assert spec == SyntheticSpec(seed=5, frames=8, height=32, width=32, num_classes=8)  # the data.synthetic keys
    np.testing.assert_array_equal(decoder.decode(r, [1, 3, 5]), render_clip(spec, "train", 13, indices=[1, 3, 5]))
    val, _, _ = build_synthetic(cfg, "val")
    test, _, _ = build_synthetic(cfg, "test")
    assert len(val) == len(test) == 16
    assert not np.array_equal(decoder.decode(val[0], range(8)), decoder.decode(test[0], range(8)))
    two, _, two_classes = build_synthetic(synthetic_cfg("data.synthetic.classes=2"), "val")
    assert two_classes == ["background moving left", "background moving right"]
    assert {x.label for x in two} == {0, 1}
    # a single generated video for the research tools; a file path is not the dataset's to open
    own_decoder, own = synthetic.open_video(cfg, "synthetic://test/3")
    assert own.path == "synthetic://test/3" and own.num_frames == 8
    np.testing.assert_array_equal(own_decoder.decode(own, range(8)), decoder.decode(test[3], range(8)))
    assert synthetic.open_video(cfg, "clips/3.mp4") is None
    assert synthetic.has_split(cfg.data, "test") and not synthetic.has_split(cfg.data, "dev")


def test_bad_input_is_named():
    dec = SyntheticDecoder(SPEC)
    with pytest.raises(ValueError, match="not a synthetic video path: 'clips/7.mp4'"):
        dec.decode(VideoRecord("clips/7.mp4", 8), [0])
    with pytest.raises(IndexError, match=r"synthetic://train/7: frame indices \[0, 8\]"):
        dec.decode(VideoRecord("synthetic://train/7", 8), [0, 8])
    with pytest.raises(ValueError, match="unknown synthetic split 'dev'"):
        build_synthetic(synthetic_cfg(), "dev")
    with pytest.raises(ValueError, match="data.synthetic.classes must be in 2..8, got 9"):
        SyntheticSpec(num_classes=9)
    with pytest.raises(ValueError, match="data.synthetic.frames must be at least 2"):
        SyntheticSpec(frames=1)


# ------------------------------------------------------------------------- the no-single-frame-cue proof
def _frame_multiset(clip: np.ndarray) -> list[bytes]:
    return sorted(f.tobytes() for f in clip)


@pytest.mark.parametrize("index", [0, 1, 2, 11])
def test_the_two_classes_of_a_pair_show_the_same_frames_in_reverse_order(index):
    clips = [render_clip(SPEC, "train", index, label=c) for c in range(SPEC.num_classes)]
    for c in range(0, SPEC.num_classes, 2):  # (left, right), (up, down), (cw, ccw), (approaching, receding)
        np.testing.assert_array_equal(clips[c], clips[c + 1][::-1])
        assert len(set(_frame_multiset(clips[c]))) == SPEC.frames  # and the frames are all different


def _frames_to_input(clip: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(clip).permute(3, 0, 1, 2).float() / 255.0  # (T, H, W, 3) -> (3, T, H, W)
    return (x - 0.45) / 0.225


def test_tsn_output_is_identical_for_the_two_classes_of_a_pair_while_a_temporal_model_differs():
    from rsanet.models import build_model

    def model(kind, positions):
        cfg = load_config(None, ["model.arch=resnet18", "model.width=8", "model.num_classes=8",
                                 "model.num_segments=8", f"model.transform.type={kind}",
                                 f"model.transform.positions={positions}",
                                 *([f"model.transform.{kind}.kernel_size=[3,3,3]"] if kind != "conv2d" else [])])
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
        torch.testing.assert_close(out_tsn[0::2], out_tsn[1::2], rtol=1e-5, atol=1e-6)
        # control: a model that sees frame order tells a clip from its time reversal
        assert (out_c3d[0::2] - out_c3d[1::2]).abs().amax(dim=1).min() > 1e-4


def _uniformity_ks(samples: np.ndarray, period: float) -> float:
    """Kolmogorov-Smirnov distance of ``samples`` (on a circle of ``period``) from the uniform law."""
    u = np.sort(np.mod(samples, period) / period)
    n = len(u)
    return float(max(np.max(np.arange(1, n + 1) / n - u), np.max(u - np.arange(n) / n)))


def _screen_waves(spec, content, states):
    """Parameters of the scene's waves as frame t shows them, (n, K) each: log-frequency (mod P), direction
    on screen (mod 2 pi) and phase at the frame centre (mod 2 pi); see render_background's formula."""
    from rsanet.data.synthetic import _LOG_PERIOD

    log_f = content.log_freqs[None] - states[:, 3:4]
    m = 2 * math.pi * np.exp(np.mod(log_f, _LOG_PERIOD)) / spec.side
    phase = content.phases[None] - m * (np.cos(content.directions) * states[:, 0:1]
                                        + np.sin(content.directions) * states[:, 1:2])
    return np.mod(log_f, _LOG_PERIOD), np.mod(content.directions[None] + states[:, 2:3], 2 * math.pi), phase


def test_the_waves_of_every_frame_are_uniform_for_every_class_and_time_step():
    """What a frame shows of the scene (every wave's log-frequency, direction and phase) is uniform on its
    circle whatever the class and the time step (KS tests, Bonferroni over 8 x 8 x 3 = 192 tests)."""
    from rsanet.data.synthetic import _LOG_PERIOD

    n = 200  # videos per class
    spec = SyntheticSpec(seed=11, frames=8, height=32, width=32, num_classes=8)
    waves = np.zeros((3, 8, n, spec.frames))  # (quantity, class, video, time) of wave 0
    for c in range(8):
        for j in range(n):
            index = c + 8 * j  # the videos whose label is c
            assert video_label(spec, index) == c
            content = make_content(spec, "train", index)
            for q, values in enumerate(_screen_waves(spec, content, clip_states(content, c))):
                waves[q, c, j] = values[:, 0]
    periods = (_LOG_PERIOD, 2 * math.pi, 2 * math.pi)
    crit = math.sqrt(-math.log(1e-3 / 2 / 3) / (2 * n))  # P(KS > crit) <= 1e-3 / 3 per test (DKW)
    worst = max(_uniformity_ks(waves[q, c, :, t], periods[q]) for q in range(3) for c in range(8)
                for t in range(spec.frames))
    assert worst < crit
    # power check: a generator whose waves all start at log-frequency 0 shows the zoom state in every frame
    naive = []
    for j in range(n):
        content = make_content(spec, "train", 6 + 8 * j)
        content.log_freqs[:] = 0.0
        naive.append(_screen_waves(spec, content, clip_states(content, 6))[0][0, 0])
    naive = np.array(naive)
    assert _uniformity_ks(naive, _LOG_PERIOD) > crit


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


def _max_paired_z(stats: np.ndarray) -> float:
    """stats (C, n, S): statistic s of video i rendered as class c. The largest |z| of the paired difference
    between one class and the mean of all classes (same videos, so the video's own content cancels)."""
    diff = stats - stats.mean(0, keepdims=True)  # (C, n, S)
    z = diff.mean(1) / (diff.std(1, ddof=1) / math.sqrt(stats.shape[1]) + 1e-12)  # (C, S)
    return float(np.abs(z).max())


def _frame_statistics(frames: np.ndarray, backgrounds: np.ndarray) -> np.ndarray:
    """Per-frame statistics (N, 74): mean colour (3), colour spread (3), random conv features (64), and the
    object: area of the pixels that differ from the frame's background, and their circular moments in x, y."""
    n, h, w, _ = frames.shape
    pixels = frames.reshape(n, -1, 3).astype(np.float64)
    colour = np.concatenate([pixels.mean(1), pixels.std(1)], 1)  # (N, 6)
    moving = (np.abs(frames.astype(np.int16) - backgrounds.astype(np.int16)).max(-1) > 8).astype(np.float64)
    ax = 2 * np.pi * (np.arange(w) + 0.5) / w  # the object lives on a torus: positions are angles
    ay = 2 * np.pi * (np.arange(h) + 0.5) / h
    location = np.stack([moving.mean((1, 2)),
                         (moving * np.cos(ax)).mean((1, 2)), (moving * np.sin(ax)).mean((1, 2)),
                         (moving * np.cos(ay)[:, None]).mean((1, 2)), (moving * np.sin(ay)[:, None]).mean((1, 2))], 1)
    return np.concatenate([colour, _random_features(frames), location], 1)


def _render_with_background(spec, content, states):
    """uint8 frames of ``states`` and the same frames without the object."""
    frames = render_frames(spec, content, states)
    return frames, np.clip(render_background(spec, content, states) * 255 + 0.5, 0, 255).astype(np.uint8)


def test_frame_pixels_at_every_time_step_do_not_depend_on_the_class():
    """Colour, random-conv features and the object's area and place in frame t do not depend on the class.

    Every video is rendered under all 8 labels (its content does not depend on the label), so the classes
    are compared on the same videos: for each time step, class and statistic, the paired difference to the
    mean over classes must have zero mean (z test, Bonferroni over 8 x 8 x 75 = 4.8e3 tests).
    """
    from rsanet.data.synthetic import _LOG_PERIOD

    n = 128
    spec = SyntheticSpec(seed=12, frames=8, height=32, width=32, num_classes=8)
    frames = np.zeros((8, n, spec.frames, 32, 32, 3), np.uint8)
    bgs = np.zeros_like(frames)
    for i in range(n):
        content = make_content(spec, "val", i)
        for c in range(8):
            frames[c, i], bgs[c, i] = _render_with_background(spec, content, clip_states(content, c))
    z_bound = 4.75  # two-sided p = 2e-6 per test
    for t in range(spec.frames):
        stats = _frame_statistics(frames[:, :, t].reshape(-1, 32, 32, 3), bgs[:, :, t].reshape(-1, 32, 32, 3))
        assert _max_paired_z(stats.reshape(8, n, -1)) < z_bound, f"time step {t}"  # (C*n, S) -> (C, n, S)
    # positive control: the same test catches a generator whose waves all start at the middle of the
    # log-frequency circle, so that the first frame of "approaching" is fine-grained, that of "receding" coarse
    biased = np.zeros((8, n, 75))
    for i in range(n):
        content = make_content(spec, "val", i)
        content.log_freqs[:] = _LOG_PERIOD / 2
        for c in range(8):
            state = clip_states(content, c)[:1]
            biased[c, i] = _frame_statistics(*_render_with_background(spec, content, state))[0]
    assert _max_paired_z(biased) > 2 * z_bound


# ---------------------------------------------------------------------------------- motion semantics
def test_the_class_variable_moves_at_constant_speed():
    content = make_content(SPEC, "train", 3)
    for c in range(SPEC.num_classes):
        var, direction = class_motion(c)
        states = clip_states(content, c)
        steps = np.diff(states[:, var])
        assert np.all(np.sign(steps) == direction) and np.ptp(steps) < 1e-9
        assert abs(states[:, var].mean()) < 1e-9  # centred on the still pose at mid-clip
        others = [k for k in range(4) if k != var]
        assert np.all(states[:, others] == 0.0)  # everything else stays still


def _background_only(spec, content, bx=0.0, by=0.0, angle=0.0):
    return render_background(spec, content, np.array([[bx, by, angle, 0.0]]))[0]


def test_named_directions_are_the_directions_seen_on_screen():
    spec = SyntheticSpec(seed=0, frames=8, height=32, width=32, num_classes=8)
    content = make_content(spec, "train", 0)
    base = _background_only(spec, content)
    assert base.std() > 0.05  # a textured background
    names = dict(zip(CLASS_NAMES, range(8)))
    # "background moving right/down": growing offsets move the content right/down, pixel for pixel
    assert class_motion(names["background moving right"]) == (0, 1)
    assert class_motion(names["background moving left"]) == (0, -1)
    np.testing.assert_allclose(_background_only(spec, content, bx=3.0)[:, 3:], base[:, :-3], atol=1e-4)
    assert class_motion(names["background moving down"]) == (1, 1)
    assert class_motion(names["background moving up"]) == (1, -1)
    np.testing.assert_allclose(_background_only(spec, content, by=2.0)[2:], base[:-2], atol=1e-4)
    # "clockwise": a quarter turn of the angle is np.rot90 clockwise on screen (k=-1), about the centre
    assert class_motion(names["background rotating clockwise"]) == (2, 1)
    assert class_motion(names["background rotating counter-clockwise"]) == (2, -1)
    quarter = _background_only(spec, content, angle=math.pi / 2)
    np.testing.assert_allclose(quarter, np.rot90(base, k=-1, axes=(0, 1)), atol=1e-4)
    assert class_motion(names["background approaching"]) == (3, 1)
    assert class_motion(names["background receding"]) == (3, -1)
    # zooming in by ln 2 doubles the scene about the centre. With every wave placed symmetrically about the
    # window's peak the window is the same before and after, so the zoomed frame must equal the frame
    # magnified 2x (bilinear interpolation, accurate to ~0.03 for these wavelengths); zooming out must not.
    from rsanet.data.synthetic import _LOG_PERIOD

    content.log_freqs[:] = (_LOG_PERIOD + math.log(2.0)) / 2
    magnified = _zoom_about_centre(_background_only(spec, content), 2.0)[8:24, 8:24]
    zoom_in = render_background(spec, content, np.array([[0.0, 0.0, 0.0, math.log(2.0)]]))[0][8:24, 8:24]
    zoom_out = render_background(spec, content, np.array([[0.0, 0.0, 0.0, -math.log(2.0)]]))[0][8:24, 8:24]
    assert np.abs(zoom_in - magnified).max() < 0.05
    assert np.abs(zoom_out - magnified).max() > 0.2


def _zoom_about_centre(image, factor):
    """image (H, W, 3) magnified ``factor`` times about its centre (bilinear interpolation)."""
    h, w, _ = image.shape
    ys = (np.arange(h) + 0.5 - h / 2) / factor + h / 2 - 0.5
    xs = (np.arange(w) + 0.5 - w / 2) / factor + w / 2 - 0.5
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    a, b = image[y0][:, x0], image[y0][:, x0 + 1]
    c, d = image[y0 + 1][:, x0], image[y0 + 1][:, x0 + 1]
    return (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d)


def _displacement(prev, nxt, y0, x0, size, reach):
    """(dx, dy) by which the content of window [y0:y0+size, x0:x0+size] moved from ``prev`` to ``nxt``
    (exhaustive block matching over integer shifts up to ``reach`` pixels)."""
    target = nxt[y0:y0 + size, x0:x0 + size]
    errors = {(dx, dy): float(((target - prev[y0 - dy:y0 - dy + size, x0 - dx:x0 - dx + size]) ** 2).mean())
              for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)}
    return min(errors, key=errors.get)


def test_clips_move_on_screen_as_their_class_names_say():
    """Block matching on the rendered scene of real clips (not the renderer's own parameters): translations
    move the scene along the named screen axis, rotations turn it the named way, and approaching makes the
    scene flow outwards from the centre (receding: inwards)."""
    spec = SyntheticSpec(seed=3, frames=8, height=64, width=64, num_classes=8)
    expected = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}  # class -> sign of (dx, dy); image y points down
    for index in range(3):
        content = make_content(spec, "train", index)
        for label in range(8):
            gray = render_background(spec, content, clip_states(content, label)).mean(-1)  # (T, H, W)
            pairs = list(zip(gray[:-1], gray[1:]))
            if label in expected:
                for prev, nxt in pairs:
                    shift = np.array(_displacement(prev, nxt, 20, 20, 24, 9))
                    along = int(np.abs(expected[label]).argmax())  # the named axis; the other one stays still
                    assert shift[along] * sum(expected[label]) >= 3 and abs(shift[1 - along]) <= 1, \
                        (CLASS_NAMES[label], index, shift)
                continue
            # windows above, right of, below and left of the centre; tangential = clockwise on screen (the
            # top moves right, the right side down, ...), radial = outwards (the top moves up, ...)
            tangential = radial = 0
            for prev, nxt in pairs:
                top, right = _displacement(prev, nxt, 6, 26, 12, 6), _displacement(prev, nxt, 26, 46, 12, 6)
                bottom, left = _displacement(prev, nxt, 46, 26, 12, 6), _displacement(prev, nxt, 26, 6, 12, 6)
                tangential += top[0] + right[1] - bottom[0] - left[1]
                radial += -top[1] + right[0] + bottom[1] - left[0]
            flow, other = (tangential, radial) if label in (4, 5) else (radial, tangential)
            sign = 1 if label in (4, 6) else -1  # clockwise, approaching
            assert sign * flow > 2 * len(pairs) and abs(other) < abs(flow) / 2, \
                (CLASS_NAMES[label], index, tangential, radial)


def test_unused_pose_variables_stay_still():
    spec = SyntheticSpec(seed=1, frames=8, height=32, width=32, num_classes=2)  # pan left vs pan right only
    for index in range(4):
        states = clip_states(make_content(spec, "train", index), video_label(spec, index))
        assert np.ptp(states[:, 1:], axis=0).max() == 0.0  # no tilt, no turn, no zoom
        assert np.ptp(states[:, 0]) > 0


def test_the_object_wraps_around_the_borders():
    """The object lives on a torus: placed on the left edge, it shows on both sides with its full area."""
    spec = SyntheticSpec(seed=0, frames=8, height=32, width=32, num_classes=8)
    content = make_content(spec, "train", 0)
    content.place = np.array([16.0, 16.0, 0.3, 6.0])
    _, inside = render_object(spec, content)
    content.place = np.array([0.0, 16.0, 0.3, 6.0])
    _, edge = render_object(spec, content)
    assert edge[0, :, :4].sum() > 1 and edge[0, :, -4:].sum() > 1
    assert edge.sum() == pytest.approx(inside.sum(), rel=0.02)
