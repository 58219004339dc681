"""Two nodes simulated on one machine, sharing no folder: training and the test after fit as on one node."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CONFIGS, REPO, event_dirs, read_scalars

#: A toy run whose best checkpoint (the worst validation loss: the first epoch's) is not its final weights,
#: so a rank that tested the weights in memory instead of the checkpoint would change the test loss.
FIT = [
    "fit",
    "--config",
    str(CONFIGS / "toy" / "poisson.yaml"),
    "--trainer.accelerator=cpu",
    "--trainer.strategy=ddp",
    "--trainer.max_steps=20",
    "--trainer.enable_progress_bar=false",
    "--data.init_args.steps_per_epoch=5",
    "--model.init_args.grad_every=0",
    "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
    "--trainer.callbacks.monitor=val/loss",
    "--trainer.callbacks.mode=max",
    "--test_after_fit=true",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(folder: Path, flags: list[str], **env: str) -> subprocess.Popen:
    folder.mkdir()
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env}
    command = [sys.executable, "-m", "gengs_lightning", *FIT, *flags]
    return subprocess.Popen(command, cwd=folder, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr.decode()[-3000:]


def _test_metrics(folder: Path) -> dict[str, float]:
    (run,) = [d for d in event_dirs(folder / "logs") if "test/loss" in read_scalars(d)]
    return {tag: values[-1][1] for tag, values in read_scalars(run).items() if tag.startswith("test/")}


@pytest.mark.slow
def test_two_nodes_without_a_shared_folder_test_like_one_node_with_two_devices(tmp_path):
    port = str(_free_port())
    nodes = [
        _start(tmp_path / f"node{rank}", ["--trainer.num_nodes=2", "--trainer.devices=1"],
               MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(rank))
        for rank in (0, 1)
    ]  # fmt: skip
    for node in nodes:
        _finish(node)
    assert not (tmp_path / "node1" / "logs").exists()  # node 1 never had the checkpoint
    _finish(_start(tmp_path / "one_node", ["--trainer.num_nodes=1", "--trainer.devices=2"]))
    two_nodes, one_node = _test_metrics(tmp_path / "node0"), _test_metrics(tmp_path / "one_node")
    assert set(two_nodes) == {"test/loss"}
    assert two_nodes == one_node
