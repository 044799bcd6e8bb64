"""examples/slurm_multinode.sbatch, run with stand-ins for srun, scontrol, rsync and torchrun on a pretend
two-node allocation: the torchrun line it would run parses with torch's own launcher parser (one agent per
node, c10d rendezvous at the first node, restarts allowed), and the training command behind it parses and
loads its config with mgvideo's own parser, reading the data each node copied to its local disk."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser

from mgvideo.cli import build_parser
from mgvideo.engine import trainer

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "slurm_multinode.sbatch"
NODES = ["gpu-a17", "gpu-a18"]
# The stand-ins: each appends its argv to calls.jsonl; srun then runs its command once (as on one node).
SHIM = """#!{python}
import json, os, subprocess, sys
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps([name, *args]) + "\\n")
if name == "scontrol":
    assert args[:2] == ["show", "hostnames"], args
    for node in {nodes!r}:  # a line at a time, as a long node list comes
        print(node, flush=True)
elif name == "srun":
    command = [a for a in args if not a.startswith("-")][:1]
    assert command, "srun without a command: " + " ".join(args)
    sys.exit(subprocess.run(args[args.index(command[0]):]).returncode)
"""


def run_script(tmp_path: Path, *extra: str) -> list[list[str]]:
    """Runs the example under the stand-ins; returns every recorded call, in order."""
    shims, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    shims.mkdir()
    for name in ("srun", "scontrol", "rsync", "torchrun"):
        path = shims / name
        path.write_text(SHIM.format(python=sys.executable, log=str(log), nodes=NODES))
        path.chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable,
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "mgvideo", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "gpu-a[17-18]", "SLURM_GPUS_ON_NODE": "4", "SLURM_CPUS_PER_TASK": "32",
           "SLURM_SUBMIT_DIR": str(tmp_path / "submit"), "SLURM_TMPDIR": str(tmp_path / "node_tmp"),
           "DATA_ROOT": str(tmp_path / "shared" / "kinetics"), "STORE": str(tmp_path / "shared" / "store")}
    for key in ("RECIPE", "LOCAL", "OUT", "GPUS_PER_NODE", "PORT"):
        env.pop(key, None)
    done = subprocess.run(["bash", str(SCRIPT), *extra], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in log.read_text().splitlines()]


def steps(calls: list[list[str]]) -> list[list[str]]:
    """The srun steps: srun's argv, its options first and then the command it ran on each node."""
    return [call[1:] for call in calls if call[0] == "srun"]


def option(argv: list[str], name: str) -> str | None:
    """The value of `--name=value` among srun's options."""
    return next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")), None)


def parse_torchrun(argv: list[str]):
    """torchrun's arguments as torch's launcher reads them, except that a flag must be spelt in full (torch
    would take `--nproc` for `--nproc-per-node`, until another flag starts the same way)."""
    parser = get_args_parser()
    parser.allow_abbrev = False
    try:
        return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"torch's launcher refuses: torchrun {shlex.join(argv)}")


def test_the_script_is_valid_bash():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_one_torchrun_per_node_joins_a_c10d_rendezvous_at_the_first_node(tmp_path):
    calls = run_script(tmp_path)
    launches = [s for s in steps(calls) if "torchrun" in s]
    assert len(launches) == 1, steps(calls)
    assert option(launches[0], "ntasks-per-node") == "1"  # one agent per node, not one per GPU
    torchrun = [c[1:] for c in calls if c[0] == "torchrun"]
    assert len(torchrun) == 1 and launches[0][launches[0].index("torchrun") + 1:] == torchrun[0]
    args = parse_torchrun(torchrun[0])
    assert args.nnodes.split(":")[-1] == "2" and args.nproc_per_node == "4"
    assert args.rdzv_backend == "c10d" and args.rdzv_id == "4242"
    host, port = args.rdzv_endpoint.rsplit(":", 1)
    assert host == NODES[0] and 1024 <= int(port) < 65536
    assert args.max_restarts >= 1
    assert args.module and args.training_script == "mgvideo" and args.training_script_args[0] == "train"


def test_the_training_command_parses_and_reads_the_node_local_copies(tmp_path, monkeypatch):
    calls = run_script(tmp_path, "train.dist_timeout_minutes=30")
    program = parse_torchrun(next(c[1:] for c in calls if c[0] == "torchrun"))
    # Run `mgvideo train` as the agents would, with the training itself replaced by a recorder.
    seen = {}
    monkeypatch.setattr(trainer, "train", lambda cfg, out, force=False: seen.update(cfg=cfg, out=out) or {})
    args = build_parser().parse_args(program.training_script_args)
    assert args.command == "train" and args.func(args) == 0
    cfg, out = seen["cfg"], seen["out"]
    assert out == tmp_path / "submit" / "runs" / "slowfast_r50_8x8_multigrid"
    assert cfg.model.name == "slowfast_r50_8x8" and cfg.train.dist_timeout_minutes == 30
    # The data: each node copies the lists and the store to its local disk, in steps before training.
    root, store, shared = Path(cfg.data.root), Path(cfg.data.store), tmp_path / "shared"
    assert root.is_relative_to(tmp_path / "node_tmp") and store.is_relative_to(tmp_path / "node_tmp")
    copies = {tuple(c[-2:]) for c in calls if c[0] == "rsync"}
    assert copies == {(f"{shared}/kinetics/", f"{root}/"), (f"{shared}/store/", f"{store}/")}
    staged = [s for s in steps(calls) if "torchrun" not in s]
    assert staged and all(option(s, "ntasks-per-node") == "1" for s in staged)
    assert root.is_dir() and store.is_dir()  # made by the staging step, so that rsync has somewhere to go
    assert [c[0] for c in calls].index("torchrun") > max(i for i, c in enumerate(calls) if c[0] == "rsync")
