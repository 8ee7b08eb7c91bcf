"""Host-device syncs of the training step and of evaluation, counted on the CPU.

On a GPU, every read of a device value on the host (``.item()``, ``bool()``, ``float()``, ``.tolist()``,
``.cpu()``, ``.numpy()``, ``nonzero``...) waits for all queued kernels. :class:`DeviceReads` intercepts those
calls with a ``TorchFunctionMode`` and counts the ones made on device tensors. Which tensors are "on the
device" is tracked through the ops: the loader's batches are host tensors, so is whatever is computed from
host tensors only (the ``replaced`` counts, the label mask); parameters, and everything computed with them
(logits, loss, gradients, norm, the loss scale), are device tensors, as on a GPU.

The pinned numbers: one read per optimizer step (the finiteness flag), plus one at each
``runtime.log_interval`` (loss and gradient norm together), in fp32, bf16 and fp16; a skipped fp16 step
reads four more values. Evaluation reads once however many batches it scores. (The code before this
change read 4 values per step and one per evaluation batch.)
"""
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from rsanet.config import load_config
from rsanet.dist import DistContext
from rsanet.engine.evaluate import evaluate
from rsanet.engine.optim import build_criterion, build_optimizer, build_scheduler
from rsanet.engine.run_state import RunState
from rsanet.engine.train import TrainParts, TrainState, train_one_epoch
from rsanet.runlog import RunLogger

READS = {"item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy", "cpu", "__format__",
         "__repr__", "nonzero", "__array__"}


class DeviceReads(TorchFunctionMode):
    """Counts host reads of device values (see the module doc). ``where`` keeps a short trace per read."""

    def __init__(self):
        super().__init__()
        self.count, self.where = 0, []

    @staticmethod
    def is_host(t: torch.Tensor) -> bool:
        return getattr(t, "_host", False)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if name in READS and any(not self.is_host(t) for t in inputs):
            import traceback
            self.count += 1
            self.where.append(f"{name}: " + " <- ".join(f"{f.name}:{f.lineno}" for f in
                                                        reversed(traceback.extract_stack(limit=6)[:-1])))
        out = func(*args, **kwargs)
        produced = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if name in READS:
            host = True  # what a read returns lives on the host
        elif name in ("to", "cuda"):
            host = None if any(p is i for p in produced for i in inputs) else False  # a copy lands on the device
        elif inputs:
            host = all(self.is_host(t) for t in inputs)
        else:
            host = "device" not in kwargs  # a factory: on the host unless it names a device
        for t in produced:
            if host is not None:
                t._host = host
        return out


def host(tree):
    """Mark every tensor of a (collated) batch as a host tensor, as the DataLoader hands them over."""
    for t in tree_flatten(tree)[0]:
        if isinstance(t, torch.Tensor):
            t._host = True
    return tree


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 2 * 4 * 4, 3)

    def forward(self, x):  # (B, 3, 2, 4, 4) -> (B, 3)
        return self.fc(x.flatten(1))


def batches(n, batch_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        out.append(host({"clip": torch.randint(0, 256, (b, 3, 2, 4, 4), dtype=torch.uint8, generator=g),
                         "label": torch.randint(0, 3, (b,), generator=g), "index": torch.arange(start, start + b),
                         "video": torch.arange(start, start + b), "view": torch.zeros(b, dtype=torch.long),
                         "replaced": torch.zeros(b, dtype=torch.long)}))
    return out


def make_parts(tmp_path, steps, *opts, criterion=None):
    cfg = load_config(None, ["model.num_classes=3", "train.warmup_epochs=0", "train.epochs=1",
                             "runtime.progress=false", "runtime.tensorboard=false", *opts])
    ctx = DistContext(0, 0, 1, torch.device("cpu"), "")
    net = Linear()
    run = RunState.of(cfg, world_size=1)
    optimizer = build_optimizer(cfg, net, run)
    # a low initial scale: the default 2^16 overflows these fp16 gradients once on the CPU (its calibration)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8) if cfg.train.amp == "fp16" else None
    return TrainParts(cfg, ctx, run, net, net, criterion or build_criterion(cfg), optimizer,
                      build_scheduler(cfg, optimizer, steps, run), scaler, RunLogger(tmp_path, 0, tensorboard=False),
                      steps)


def epoch_reads(parts):
    """The device reads of one training epoch over 6 batches of 4 clips (the logger closed after)."""
    reads = DeviceReads()
    try:
        with reads:
            train_one_epoch(parts, TrainState(), batches(24, 4))
    finally:
        parts.logger.close()
    return reads


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_one_device_read_per_step_plus_one_per_log_interval(tmp_path, amp):
    parts = make_parts(tmp_path, 6, "train.batch_size=4", f"train.amp={amp}", "runtime.log_interval=3")
    reads = epoch_reads(parts)
    assert reads.count == 6 + 2, "\n".join(reads.where)  # 6 steps, log lines after steps 3 and 6
    log = (tmp_path / "train.log").read_text()
    assert "[3/6] loss" in log and "[6/6] loss" in log and "skipped" not in log


def test_an_fp16_overflow_step_reads_the_loss_scale(tmp_path):
    calls = []

    class FirstOverflows(nn.Module):
        def forward(self, logits, target):
            calls.append(1)
            loss = nn.functional.cross_entropy(logits, target)
            return loss * float("inf") if len(calls) == 1 else loss

    parts = make_parts(tmp_path, 6, "train.batch_size=4", "train.amp=fp16", "runtime.log_interval=3",
                       criterion=FirstOverflows())
    reads = epoch_reads(parts)
    assert reads.count == 6 + 2 + 4, "\n".join(reads.where)
    assert parts.scaler.get_scale() == 2.0 ** 7
    assert "fp16 loss scaler skipped iteration 1 " in (tmp_path / "train.log").read_text()


def test_evaluation_reads_the_scores_once(tmp_path):
    cfg = load_config(None, ["model.num_classes=3", "test.batch_size=4"])

    class Data:
        classes, num_videos, num_views = ["a", "b", "c"], 10, 1

        def __len__(self):
            return 10

    net = Linear()
    loader = batches(10, 4)  # 3 batches
    reads = DeviceReads()
    with reads:
        result = evaluate(net, loader, Data(), cfg, DistContext(0, 0, 1, torch.device("cpu"), ""))
    assert reads.count == 1, "\n".join(reads.where)
    with torch.no_grad():  # the same scores, computed directly
        probs = torch.softmax(net(torch.cat([(b["clip"].float() / 255 - torch.tensor(cfg.data.mean).view(3, 1, 1, 1))
                                            / torch.tensor(cfg.data.std).view(3, 1, 1, 1) for b in loader])), 1)
    torch.testing.assert_close(torch.from_numpy(result.scores), probs, rtol=0, atol=1e-5)
