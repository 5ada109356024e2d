"""The torch.distributed helpers: what a process does when rank 0 or a peer fails."""

from __future__ import annotations

import pytest

from visiontool import distributed
from visiontool.distributed import DistInfo, PeerStopped, SharedError, main_decides
from visiontool.errors import ConfigError, ModelLoadError


def test_a_collective_that_loses_its_peer_is_one_line_exit_1(monkeypatch):
    import torch.distributed as dist

    def closed(*_a, **_k):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer")

    monkeypatch.setattr(dist, "broadcast_object_list", closed)
    with pytest.raises(PeerStopped) as caught:
        distributed.broadcast_object("x", DistInfo(rank=1, world_size=2))
    assert caught.value.exit_code == 1
    assert "process 1 of 2" in str(caught.value) and "gloo" not in str(caught.value)


def test_rank_0s_error_is_raised_on_every_rank_with_its_exit_code(monkeypatch):
    sent: list = []
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj, info: sent.append(obj) or obj)

    def fails():
        raise ModelLoadError("weights not found: w.pt")

    with pytest.raises(ModelLoadError):
        main_decides(fails, DistInfo(rank=0, world_size=2))
    # the other rank receives what rank 0 sent instead of a decision
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj, info: sent[0])
    with pytest.raises(SharedError) as caught:
        main_decides(lambda: pytest.fail("only rank 0 decides"), DistInfo(rank=1, world_size=2))
    assert str(caught.value) == "weights not found: w.pt" and caught.value.exit_code == 3
    # a decision is shared as it is; one process decides alone
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj, info: obj)
    assert main_decides(lambda: {"a": 1}, DistInfo(rank=0, world_size=2)) == {"a": 1}
    assert main_decides(lambda: 5, DistInfo()) == 5


def test_a_claimed_output_folder_is_undone_when_the_others_cannot_be_told(monkeypatch, tmp_path):
    from visiontool.engine.predict.detect import DetectConfig, _claim_out

    def lost(obj, info):
        raise PeerStopped("process 0 of 2: another process of this torchrun job stopped")

    monkeypatch.setattr(distributed, "broadcast_object", lost)
    out = tmp_path / "new"
    config = DetectConfig(sources=[str(tmp_path)], out=out, model="shapes-tinyssd")
    with (
        pytest.raises(PeerStopped),
        _claim_out(config, DistInfo(rank=0, world_size=2), None, [], [], None),
    ):
        pytest.fail("the run must not start")
    assert not out.exists()  # the folder rank 0 made (and its lock) are gone again


def test_more_processes_than_gpus_is_one_line_before_any_cuda_call(monkeypatch):
    """`torchrun --nproc_per_node=2` on a one-GPU machine: the second process would take
    cuda:1 and die in CUDA's "invalid device ordinal" traceback."""
    import torch

    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
                        "LOCAL_WORLD_SIZE": "2"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda *_: pytest.fail("no CUDA call"))
    with pytest.raises(ConfigError) as caught:
        distributed.init_distributed(torch.device("cuda"))
    assert caught.value.exit_code == 2
    assert "2 processes on this machine but it has 1 GPU(s)" in str(caught.value)
    assert "--nproc_per_node=1" in str(caught.value)
