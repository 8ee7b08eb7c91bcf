"""Config: strict YAML merge, --opts overrides, close-key suggestions, type errors, what the dataset decides,
_base_ inheritance, keys of older versions, round trip."""
import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rsanet.config import (
    ConfigError,
    config_chain,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    parse_overrides,
    upgrade_config_dict,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_are_the_paper_recipe():
    cfg = load_config(None)
    t = cfg.model.transform
    assert cfg.model.arch == "resnet50" and cfg.model.num_classes == 174 and cfg.model.num_segments == 8
    assert t.type == "rsa" and t.positions == [[2], [1, 3], [1, 3, 5], [1]] and t.rsa.kernel_size == [5, 7, 7]
    assert (t.rsa.queries, t.rsa.latent_dim, t.rsa.groups, t.rsa.norm, t.rsa.decompose) == (8, 0, 0, "l2", True)
    assert t.rsa.kernel == ["basic", "relational"] and t.rsa.context == ["basic", "relational"] and t.replace == []
    assert cfg.train.lr == 0.02 and cfg.train.momentum == 0.9 and cfg.train.nesterov
    assert cfg.train.weight_decay == 5e-4 and cfg.train.label_smoothing == 0.1 and cfg.train.warmup_epochs == 5


def test_yaml_sets_only_differences(tmp_path):
    p = write(tmp_path, "model:\n  num_segments: 16\n  transform:\n    rsa:\n      queries: 4\ntrain:\n  epochs: 3\n"
                        "  warmup_epochs: 1\n")
    cfg = load_config(p)
    assert cfg.model.num_segments == 16 and cfg.model.transform.rsa.queries == 4 and cfg.train.epochs == 3
    assert cfg.model.transform.rsa.kernel_size == [5, 7, 7]  # untouched default
    assert cfg.runtime.work_dir == str(Path("work_dirs") / "exp")


def test_overrides_apply_after_file(tmp_path):
    p = write(tmp_path, "train:\n  lr: 0.1\n")
    cfg = load_config(p, ["train.lr=0.01", "model.transform.rsa.kernel_size=[3,3,3]", "model.pretrained=null",
                          "model.transform.rsa.kernel=[relational]", "train.amp=bf16"])
    assert cfg.train.lr == 0.01 and cfg.model.transform.rsa.kernel_size == [3, 3, 3]
    assert cfg.model.pretrained is None and cfg.model.transform.rsa.kernel == ["relational"]
    assert cfg.train.amp == "bf16"


def test_override_values_are_never_evaluated():
    nested = parse_overrides(["runtime.work_dir=__import__('os').getcwd()"])
    assert nested == {"runtime": {"work_dir": "__import__('os').getcwd()"}}


def test_misspelled_key_in_file_names_file_key_and_closest(tmp_path):
    p = write(tmp_path, "model:\n  transfrom:\n    type: rsa\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "`model.transfrom`" in msg and "did you mean `model.transform`?" in msg


@pytest.mark.parametrize("key,closest", [
    ("train.lrr", "train.lr"), ("model.transform.rsa.kernal_size", "model.transform.rsa.kernel_size"),
    ("data.num_worker", "data.num_workers"), ("modle.arch", "model"),
    # every nested key of a transform's section, and the section names themselves
    ("model.transform.rsa.querys", "model.transform.rsa.queries"),
    ("model.transform.self_attention.sofmax", "model.transform.self_attention.softmax"),
    ("model.transform.self_atention.softmax", "model.transform.self_attention"),
    ("model.transform.conv3d.kernelsize", "model.transform.conv3d.kernel_size"),
    ("model.transform.kernal_size", "model.transform.rsa.kernel_size"),
])
def test_misspelled_override_suggests_closest(key, closest):
    with pytest.raises(ConfigError, match=f"did you mean `{closest}`"):
        load_config(None, [f"{key}=1"])


def test_unknown_key_without_near_match_has_no_bogus_suggestion():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["zzzz.qqqq=1"])
    assert "unknown key `zzzz`" in str(e.value) and "did you mean" not in str(e.value)


@pytest.mark.parametrize("override,expected", [
    ("train.lr=abc", "expects float"), ("train.epochs=1.5", "expects int"), ("train.nesterov=1", "expects bool"),
    ("model.transform.rsa.kernel_size=5", "expects list of int"), ("model.transform.rsa.norm=layer", "'l2' | 'none'"),
    ("test.crops=2", "expects 1 | 3"), ("model.transform.rsa.kernel=[basic, spatial]", "'basic' | 'relational'"),
    ("model.transform.self_attention.softmax=1", "expects bool"),
])
def test_wrong_types_name_the_expected_type(override, expected):
    with pytest.raises(ConfigError, match="expects") as e:
        load_config(None, [override])
    assert expected in str(e.value)


def test_int_is_accepted_for_float():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


def test_section_must_be_mapping(tmp_path):
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "model: 3\n"))


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="positions"):
        load_config(None, ["model.arch=resnet18", "model.transform.positions=[[2],[1],[1],[1]]"])
    with pytest.raises(ConfigError, match="warmup_epochs"):
        load_config(None, ["train.epochs=2", "train.warmup_epochs=3"])
    with pytest.raises(ConfigError, match="kernel"):
        load_config(None, ["model.transform.rsa.kernel=[]"])


def test_compile_with_sync_bn_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match=r"`train.compile` with `train.sync_bn` is refused: .*breaks the graph at "
                                          r"every one.*set one of them to false"):
        load_config(None, ["train.compile=true", "train.sync_bn=true"])
    assert load_config(None, ["train.compile=true"]).train.compile
    assert load_config(None, ["train.sync_bn=true"]).train.sync_bn


def test_the_config_holds_no_derived_value():
    """World size, total batch and scaled LR belong to a run (rsanet.engine.run_state), not to the config."""
    keys = set(config_to_dict(load_config(None))["train"]) | set(config_to_dict(load_config(None))["runtime"])
    assert not keys & {"world_size", "total_batch", "scaled_lr"}


def test_dump_then_load_round_trip(tmp_path):
    cfg = load_config(None, ["model.transform.rsa.kernel_size=[3,5,5]", "data.dataset=synthetic", "test.crops=3",
                             "data.synthetic.frames=12", "data.synthetic.resolution=[40,48]",
                             "model.pretrained=/x/resnet50.pth", "train.amp=bf16"])
    out = tmp_path / "resolved.yaml"
    dump_config(cfg, out)
    assert yaml.safe_load(out.read_text())["model"]["transform"]["rsa"]["kernel_size"] == [3, 5, 5]
    assert yaml.safe_load(out.read_text())["data"]["synthetic"]["resolution"] == [40, 48]
    again = load_config(out)
    again.runtime.work_dir = cfg.runtime.work_dir
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_to_dict(config_from_dict(config_to_dict(cfg))) == config_to_dict(cfg)


def test_every_key_has_a_comment():
    import inspect

    import rsanet.config as C
    src = inspect.getsource(C)
    from rsanet.ops import TRANSFORMS

    for cls in (C.TransformConfig, C.ModelConfig, C.DataConfig, C.SyntheticConfig, C.TrainConfig, C.TestConfig,
                C.RuntimeConfig, C.Config, *(entry.Options for entry in TRANSFORMS.values())):
        above = ""
        for line in inspect.getsource(cls).splitlines():
            s = line.strip()
            if ":" in s and "=" in s and not s.startswith(("#", '"', "def", "class")):  # on the line or just above
                assert "#" in s or above.startswith("#"), f"{cls.__name__}: key without a comment: {s}"
            above = s
    assert src


def test_every_committed_config_loads():
    paths = sorted((ROOT / "configs").rglob("*.yaml"))  # the _base_ files too: each is a valid config alone
    assert len(paths) > 60
    for p in paths:
        load_config(p)


def test_typo_in_yaml_fails_before_any_work(tmp_path):
    """tools/train.py must reject a typo before it builds data, model or a process group."""
    train = ROOT / "tools" / "train.py"
    if not train.exists():
        pytest.skip("tools/train.py lands with the engine issue")
    p = write(tmp_path, "train:\n  epoks: 3\n")
    r = subprocess.run([sys.executable, str(train), "--config", str(p), "--work-dir", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "did you mean `train.epochs`?" in (r.stderr + r.stdout)
    assert not (tmp_path / "w").exists()


def test_numbers_with_an_exponent_are_floats(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-3 and 5e-4 as strings; researchers write them all the time.
    p = write(tmp_path, "train:\n  weight_decay: 5e-4\n  lr: 2E-2\n  min_lr: 1.0e-6\n  epochs: 10\n")
    cfg = load_config(p, ["train.lr=1e-3", "train.clip_grad_norm=1e+2"])
    assert cfg.train.lr == 1e-3 and cfg.train.weight_decay == 5e-4 and cfg.train.min_lr == 1e-6
    assert cfg.train.clip_grad_norm == 100.0 and cfg.train.epochs == 10 and isinstance(cfg.train.epochs, int)
    assert load_config(None, ["runtime.work_dir=runs/e1e3"]).runtime.work_dir == "runs/e1e3"  # text stays text
    with pytest.raises(ConfigError, match=r"`train.epochs` expects int, got 100.0"):
        load_config(None, ["train.epochs=1e2"])  # an int key still refuses a float


def test_duplicate_yaml_keys_are_warned_about(tmp_path, caplog):
    p = write(tmp_path, "train:\n  lr: 0.1\n  epochs: 30\n  lr: 0.2\nmodel:\n  width: 16\n")
    with caplog.at_level("WARNING", logger="rsanet"):
        cfg = load_config(p)
    assert cfg.train.lr == 0.2  # the later value, as PyYAML does
    assert [r.getMessage() for r in caplog.records] == [
        f"{p}:4: key `lr` is given twice in the same mapping; the later value is used"]


def test_configs_under_configs_keep_their_folder_in_the_work_dir():
    assert load_config(ROOT / "configs" / "synthetic" / "rsa.yaml").runtime.work_dir == str(
        Path("work_dirs") / "synthetic" / "rsa")
    assert load_config(ROOT / "configs" / "ssv1_rsa_8f.yaml").runtime.work_dir == str(Path("work_dirs") / "ssv1_rsa_8f")


def test_num_classes_and_backend_left_unset_follow_the_dataset():
    assert load_config(None).model.num_classes == 174 and load_config(None).data.backend == "frames"
    for dataset, classes, backend in [("ssv2", 174, "video"), ("diving48", 48, "video"), ("gym99", 99, "video"),
                                      ("gym288", 288, "video")]:
        cfg = load_config(None, [f"data.dataset={dataset}"])
        assert (cfg.model.num_classes, cfg.data.backend) == (classes, backend)
    cfg = load_config(None, ["data.dataset=synthetic", "data.synthetic.classes=5"])
    assert cfg.model.num_classes == 5 and cfg.data.backend == "auto"  # generated: no files, no backend
    cfg = load_config(None, ["data.dataset=list"])  # decided by the list's files when they are read
    assert (cfg.model.num_classes, cfg.data.backend) == (0, "auto")
    with pytest.raises(ConfigError, match=r"`model.num_classes` must be positive \(or 0"):
        load_config(None, ["model.num_classes=-1"])


# ---------------------------------------------------------------------------------------- _base_ files
def test_base_files_merge_deeply_and_the_file_wins(tmp_path):
    (tmp_path / "bases").mkdir()
    write(tmp_path / "bases", "model:\n  width: 16\n  transform:\n    rsa:\n      queries: 4\n"
                              "      kernel_size: [3, 3, 3]\ntrain:\n  epochs: 7\n  warmup_epochs: 1\n", "recipe.yaml")
    write(tmp_path / "bases", "_base_: recipe.yaml\nmodel:\n  transform:\n    rsa:\n      queries: 2\n", "mid.yaml")
    write(tmp_path / "bases", "data:\n  resize: [64, 80]\ntrain:\n  epochs: 9\n", "other.yaml")
    leaf = write(tmp_path, "_base_: [bases/mid.yaml, bases/other.yaml]\nmodel:\n  transform:\n    rsa:\n"
                           "      kernel_size: [5, 5, 5]\n", "leaf.yaml")
    cfg = load_config(leaf)
    t = cfg.model.transform.rsa
    assert (cfg.model.width, t.queries, t.kernel_size) == (16, 2, [5, 5, 5])  # nested keys merge; lists replace
    assert (cfg.train.epochs, cfg.train.warmup_epochs, cfg.data.resize) == (9, 1, [64, 80])  # bases in order
    assert t.latent_dim == 0 and cfg.runtime.work_dir == str(Path("work_dirs") / "leaf")  # defaults; leaf's name
    assert [p.name for p, _ in config_chain(leaf)] == ["recipe.yaml", "mid.yaml", "other.yaml", "leaf.yaml"]
    # the resolved config equals the same keys written in one file
    flat = write(tmp_path, "model:\n  width: 16\n  transform:\n    rsa:\n      queries: 2\n"
                           "      kernel_size: [5, 5, 5]\ndata:\n  resize: [64, 80]\ntrain:\n  epochs: 9\n"
                           "  warmup_epochs: 1\n", "leaf_flat.yaml")
    one = config_to_dict(load_config(flat))
    one["runtime"]["work_dir"] = cfg.runtime.work_dir
    assert one == config_to_dict(cfg)


def test_errors_in_a_base_file_name_that_file(tmp_path, caplog):
    write(tmp_path, "train:\n  epoks: 3\n", "base.yaml")
    with pytest.raises(ConfigError, match=r"base\.yaml: unknown key `train.epoks`; did you mean `train.epochs`"):
        load_config(write(tmp_path, "_base_: base.yaml\n"))
    write(tmp_path, "train:\n  lr: 0.1\n  lr: 0.2\n", "dup.yaml")
    with caplog.at_level("WARNING", logger="rsanet"):
        assert load_config(write(tmp_path, "_base_: dup.yaml\n", "child.yaml")).train.lr == 0.2
    assert any("dup.yaml:3: key `lr` is given twice" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match=r"config file not found: .*nowhere\.yaml"):
        load_config(write(tmp_path, "_base_: nowhere.yaml\n", "lost.yaml"))
    with pytest.raises(ConfigError, match="`_base_` must be a file name or a list of file names"):
        load_config(write(tmp_path, "_base_: {a: 1}\n", "odd.yaml"))


def test_a_base_cycle_is_named_with_its_chain(tmp_path):
    write(tmp_path, "_base_: b.yaml\n", "a.yaml")
    write(tmp_path, "_base_: c.yaml\n", "b.yaml")
    write(tmp_path, "_base_: a.yaml\ntrain:\n  epochs: 3\n", "c.yaml")
    with pytest.raises(ConfigError, match="cycle") as e:
        load_config(tmp_path / "a.yaml")
    chain = str(e.value).split("cycle: ")[1]
    assert [Path(p).name for p in chain.split(" -> ")] == ["a.yaml", "b.yaml", "c.yaml", "a.yaml"]
    write(tmp_path, "_base_: self.yaml\n", "self.yaml")
    with pytest.raises(ConfigError, match=r"self\.yaml -> .*self\.yaml"):
        load_config(tmp_path / "self.yaml")


def test_print_config_shows_the_resolved_config_and_exits(tmp_path, capsys):
    from test_tools_support import load_tool

    config = ROOT / "configs" / "ssv1_rsa_16f.yaml"
    assert load_tool("train").main(["--config", str(config), "--print-config", "--opts", "train.lr=0.01",
                                    "--work-dir", str(tmp_path / "w")]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == config_to_dict(load_config(config, ["train.lr=0.01"]))
    assert printed["model"]["num_segments"] == 16 and printed["model"]["transform"]["rsa"]["l2_eps"] == 1e-6
    assert not (tmp_path / "w").exists()  # nothing was run
    unused = str(tmp_path / "not_read.pth")  # with --config, --print-config reads no checkpoint
    assert load_tool("test").main(["--config", str(config), "--checkpoint", unused, "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["epochs"] == 80


# ----------------------------------------------------------------------------- names and value hints
def test_dataset_names_come_from_the_dataset_table():
    from rsanet.data.sets import DATASETS

    for name in DATASETS:
        assert load_config(None, [f"data.dataset={name}"]).data.dataset == name
    with pytest.raises(ConfigError, match=r"`data.dataset` is 'divng48', expected one of ssv1, ssv2, .*synthetic; "
                                          r"did you mean 'diving48'\?"):
        load_config(None, ["data.dataset=divng48"])


def test_a_misspelled_choice_names_the_closest_allowed_value():
    with pytest.raises(ConfigError, match=r"`model.transform.rsa.norm` expects 'l2' \| 'none' \| 'batchnorm', got "
                                          r"'batchnrom' \(str\); did you mean 'batchnorm'\?"):
        load_config(None, ["model.transform.rsa.norm=batchnrom"])


def test_the_synthetic_section_is_checked_when_the_dataset_is_synthetic():
    with pytest.raises(ConfigError, match=r"`data.synthetic.classes` must be in 2..8, got 9"):
        load_config(None, ["data.dataset=synthetic", "data.synthetic.classes=9"])
    with pytest.raises(ConfigError, match=r"`data.synthetic.resolution` needs \[H, W\]"):
        load_config(None, ["data.dataset=synthetic", "data.synthetic.resolution=[32]"])
    assert load_config(None, ["data.synthetic.classes=9"]).data.dataset == "ssv1"  # unused: not checked


# --------------------------------------------------------------------------------- older keys
OLD_SYNTHETIC = {"model": {"num_classes": 3}, "train": {"lr": 0.1, "total_batch": 64, "scaled_lr": 0.1},
                 "runtime": {"world_size": 8},
                 "data": {"dataset": "synthetic", "train_size": 40, "val_size": 12, "synthetic_frames": 6,
                          "synthetic_resolution": [24, 24], "synthetic_classes": 3, "synthetic_seed": 5}}


def test_checkpoint_configs_of_older_versions_load_with_today_s_keys(caplog):
    with caplog.at_level("WARNING", logger="rsanet"):
        cfg = config_from_dict(OLD_SYNTHETIC, source="old checkpoint")
    assert not caplog.records  # a stored config is read silently
    s = cfg.data.synthetic
    assert (s.train_size, s.val_size, s.frames, s.resolution, s.classes, s.seed) == (40, 12, 6, [24, 24], 3, 5)
    assert cfg.train.lr == 0.1 and "scaled_lr" not in config_to_dict(cfg)["train"]
    assert upgrade_config_dict(OLD_SYNTHETIC)["data"]["synthetic"]["frames"] == 6
    assert OLD_SYNTHETIC["data"]["synthetic_frames"] == 6  # the caller's dict is left alone


def test_old_keys_in_a_file_or_opts_are_read_with_a_note(tmp_path, caplog):
    p = write(tmp_path, yaml.safe_dump(OLD_SYNTHETIC))
    with caplog.at_level("WARNING", logger="rsanet"):
        cfg = load_config(p, ["data.synthetic_seed=7"])
    assert cfg.data.synthetic.frames == 6 and cfg.data.synthetic.seed == 7
    notes = [r.getMessage() for r in caplog.records]
    assert f"{p}: `data.synthetic_frames` is now `data.synthetic.frames`; read as `data.synthetic.frames: 6`" in notes
    assert any(n.startswith("--opts: `data.synthetic_seed` is now `data.synthetic.seed`") for n in notes)
    assert any("`train.scaled_lr` (0.1) is no longer a config key and is ignored" in n for n in notes)
    with pytest.raises(ConfigError, match=r"`data.synthetic_frames` \(the old name of `data.synthetic.frames`\) and "
                                          r"`data.synthetic.frames` are both given"):
        load_config(None, ["data.synthetic_frames=6", "data.synthetic.frames=8"])


# The flat model.transform keys of configs and checkpoints before the per-transform sections: every key a
# section of that name owns is read there (several sections when several transforms read it).
OLD_TRANSFORM = {"model": {"arch": "resnet18", "width": 8, "num_classes": 4, "transform": {
    "type": "self_attention", "positions": [[1], [], [], []], "kernel_size": [3, 3, 3], "queries": 2,
    "latent_dim": 4, "groups": 2, "kernel": ["relational"], "context": ["basic"], "norm": "none", "l2_eps": 1e-6,
    "memory": "recompute", "window_conv": "native", "attention": ["position"], "softmax": False,
    "rsa_init": "variance_preserving"}}}


def test_flat_transform_keys_of_older_configs_move_into_the_sections(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="rsanet"):
        cfg = config_from_dict(OLD_TRANSFORM, source="old checkpoint")
    assert not caplog.records  # a stored config is read silently
    t = cfg.model.transform
    assert (t.type, t.positions, t.replace) == ("self_attention", [[1], [], [], []], [])
    sa = t.self_attention  # kernel_size and queries were read by the type in effect, self-attention
    assert (sa.kernel_size, sa.queries, sa.attention, sa.softmax) == ([3, 3, 3], 2, ["position"], False)
    # the RSA-only keys were never read by that run: every other section is left at its defaults
    assert t.rsa == type(t.rsa)() and t.conv3d == type(t.conv3d)() and t.conv2plus1d == type(t.conv2plus1d)()
    # an old RSA config: every key lands in the RSA section
    old_rsa = copy.deepcopy(OLD_TRANSFORM)
    old_rsa["model"]["transform"].update(type="rsa", attention=["content", "position"], softmax=True)
    rsa = config_from_dict(old_rsa).model.transform.rsa
    assert (rsa.kernel_size, rsa.queries, rsa.latent_dim, rsa.groups, rsa.kernel, rsa.context) == \
        ([3, 3, 3], 2, 4, 2, ["relational"], ["basic"])
    assert (rsa.norm, rsa.l2_eps, rsa.memory, rsa.window_conv, rsa.init) == \
        ("none", 1e-6, "recompute", "native", "variance_preserving")
    # in a user's file or --opts: the same, with a note naming the new key
    p = write(tmp_path, yaml.safe_dump(old_rsa))
    with caplog.at_level("WARNING", logger="rsanet"):
        again = load_config(p, ["model.transform.rsa_init=authors"])
    assert again.model.transform.rsa.init == "authors" and again.model.transform.rsa.kernel_size == [3, 3, 3]
    notes = [r.getMessage() for r in caplog.records]
    assert f"{p}: `model.transform.kernel_size` is now `model.transform.rsa.kernel_size`; read as " \
           "`model.transform.rsa.kernel_size: [3, 3, 3]`" in notes
    assert "--opts: `model.transform.rsa_init` is now `model.transform.rsa.init`; read as " \
           "`model.transform.rsa.init: 'authors'`" in notes
    # the old key on the command line goes to the section of the type the file chose
    conv3d = load_config(ROOT / "configs/ablations/table2_conv3d.yaml", ["model.transform.kernel_size=[3,3,3]"])
    assert (conv3d.model.transform.conv3d.kernel_size, conv3d.model.transform.rsa.kernel_size) == ([3, 3, 3], [5, 7, 7])
    # a user's old self-attention file that also sets RSA-only values: those were silently ignored, now refused
    with pytest.raises(ConfigError, match=r"`model.transform.rsa.latent_dim` is set, but `model.transform.type` is "
                                          r"self_attention, which does not read it"):
        load_config(write(tmp_path, yaml.safe_dump(OLD_TRANSFORM), "old_sa.yaml"))
    with pytest.raises(ConfigError, match=r"`model.transform.queries` \(the old name of `model.transform.rsa.queries`"
                                          r"\) and `model.transform.rsa.queries` are both given"):
        load_config(None, ["model.transform.queries=2", "model.transform.rsa.queries=4"])


def test_options_of_a_transform_the_model_does_not_use_are_refused(tmp_path):
    """A setting for another transform than `type` would be ignored: refused when the same layer (file or --opts)
    chose the type, or a later one; inherited ones (an RSA config switched to conv3d) are dropped."""
    rsa_config = ROOT / "configs/ssv1_rsa_8f.yaml"  # sets model.transform.rsa.l2_eps
    with pytest.raises(ConfigError, match=r"^--opts: `model.transform.rsa.queries` is set, but `model.transform.type` "
                                          r"is conv3d, which does not read it: remove it, or set "
                                          r"`model.transform.type: rsa`$"):
        load_config(rsa_config, ["model.transform.type=conv3d", "model.transform.rsa.queries=4"])
    cfg = load_config(rsa_config, ["model.transform.type=conv3d"])  # the file's RSA options are not the user's error
    assert cfg.model.transform.type == "conv3d" and cfg.model.transform.rsa == type(cfg.model.transform.rsa)()
    assert load_config(write(tmp_path, dump_config(cfg), "resolved.yaml")) == cfg  # the saved config loads back
    write(tmp_path, "model:\n  transform:\n    type: self_attention\n", "base.yaml")
    child = write(tmp_path, "_base_: base.yaml\nmodel:\n  transform:\n    conv3d:\n      kernel_size: [1, 3, 3]\n",
                  "child.yaml")
    with pytest.raises(ConfigError, match=rf"^{child}: `model.transform.conv3d.kernel_size` is set, but "
                                          r"`model.transform.type` is self_attention"):
        load_config(child)
    with pytest.raises(ConfigError, match=r"`model.transform.replace` names convs, but conv2d replaces none"):
        load_config(None, ["model.transform.type=conv2d", "model.transform.replace=[layer1.0.conv2]"])
    edited = load_config(None, ["model.transform.type=conv3d"])  # a config edited in code is checked alike
    edited.model.transform.rsa.queries = 4
    with pytest.raises(ConfigError, match=r"`model.transform.rsa.queries` is set, but `model.transform.type` is "
                                          r"conv3d"):
        validate(edited)


def test_transform_names_and_sections_come_from_the_transform_table(monkeypatch):
    from dataclasses import dataclass

    from rsanet.ops import TRANSFORMS

    for name in TRANSFORMS:
        t = load_config(None, [f"model.transform.type={name}", "model.transform.positions=[[1],[1],[1],[1]]"])
        assert t.model.transform.type == name and hasattr(t.model.transform, name)
    with pytest.raises(ConfigError, match=r"`model.transform.type` is 'ras', expected one of rsa, conv2d, .*; did "
                                          r"you mean 'rsa'\?"):
        load_config(None, ["model.transform.type=ras"])

    @dataclass
    class ToyOptions:
        gain: float = 1.0  # the only key

    class Toy:
        Options = ToyOptions

        @staticmethod
        def check(options, key):
            return f"`{key}.gain` must be positive" if options.gain <= 0 else None

    monkeypatch.setitem(TRANSFORMS, "toy", Toy)  # one table entry gives a type name and a section
    cfg = load_config(None, ["model.transform.type=toy", "model.transform.toy.gain=2"])
    assert cfg.model.transform.toy.gain == 2.0 and cfg.model.transform.rsa.queries == 8
    with pytest.raises(ConfigError, match=r"`model.transform.toy.gain` must be positive"):
        load_config(None, ["model.transform.type=toy", "model.transform.toy.gain=-1"])
    with pytest.raises(ConfigError, match=r"unknown key `model.transform.toy.gian`; did you mean "
                                          r"`model.transform.toy.gain`"):
        load_config(None, ["model.transform.toy.gian=2"])


def test_conv2d_reads_no_placement_and_replace_takes_module_names():
    # TSN keeps the backbone's convs: positions that would not fit resnet18 are not read (older configs had them)
    assert load_config(None, ["model.arch=resnet18", "model.transform.type=conv2d"]).model.transform.type == "conv2d"
    with pytest.raises(ConfigError, match=r"`model.transform.positions` stage 0 has block 2, but resnet18 has 2"):
        load_config(None, ["model.arch=resnet18", "model.transform.type=rsa"])
    cfg = load_config(None, ["model.arch=resnet18", "model.transform.replace=[layer1.1.conv2, layer3.0.conv1]"])
    assert cfg.model.transform.replace == ["layer1.1.conv2", "layer3.0.conv1"]  # positions are then not read
    with pytest.raises(ConfigError, match=r"`model.transform.replace` must list distinct module names"):
        load_config(None, ["model.transform.replace=[layer1.1.conv2, layer1.1.conv2]"])


def test_backbone_names_come_from_the_backbone_table():
    from rsanet.backbones import BACKBONES

    assert {"resnet50", "resnext50_32x4d", "wide_resnet50_2"} <= set(BACKBONES)
    for name in BACKBONES:
        assert load_config(None, [f"model.arch={name}", "model.transform.positions=[[1],[1],[1],[1]]"]).model.arch \
            == name
    with pytest.raises(ConfigError, match=r"`model.arch` is 'wide_resnet_50_2', expected one of resnet18, .*; did you "
                                          r"mean 'wide_resnet50_2'\?"):
        load_config(None, ["model.arch=wide_resnet_50_2"])
    with pytest.raises(ConfigError, match=r"`model.width` 8 leaves no channel per group in resnext50_32x4d"):
        load_config(None, ["model.arch=resnext50_32x4d", "model.width=8"])


@pytest.mark.parametrize("opts,needle", [
    (["model.transform.rsa.latent_dim=-1"], "`model.transform.rsa.latent_dim` and `model.transform.rsa.groups` >= 0"),
    (["model.transform.rsa.decompose=false", "model.transform.rsa.latent_dim=8"], "no latent dim D to choose"),
    (["model.transform.rsa.latent_dim=8", "model.transform.rsa.latent_divisor=2"], "applies when"),
    (["model.transform.type=self_attention", "model.transform.self_attention.softmax=false"], "needs"),
    (["model.transform.type=conv3d", "model.transform.conv3d.kernel_size=[2,3,3]"], "odd along every axis"),
])
def test_each_transform_checks_its_own_section(opts, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(None, opts)
    # a section of a transform that is not used is not read: setting it is refused as such, not checked
    with pytest.raises(ConfigError, match=r"`model.transform.self_attention.softmax` is set, but "
                                          r"`model.transform.type` is rsa, which does not read it"):
        load_config(None, ["model.transform.self_attention.softmax=false"])
