"""Launcher environments: torchrun's variables, SLURM's (srun, one task per GPU), and single processes."""
from __future__ import annotations

import pytest

from ecanet import distributed
from ecanet.errors import ConfigError

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "MASTER_ADDR",
               "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_single_process(clean_env):
    assert distributed._read_launcher_env() == (0, 1, 0, 1)
    info = distributed.init_distributed(device="cpu")
    assert (info.rank, info.world_size, info.distributed, info.is_main) == (0, 1, False, True)


def test_torchrun_variables_win(clean_env):
    for name, value in {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                        "SLURM_NTASKS": "16", "SLURM_PROCID": "9"}.items():
        clean_env.setenv(name, value)
    assert distributed._read_launcher_env() == (5, 8, 1, 4)


def test_slurm_srun_one_task_per_gpu(clean_env):
    for name, value in {"SLURM_NTASKS": "16", "SLURM_PROCID": "11", "SLURM_LOCALID": "3",
                        "SLURM_NTASKS_PER_NODE": "8(x2)", "SLURM_JOB_NODELIST": "gpu17,gpu18"}.items():
        clean_env.setenv(name, value)
    clean_env.setattr(distributed, "_slurm_master_addr", lambda: "gpu17")  # scontrol is not installed here
    assert distributed._read_launcher_env() == (11, 16, 3, 8)
    import os
    assert os.environ["MASTER_ADDR"] == "gpu17" and os.environ["MASTER_PORT"] == "29500"


def test_slurm_master_address_without_scontrol(clean_env):
    clean_env.setenv("PATH", "/nonexistent")
    for nodelist, first in (("node[03-04]", "node03"), ("gpu[7,9-12],cpu1", "gpu7"), ("a100-17,a100-18", "a100-17"),
                            ("single", "single")):
        clean_env.setenv("SLURM_JOB_NODELIST", nodelist)
        assert distributed._slurm_master_addr() == first


def test_world_size_flag_without_a_launcher(clean_env):
    with pytest.raises(ConfigError, match="torchrun --nproc_per_node 4"):
        distributed.init_distributed(device="cpu", world_size_flag=4)


def test_cuda_requested_without_a_gpu(clean_env):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        distributed.resolve_device("cuda")


def test_a_start_up_stop_whose_exception_was_lost_still_ends_the_run_before_training():
    """A stop signal that lands inside a weakref callback or __del__ has its exception printed and dropped
    by Python; the stop is remembered, and taking over the signals for training raises it then."""
    import signal
    from ecanet import signals
    previous = signals.stop_signal_handlers()
    try:
        signals.install_startup_stop_handlers()
        handler = distributed.PreemptionHandler(distributed.DistInfo())
        handler.install().uninstall()                      # no stop received: training may start
        with pytest.raises(signals.StoppedBeforeTraining):
            signals._stop_before_training(signal.SIGTERM, None)   # the exception a callback would drop
        with pytest.raises(signals.StoppedBeforeTraining, match="SIGTERM received before training started"):
            handler.install()
        assert signal.getsignal(signal.SIGTERM) is signals._stop_before_training   # nothing taken over
        signals.install_startup_stop_handlers()            # a new start-up forgets the old stop
        handler.install().uninstall()
    finally:
        signals.restore_signal_handlers(previous)


def test_a_stop_after_training_handed_the_signals_back_does_not_say_nothing_was_saved():
    """Once training ends (or fails), its handler gives the signals back to the start-up ones: a stop then, in
    the run's wrap-up, says that the checkpoints are training's, not that nothing was saved."""
    import os
    import signal
    from ecanet import signals
    previous = signals.stop_signal_handlers()
    try:
        signals.install_startup_stop_handlers()
        distributed.PreemptionHandler(distributed.DistInfo()).install().uninstall()
        with pytest.raises(signals.StoppedBeforeTraining, match="SIGTERM received after training stopped; the "
                                                                "run's checkpoints are as training saved them"):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.5)   # the handler runs between bytecodes; give it the chance
        signals.install_startup_stop_handlers()            # the next command starts before training again
        with pytest.raises(signals.StoppedBeforeTraining, match="received before training started"):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.5)
    finally:
        signals.restore_signal_handlers(previous)


def _on_rank(rank: int, port: int, out_dir: str, body: str) -> None:
    """One of two real processes in a gloo group: writes what ``body(rank, info, out_dir)`` (a function of this
    module, by name) returns to ``out_dir/rank<rank>.json``."""
    import json
    import os
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)  # a forked child, as DataLoader's workers do
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        info = distributed.DistInfo(rank=rank, world_size=2, backend="gloo", control_group=dist.group.WORLD)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(globals()[body](rank, info, out_dir), f)
    finally:
        dist.destroy_process_group()


def _two_ranks(body: str, out_dir) -> list:
    """Each rank's result of ``body`` run in two forked processes (:func:`_on_rank`)."""
    import json
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_on_rank, args=(port, str(out_dir), body), nprocs=2, start_method="fork")
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]


def _gather(rank: int, info: distributed.DistInfo, _out_dir: str) -> dict:
    return {"on_0": distributed.gather_objects({"rank": rank}, info),
            "on_1": distributed.gather_objects([rank] * (rank + 1), info, dst=1)}


def test_gather_objects_brings_every_ranks_object_to_dst_alone(tmp_path):
    assert distributed.gather_objects("only", distributed.DistInfo()) == ["only"]   # one process: no group
    results = _two_ranks("_gather", tmp_path)
    assert results[0] == {"on_0": [{"rank": 0}, {"rank": 1}], "on_1": None}
    assert results[1] == {"on_0": None, "on_1": [[0], [1, 1]]}


def _detection_epoch(rank: int, info: distributed.DistInfo, out_dir: str) -> dict:
    """Half of a 4-step detection epoch on each of two ranks, stopped and saved; then the other half, resumed
    from that ``last.pth``. The losses are constants per rank and segment: rank r's loss_a is r + 1 before the
    stop and r + 3 after it, loss_b ten times that."""
    from pathlib import Path
    import torch
    from torch import nn
    from ecanet.detection import checkpoint as det_ckpt
    from ecanet.detection.engine import DetectionTrainState, LossTotals, train_one_epoch
    from ecanet.engine import LoopOptions

    class ConstantLosses(nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.weight, self.value = nn.Parameter(torch.zeros(1)), value
            self.backbone = nn.Module()
            self.backbone.body = nn.Sequential()

        def forward(self, images, targets):
            zero = self.weight.sum() * 0
            return {"loss_a": zero + self.value, "loss_b": zero + 10 * self.value}

    def state_of(value: float) -> DetectionTrainState:
        model = ConstantLosses(value)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        return DetectionTrainState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
                                   LossTotals(torch.device("cpu")))

    batches = [([torch.zeros(3, 4, 4)], [{"boxes": torch.zeros(0, 4)}])] * 2
    options = LoopOptions(epochs=1, steps_per_epoch=4, print_freq=2)
    record = det_ckpt.DetectorRecord("constant", "none", 1, {}, 0, info.world_size, {}, "")
    first = state_of(rank + 1.0)
    stopped = train_one_epoch(first, batches, options, info, should_stop=lambda: first.position.step_in_epoch == 2)
    path = det_ckpt.save_training_checkpoint(first, record, Path(out_dir), info, "preempted")
    checkpoint = det_ckpt.read_detection_checkpoint(path)
    second = state_of(rank + 3.0)
    det_ckpt.restore_training_state(second, checkpoint, info)
    finished = train_one_epoch(second, batches, options, info)
    saved = checkpoint["epoch_losses"]
    return {"stopped": stopped.losses, "saved": [saved["sums"].tolist(), saved["steps"]],
            "finished": finished.losses}


def test_detection_losses_are_the_mean_over_every_processs_steps_across_a_resume(tmp_path):
    """Two ranks train a stopped and resumed epoch: the logged, saved and recorded losses add every rank's
    steps (rank 0's alone would be 1 and 3), and the resumed run counts the saved steps once."""
    results = _two_ranks("_detection_epoch", tmp_path)
    for result in results:
        # before the stop: loss_a (1 + 1 + 2 + 2) / 4 steps; after: (6 + 3 + 3 + 4 + 4) / 8 steps
        assert result["stopped"] == pytest.approx({"loss": 16.5, "loss_a": 1.5, "loss_b": 15.0})
        assert result["saved"] == [[6.0, 60.0], 4]
        assert result["finished"] == pytest.approx({"loss": 27.5, "loss_a": 2.5, "loss_b": 25.0})


def test_nccl_on_the_cpu_is_refused_before_the_process_group_starts(monkeypatch):
    """NCCL runs on CUDA GPUs only: a CPU run launched with --dist-backend nccl gets exit 2's message, not the
    process group's ValueError."""
    from ecanet.errors import ConfigError
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0"), ("LOCAL_WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    started = []
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: started.append(kwargs))
    with pytest.raises(ConfigError, match="--dist-backend nccl runs on CUDA GPUs, and this run is on the CPU"):
        distributed.init_distributed("cpu", "nccl")
    assert not started
