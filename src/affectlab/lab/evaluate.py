"""`python experiments/raer.py evaluate resume=PATH|auto`: the validation and test metrics of a trained checkpoint,
without training, in one new MLflow run, on any number of processes
(`lightning run experiments/raer.py --devices N evaluate resume=PATH`): the same weights give the same metrics.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from affectlab.lab.config import ConfigError, flatten
from affectlab.lab.launcher import trainer_arguments
from affectlab.lab.report import print_summary
from affectlab.lab.threads import set_torch_threads
from affectlab.lab.tracking import make_logger


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Validate and test the checkpoint ``resume`` names (a Lightning .ckpt of this experiment, or ``auto`` for the
    newest last.ckpt under ``checkpoint_dir``); returns the val/ and test/ metrics."""
    from affectlab.lab.checkpoints import resolve_resume
    from affectlab.lab.raer import ClipCaerModule, RaerDataModule, build_net

    checkpoint = resolve_resume(cfg.resume, Path(cfg.checkpoint_dir))
    if checkpoint is None:
        raise ConfigError(f"evaluate needs resume=<checkpoint .ckpt> (or resume=auto with a last.ckpt under "
                          f"checkpoint_dir={cfg.checkpoint_dir}); got resume={cfg.resume!r}")
    L.seed_everything(cfg.seed, workers=True)
    set_torch_threads(cfg.num_threads, cfg.data.num_workers)
    net, class_names, clip = build_net(cfg)
    frozen = net.image_encoder if cfg.model.name == "clip_caer" and cfg.model.freeze_image_encoder else None
    datamodule = RaerDataModule(cfg.data, image_size=clip.image_size, mean=clip.mean, std=clip.std, seed=cfg.seed,
                                frozen_encoder=frozen, streams=cfg.model.streams)  # as run() builds it
    module = ClipCaerModule(net, class_names, cfg.optim, cfg.model.streams, loss=cfg.model.loss,
                            label_smoothing=cfg.model.label_smoothing, cb_beta=cfg.model.cb_beta,
                            contexts=cfg.data.contexts)
    logger = make_logger(cfg)
    trainer = L.Trainer(
        **trainer_arguments(OmegaConf.to_container(cfg.trainer, resolve=True)),
        logger=logger if logger is not None else False,
        use_distributed_sampler=False,  # the datamodule shards itself, without counting padding twice
    )
    if trainer.is_global_zero:
        logger.log_hyperparams({**flatten(cfg), "evaluated_checkpoint": checkpoint})
    metrics: dict[str, float] = {}
    for results in (trainer.validate(module, datamodule=datamodule, ckpt_path=checkpoint, verbose=False),
                    trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint, verbose=False)):
        metrics.update({k: float(v) for k, v in results[0].items()})
    if trainer.is_global_zero:
        if getattr(module, "confusion_png", None):
            logger.experiment.log_artifact(logger.run_id, str(module.confusion_png))
        print_summary(metrics, title=f"RAER evaluation of {checkpoint} (MLflow run {logger.run_id})")
    return metrics
