"""Training loop, evaluation, optimizer, LR schedule and checkpoints.

``run_training(cfg, work_dir, resume)`` and ``run_test(cfg, checkpoint, work_dir)`` compose the pieces;
``tools/train.py`` and ``tools/test.py`` are thin command-line entry points over them.
"""
from rsanet.engine.checkpoint import CheckpointError, find_resume_checkpoint, load_checkpoint, save_checkpoint
from rsanet.engine.evaluate import EvalResult, evaluate
from rsanet.engine.loaders import build_eval_loader, build_train_loader
from rsanet.engine.optim import WarmupCosine, build_criterion, build_optimizer, build_scheduler, param_groups
from rsanet.engine.runner import run_test, run_training
from rsanet.engine.train import NonFiniteLossError, TrainState, train_one_epoch

__all__ = ["run_training", "run_test", "train_one_epoch", "evaluate", "EvalResult", "TrainState",
           "build_optimizer", "build_scheduler", "build_criterion", "param_groups", "WarmupCosine",
           "build_train_loader", "build_eval_loader", "save_checkpoint", "load_checkpoint",
           "find_resume_checkpoint", "CheckpointError", "NonFiniteLossError"]
