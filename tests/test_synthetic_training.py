"""End-to-end learning on the synthetic motion benchmark with the real engine (``run_training``): on the
two-class version (background moving left vs right: a camera pan), a tiny TSN-ResNet-18 with one RSA layer learns the
motion, while the same network with 2D convolutions only (TSN) stays at chance, as the generator guarantees."""
import pytest

from rsanet.config import load_config
from rsanet.engine import run_training

TINY = [
    "model.arch=resnet18", "model.width=8", "model.num_classes=2", "model.num_segments=4", "model.pretrained=null",
    "model.dropout=0.0", "model.stochastic_depth=0.0", "model.transform.positions=[[1],[],[],[]]",
    "model.transform.rsa.kernel_size=[3,3,3]", "model.transform.rsa.queries=2",
    "data.dataset=synthetic", "data.synthetic.classes=2", "data.synthetic.frames=4", "data.synthetic.seed=0",
    "data.synthetic.resolution=[32,32]", "data.resize=[32,32]", "data.crop_size=32", "data.scales=[1.0]",
    "data.flip=none", "data.num_workers=0", "data.synthetic.train_size=768", "data.synthetic.val_size=160",
    "data.segment_rule=uniform",  # as configs/synthetic: n = T, where tsm tests on frame 0 only
    "model.transform.rsa.init=variance_preserving", "model.classifier_init=normal", "train.lr_schedule=step",
    "train.min_lr_ratio=0",  # as configs/synthetic
    "train.batch_size=16", "train.lr=0.2", "train.epochs=8", "train.warmup_epochs=0.5", "train.label_smoothing=0.0",
    "train.eval_every=8", "test.batch_size=32", "runtime.seed=0", "runtime.tensorboard=false",
    "runtime.progress=false", "runtime.checkpoint_interval=0", "runtime.keep_epoch_checkpoints=0",
    "runtime.log_interval=50",
]



@pytest.mark.slow
def test_rsa_learns_left_vs_right_while_tsn_stays_at_chance(tmp_path):
    rsa = run_training(load_config(None, TINY + ["model.transform.type=rsa"]), tmp_path / "rsa")
    no_rsa = [o for o in TINY if not o.startswith("model.transform.rsa.")]  # TSN reads none of them
    tsn = run_training(load_config(None, no_rsa + ["model.transform.type=conv2d"]), tmp_path / "tsn")
    assert rsa["finished"] and tsn["finished"]
    # 160 held-out clips: chance is 50 % with a binomial std of 4 points
    assert rsa["last_top1"] >= 85.0, rsa
    assert abs(tsn["last_top1"] - 50.0) <= 12.5, tsn
