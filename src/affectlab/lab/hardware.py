"""What this machine can run, checked before any work: the devices, precision and strategy of a run.

A GPU that is not there, a precision or strategy the hardware cannot run or a node rank outside the node count is an
error naming the flag (or trainer.* key), the value and what is valid, never a silent substitute: `trainer_arguments`
is how every Trainer of the project gets its keyword arguments (affectlab.lab.run).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from importlib.util import find_spec

from affectlab.lab.config import ConfigError

CPU_PRECISIONS = ("32-true", "32", "64-true", "64", "bf16-mixed", "bf16", "16-mixed", "16", "bf16-true", "16-true")
# lightning.pytorch's Trainer has no "dp" (Lightning 2 removed DataParallel) though the fabric launcher lists it
TRAINER_STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false",
                      "fsdp", "deepspeed", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3")


class LaunchError(ConfigError):
    """Launch flags (or trainer.* keys) that this machine cannot run."""


@dataclass(frozen=True)
class Hardware:
    """What this machine can run: CUDA devices, bfloat16 on them, Apple's MPS, fp16 autocast on the CPU."""

    cuda_devices: int
    cuda_bf16: bool
    mps: bool
    cpu_fp16_autocast: bool
    deepspeed: bool
    transformer_engine: bool

    @classmethod
    def detect(cls) -> Hardware:
        import torch

        cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        with warnings.catch_warnings(record=True) as caught:  # older torch warns and disables fp16 autocast on CPU
            warnings.simplefilter("always")
            with torch.autocast("cpu", dtype=torch.float16):
                fp16 = torch.is_autocast_enabled("cpu")
        return cls(
            cuda_devices=cuda,
            cuda_bf16=bool(cuda) and torch.cuda.is_bf16_supported(),
            mps=torch.backends.mps.is_available(),
            cpu_fp16_autocast=fp16 and not caught,
            deepspeed=find_spec("deepspeed") is not None,
            transformer_engine=find_spec("transformer_engine") is not None,
        )

    def accelerator(self, name: str | None) -> str:
        """``auto`` (or none) resolved as Lightning does; ``gpu`` is CUDA unless only MPS is there."""
        name = (name or "auto").lower()
        if name == "auto":
            return "cuda" if self.cuda_devices else "mps" if self.mps else "cpu"
        if name == "gpu":
            return "mps" if self.mps and not self.cuda_devices else "cuda"
        return name


def _device_count(devices: str, accelerator: str, given: str | None, hw: Hardware) -> int:
    """How many processes ``--devices`` starts on this node; an error if the devices are not there."""
    flag = "--devices"
    text = str(devices).strip().strip("[]").replace(" ", "")
    if accelerator == "cpu":
        if text == "auto":
            return 1
        if not text.isdigit() or int(text) < 1:
            raise LaunchError(f"{flag} {devices!r} with accelerator cpu: expected a number of processes >= 1 "
                              "(CPU devices are processes, not core indices)")
        return int(text)
    if accelerator == "mps":
        if text not in ("1", "auto", "-1"):
            raise LaunchError(f"{flag} {devices!r} with accelerator mps: an Apple GPU is one device; use 1")
        return 1
    if accelerator == "tpu":
        raise LaunchError("--accelerator tpu: `lightning run` does not launch TPU processes; start the script with "
                          "python on the TPU VM")
    # cuda: a count N (GPUs 0..N-1), -1 or auto (all), or a comma-separated list of indices
    count = hw.cuda_devices
    if count == 0:
        raise LaunchError(f"--accelerator {given or 'auto'}: no CUDA GPU is visible on this machine "
                          "(torch.cuda.device_count() == 0); use --accelerator cpu")
    if text in ("-1", "auto"):
        return count
    if "," in text:
        parts = [p for p in text.split(",") if p]
        if not all(p.isdigit() for p in parts):
            raise LaunchError(f"{flag} {devices!r}: expected GPU indices like 0,1 (valid here: 0..{count - 1})")
        indices = [int(p) for p in parts]
        beyond = [i for i in indices if i >= count]
        if beyond or len(set(indices)) != len(indices):
            problem = f"GPU {beyond[0]} does not exist" if beyond else "an index is repeated"
            raise LaunchError(f"{flag} {devices!r}: {problem}; this machine has {count} GPU(s): "
                              f"indices 0..{count - 1}")
        return len(indices)
    if not text.isdigit() or int(text) < 1:
        raise LaunchError(f"{flag} {devices!r}: expected a number of GPUs 1..{count}, -1 (all) or indices like 0,1")
    if int(text) > count:
        raise LaunchError(f"{flag} {devices}: this machine has {count} GPU(s); expected 1..{count} "
                          "(or -1 for all of them)")
    return int(text)


def _check_precision(precision: str | None, accelerator: str, hw: Hardware) -> None:
    if precision is None:
        return
    precision = str(precision)
    if accelerator == "cpu":
        if precision not in CPU_PRECISIONS:
            raise LaunchError(f"--precision {precision} needs a CUDA GPU; on the CPU use one of "
                              f"{', '.join(CPU_PRECISIONS)}")
        if precision in ("16-mixed", "16") and not hw.cpu_fp16_autocast:
            raise LaunchError(f"--precision {precision}: this torch has no float16 autocast on the CPU; "
                              "use bf16-mixed or 32-true")
        return
    if accelerator == "cuda":
        if precision.startswith("bf16") and not hw.cuda_bf16:
            raise LaunchError(f"--precision {precision}: this GPU has no bfloat16 support "
                              "(torch.cuda.is_bf16_supported() is False); use 16-mixed or 32-true")
        if precision.startswith("transformer-engine") and not hw.transformer_engine:
            raise LaunchError(f"--precision {precision} needs NVIDIA's transformer_engine package, which is not "
                              "installed; use bf16-mixed, 16-mixed or 32-true")
        return
    if accelerator == "mps" and precision not in ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16"):
        raise LaunchError(f"--precision {precision} does not run on MPS; use 32-true, 16-mixed or bf16-mixed")


def _check_strategy(strategy: str | None, accelerator: str, hw: Hardware) -> None:
    if strategy is None or strategy == "auto":
        return
    if strategy not in TRAINER_STRATEGIES:
        raise LaunchError(f"--strategy {strategy}: not a strategy of lightning.pytorch.Trainer here; expected one of "
                          f"{', '.join(TRAINER_STRATEGIES)}")
    if strategy.startswith(("fsdp", "deepspeed")) and accelerator != "cuda":
        raise LaunchError(f"--strategy {strategy} needs CUDA GPUs (accelerator is {accelerator}); "
                          "use --strategy ddp")
    if strategy.startswith("deepspeed") and not hw.deepspeed:
        raise LaunchError(f"--strategy {strategy} needs the deepspeed package, which is not installed; "
                          "use --strategy ddp or fsdp")


def check_launch(*, accelerator: str | None = None, devices: str | int = "1", strategy: str | None = None,
                 precision: str | None = None, num_nodes: int = 1, node_rank: int = 0, main_port: int = 29400,
                 hardware: Hardware | None = None, count_devices: bool = True) -> int | None:
    """Check launch flags against the hardware; returns the processes to start on this node, or raises LaunchError.

    CPU "devices" are processes: more of them than cores is allowed (slow, not wrong), as Lightning allows it.
    count_devices=False leaves the device count to Lightning (inside torchrun or srun a process may see one GPU).
    """
    hw = hardware or Hardware.detect()
    if num_nodes < 1:
        raise LaunchError(f"--num-nodes {num_nodes}: expected a number of machines >= 1")
    if not 0 <= node_rank < num_nodes:
        raise LaunchError(f"--node-rank {node_rank}: outside the {num_nodes} node(s) of --num-nodes {num_nodes}; "
                          f"expected 0..{num_nodes - 1}")
    if not 1 <= main_port <= 65535:
        raise LaunchError(f"--main-port {main_port}: expected a TCP port 1..65535")
    resolved = hw.accelerator(accelerator)
    if resolved not in ("cpu", "cuda", "mps", "tpu"):
        raise LaunchError(f"--accelerator {accelerator}: expected cpu, gpu, cuda, mps or auto")
    processes = _device_count(devices, resolved, accelerator, hw) if count_devices else None
    _check_strategy(strategy, resolved, hw)
    _check_precision(precision, resolved, hw)
    return processes


def trainer_arguments(trainer: dict) -> dict:
    """The Trainer's keyword arguments from ``trainer.*``, checked against the hardware (LaunchError), with
    ``16-mixed`` on the CPU made real: Lightning would silently run bf16-mixed there instead, while torch has had
    float16 autocast and a GradScaler on the CPU since 2.3, so the plugin is built here."""
    kwargs = dict(trainer)
    hw = Hardware.detect()
    check_launch(accelerator=kwargs.get("accelerator"), devices=str(kwargs.get("devices", "auto")),
                 strategy=kwargs.get("strategy"), precision=kwargs.get("precision"),
                 num_nodes=int(kwargs.get("num_nodes", 1)), hardware=hw,
                 count_devices=not ({"LOCAL_RANK", "SLURM_PROCID"} & set(os.environ)))
    precision = str(kwargs.get("precision"))
    if precision in ("16-mixed", "16") and hw.accelerator(kwargs.get("accelerator")) == "cpu":
        from lightning.pytorch.plugins.precision import MixedPrecision

        kwargs.pop("precision")
        kwargs["plugins"] = [*(kwargs.get("plugins") or []), MixedPrecision("16-mixed", "cpu")]
    return kwargs


