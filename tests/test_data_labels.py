"""Label maps and official-format parsers against the real class names; the left/right flip policy."""
import json
import random
from pathlib import Path

import pytest
import torch

from rsanet.data.labels import AnnotationError, left_right_pairs, swap_left_right
from rsanet.data.sets import diving48, gym99, lists, ssv1, ssv2
from rsanet.data.transforms import FlipPolicy

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "labels"  # the real class lists (see its README)
DATA = ROOT / "data"


def lines(path):
    return [line for line in Path(path).read_text().splitlines() if line.strip()]


def pinned(dataset):
    return lines(DATA / dataset / "classes.txt")


@pytest.fixture(scope="module")
def ss_names():
    return pinned("ssv2")


# ------------------------------------------------------------------ committed maps vs the official formats
def test_ssv1_pinned_order_is_alphabetical_and_equals_ssv2(tmp_path):
    csv_order = lines(DATA / "ssv1" / "classes_csv_order.txt")
    labels_csv = tmp_path / "something-something-v1-labels.csv"
    labels_csv.write_text("\n".join(csv_order) + "\n")  # the official file: one name per line, CSV order
    classes = ssv1.read_classes(labels_csv)
    assert classes == pinned("ssv1") == pinned("ssv2")
    assert len(classes) == 174 and classes != csv_order  # the two orders really differ
    assert classes[0] == "Approaching something with your camera"
    if SHARED.is_dir():
        assert csv_order == lines(SHARED / "ssv1_classes_csv_order.txt")


def test_ssv2_labels_json_order(tmp_path):
    names = lines(SHARED / "ssv2_classes_labels_json_order.txt") if SHARED.is_dir() else pinned("ssv2")
    items = [(name, str(i)) for i, name in enumerate(names)]
    random.Random(0).shuffle(items)  # the index strings, not the key order, define the classes
    labels_json = tmp_path / "something-something-v2-labels.json"
    labels_json.write_text(json.dumps(dict(items)))
    assert ssv2.read_classes(labels_json) == pinned("ssv2")


def test_diving48_vocab_gives_the_pinned_names(tmp_path):
    names = lines(SHARED / "diving48_classes.txt") if SHARED.is_dir() else pinned("diving48")
    vocab = tmp_path / "Diving48_vocab.json"
    vocab.write_text(json.dumps([name.split("+") for name in names]))
    got = diving48.read_classes(vocab)
    assert got == pinned("diving48") and len(got) == 48
    assert all(len(n.split("+")) == 4 for n in got)


def test_gym99_categories_give_the_pinned_names(tmp_path):
    names = lines(SHARED / "gym99_classes.txt") if SHARED.is_dir() else pinned("gym99")
    cats = tmp_path / "gym99_categories.txt"
    rows = [f"Clabel: {i}; set: {1 + i // 20}; Glabel: {3 * i + 1}; {name}" for i, name in enumerate(names)]
    cats.write_text("\n".join(reversed(rows)) + "\n")  # Clabel, not line order, is the class index
    got = gym99.read_classes(cats)
    assert got == pinned("gym99") and len(got) == 99
    assert got[0].startswith("(VT) round-off, flic-flac with 0.5 turn on")
    assert got[58] == got[70] == "(BB) salto backward tucked"  # a real duplicate name: two distinct classes


# ------------------------------------------------------------------------------ annotation parsers
def test_ssv1_annotations(tmp_path, ss_names):
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("\n".join(lines(DATA / "ssv1" / "classes_csv_order.txt")) + "\n")
    train = tmp_path / "something-something-v1-train.csv"
    train.write_text("100218;Something falling like a feather or paper\n"
                     "42;Pushing something from left to right\n\n")
    test = tmp_path / "something-something-v1-test.csv"
    test.write_text("7\n8\n")
    classes = ssv1.read_classes(labels_csv)
    recs = ssv1.read_records(train, classes, backend="frames")
    assert [(r.path, r.label, r.video_id) for r in recs] == [
        ("100218", ss_names.index("Something falling like a feather or paper"), "100218"),
        ("42", ss_names.index("Pushing something from left to right"), "42")]
    assert [(r.path, r.label) for r in ssv1.read_records(test, classes)] == [("7", -1), ("8", -1)]
    bad = tmp_path / "bad.csv"
    bad.write_text("1;Holding something\n2;Juggling something\n")
    with pytest.raises(AnnotationError, match=r"bad.csv:2: unknown class 'Juggling something'"):
        ssv1.read_records(bad, classes)


def test_ssv2_annotations(tmp_path, ss_names):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({n: str(i) for i, n in enumerate(ss_names)}))
    train = tmp_path / "train.json"
    train.write_text(json.dumps([
        {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
         "template": "Holding [something] next to [something]", "placeholders": ["potato", "vicks"]},
        {"id": "42326", "label": "pushing a pen from right to left",
         "template": "Pushing [something] from right to left", "placeholders": ["a pen"]}]))
    test = tmp_path / "test.json"
    test.write_text(json.dumps([{"id": "1420"}]))
    classes = ssv2.read_classes(labels)
    recs = ssv2.read_records(train, classes, backend="video")
    assert classes == ss_names
    assert [(r.path, r.label) for r in recs] == [
        ("78687.webm", ss_names.index("Holding something next to something")),
        ("42326.webm", ss_names.index("Pushing something from right to left"))]
    assert [(r.path, r.label) for r in ssv2.read_records(test, classes, backend="frames")] == [("1420", -1)]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "5", "template": "Dancing with [something]"}]))
    with pytest.raises(AnnotationError, match=r"entry 0 \(id 5\).*'Dancing with something'"):
        ssv2.read_records(bad, classes)


def test_diving48_annotations_keep_the_span(tmp_path):
    classes = pinned("diving48")
    ann = tmp_path / "Diving48_V2_train.json"
    ann.write_text(json.dumps([{"vid_name": "-mmq0PT-u8k_00155", "label": 0, "start_frame": 0, "end_frame": 184},
                               {"vid_name": "abc_00001", "label": 47, "start_frame": 10, "end_frame": 20}]))
    recs = diving48.read_records(ann, classes)
    assert [(r.path, r.label, r.start, r.end, r.video_id) for r in recs] == [
        ("rgb/-mmq0PT-u8k_00155.mp4", 0, 0, 184, "-mmq0PT-u8k_00155"), ("rgb/abc_00001.mp4", 47, 10, 20, "abc_00001")]
    assert recs[1].clip_frames == 10  # end_frame is exclusive: frames 10..19
    ann.write_text(json.dumps([{"vid_name": "x", "label": 48, "start_frame": 0, "end_frame": 5}]))
    with pytest.raises(AnnotationError, match="label 48"):
        diving48.read_records(ann, classes)


def test_gym_and_list_annotations(tmp_path):
    classes = pinned("gym99")
    ann = tmp_path / "gym99_val_element.txt"
    ann.write_text("A0xAXXysHUo_E_002184_002237_A_0035_0036 12\nzz_E_000001_000005_A_0001_0002 0\n")
    recs = gym99.read_records(ann, classes)
    assert [(r.path, r.label) for r in recs] == [("A0xAXXysHUo_E_002184_002237_A_0035_0036.mp4", 12),
                                                 ("zz_E_000001_000005_A_0001_0002.mp4", 0)]
    ann.write_text("only_an_id\n")
    with pytest.raises(AnnotationError, match=r"gym99_val_element.txt:1: expected '<clip id> <label>'"):
        gym99.read_records(ann, classes)
    lst = tmp_path / "train.txt"
    lst.write_text("folder with space/v1 30 2\nv2 7 0\n")
    assert [(r.path, r.num_frames, r.label) for r in lists.read_records(lst, ["a", "b", "c"])] == [
        ("folder with space/v1", 30, 2), ("v2", 7, 0)]
    lst.write_text("my clip.mp4 1\nv3 seven 0\n")  # mmaction2's `<path> <label>`: frame counts found on decoding
    assert [(r.path, r.num_frames, r.label) for r in lists.read_records(lst, ["a", "b"])] == [
        ("my clip.mp4", 0, 1), ("v3 seven", 0, 0)]
    lst.write_text("v3 seven\n")
    with pytest.raises(AnnotationError, match=r"train.txt:1: expected '<path> <num_frames> <label>' or"):
        lists.read_records(lst, ["a"])
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        lists.read_records(tmp_path / "nowhere.txt", ["a"])


def test_gym_categories_errors(tmp_path):
    cats = tmp_path / "cats.txt"
    cats.write_text("Clabel: 0; set: 1; Glabel: 1; a\nClabel: 2; set: 1; Glabel: 3; b\n")
    with pytest.raises(AnnotationError, match="Clabel values must be 0..1"):
        gym99.read_classes(cats)
    cats.write_text("0 a\n")
    with pytest.raises(AnnotationError, match="cats.txt:1"):
        gym99.read_classes(cats)


# ---------------------------------------------------------------------------------- flip policy
def test_exactly_three_left_right_pairs_on_the_real_ss_names(ss_names):
    pairs = left_right_pairs(ss_names)
    named = {(ss_names[i], ss_names[j]) for i, j in pairs.items() if i < j}
    assert named == {
        ("Pulling something from left to right", "Pulling something from right to left"),
        ("Pushing something from left to right", "Pushing something from right to left"),
        ("Turning the camera left while filming something", "Turning the camera right while filming something"),
    }
    assert all(pairs[j] == i for i, j in pairs.items())
    for name in ["Putting something upright on the table",
                 "Plugging something into something but pulling it right out as you remove your hand",
                 "Laying something on the table on its side, not upright"]:
        assert ss_names.index(name) not in pairs
    assert swap_left_right("Left of right, upright") == "Right of left, upright"


def flips(policy, label, draws=400):
    out = [policy.decide(label, torch.Generator().manual_seed(s)) for s in range(draws)]
    return sum(f for f, _ in out), {lab for f, lab in out if f}, {lab for f, lab in out if not f}


def test_flip_policies_on_the_real_ss_names(ss_names):
    pairs = left_right_pairs(ss_names)
    push_lr = ss_names.index("Pushing something from left to right")
    push_rl = ss_names.index("Pushing something from right to left")
    upright = ss_names.index("Putting something upright on the table")
    plugging = ss_names.index("Plugging something into something but pulling it right out as you remove your hand")

    skip = FlipPolicy("skip_left_right", pairs)
    assert flips(skip, push_lr)[0] == 0  # never flipped
    for label in (upright, plugging):
        n, flipped_labels, kept = flips(skip, label)
        assert 150 < n < 250 and flipped_labels == {label} and kept == {label}

    swap = FlipPolicy("swap_left_right", pairs)
    n, flipped_labels, kept = flips(swap, push_lr)
    assert 150 < n < 250 and flipped_labels == {push_rl} and kept == {push_lr}
    n, flipped_labels, _ = flips(swap, upright)
    assert 150 < n < 250 and flipped_labels == {upright}

    n, flipped_labels, _ = flips(FlipPolicy("all", pairs), push_lr)
    assert 150 < n < 250 and flipped_labels == {push_lr}  # flipped without relabelling
    assert flips(FlipPolicy("none", pairs), upright)[0] == 0
    with pytest.raises(ValueError, match="'sometimes'"):
        FlipPolicy("sometimes", pairs)


def test_duplicate_names_without_left_right_are_never_paired():
    """Gym99 lists "(BB) salto backward tucked" twice (classes 58 and 70): not a left/right pair."""
    from pathlib import Path

    from rsanet.data.labels import left_right_pairs

    gym99 = (Path(__file__).resolve().parents[1] / "data" / "gym99" / "classes.txt").read_text().splitlines()
    assert gym99[58] == gym99[70]
    assert left_right_pairs(gym99) == {}
    assert left_right_pairs(["a left b", "x", "x", "a right b"]) == {0: 3, 3: 0}
