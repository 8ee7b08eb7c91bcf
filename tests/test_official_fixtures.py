"""Our model and test pipeline against numbers produced by the authors' code (KimManjin/RSA).

The fixtures (``tests/fixtures/authors``, made as its README says) hold their RSA layers' weights, inputs and
outputs, the key/shape manifest and logits of their full TSN + RSANet-R50 built from a stated weight
recipe, and the clips their test loader produced from small JPEG frame folders. Every test converts their
tensors with our converter (:mod:`rsanet.models.official`) and runs our own code; nothing of theirs runs here.
"""
import json

import numpy as np
import pytest
import torch
from authors_support import FIXTURES, load_json, recipe_clip, recipe_state, relative_error
from test_tools_support import ROOT

from rsanet.config import config_from_dict, load_config
from rsanet.models import build_model
from rsanet.models.official import authors_to_native, head_major_permutation, rsa_from_authors, rsa_to_authors
from rsanet.ops import RSA

LAYERS = load_json("layers.json")
MODEL = load_json("model.json")
PIPELINE = load_json("pipeline.json")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def layer_arrays():
    with np.load(FIXTURES / "layers.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_rsa_layer_matches_the_authors_layer(name, layer_arrays):
    """Their weights through our converter into our RSA, float64: same output (after their channel order,
    c*L + l, is mapped to ours, l*C_Q + c) to 1e-6 relative, and the reverse conversion gives their tensors."""
    p = LAYERS[name]
    weights = {k.split("/weight/")[1]: torch.from_numpy(v).double() for k, v in layer_arrays.items()
               if k.startswith(f"{name}/weight/")}
    x = torch.from_numpy(layer_arrays[f"{name}/input"]).double()
    theirs = torch.from_numpy(layer_arrays[f"{name}/output"])
    ours_t, spec = rsa_from_authors(weights, p["d_out"], name)
    assert spec.queries == p["nh"] and spec.kernel_size == tuple(p["kernel_size"])
    layer = RSA(p["d_in"], p["d_out"], kernel_size=spec.kernel_size, queries=spec.queries, latent_dim=spec.latent,
                kernel=spec.kernel, context=spec.context, l2_eps=1e-6).double().eval()
    layer.load_state_dict(ours_t)
    with torch.no_grad():
        ours = layer(x)
    perm = head_major_permutation(spec.queries, spec.cq)
    err = relative_error(ours, theirs[:, perm])
    print(f"{name}: relative error {err:.2e}")
    assert err < 1e-6
    assert relative_error(ours, theirs) > 1e-2 or spec.queries == 1 or spec.cq == 1  # the order matters
    back = rsa_to_authors(ours_t, spec.kernel_size, name)
    assert sorted(back) == sorted(weights)
    for k, v in weights.items():
        assert torch.equal(back[k], v), k


def _their_state(dtype=torch.float32):
    return recipe_state(MODEL["manifest"], MODEL["seed"], dtype)


@pytest.fixture(scope="module")
def converted():
    native, inferred = authors_to_native(_their_state())
    return native, inferred


@pytest.mark.parametrize("frames", [8, 16])
def test_full_model_matches_the_authors_model(frames, converted):
    """TSN + RSANet-R50 (their weights made from the recipe, eval mode) at 112 px: our converted model's
    logits equal theirs to 1e-4 relative in float32."""
    native, inferred = converted
    assert inferred["transform"]["positions"] == [[2], [1, 3], [1, 3, 5], [1]]
    assert inferred["transform"]["rsa"]["kernel_size"] == [5, 7, 7] and inferred["num_classes"] == 174
    cfg = config_from_dict({"model": dict(inferred, num_segments=frames, pretrained=None)})
    model = build_model(cfg).eval()
    model.load_state_dict(native)
    ref = MODEL["logits"][str(frames)]
    with torch.no_grad():
        ours = model(recipe_clip(ref["clip_seed"], ref["clip_shape"]))
    err = relative_error(ours[0], torch.tensor(ref["float32"]))
    print(f"T={frames}: relative error {err:.2e} (their float32 vs float64: "
          f"{relative_error(torch.tensor(ref['float32']), torch.tensor(ref['float64'])):.2e})")
    assert err < 1e-4


def ssv1_tree(tmp_path, frames_root, labels):
    """An SS-V1 annotation set over the fixture's frame folders: labels CSV, validation CSV, classes."""
    from rsanet.data.sets import ssv1

    (tmp_path / "labels.csv").write_text((ROOT / "data" / "ssv1" / "classes_csv_order.txt").read_text())
    classes = ssv1.read_classes(tmp_path / "labels.csv")
    (tmp_path / "val.csv").write_text("".join(f"{vid};{classes[label]}\n" for vid, label in labels.items()))
    return ["data.dataset=ssv1", "data.backend=frames", f"data.root={frames_root}",
            f"data.val_annotations={tmp_path / 'val.csv'}", f"data.label_file={tmp_path / 'labels.csv'}",
            "data.frame_template=img_{:05d}.jpg", "data.segment_rule=tsm", f"data.resize={PIPELINE['resize']}",
            f"data.crop_size={PIPELINE['crop']}", "model.pretrained=null", "data.num_workers=0",
            "data.pin_memory=false"]


@pytest.fixture(scope="module")
def pipeline():
    with np.load(FIXTURES / "pipeline.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("frames", [8, 16])
def test_test_loader_matches_the_authors_loader(frames, tmp_path, pipeline):
    """Our test loader (SS-V1 CSV, JPEG folders, data.segment_rule=tsm, resize + centre crop) gives the
    clips their TSNDataSet gave (frame counts on both sides of T), to one grey level."""
    from rsanet.data import build_dataset, normalize_clip

    vids = list(PIPELINE["folders"])
    opts = ssv1_tree(tmp_path, FIXTURES / "frames", dict(zip(vids, pipeline["labels"].tolist())))
    dataset = build_dataset(load_config(None, opts + [f"model.num_segments={frames}"]), "val")
    worst = 0
    for i, vid in enumerate(vids):
        clip, _, decoded = dataset.load(i)
        clip = normalize_clip(clip, MEAN, STD).double()  # the model's input, as the engine makes it
        assert (decoded.indices + 1).tolist() == pipeline[f"T{frames}/{vid}/indices"].tolist(), vid
        grey = clip * torch.tensor(STD).view(3, 1, 1, 1) + torch.tensor(MEAN).view(3, 1, 1, 1)
        diff = (grey * 255 - torch.from_numpy(pipeline[f"T{frames}/{vid}/clip"]).double()).abs().max()
        worst = max(worst, float(diff))
    print(f"T={frames}: largest difference {worst:.3f} grey levels")
    assert worst <= 1.0 + 1e-3


def test_tools_test_gives_the_scores_of_their_main(tmp_path, pipeline):
    """tools/test.py on their-format checkpoint (the recipe weights) and an SS-V1 tree of the fixture's
    folders: the per-video logits in scores.npz are what their main.py -e computed (same loader, same
    model) to 2e-3 relative (the inputs differ by at most one grey level), and the log says converted."""
    from test_tools_support import load_tool

    from rsanet.models.official import authors_checkpoint

    ckpt = tmp_path / "resnet_rgb_model_best.pth.tar"
    torch.save(authors_checkpoint(_their_state(), epoch=3, best_prec1=1.5), ckpt)
    vids = list(PIPELINE["folders"])
    opts = ssv1_tree(tmp_path, FIXTURES / "frames", dict(zip(vids, pipeline["labels"].tolist())))
    config = tmp_path / "cfg.yaml"
    config.write_text(json.dumps({"runtime": {"device": "cpu", "progress": False}}))
    code = load_tool("test").main(["--config", str(config), "--checkpoint", str(ckpt), "--work-dir",
                                   str(tmp_path / "out"), "--opts", *opts, "model.num_segments=8",
                                   "model.transform.rsa.l2_eps=1.0e-6", "test.batch_size=5"])
    assert code == 0
    with np.load(tmp_path / "out" / "scores.npz") as z:
        assert z["video_ids"].tolist() == vids
        logits = z["logits"]
    err = relative_error(torch.from_numpy(logits), torch.from_numpy(pipeline["T8/logits"]))
    print(f"scores vs their main.py -e: relative error {err:.2e}")
    assert err < 2e-3
    assert "authors' checkpoint (KimManjin/RSA format" in (tmp_path / "out" / "test.log").read_text()
