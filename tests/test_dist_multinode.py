"""What a multi-node job meets on first contact, with 2 gloo processes through torchrun. Each rank gets its
own work dir (``<work dir>/node<RANK>``), as two nodes with node-local disks would:

* ranks that resolve ``--resume auto`` to different checkpoints (one node has ``last.pth``, the other none)
  stop together with one clear message, instead of drifting apart until a collective hangs; when every node
  holds the same checkpoint the job resumes;
* DDP runs with ``gradient_as_bucket_view=True`` and ``broadcast_buffers=False``, and the replicas still end
  with identical parameters and (after the broadcast before validation) identical BatchNorm statistics;
* unreadable data on one rank stops every rank with the same error at the same step, instead of that rank
  alone (which leaves the other node waiting in the next all-reduce until the collective timeout);
* with those DDP flags, gradient accumulation over 2 ranks gives the weights of 1 process with the same
  total batch.

``--tee 3`` prefixes each output line with ``[default<rank>]:``, so every rank's own message is checked.
"""
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from test_tools_support import run_job

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
model: {arch: resnet18, width: 8, num_classes: 2, num_segments: 4, pretrained: null,
        transform: {positions: [[1], [], [], []], kernel_size: [3, 3, 3]}}
data: {dataset: synthetic, synthetic: {classes: 2, frames: 4, resolution: [32, 32], train_size: 16, val_size: 4},
       resize: [32, 32], crop_size: 32, num_workers: 0}
train: {epochs: EPOCHS, warmup_epochs: 0, batch_size: 2, accumulate: 2, lr: 0.5}
test: {batch_size: 4}
runtime: {log_interval: 1, tensorboard: false, progress: false, dist_timeout_minutes: 1}
"""

DRIVER = """\
import json, os, sys
import rsanet
import torch
from rsanet.engine import runner

rank, report = os.environ["RANK"], {report!r}
argv = sys.argv[1:]
argv[argv.index("--work-dir") + 1] += f"/node{{rank}}"  # node-local work dirs

if {unreadable_on_rank1!r} and rank == "1":  # every training sample of rank 1 is unreadable
    from rsanet.data.datasets import VideoDataset
    real_load = VideoDataset._try_load
    VideoDataset._try_load = lambda self, *a: None if self.train else real_load(self, *a)

if {linear!r}:  # the tiny model and data of tests/test_dist_multinode.py (no BatchNorm: exact comparisons)
    from test_dist_multinode import LinearModel, TinyData  # tests/ is on PYTHONPATH (launch())
    runner._build_datasets = lambda cfg, splits: {{s: TinyData() for s in splits}}
    runner.prepare_model = lambda cfg, ctx, train: LinearModel().to(ctx.device)

real_wrap, real_loop, seen = runner._wrap, runner._epoch_loop, {{}}

def wrap(net, cfg, ctx):
    model = real_wrap(net, cfg, ctx)
    seen.update(gradient_as_bucket_view=model.gradient_as_bucket_view, broadcast_buffers=model.broadcast_buffers)
    return model

def loop(run, rng, stop_after):
    done = real_loop(run, rng, stop_after)
    state = run.parts.net.state_dict()
    seen["params"] = [float(p.detach().double().sum()) for p in run.parts.net.parameters()]
    seen["buffers"] = [float(b.double().sum()) for b in run.parts.net.buffers()]
    seen["global_step"] = run.state.global_step
    with open(f"{{report}}.{{rank}}.json", "w") as f:
        json.dump(seen, f)
    return done

runner._wrap, runner._epoch_loop = wrap, loop
from rsanet.cli import train  # what tools/train.py runs
sys.exit(train.main(argv))
"""


class LinearModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 2 * 4 * 4, 2)

    def forward(self, x):  # (B, 3, 2, 4, 4) -> (B, 2)
        return self.fc(x.flatten(1))


class TinyData(torch.utils.data.Dataset):
    """16 random uint8 clips (3, 2, 4, 4) of 2 classes, the sample-dict contract."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 256, (16, 3, 2, 4, 4), dtype=torch.uint8, generator=g)
        self.y = torch.randint(0, 2, (16,), generator=g)
        self.classes, self.num_videos, self.num_views = ["a", "b"], 16, 1

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return {"clip": self.x[i], "label": int(self.y[i]), "index": i, "video": i, "view": 0, "replaced": 0}


def launch(tmp_path, epochs, *args, unreadable_on_rank1=False, linear=False, timeout=240):
    cfg = tmp_path / f"tiny{epochs}.yaml"
    cfg.write_text(CONFIG.replace("EPOCHS", str(epochs)))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(report=str(tmp_path / "report"), unreadable_on_rank1=unreadable_on_rank1,
                                    linear=linear))
    # this checkout, and tests/ for the driver's `from test_dist_multinode import ...`
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--tee", "3",
           str(driver), "--config", str(cfg), "--work-dir", str(tmp_path / "w"), *map(str, args)]
    return run_job(cmd, timeout, env)  # kills every rank on a timeout


def rank_lines(r, rank):
    return [line.split("]:", 1)[1] for line in (r.stdout + r.stderr).splitlines()
            if line.startswith(f"[default{rank}]:")]


def report(tmp_path, rank):
    return json.loads((tmp_path / f"report.{rank}.json").read_text())



def test_ranks_resolving_different_checkpoints_stop_together_and_resume_when_they_agree(tmp_path):
    r = launch(tmp_path, 1)  # a fresh 1-epoch run: only rank 0 writes, so only node0 holds checkpoints
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    node0, node1 = tmp_path / "w" / "node0", tmp_path / "w" / "node1"
    assert (node0 / "last.pth").is_file() and not (node1 / "last.pth").exists()
    one = [report(tmp_path, rank) for rank in (0, 1)]
    assert one[0]["gradient_as_bucket_view"] is True and one[0]["broadcast_buffers"] is False
    assert one[0]["params"] == one[1]["params"]  # gradients were all-reduced into the bucket views
    assert one[0]["buffers"] == one[1]["buffers"]  # BN statistics broadcast before validation
    assert one[0]["global_step"] == 2  # 16 clips / (2 x 2 accumulated x 2 ranks)

    t0 = time.monotonic()
    r = launch(tmp_path, 2, "--resume", "auto")  # node0 resumes at step 2, node1 would start fresh
    assert r.returncode != 0
    for rank in (0, 1):
        err = "\n".join(rank_lines(r, rank))
        assert "error: the ranks disagree on where training continues (rank 0: last.pth (global step 2), " \
               "rank 1: fresh start)" in err, (rank, r.stdout[-3000:] + r.stderr[-3000:])
        assert "--resume PATH" in err
    assert time.monotonic() - t0 < 120  # stopped at once, not after a collective timeout
    assert torch.load(node0 / "last.pth", weights_only=True)["global_step"] == 2  # nothing was overwritten

    shutil.copytree(node0, node1, dirs_exist_ok=True)  # every node holds the same checkpoint now
    r = launch(tmp_path, 2, "--resume", "auto")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    two = [report(tmp_path, rank) for rank in (0, 1)]
    assert two[0]["global_step"] == two[1]["global_step"] == 4
    assert two[0]["params"] == two[1]["params"] and two[0]["buffers"] == two[1]["buffers"]


def test_unreadable_data_on_one_rank_stops_every_rank_with_the_same_error(tmp_path):
    t0 = time.monotonic()
    r = launch(tmp_path, 1, unreadable_on_rank1=True)
    assert r.returncode != 0
    for rank in (0, 1):
        err = "\n".join(rank_lines(r, rank))
        # rank 1's 2 x 2 clips of step 1 each stand for 10 unreadable videos: 40 over the epoch's 16 clips
        assert "error: 40 of 16 train samples (250.00%) were unreadable" in err, \
            (rank, r.stdout[-3000:] + r.stderr[-3000:])
    assert "10 consecutive samples are unreadable" in "\n".join(rank_lines(r, 1))
    assert time.monotonic() - t0 < 120


def test_two_processes_with_accumulation_equal_one_process_with_the_same_batch(tmp_path, monkeypatch):
    """DDP with gradient_as_bucket_view, no_sync on the first of 2 micro-batches and gradients set to None
    between steps: 2 ranks x 2 clips x 2 micro-batches give the weights of 1 process x 4 clips x 2 (the
    sampler gives every step the same 8 clips; 2 steps, SGD with momentum)."""
    from rsanet.config import load_config
    from rsanet.engine import run_training, runner

    r = launch(tmp_path, 1, linear=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    two = torch.load(tmp_path / "w" / "node0" / "last.pth", weights_only=True)
    assert two["global_step"] == 2 and two["run_state"]["world_size"] == 2

    monkeypatch.setattr(runner, "_build_datasets", lambda cfg, splits: {s: TinyData() for s in splits})
    monkeypatch.setattr(runner, "prepare_model", lambda cfg, ctx, train: LinearModel().to(ctx.device))
    cfg = load_config(tmp_path / "tiny1.yaml", ["train.batch_size=4"])
    run_training(cfg, tmp_path / "one")
    one = torch.load(tmp_path / "one" / "last.pth", weights_only=True)
    assert one["global_step"] == 2 and one["run_state"]["total_batch"] == two["run_state"]["total_batch"] == 8
    assert (one["run_state"]["world_size"], one["run_state"]["clips_per_process"]) == (1, 8)
    assert not torch.allclose(one["model"]["fc.weight"], two["model"]["fc.weight"] * 0)
    for k in one["model"]:
        torch.testing.assert_close(two["model"][k], one["model"][k], rtol=0, atol=1e-6)
