"""Run logging: rank 0 writes train.log, metrics.jsonl and TensorBoard scalars; other ranks write nothing."""
import json
import logging

from rsanet.runlog import RunLogger


def test_rank0_writes_text_jsonl_and_tensorboard(tmp_path):
    with RunLogger(tmp_path, rank=0, tensorboard=True) as log:
        log.info("visible")
        log.info("only in the file", console=False)
        logging.getLogger("rsanet.data.datasets").warning("unreadable sample /x/y.mp4")  # library loggers too
        log.record("train", 3, loss=1.5, lr=0.01, clips_per_s=float("nan"))
    text = (tmp_path / "train.log").read_text()
    assert "visible" in text and "only in the file" in text and "/x/y.mp4" in text
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["kind"] == "train" and row["step"] == 3 and row["loss"] == 1.5 and row["clips_per_s"] == "nan"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert logging.getLogger("rsanet").handlers == [] and logging.getLogger("rsanet").propagate  # restored


def test_other_ranks_write_nothing(tmp_path, capsys):
    with RunLogger(tmp_path / "r1", rank=1, tensorboard=True) as log:
        log.info("rank 1 info")
        log.record("train", 1, loss=1.0)
        log.error("rank 1 failed")
    assert not (tmp_path / "r1").exists()
    err = capsys.readouterr().err
    assert "[rank 1] ERROR rank 1 failed" in err and "rank 1 info" not in err
