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
