"""Metrics against hand-counted examples; per-video averaging with padding duplicates; score files and the
ensemble tool."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rsanet.metrics import (
    average_views,
    compute_metrics,
    confusion_matrix,
    ensemble_scores,
    load_scores,
    mean_class_accuracy,
    save_scores,
    topk_accuracy,
)

ROOT = Path(__file__).resolve().parents[1]

# 6 videos, 4 classes. Rows: scores; ranking of each row written next to it.
SCORES = np.array([
    [0.7, 0.1, 0.1, 0.1],  # label 0: top1 hit
    [0.1, 0.2, 0.6, 0.1],  # label 1: second best -> top2 hit, top1 miss
    [0.1, 0.1, 0.7, 0.1],  # label 2: hit
    [0.4, 0.3, 0.2, 0.1],  # label 3: last -> miss at top1..3
    [0.1, 0.6, 0.2, 0.1],  # label 1: hit
    [0.2, 0.1, 0.6, 0.1],  # label 0: second best
])
LABELS = np.array([0, 1, 2, 3, 1, 0])


def test_topk_by_hand():
    assert topk_accuracy(SCORES, LABELS, 1) == pytest.approx(100 * 3 / 6)
    assert topk_accuracy(SCORES, LABELS, 2) == pytest.approx(100 * 5 / 6)
    assert topk_accuracy(SCORES, LABELS, 3) == pytest.approx(100 * 5 / 6)
    assert topk_accuracy(SCORES, LABELS, 5) == pytest.approx(100.0)  # k clipped to 4 classes


def test_confusion_and_mean_class_accuracy_by_hand():
    pred = SCORES.argmax(1)  # [0, 2, 2, 0, 1, 2]
    cm = confusion_matrix(pred, LABELS, 4)
    assert cm.tolist() == [[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    # recalls: class 0 1/2, class 1 1/2, class 2 1/1, class 3 0/1
    assert mean_class_accuracy(SCORES, LABELS) == pytest.approx(100 * (0.5 + 0.5 + 1 + 0) / 4)


def test_class_only_in_predictions_does_not_count():
    # Ground truth holds classes 0 and 1 only; class 2 is predicted once but never true.
    scores = np.array([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])
    labels = np.array([0, 1, 1])
    assert mean_class_accuracy(scores, labels) == pytest.approx(100 * (1.0 + 0.5) / 2)  # not /3


def test_compute_metrics_skips_unlabelled_videos():
    m = compute_metrics(np.vstack([SCORES, [[0.25] * 4]]), np.append(LABELS, -1), views=2)
    assert m["num_videos"] == 7 and m["num_labelled"] == 6 and m["views"] == 2
    assert m["top1"] == pytest.approx(50.0) and m["top5"] == pytest.approx(100.0)
    assert m["mean_class_accuracy"] == pytest.approx(50.0)
    none = compute_metrics(SCORES[:2], np.array([-1, -1]))
    assert none["top1"] is None and none["num_videos"] == 2


def test_bad_labels_are_named():
    with pytest.raises(ValueError, match="labels must be in"):
        topk_accuracy(SCORES, np.array([0, 1, 2, 3, 4, 0]), 1)


def test_average_views_drops_padding_duplicates():
    # 3 videos x 2 views = samples 0..5 (index = video * 2 + view); a 4-rank sampler padded to 8 rows by
    # repeating samples 0 and 1.
    probs = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0.2, 0.8], [0.4, 0.6], [1, 0], [0, 1]], dtype=np.float32)
    index = np.array([0, 1, 2, 3, 4, 5, 0, 1])
    video = index // 2
    label = np.array([0, 0, 1, 1, 1, 1, 0, 0])
    scores, labels, views = average_views(index, video, label, probs, num_videos=3)
    np.testing.assert_allclose(scores, [[0.5, 0.5], [1.0, 0.0], [0.3, 0.7]], atol=1e-7)
    assert labels.tolist() == [0, 1, 1] and views.tolist() == [2, 2, 2]
    # Counting the duplicates would have given video 0 the same mean here, so check the count too:
    probs2 = probs.copy()
    probs2[6] = [1, 0]  # duplicate row of sample 0
    scores2, _, _ = average_views(np.array([0, 1, 2, 3, 4, 5, 0]), video[:7], label[:7], probs2[:7], 3)
    assert scores2[0].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="no scored view"):
        average_views(index[:4], video[:4], label[:4], probs[:4], num_videos=3)
    with pytest.raises(ValueError, match="disagree on its label"):
        average_views(index[:6], video[:6], np.array([0, 1, 1, 1, 1, 1]), probs[:6], num_videos=3)


def write_scores(path, order, scores, labels):
    ids = np.array([f"vid{i}" for i in range(len(labels))])
    return save_scores(path, ids[order], labels[order], scores[order], np.ones(len(order), dtype=int),
                       classes=["a", "b", "c", "d"])


def test_score_file_round_trip(tmp_path):
    p = write_scores(tmp_path / "s.npz", np.arange(6), SCORES, LABELS)
    data = load_scores(p)
    assert data["video_ids"].tolist() == [f"vid{i}" for i in range(6)]
    np.testing.assert_allclose(data["scores"], SCORES.astype(np.float32))
    assert data["labels"].tolist() == LABELS.tolist() and data["classes"].tolist() == ["a", "b", "c", "d"]
    assert not list(tmp_path.glob("*.tmp"))


def test_ensemble_aligns_by_video_id(tmp_path):
    other = np.roll(SCORES, 1, axis=1)
    a = write_scores(tmp_path / "a.npz", np.arange(6), SCORES, LABELS)
    b = write_scores(tmp_path / "b.npz", np.array([5, 3, 1, 0, 2, 4]), other, LABELS)  # shuffled order
    merged = ensemble_scores([a, b])
    np.testing.assert_allclose(merged["scores"], (SCORES + other) / 2, atol=1e-6)
    assert merged["views"].tolist() == [2] * 6
    bad_labels = LABELS.copy()
    bad_labels[2] = 3
    c = write_scores(tmp_path / "c.npz", np.arange(6), SCORES, bad_labels)
    with pytest.raises(ValueError, match="disagree on the label of video vid2"):
        ensemble_scores([a, c])
    d = write_scores(tmp_path / "d.npz", np.arange(5), SCORES, LABELS)
    with pytest.raises(ValueError, match="other videos"):
        ensemble_scores([a, d])


def test_ensemble_tool_prints_metrics(tmp_path):
    # Each model alone gets video 3 wrong; together they rank class 3 first.
    s1 = SCORES.copy()
    s1[3] = [0.4, 0.0, 0.0, 0.35]
    s2 = SCORES.copy()
    s2[3] = [0.1, 0.5, 0.0, 0.45]  # class 1 wins here; the mean [0.25, 0.25, 0, 0.4] ranks class 3 first
    a = write_scores(tmp_path / "a.npz", np.arange(6), s1, LABELS)
    b = write_scores(tmp_path / "b.npz", np.arange(6), s2, LABELS)
    out = tmp_path / "ens.npz"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "ensemble.py"), str(a), str(b), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["top1"] == pytest.approx(100 * 4 / 6) and metrics["num_videos"] == 6
    assert compute_metrics(s1, LABELS)["top1"] == compute_metrics(s2, LABELS)["top1"] == pytest.approx(50.0)
    assert load_scores(out)["scores"].shape == (6, 4)
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "ensemble.py"), str(a), str(tmp_path / "no.npz")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "no.npz" in r.stderr
