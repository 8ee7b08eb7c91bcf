"""Config: strict YAML merge, --opts overrides, close-key suggestions, type errors, derived values, round trip."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rsanet.config import (Config, ConfigError, config_from_dict, config_to_dict, dump_config, load_config,
                           parse_overrides)

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_are_the_paper_recipe():
    cfg = load_config(None)
    t = cfg.model.transform
    assert cfg.model.arch == "resnet50" and cfg.model.num_classes == 174 and cfg.model.num_segments == 8
    assert t.type == "rsa" and t.positions == [[2], [1, 3], [1, 3, 5], [1]] and t.kernel_size == [5, 7, 7]
    assert (t.queries, t.latent_dim, t.groups, t.norm) == (8, 0, 0, "l2")
    assert t.kernel == ["basic", "relational"] and t.context == ["basic", "relational"]
    assert cfg.train.lr == 0.02 and cfg.train.momentum == 0.9 and cfg.train.nesterov
    assert cfg.train.weight_decay == 5e-4 and cfg.train.label_smoothing == 0.1 and cfg.train.warmup_epochs == 5


def test_yaml_sets_only_differences(tmp_path):
    p = write(tmp_path, "model:\n  num_segments: 16\n  transform:\n    queries: 4\ntrain:\n  epochs: 3\n  warmup_epochs: 1\n")
    cfg = load_config(p)
    assert cfg.model.num_segments == 16 and cfg.model.transform.queries == 4 and cfg.train.epochs == 3
    assert cfg.model.transform.kernel_size == [5, 7, 7]  # untouched default
    assert cfg.runtime.work_dir == str(Path("work_dirs") / "exp")


def test_overrides_apply_after_file(tmp_path):
    p = write(tmp_path, "train:\n  lr: 0.1\n")
    cfg = load_config(p, ["train.lr=0.01", "model.transform.kernel_size=[3,3,3]", "model.pretrained=null",
                          "model.transform.kernel=[relational]", "train.amp=bf16"])
    assert cfg.train.lr == 0.01 and cfg.model.transform.kernel_size == [3, 3, 3]
    assert cfg.model.pretrained is None and cfg.model.transform.kernel == ["relational"]
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
    ("train.lrr", "train.lr"), ("model.transform.kernal_size", "model.transform.kernel_size"),
    ("data.num_worker", "data.num_workers"), ("modle.arch", "model"),
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
    ("model.transform.kernel_size=5", "expects list of int"), ("model.transform.norm=layer", "'l2' | 'none'"),
    ("test.crops=2", "expects 1 | 3"), ("model.transform.kernel=[basic, spatial]", "'basic' | 'relational'"),
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
        load_config(None, ["model.transform.kernel=[]"])


def test_compile_with_sync_bn_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match=r"`train.compile` with `train.sync_bn` is refused: .*breaks the graph at "
                                          r"every one.*set one of them to false"):
        load_config(None, ["train.compile=true", "train.sync_bn=true"], world_size=8)
    assert load_config(None, ["train.compile=true"], world_size=8).train.compile
    assert load_config(None, ["train.sync_bn=true"], world_size=8).train.sync_bn


def test_derived_lr_is_scaled_to_total_batch():
    cfg = load_config(None, ["train.batch_size=8", "train.accumulate=2", "train.lr=0.02"], world_size=4)
    assert cfg.train.total_batch == 64 and cfg.train.scaled_lr == pytest.approx(0.02)
    cfg = load_config(None, ["train.batch_size=8"], world_size=1)
    assert cfg.train.total_batch == 8 and cfg.train.scaled_lr == pytest.approx(0.02 * 8 / 64)
    # A derived value written into a file is recomputed, never trusted.
    cfg = load_config(None, ["train.scaled_lr=5.0"], world_size=2)
    assert cfg.train.scaled_lr == pytest.approx(0.02 * 16 / 64)


def test_dump_then_load_round_trip(tmp_path):
    cfg = load_config(None, ["model.transform.kernel_size=[3,5,5]", "data.dataset=synthetic", "test.crops=3",
                             "model.pretrained=/x/resnet50.pth", "train.amp=bf16"])
    out = tmp_path / "resolved.yaml"
    dump_config(cfg, out)
    assert yaml.safe_load(out.read_text())["model"]["transform"]["kernel_size"] == [3, 5, 5]
    again = load_config(out)
    again.runtime.work_dir = cfg.runtime.work_dir
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_to_dict(config_from_dict(config_to_dict(cfg))) == config_to_dict(cfg)


def test_every_key_has_a_comment():
    import inspect

    import rsanet.config as C
    src = inspect.getsource(C)
    for cls in (C.TransformConfig, C.ModelConfig, C.DataConfig, C.TrainConfig, C.TestConfig, C.RuntimeConfig,
                C.Config):
        for line in inspect.getsource(cls).splitlines():
            s = line.strip()
            if ":" in s and "=" in s and not s.startswith(("#", '"', "def", "class")):
                assert "#" in s, f"{cls.__name__}: key without a comment: {s}"
    assert src


def test_every_committed_config_loads():
    paths = sorted((ROOT / "configs").rglob("*.yaml"))
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
    cfg = load_config(None, ["data.dataset=synthetic", "data.synthetic_classes=5"])
    assert cfg.model.num_classes == 5
    cfg = load_config(None, ["data.dataset=list"])  # decided by the list's files when they are read
    assert (cfg.model.num_classes, cfg.data.backend) == (0, "auto")
    with pytest.raises(ConfigError, match=r"`model.num_classes` must be positive \(or 0"):
        load_config(None, ["model.num_classes=-1"])
