"""Runs an experiment script that dies (``os._exit(9)``, as a SIGKILL would leave it) at a chosen moment of the end
of training epoch CRASH_EPOCH:

- ``CRASH_AT=after_validation``: the epoch's validation is over (its best checkpoint, if any, is written), its
  ``last.ckpt`` is not;
- ``CRASH_AT=after_last``: its ``last.ckpt`` is written, its training metrics are not logged yet.

Usage: python tests/crash_at_epoch_end.py experiments/raer.py key=value ...  (a helper of tests/test_resume.py: the
two moments are too short for a kill from outside to hit them on purpose)."""

import os
import runpy
import sys

from affectlab.lab import checkpoints

EPOCH, MOMENT = int(os.environ["CRASH_EPOCH"]), os.environ["CRASH_AT"]
assert MOMENT in ("after_validation", "after_last"), MOMENT
save_last = checkpoints.EpochEnd.on_train_epoch_end


def on_train_epoch_end(self, trainer, pl_module):
    if trainer.current_epoch == EPOCH and MOMENT == "after_validation":
        os._exit(9)
    save_last(self, trainer, pl_module)
    if trainer.current_epoch == EPOCH and MOMENT == "after_last":
        os._exit(9)


checkpoints.EpochEnd.on_train_epoch_end = on_train_epoch_end
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
