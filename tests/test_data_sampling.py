"""Frame sampling: TSN train/test segment indices, multi-clip shifts, short videos, trimmed spans, dense."""
from fractions import Fraction
from math import floor

import numpy as np
import pytest
import torch

from rsanet.data.records import VideoRecord
from rsanet.data.sampling import ClipSampler, dense_indices, segment_indices


def reference_test_indices(n, t, clip=0, clips=1):
    """Literal formula with exact fractions: floor((i + f) n / T), f = (1/2 + c/K) mod 1."""
    f = (Fraction(1, 2) + Fraction(clip, clips)) % 1
    return [floor((i + f) * n / t) for i in range(t)]


def test_centre_indices_known_values():
    # TSN/TSM test sampling on 20 frames, 8 segments: int(tick / 2 + tick * i) with tick = 2.5.
    assert segment_indices(20, 8, train=False).tolist() == [1, 3, 6, 8, 11, 13, 16, 18]
    # Second of two clips: shifted by half a segment (int(tick * i)).
    assert segment_indices(20, 8, train=False, clip=1, num_clips=2).tolist() == [0, 2, 5, 7, 10, 12, 15, 17]
    assert segment_indices(16, 8, train=False).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert segment_indices(8, 8, train=False).tolist() == list(range(8))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 15, 16, 37, 100, 241])
@pytest.mark.parametrize("t,clips", [(8, 1), (8, 2), (16, 3), (4, 5)])
def test_test_indices_match_the_literal_formula(n, t, clips):
    for c in range(clips):
        got = segment_indices(n, t, train=False, clip=c, num_clips=clips)
        assert got.tolist() == reference_test_indices(n, t, c, clips)
        assert got.min() >= 0 and got.max() < n and np.all(np.diff(got) >= 0)


def test_short_video_repeats_frames_evenly():
    assert segment_indices(3, 8, train=False).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    for seed in range(20):  # no room for randomness: every segment is empty or holds one frame
        g = torch.Generator().manual_seed(seed)
        assert segment_indices(3, 8, train=True, generator=g).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert segment_indices(1, 8, train=True).tolist() == [0] * 8
    assert segment_indices(5, 16, train=False).tolist() == sorted(segment_indices(5, 16, train=False).tolist())
    assert set(segment_indices(5, 16, train=False).tolist()) == set(range(5))  # every frame is used


@pytest.mark.parametrize("n,t", [(20, 8), (37, 8), (100, 16), (9, 8)])
def test_train_indices_one_random_frame_per_segment(n, t):
    seen = [set() for _ in range(t)]
    for seed in range(300):
        idx = segment_indices(n, t, train=True, generator=torch.Generator().manual_seed(seed))
        for i, k in enumerate(idx.tolist()):
            lo, hi = i * n // t, (i + 1) * n // t
            assert lo <= k < hi, (seed, i, k)
            seen[i].add(k)
    for i in range(t):  # every frame of every segment is reachable
        assert seen[i] == set(range(i * n // t, (i + 1) * n // t))


def test_train_indices_are_seeded():
    a = segment_indices(50, 8, True, generator=torch.Generator().manual_seed(3))
    b = segment_indices(50, 8, True, generator=torch.Generator().manual_seed(3))
    c = segment_indices(50, 8, True, generator=torch.Generator().manual_seed(4))
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_trimmed_clip_honours_start_and_end():
    rec = VideoRecord("x.mp4", num_frames=100, label=0, start=40, end=60)  # frames 40..59
    test = ClipSampler(8, train=False)(rec)
    assert test.tolist() == [40 + k for k in reference_test_indices(20, 8)]
    for seed in range(50):
        idx = ClipSampler(8, train=True)(rec, generator=torch.Generator().manual_seed(seed))
        assert idx.min() >= 40 and idx.max() <= 59


def test_span_past_the_end_is_clamped_to_existing_frames():
    rec = VideoRecord("x.mp4", num_frames=50, label=0, start=40, end=80)  # only 40..49 exist
    assert ClipSampler(8, train=False)(rec).tolist() == [40 + k for k in reference_test_indices(10, 8)]
    listed_longer = VideoRecord("x", num_frames=12, label=0)
    assert ClipSampler(8, train=False)(listed_longer).max() == 11
    with pytest.raises(ValueError, match="starts at frame 60"):
        ClipSampler(8, train=False)(VideoRecord("x.mp4", num_frames=50, label=0, start=60, end=80))
    with pytest.raises(ValueError, match="no frames"):
        ClipSampler(8, train=False)(VideoRecord("empty", num_frames=0))


def test_sampler_multi_clip_views_differ():
    rec = VideoRecord("v", num_frames=40, label=1)
    s = ClipSampler(8, train=False, num_clips=2)
    assert s(rec, 0).tolist() == reference_test_indices(40, 8, 0, 2)
    assert s(rec, 1).tolist() == reference_test_indices(40, 8, 1, 2)
    assert s(rec, 0).tolist() != s(rec, 1).tolist()


def test_dense_sampling():
    assert dense_indices(40, 8, 2, train=False).tolist() == [12 + 2 * k for k in range(8)]  # centred span of 15
    assert dense_indices(40, 8, 2, False, clip=0, num_clips=3).tolist()[0] == 0
    assert dense_indices(40, 8, 2, False, clip=2, num_clips=3).tolist()[-1] == 39
    assert dense_indices(10, 8, 2, train=False).tolist() == [0, 2, 4, 6, 8, 0, 2, 4]  # loops when too short
    for seed in range(30):
        idx = dense_indices(40, 8, 3, True, generator=torch.Generator().manual_seed(seed))
        assert np.all(np.diff(idx) == 3) and idx.min() >= 0 and idx.max() < 40
    rec = VideoRecord("v", num_frames=100, label=0, start=10, end=30)
    idx = ClipSampler(4, train=False, kind="dense", dense_stride=2)(rec)
    assert idx.tolist() == [10 + 6, 10 + 8, 10 + 10, 10 + 12]
