"""Frame sampling: TSN train/test segment indices (the authors' tsm rule and our uniform rule), multi-clip
shifts, short videos, trimmed spans, dense.

``fixtures/authors_segment_indices.json`` holds the outputs of the authors' own code (KimManjin/RSA
``ops/dataset.py``, ``TSNDataSet._sample_indices`` and ``_get_val_indices`` run unmodified with
``new_length=1``, ``mode=1``; minus 1 for 0-based frames) for n in {1, 7, 8, 15, 16, 17, 37, 48, 100} and
T in {8, 16}; training indices after ``np.random.seed(s)``, where ``s`` is the NumPy seed that our sampler
draws from ``torch.Generator().manual_seed(k)``, k = 0, 1, 2.
"""
import json
from fractions import Fraction
from math import floor
from pathlib import Path

import numpy as np
import pytest
import torch

from rsanet.data.records import VideoRecord
from rsanet.data.sampling import ClipSampler, dense_indices, segment_indices

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "authors_segment_indices.json").read_text())
NS, TS = [1, 7, 8, 15, 16, 17, 37, 48, 100], [8, 16]


def reference_test_indices(n, t, clip=0, clips=1):
    """Literal formula with exact fractions: floor((i + f) n / T), f = (1/2 + c/K) mod 1."""
    f = (Fraction(1, 2) + Fraction(clip, clips)) % 1
    return [floor((i + f) * n / t) for i in range(t)]


def test_centre_indices_known_values():
    # TSN/TSM test sampling on 20 frames, 8 segments: int(tick / 2 + tick * i) with tick = 2.5.
    assert segment_indices(20, 8, train=False, rule="uniform").tolist() == [1, 3, 6, 8, 11, 13, 16, 18]
    # Second of two clips: shifted by half a segment (int(tick * i)).
    assert segment_indices(20, 8, False, clip=1, num_clips=2, rule="uniform").tolist() == [0, 2, 5, 7, 10, 12, 15, 17]
    assert segment_indices(16, 8, train=False, rule="uniform").tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert segment_indices(8, 8, train=False, rule="uniform").tolist() == list(range(8))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 15, 16, 37, 100, 241])
@pytest.mark.parametrize("t,clips", [(8, 1), (8, 2), (16, 3), (4, 5)])
def test_test_indices_match_the_literal_formula(n, t, clips):
    for c in range(clips):
        got = segment_indices(n, t, train=False, clip=c, num_clips=clips, rule="uniform")
        assert got.tolist() == reference_test_indices(n, t, c, clips)
        assert got.min() >= 0 and got.max() < n and np.all(np.diff(got) >= 0)


def test_short_video_repeats_frames_evenly():
    assert segment_indices(3, 8, train=False, rule="uniform").tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    for seed in range(20):  # no room for randomness: every segment is empty or holds one frame
        g = torch.Generator().manual_seed(seed)
        assert segment_indices(3, 8, True, generator=g, rule="uniform").tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert segment_indices(1, 8, train=True, rule="uniform").tolist() == [0] * 8
    short = segment_indices(5, 16, train=False, rule="uniform").tolist()
    assert short == sorted(short) and set(short) == set(range(5))  # every frame is used


@pytest.mark.parametrize("n,t", [(20, 8), (37, 8), (100, 16), (9, 8)])
def test_train_indices_one_random_frame_per_segment(n, t):
    seen = [set() for _ in range(t)]
    for seed in range(300):
        idx = segment_indices(n, t, train=True, generator=torch.Generator().manual_seed(seed), rule="uniform")
        for i, k in enumerate(idx.tolist()):
            lo, hi = i * n // t, (i + 1) * n // t
            assert lo <= k < hi, (seed, i, k)
            seen[i].add(k)
    for i in range(t):  # every frame of every segment is reachable
        assert seen[i] == set(range(i * n // t, (i + 1) * n // t))


def test_train_indices_are_seeded():
    a = segment_indices(50, 8, True, generator=torch.Generator().manual_seed(3), rule="uniform")
    b = segment_indices(50, 8, True, generator=torch.Generator().manual_seed(3), rule="uniform")
    c = segment_indices(50, 8, True, generator=torch.Generator().manual_seed(4), rule="uniform")
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_trimmed_clip_honours_start_and_end():
    rec = VideoRecord("x.mp4", num_frames=100, label=0, start=40, end=60)  # frames 40..59
    test = ClipSampler(8, train=False, segment_rule="uniform")(rec)
    assert test.tolist() == [40 + k for k in reference_test_indices(20, 8)]
    for seed in range(50):
        idx = ClipSampler(8, True, segment_rule="uniform")(rec, generator=torch.Generator().manual_seed(seed))
        assert idx.min() >= 40 and idx.max() <= 59


def test_span_past_the_end_is_clamped_to_existing_frames():
    rec = VideoRecord("x.mp4", num_frames=50, label=0, start=40, end=80)  # only 40..49 exist
    uniform = ClipSampler(8, train=False, segment_rule="uniform")
    assert uniform(rec).tolist() == [40 + k for k in reference_test_indices(10, 8)]
    listed_longer = VideoRecord("x", num_frames=12, label=0)
    assert uniform(listed_longer).max() == 11
    with pytest.raises(ValueError, match="starts at frame 60"):
        uniform(VideoRecord("x.mp4", num_frames=50, label=0, start=60, end=80))
    with pytest.raises(ValueError, match="no frames"):
        uniform(VideoRecord("empty", num_frames=0))


def test_sampler_multi_clip_views_differ():
    rec = VideoRecord("v", num_frames=40, label=1)
    s = ClipSampler(8, train=False, num_clips=2, segment_rule="uniform")
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


# ------------------------------------------------------------------------------------------------------
# The authors' rule (tsm): fixtures from their code, and an independent NumPy transcription for more seeds.
# ------------------------------------------------------------------------------------------------------
def authors_train(n, t, numpy_seed):
    """Transcription of the TSN/TSM training rule (0-based) with NumPy's global-style legacy stream."""
    rng = np.random.RandomState(numpy_seed)
    avg = n // t
    if avg > 0:
        return [i * avg + int(r) for i, r in enumerate(rng.randint(avg, size=t))]
    if n > t:
        return sorted(int(r) for r in rng.randint(n, size=t))
    return [0] * t


def authors_val(n, t):
    """Transcription of the TSN/TSM validation rule (0-based)."""
    if n > t:
        tick = n / float(t)
        return [int(tick / 2.0 + tick * x) for x in range(t)]
    return [0] * t


def numpy_seed_of(torch_seed):
    """The NumPy seed our sampler draws from a generator seeded with ``torch_seed`` (its first draw)."""
    return int(torch.randint(0, 2**32, (1,), generator=torch.Generator().manual_seed(torch_seed)))


def test_fixture_covers_the_issue_grid():
    assert sorted({(e["n"], e["T"]) for e in FIXTURE["train"]}) == sorted((n, t) for n in NS for t in TS)
    assert sorted({(e["n"], e["T"]) for e in FIXTURE["test"]}) == sorted((n, t) for n in NS for t in TS)


@pytest.mark.parametrize("entry", FIXTURE["train"], ids=lambda e: f"n{e['n']}-T{e['T']}-s{e['torch_seed']}")
def test_tsm_train_indices_equal_the_authors_code(entry):
    n, t, k = entry["n"], entry["T"], entry["torch_seed"]
    assert numpy_seed_of(k) == entry["numpy_seed"]
    got = segment_indices(n, t, train=True, generator=torch.Generator().manual_seed(k))  # tsm is the default
    assert got.tolist() == entry["indices"]
    rec = VideoRecord("v", num_frames=n, label=0)
    via_sampler = ClipSampler(t, train=True)(rec, generator=torch.Generator().manual_seed(k))
    assert via_sampler.tolist() == entry["indices"]


@pytest.mark.parametrize("entry", FIXTURE["test"], ids=lambda e: f"n{e['n']}-T{e['T']}")
def test_tsm_test_indices_equal_the_authors_code(entry):
    n, t = entry["n"], entry["T"]
    assert segment_indices(n, t, train=False).tolist() == entry["indices"]
    assert ClipSampler(t, train=False)(VideoRecord("v", num_frames=n, label=0)).tolist() == entry["indices"]


@pytest.mark.parametrize("t", TS + [3, 5])
def test_tsm_matches_the_transcription_for_many_seeds_and_lengths(t):
    for n in list(range(1, 3 * t + 2)) + NS + [241]:
        assert segment_indices(n, t, train=False, rule="tsm").tolist() == authors_val(n, t), n
        for k in range(25):
            got = segment_indices(n, t, True, generator=torch.Generator().manual_seed(1000 * n + k), rule="tsm")
            assert got.tolist() == authors_train(n, t, numpy_seed_of(1000 * n + k)), (n, k)


def test_tsm_train_never_uses_the_last_frames_and_reaches_every_other_one():
    n, t = 37, 8  # avg 4: frames 32..36 are never used
    seen = [set() for _ in range(t)]
    for seed in range(400):
        for i, k in enumerate(segment_indices(n, t, True, generator=torch.Generator().manual_seed(seed))):
            seen[i].add(int(k))
    assert [sorted(s) for s in seen] == [list(range(4 * i, 4 * i + 4)) for i in range(t)]


def test_tsm_short_videos_are_all_first_frame():
    for n in (1, 5, 7):
        assert segment_indices(n, 8, True, generator=torch.Generator().manual_seed(0)).tolist() == [0] * 8
        assert segment_indices(n, 8, False).tolist() == [0] * 8
    assert segment_indices(8, 8, True).tolist() == list(range(8))  # n == T: every frame in training ...
    assert segment_indices(8, 8, False).tolist() == [0] * 8  # ... but frame 0 only at test (their val rule)


def test_tsm_multi_clip_generalization():
    # One clip: the centres. Two clips: centres, then TSM's twice_sample starts int(tick * i).
    tick = 20 / 8
    assert segment_indices(20, 8, False, clip=0, num_clips=2).tolist() == [int(tick / 2 + tick * i) for i in range(8)]
    assert segment_indices(20, 8, False, clip=1, num_clips=2).tolist() == [int(tick * i) for i in range(8)]
    for clips in (3, 5):
        for c in range(clips):
            f = ((0.5 + c / clips) % 1.0)
            want = [min(int(tick * f + tick * i), 19) for i in range(8)]
            assert segment_indices(20, 8, False, clip=c, num_clips=clips).tolist() == want
    assert segment_indices(6, 8, False, clip=1, num_clips=2).tolist() == [0] * 8


@pytest.mark.parametrize("n,t", [(16, 8), (48, 16), (100, 4), (37, 8)])
def test_rules_agree_at_test_time_when_t_is_a_power_of_two(n, t):
    for clips in (1, 2):
        for c in range(clips):
            assert (segment_indices(n, t, False, clip=c, num_clips=clips, rule="tsm").tolist()
                    == segment_indices(n, t, False, clip=c, num_clips=clips, rule="uniform").tolist())


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown segment rule 'tsn'"):
        segment_indices(10, 8, False, rule="tsn")
    with pytest.raises(ValueError, match="unknown segment rule"):
        ClipSampler(8, train=False, segment_rule="tsn")
