"""Stops and storage faults with the real ``tools/train.py`` in a subprocess: SIGTERM mid-epoch and a resume
that equals the uninterrupted run, Ctrl-C to the whole process group with a loader worker, a disk that fills
up mid-run and a read-only work dir at start (a real tmpfs in a user namespace where the sandbox allows it,
otherwise a real kernel error at the write: /dev/full, a read-only folder, a path through a file). Also the
Slurm script's signal-and-requeue logic (with stand-ins for sbatch / srun / scontrol) and the ranks'
agreement on the stop step (two gloo processes)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "tools" / "train.py"

CONFIG = {
    "model": {"arch": "resnet18", "width": 8, "num_classes": 2, "num_segments": 4, "pretrained": None,
              "transform": {"positions": [[1], [], [], []], "rsa": {"kernel_size": [3, 3, 3], "queries": 2}}},
    "data": {"dataset": "synthetic", "resize": [32, 32], "crop_size": 32, "num_workers": 0,
             "synthetic": {"classes": 2, "frames": 4, "resolution": [32, 32], "train_size": 48, "val_size": 4}},
    "train": {"batch_size": 4, "epochs": 2, "warmup_epochs": 1},  # 12 steps per epoch
    "test": {"batch_size": 4},
    "runtime": {"deterministic": True, "log_interval": 1, "tensorboard": False, "progress": False,
                "checkpoint_interval": 0},
}


def write_config(folder: Path, **sections) -> Path:
    cfg = json.loads(json.dumps(CONFIG))
    for section, values in sections.items():
        cfg[section].update(values)
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def start_training(config: Path, work_dir: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TRAIN), "--config", str(config), "--work-dir", str(work_dir), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                            start_new_session=True)  # its own process group (Ctrl-C reaches it and its workers)


def train_records(work_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (work_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in rows if r["kind"] == "train"]


def wait_for_step(proc: subprocess.Popen, work_dir: Path, step: int, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        metrics = work_dir / "metrics.jsonl"
        if metrics.is_file() and any(r["step"] >= step for r in train_records(work_dir)):
            return
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"training did not reach step {step}")


# ------------------------------------------------------------------------------------------ 4. signals
def test_sigterm_mid_epoch_saves_and_resume_equals_the_uninterrupted_run(tmp_path):
    from rsanet.config import load_config
    from rsanet.engine import run_training
    config = write_config(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 in the subprocesses
    try:
        run_training(load_config(config), tmp_path / "full")  # the uninterrupted run, in this process
    finally:
        torch.set_num_threads(threads)
    w = tmp_path / "w"
    proc = start_training(config, w)
    wait_for_step(proc, w, 3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and not list(w.glob("*.tmp"))
    ckpt = torch.load(w / "last.pth", weights_only=True)
    stopped = ckpt["global_step"]
    assert 0 < ckpt["step_in_epoch"] < 12 and ckpt["epoch"] == 0  # mid-epoch
    log = (w / "train.log").read_text()
    assert (f"SIGTERM: stopped after iteration {stopped} (epoch 1, step {stopped}/12); {w / 'last.pth'} holds this "
            "state. Continue with --resume auto") in log
    start = len((w / "metrics.jsonl").read_text().splitlines())
    resumed = subprocess.run([sys.executable, str(TRAIN), "--config", str(config), "--work-dir", str(w),
                              "--resume", "auto"], capture_output=True, text=True, env=env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()[start:]]
    after = [r for r in rows if r["kind"] == "train"]
    reference = {r["step"]: r["loss"] for r in train_records(tmp_path / "full")}
    assert [r["step"] for r in after] == list(range(stopped + 1, 25))
    assert all(r["loss"] == reference[r["step"]] for r in after)  # bit for bit
    a = torch.load(w / "last.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "full" / "last.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_ctrl_c_to_the_process_group_with_a_loader_worker_stops_cleanly(tmp_path):
    config = write_config(tmp_path, data={"num_workers": 1}, runtime={"deterministic": False})
    w = tmp_path / "w"
    proc = start_training(config, w)
    wait_for_step(proc, w, 2)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: main process and loader worker
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "exited unexpectedly" not in err and "KeyboardInterrupt" not in err
    ckpt = torch.load(w / "last.pth", weights_only=True)
    assert ckpt["step_in_epoch"] > 0
    assert f"SIGINT: stopped after iteration {ckpt['global_step']}" in (w / "train.log").read_text()


def _agree(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    import torch.distributed as dist

    from rsanet.engine.stop import StopRequest
    dist.init_process_group("gloo", rank=rank, world_size=world)
    stop = StopRequest(distributed=True)
    calls = 0
    while True:
        calls += 1
        if rank == 1 and calls == 5:
            stop.received = signal.SIGTERM  # only rank 1 got the signal, during its 5th step
        if stop.poll():
            break
    Path(out, f"rank{rank}").write_text(f"{calls} {stop.signum}")
    stop.restore()
    dist.destroy_process_group()


def test_ranks_agree_on_the_step_to_stop_after(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.start_processes(_agree, args=(2, port, str(tmp_path)), nprocs=2, join=True,
                                         start_method="fork")
    assert (tmp_path / "rank0").read_text() == (tmp_path / "rank1").read_text() == f"6 {int(signal.SIGTERM)}"


# ---------------------------------------------------------------------------------- 4. Slurm requeue
def stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
    path.chmod(0o755)


def test_slurm_script_requests_a_signal_and_requeues_after_it(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    stub(bin_dir, "sbatch", f'echo "sbatch $*" >> {log}; echo 4242\n')
    stub(bin_dir, "scontrol", f'echo "scontrol $*" >> {log}\n')
    stub(bin_dir, "srun", f"""
        trap 'echo "srun got TERM" >> {log}; kill $child; exit 143' TERM
        echo "srun started" >> {log}
        sleep 60 & child=$!
        wait $child
        """)
    script = ROOT / "scripts" / "slurm_train.sh"
    environ = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    sub = subprocess.run(["bash", str(script), "gpu", "job", "configs/x.yaml", "--opts", "train.lr=0.01"],
                         capture_output=True, text=True, env=environ, timeout=60)
    assert sub.returncode == 0 and "submitted job 4242" in sub.stdout
    call = log.read_text().split()
    assert {"--requeue", "--signal=B:TERM@300", "--open-mode=append"} <= set(call)
    assert call[call.index(str(script)) + 1:] == ["--job", str(ROOT), "configs/x.yaml", "--opts", "train.lr=0.01"]

    log.unlink()  # inside the job: the time-limit signal reaches the batch script
    job = subprocess.Popen(["bash", str(script), "--job", str(ROOT), "configs/x.yaml"], text=True,
                           env=dict(environ, SLURM_JOB_ID="4242", SLURM_NNODES="1"), stdout=subprocess.PIPE)
    deadline = time.time() + 30
    while not (log.is_file() and "srun started" in log.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    job.communicate(timeout=30)
    assert job.returncode == 143
    assert log.read_text().splitlines() == ["srun started", "srun got TERM", "scontrol requeue 4242"]

    log.unlink()  # a run that ends by itself is not requeued
    stub(bin_dir, "srun", f'echo "srun done" >> {log}\n')
    done = subprocess.run(["bash", str(script), "--job", str(ROOT), "configs/x.yaml"], capture_output=True,
                          text=True, env=dict(environ, SLURM_JOB_ID="4242", SLURM_NNODES="1"), timeout=30)
    assert done.returncode == 0 and log.read_text().splitlines() == ["srun done"]


# ------------------------------------------------------------------------------------------- 5. storage
def user_namespace_tmpfs() -> bool:
    """True where an unprivileged user namespace may mount a tmpfs (the sandbox allows it)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d && rmdir $d"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def in_tmpfs(command: list[str], mount: Path, size: int, keep: Path,
             readonly: bool = False) -> subprocess.CompletedProcess:
    """Run ``command`` with a fresh tmpfs of ``size`` bytes (read-only if asked) mounted at ``mount``; the
    tmpfs's files are copied to ``keep`` (outside it) when the command ends."""
    options = f"size={size}" + (",ro" if readonly else "")
    quoted = " ".join(f"'{c}'" for c in command)
    shell = (f"mount -t tmpfs -o {options} tmpfs '{mount}' && {{ {quoted}; rc=$?; cp -a '{mount}/.' '{keep}/' "
             f"2>/dev/null; exit $rc; }}")
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell],
                          capture_output=True, text=True, env=env(), timeout=600)


def test_disk_full_mid_run_is_one_line_and_leaves_no_partial_file(tmp_path):
    config = write_config(tmp_path, data={"synthetic": dict(CONFIG["data"]["synthetic"], train_size=8)},
                          train={"epochs": 3})
    w, keep = tmp_path / "w", tmp_path / "kept"
    w.mkdir()
    keep.mkdir()
    command = [sys.executable, str(TRAIN), "--config", str(config), "--work-dir", str(w)]
    if user_namespace_tmpfs():
        # Room for one checkpoint and the logs, not for a second one: the save after epoch 2 hits a full disk.
        from rsanet.config import load_config
        from rsanet.models import build_model
        with torch.device("meta"):
            model = build_model(load_config(config))
        weights = sum(v.numel() * v.element_size() for v in model.state_dict().values())
        r = in_tmpfs(command, w, int(2 * weights * 1.5) + 96 * 1024, keep)
    else:  # a real ENOSPC from the kernel at the first checkpoint write
        (w / "last.pth.tmp").symlink_to("/dev/full")
        r = subprocess.run(command, capture_output=True, text=True, env=env(), timeout=600)
        keep = w
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "Logging error" not in r.stderr
    error = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert error == [f"error: cannot write {w / 'last.pth'}: No space left on device"] or (
        len(error) == 1 and error[0].startswith(f"error: cannot write {w / 'last.pth'}: No space left on device ("))
    assert not list(keep.glob("*.tmp")) and not (keep / "last.pth.tmp").is_symlink()
    if (keep / "last.pth").exists():  # tmpfs: the previous epoch is intact
        assert torch.load(keep / "last.pth", weights_only=True)["epoch"] >= 1


def test_read_only_work_dir_fails_at_start_in_one_line(tmp_path):
    config = write_config(tmp_path)
    w, keep = tmp_path / "w", tmp_path / "kept"
    w.mkdir()
    keep.mkdir()
    command = [sys.executable, str(TRAIN), "--config", str(config), "--work-dir", str(w)]
    if user_namespace_tmpfs():
        r = in_tmpfs(command, w, 1 << 20, keep, readonly=True)
        reason = "Read-only file system"
    elif os.geteuid() != 0:  # permissions bind an unprivileged user
        w.chmod(0o555)
        r = subprocess.run(command, capture_output=True, text=True, env=env(), timeout=600)
        w.chmod(0o755)
        reason, keep = "Permission denied", w
    else:  # root without namespaces: a work dir inside a regular file cannot be created
        (tmp_path / "file").write_text("x")
        w = tmp_path / "file" / "w"
        command[-1] = str(w)
        r = subprocess.run(command, capture_output=True, text=True, env=env(), timeout=600)
        reason = "Not a directory"
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: cannot write to the work dir {w}: {reason}"]
    assert not list(keep.iterdir())
