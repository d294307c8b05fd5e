"""DDP on CPU: two gloo processes fine-tune together and end with identical weights (torchrun's environment)."""
import json
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

WORKER = textwrap.dedent('''
    import os, sys, torch
    import torch.multiprocessing as mp
    from torch import nn
    from adderconv import AdderConv2d
    from adderconv.training import finetune, load_data

    def tiny():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                             AdderConv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 10))

    def worker(rank, out, port):
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
        torch.set_num_threads(1)
        data = load_data("digits", (1, 16, 16), limit=256)
        res = finetune(tiny(), data, epochs=2, batch_size=64, lr=0.1, device="cpu", out=out, energy=False)
        torch.save({k: v for k, v in res.model.named_parameters()}, f"{out}/rank{rank}.pt")
        torch.save(res.test, f"{out}/test{rank}.pt")

    if __name__ == "__main__":
        mp.spawn(worker, args=(sys.argv[1], int(sys.argv[2])), nprocs=2)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_gloo_two_processes(tmp_path):
    script = tmp_path / "ddp_worker.py"
    script.write_text(WORKER)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(_free_port())], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    p0, p1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert p0.keys() == p1.keys()
    for k in p0:
        assert torch.equal(p0[k], p1[k]), f"ranks disagree on {k}"        # gradients were all-reduced
    assert torch.load(tmp_path / "test0.pt") == torch.load(tmp_path / "test1.pt")   # metrics all-reduced
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["settings"]["world_size"] == 2 and len(metrics["epochs"]) == 2
    assert metrics["epochs"][1]["train_loss"] < metrics["epochs"][0]["train_loss"]
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "model.safetensors").exists()
