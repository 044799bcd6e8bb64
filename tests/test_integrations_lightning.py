"""MultigridCallback under Lightning: examples/lightning_multigrid.py trains the trainer's per-iteration
(batch, T, S, LR, BN) sequence on 1 and on 2 processes (Lightning's DDP, gloo), a killed run resumed from its
Lightning checkpoint continues with the very same batches, and Trainer flags that would break the schedule
fail in one line."""

import contextlib
import io
import re

import lightning as L
import pytest
import torch
from test_integrations_trainer import (
    EXAMPLES,
    TRAIN_CLIPS,
    assert_same_steps,
    assert_summary,
    load_example,
    read_trace,
    run_script,
    trainer_steps,
)

from mgvideo.errors import ConfigError
from mgvideo.integrations import tiny
from mgvideo.integrations.lightning import MultigridCallback

example = load_example("lightning_multigrid")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The example in this process, one record per step."""
    trace = tmp_path_factory.mktemp("lightning_one")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        example.main(["--trace", str(trace)])
    return read_trace(trace), printed.getvalue()


@pytest.mark.slow
def test_one_process_trains_the_trainers_sequence(one_process):
    trace, printed = one_process
    expected = trainer_steps()
    assert_same_steps(trace, expected)
    assert_summary(printed, expected)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_under_lightning_ddp_train_the_trainers_sequence(tmp_path):
    done = run_script([str(EXAMPLES / "lightning_multigrid.py"), "--devices", "2", "--trace", str(tmp_path)])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for rank in (0, 1):  # per-device batches, cross-device BN in the full-shape stages, disjoint indices
        assert_same_steps(read_trace(tmp_path, rank), trainer_steps(2, rank))
    assert done.stdout.count("iterations against the baseline's") == 1  # rank 0 alone prints
    assert_summary(done.stdout, trainer_steps(2, 0))


KILLER = """
import os, signal, sys
import lightning as L
sys.path.insert(0, {examples!r})
import lightning_multigrid as example

class Kill(L.Callback):  # SIGKILL this process before step `step` + 1, after step `step`'s checkpoint
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

step = int(sys.argv[1])
example.main(sys.argv[2:], callbacks=[Kill(step)] if step >= 0 else [])
"""


@pytest.mark.slow
def test_a_killed_run_resumes_with_the_same_batches(tmp_path, one_process):
    """Killed after step 10 (mid-epoch 5), resumed and killed again after step 12 (epoch 5's last step,
    saved at its on_train_batch_end), resumed to the end: the uninterrupted run's steps, losses too. With
    2 persistent loader workers, which draw batches before any epoch hook runs."""
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER.format(examples=str(EXAMPLES)))
    checkpoints, trace = tmp_path / "checkpoints", tmp_path / "trace"
    trace.mkdir()
    for kill_at, resume in ((10, False), (12, True), (-1, True)):
        args = [str(killer), str(kill_at), "--checkpoints", str(checkpoints), "--trace", str(trace),
                "--workers", "2"]
        done = run_script(args + (["--resume", str(checkpoints / "last.ckpt")] if resume else []))
        assert done.returncode == (-9 if kill_at >= 0 else 0), done.stderr[-3000:]
        assert len(read_trace(trace)) == (kill_at if kill_at >= 0 else len(one_process[0]))
    resumed, uninterrupted = read_trace(trace), one_process[0]
    assert_same_steps(resumed, uninterrupted)
    assert [s["loss"] for s in resumed] == pytest.approx([s["loss"] for s in uninterrupted], rel=1e-5)


class WithScheduler(example.TinyVideoNet):
    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1)]


class SizedSampler(example.TinyVideoNet):
    def train_dataloader(self):  # the sampler itself: Lightning would fix every epoch at the first's length
        return torch.utils.data.DataLoader(tiny.RandomClips(), batch_sampler=self.multigrid.sampler)


GOOD = {"max_epochs": tiny.SCHEDULE.max_epoch, "use_distributed_sampler": False}


@pytest.mark.parametrize("flags, module, message", [
    ({"max_epochs": tiny.SCHEDULE.max_epoch}, example.TinyVideoNet, "use_distributed_sampler=False"),
    ({**GOOD, "accumulate_grad_batches": 2}, example.TinyVideoNet, "accumulate_grad_batches=2"),
    ({**GOOD, "max_epochs": 3}, example.TinyVideoNet, f"max_epochs={tiny.SCHEDULE.max_epoch}"),
    ({**GOOD, "max_steps": 5}, example.TinyVideoNet, "no max_steps"),
    ({**GOOD, "limit_train_batches": 0.5}, example.TinyVideoNet, "limit_train_batches"),
    (GOOD, WithScheduler, "LR scheduler"),
    (GOOD, SizedSampler, "batch_sampler=multigrid.batch_sampler"),
])
def test_a_wrong_trainer_setting_fails_in_one_line(flags, module, message):
    multigrid = MultigridCallback(tiny.SCHEDULE, tiny.LR, dataset_size=TRAIN_CLIPS, batch_size=2)
    trainer = L.Trainer(accelerator="cpu", devices=1, callbacks=[multigrid], logger=False, **flags,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        trainer.fit(module(multigrid, None))
    assert "\n" not in str(err.value) and str(err.value).startswith("MultigridCallback: ")


def test_the_sampler_is_asked_for_before_setup():
    multigrid = MultigridCallback(tiny.SCHEDULE, tiny.LR, dataset_size=TRAIN_CLIPS, batch_size=2)
    with pytest.raises(ConfigError, match="train_dataloader"):
        multigrid.batch_sampler  # noqa: B018

