from affectlab.lab.launcher import with_free_port


def test_single_node_run_gets_a_free_port():
    argv = with_free_port(["run", "experiments/raer.py", "--devices", "2", "trainer.max_epochs=1"])
    assert argv[:2] == ["run", "--main-port"]
    assert int(argv[2]) > 0
    assert argv[3:] == ["experiments/raer.py", "--devices", "2", "trainer.max_epochs=1"]


def test_explicit_port_and_multi_node_runs_are_left_alone():
    explicit = ["run", "--main-port", "1234", "experiments/raer.py"]
    assert with_free_port(explicit) == explicit
    nodes = ["run", "--num-nodes", "2", "--node-rank", "1", "experiments/raer.py"]
    assert with_free_port(nodes) == nodes
    assert with_free_port(["consolidate", "ckpt"]) == ["consolidate", "ckpt"]


# --- bad input: an error naming the flag, the value and what is valid, before any process starts (exit code 2) ---

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from affectlab.lab import hardware, launcher  # noqa: E402
from affectlab.lab.hardware import Hardware, LaunchError, check_launch, trainer_arguments  # noqa: E402

NO_GPU = Hardware(cuda_devices=0, cuda_bf16=False, mps=False, cpu_fp16_autocast=True, deepspeed=False,
                  transformer_engine=False)
TWO_OLD_GPUS = Hardware(cuda_devices=2, cuda_bf16=False, mps=False, cpu_fp16_autocast=True, deepspeed=False,
                        transformer_engine=False)

# `lightning run` flags on this machine (no GPU) -> what the message must say
BAD_FLAGS = [
    (["--accelerator", "gpu"], ["--accelerator gpu", "no CUDA GPU", "--accelerator cpu"]),
    (["--accelerator", "cuda", "--devices", "0,3"], ["--accelerator cuda", "no CUDA GPU"]),
    (["--accelerator", "tpu"], ["--accelerator tpu", "does not launch TPU"]),
    (["--accelerator", "cpu", "--devices", "0"], ["--devices '0'", "number of processes >= 1"]),
    (["--accelerator", "cpu", "--devices", "0,1"], ["--devices '0,1'", "not core indices"]),
    (["--num-nodes", "2", "--node-rank", "2", "--main-port", "29500"], ["--node-rank 2", "--num-nodes 2", "0..1"]),
    (["--num-nodes", "2", "--node-rank", "-1", "--main-port", "29500"], ["--node-rank -1", "0..1"]),
    (["--num-nodes", "0"], ["--num-nodes 0", ">= 1"]),
    (["--main-port", "abc"], ["'--main-port'", "'abc'", "not a valid integer"]),
    (["--main-port", "70000"], ["--main-port 70000", "1..65535"]),
    (["--accelerator", "cpu", "--strategy", "fsdp"], ["--strategy fsdp", "needs CUDA GPUs", "--strategy ddp"]),
    (["--accelerator", "cpu", "--strategy", "deepspeed"], ["--strategy deepspeed", "needs CUDA GPUs"]),
    (["--accelerator", "cpu", "--strategy", "dp"], ["--strategy dp", "lightning.pytorch.Trainer", "ddp"]),
    (["--accelerator", "cpu", "--precision", "transformer-engine"], ["--precision transformer-engine",
                                                                     "needs a CUDA GPU", "bf16-mixed"]),
    (["--precision", "fp8"], ["'--precision'", "'fp8'", "bf16-mixed"]),
]


@pytest.fixture
def marker_script(tmp_path: Path) -> tuple[Path, Path]:
    """A script that leaves a file behind if any process ever runs it."""
    marker = tmp_path / "started"
    script = tmp_path / "script.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    return script, marker


@pytest.mark.parametrize(("flags", "said"), BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flags_stop_before_any_process(flags, said, marker_script, monkeypatch, capsys):
    script, marker = marker_script
    monkeypatch.setattr(hardware.Hardware, "detect", classmethod(lambda cls: NO_GPU))  # the same on GPU machines
    monkeypatch.setattr(sys, "argv", ["lightning", "run", *flags, str(script), "trainer.max_epochs=1"])
    with pytest.raises(SystemExit) as stopped:
        launcher.main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    for words in said:
        assert words in err, (words, err)
    assert "Traceback" not in err
    assert not marker.exists()  # no process started work


# check_launch with the hardware given: the GPU cases, on a machine with two GPUs without bfloat16
BAD_HARDWARE = [
    (dict(accelerator="gpu", devices="0,2"), ["--devices '0,2'", "GPU 2 does not exist", "indices 0..1"]),
    (dict(accelerator="cuda", devices="0,0"), ["--devices '0,0'", "repeated"]),
    (dict(accelerator="gpu", devices="4"), ["--devices 4", "has 2 GPU(s)", "1..2"]),
    (dict(accelerator="gpu", precision="bf16-mixed"), ["--precision bf16-mixed", "no bfloat16", "16-mixed"]),
    (dict(accelerator="gpu", strategy="deepspeed"), ["--strategy deepspeed", "deepspeed package"]),
    (dict(accelerator="cpu", precision="16-mixed"), ["--precision 16-mixed", "no float16 autocast"]),
]


@pytest.mark.parametrize(("flags", "said"), BAD_HARDWARE, ids=[str(f) for f, _ in BAD_HARDWARE])
def test_flags_the_hardware_cannot_run(flags, said):
    hardware = TWO_OLD_GPUS if flags["accelerator"] != "cpu" else Hardware(0, False, False, False, False, False)
    with pytest.raises(LaunchError) as error:
        check_launch(**flags, hardware=hardware)
    for words in said:
        assert words in str(error.value), (words, str(error.value))


def test_valid_flags_give_the_processes_per_node():
    assert check_launch(accelerator="gpu", devices="0,1", precision="16-mixed", hardware=TWO_OLD_GPUS) == 2
    assert check_launch(accelerator="auto", devices="-1", strategy="ddp", hardware=TWO_OLD_GPUS) == 2
    assert check_launch(accelerator="auto", devices="1", hardware=NO_GPU) == 1  # auto is the CPU here
    # CPU devices are processes: more than the cores is slow, not wrong
    assert check_launch(accelerator="cpu", devices="4", precision="bf16-mixed", hardware=NO_GPU) == 4
    assert check_launch(num_nodes=2, node_rank=1, hardware=NO_GPU) == 1


def test_trainer_arguments_make_16_mixed_real_on_the_cpu():
    from lightning.pytorch.plugins.precision import MixedPrecision

    kwargs = trainer_arguments({"accelerator": "cpu", "devices": 1, "precision": "16-mixed", "max_epochs": 1})
    assert "precision" not in kwargs  # Lightning would otherwise swap in bf16-mixed with a warning
    (plugin,) = kwargs["plugins"]
    assert isinstance(plugin, MixedPrecision) and plugin.precision == "16-mixed" and plugin.device == "cpu"
    assert trainer_arguments({"accelerator": "cpu", "precision": "bf16-mixed"})["precision"] == "bf16-mixed"


@pytest.mark.timeout(600)
def test_console_script_exits_2_without_a_traceback(marker_script):
    script, marker = marker_script
    lightning = str(Path(sys.executable).parent / "lightning")
    done = subprocess.run([lightning, "run", "--num-nodes", "2", "--node-rank", "3", str(script)],
                          capture_output=True, text=True, timeout=540)
    assert done.returncode == 2
    assert "lightning run: error: --node-rank 3: outside the 2 node(s)" in done.stderr
    assert "Traceback" not in done.stderr and not marker.exists()



@pytest.mark.timeout(600)
def test_a_script_failing_with_its_own_error_line_exits_with_its_code_and_no_launcher_traceback(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("import sys\nprint('fails: error: input=x.mp4: no such file', file=sys.stderr)\nsys.exit(3)\n")
    lightning = str(Path(sys.executable).parent / "lightning")
    done = subprocess.run([lightning, "run", str(script)], capture_output=True, text=True, timeout=540)
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == ["fails: error: input=x.mp4: no such file"]

# --- mixed precision on the CPU, through the flag `lightning run --precision P` (its LT_PRECISION variable) ---


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("flag", "dtype"), [("bf16-mixed", "bfloat16"), ("16-mixed", "float16")])
def test_mixed_precision_trains_on_the_cpu(flag, dtype, workdir, monkeypatch):
    import torch

    from affectlab.lab.config import load_config
    from affectlab.lab.raer import train as raer_train
    from affectlab.lab.raer.train import train
    from builders import TINY_RUN

    seen: set[torch.dtype] = set()
    build_net = raer_train.build_net

    def observed(cfg):  # the real network, with a hook that records what its projection computes in
        net, classes, inputs = build_net(cfg)
        net.projection.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
        return net, classes, inputs

    monkeypatch.setattr(raer_train, "build_net", observed)
    cfg = load_config("raer", [*TINY_RUN, "data.synthetic.num_train=20", "data.synthetic.num_test=10",
                               f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}", f"checkpoint_dir={workdir}/ckpt"],
                      environ={"LT_PRECISION": flag, "LT_ACCELERATOR": "cpu"})
    assert cfg.trainer.precision == flag
    metrics = train(cfg)
    assert seen == {getattr(torch, dtype)}, seen  # autocast in that dtype, not a silent fall-back to another
    assert 0.0 <= metrics["test/uar"] <= 1.0


# --- help: the runner's own, once; a script's, without starting anything ---


def test_lightning_run_help_prints_once_and_describes_this_runner():
    lightning = str(Path(sys.executable).parent / "lightning")
    done = subprocess.run([lightning, "run", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert done.stdout.count("usage: lightning run") == 1
    assert "affectlab's runner" in done.stdout and "--devices" in done.stdout


def test_lightning_run_script_help_is_the_scripts_own(marker_script):
    lightning = str(Path(sys.executable).parent / "lightning")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([lightning, "run", "--devices", "2", str(root / "experiments" / "meld.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "commands:" in done.stdout and "data.meld.train_size" in done.stdout
    assert "Run a Lightning Fabric script" not in done.stdout
