"""The import layering of the package: data flows config -> data -> models -> engine -> evaluation, and no import
runs back up. Every ``import`` of an ``rsanet`` module, at module level or inside a function, is checked from the
source (no module is executed), and importing the config is checked not to load the data pipeline, the models or
torchvision."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module may import modules of its own layer and of the layers below it, never above. The
# first matching prefix (the longest, as listed within a layer) decides a module's layer.
LAYERS = [
    # helpers any layer may use: they import no other layer
    ("base", ["rsanet", "rsanet._compat", "rsanet.storage", "rsanet.runlog", "rsanet.dist", "rsanet.metrics",
              "rsanet.plots", "rsanet.paper", "rsanet.testing"]),
    # the dataset table and what its modules read files and frames with (torch-free; no config, no pipeline):
    # the config takes the dataset names, class counts and the data.synthetic section from it
    ("datasets", ["rsanet.data.sets", "rsanet.data.records", "rsanet.data.labels", "rsanet.data.decoders",
                  "rsanet.data.synthetic"]),
    # the transform and backbone tables and what their entries build (torch; torchvision only inside a build):
    # the config takes the transform names and option sections, and the backbone names and stage depths, from them
    ("components", ["rsanet.ops", "rsanet.backbones"]),
    ("config", ["rsanet.config"]),
    ("data", ["rsanet.data"]),
    ("models", ["rsanet.models"]),
    ("engine", ["rsanet.engine"]),
    ("evaluation", ["rsanet.inference", "rsanet.predict", "rsanet.export", "rsanet.visualize", "rsanet.flops",
                    "rsanet.convert", "rsanet.benchmark", "rsanet.prep", "rsanet.cli"]),
]


def layer_of(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rsanet_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of an rsanet module in ``path``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "rsanet"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rsanet":
            assert node.level == 0, f"{path}:{node.lineno}: use absolute imports"
            found.append((node.lineno, node.module))
    return found


def upward_imports() -> list[str]:
    bad = []
    for path in sorted((ROOT / "rsanet").rglob("*.py")):
        here = module_name(path)
        for line, target in rsanet_imports(path):
            if layer_of(target) > layer_of(here):
                bad.append(f"{path.relative_to(ROOT)}:{line} ({LAYERS[layer_of(here)][0]}) imports {target} "
                           f"({LAYERS[layer_of(target)][0]})")
    return bad


def test_no_import_runs_back_up_the_layers():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself: a config module that imported the engine would be reported."""
    fake = tmp_path / "rsanet" / "config.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from rsanet.engine.runner import run_training\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert upward_imports() == ["rsanet/config.py:2 (config) imports rsanet.engine.runner (engine)"]


def test_the_config_reads_the_dataset_table_without_the_pipeline():
    code = ("import sys, rsanet.config; "
            "print(sorted(m for m in ('rsanet.data.datasets', 'rsanet.data.transforms', 'torchvision', "
            "'rsanet.models', 'rsanet.engine') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
