"""The video classifiers of the RAER experiment by the name a config gives (`model.name`): each builder takes the
config and the label set and returns the network, which maps ``{stream: [B, T, 3, H, W]}`` to class logits, and the
input it expects (square size, normalisation)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from affectlab.lab.config import ConfigError

STREAMS = ("face", "context")


@dataclass
class InputSpec:
    """What a network expects of its frames: the square size and the normalisation."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def build_clip_caer(cfg: DictConfig, label_set):
    """CLIP-CAER: an open_clip CLIP's image encoder shared by the streams, a temporal transformer per stream, learnable
    class prompts through the frozen text encoder (affectlab.models.ClipCaer); with ``model.checkpoint`` the authors'
    released weights over everything built."""
    from affectlab.models import ClipCaer, create_clip, load_clip_caer_checkpoint

    if cfg.model.text == "descriptors" and not label_set.descriptors:
        raise ConfigError(f"model.text=descriptors: label set {label_set.name!r} has no descriptors; give them in its "
                          "YAML or set model.text=class_names")
    texts = label_set.descriptors if cfg.model.text == "descriptors" else label_set.classes
    clip = create_clip(cfg.model.backbone, cfg.model.pretrained, quick_gelu=cfg.model.quick_gelu)
    net = ClipCaer(
        clip.model,
        clip.tokenizer,
        list(texts),
        num_frames=cfg.data.num_segments,
        streams=tuple(cfg.model.streams),
        n_ctx=cfg.model.n_ctx,
        learnable_ctx=cfg.model.learnable_ctx,
        temporal_depth=cfg.model.temporal_depth,
        temporal_heads=cfg.model.temporal_heads,
        logit_scale=cfg.model.logit_scale,
        freeze_image_encoder=cfg.model.freeze_image_encoder,
        temporal_mlp_dim=cfg.model.temporal_mlp_dim,
        temporal_activation=cfg.model.temporal_activation,
    )
    if cfg.model.checkpoint:
        load_clip_caer_checkpoint(net, cfg.model.checkpoint)
    return net, InputSpec(clip.image_size, clip.mean, clip.std)


def build_former_dfer(cfg: DictConfig, label_set):
    """The facial-dynamics baseline: a timm backbone per frame and a temporal transformer (faces only)."""
    from affectlab.models import FormerDfer

    if tuple(cfg.model.streams) != ("face",):
        raise ConfigError(f"model.name=former_dfer reads faces only; set model.streams=[face], not "
                          f"{list(cfg.model.streams)}")
    spec = cfg.model.former_dfer
    net = FormerDfer(spec.backbone, len(label_set.classes), num_frames=cfg.data.num_segments,
                     pretrained=spec.pretrained, temporal_depth=cfg.model.temporal_depth,
                     temporal_heads=cfg.model.temporal_heads)
    data = net.data_config
    return net, InputSpec(int(spec.image_size), tuple(data["mean"]), tuple(data["std"]))


NETS = {"clip_caer": build_clip_caer, "former_dfer": build_former_dfer}


def build_net(cfg: DictConfig):
    """The network `model.name` names, its class names and the input it expects (size, mean, std)."""
    from affectlab.datasets import load_label_set

    streams = tuple(cfg.model.streams)
    if not streams or len(set(streams)) != len(streams):
        raise ConfigError(f"model.streams={list(streams)}: expected a non-empty subset of {list(STREAMS)}")
    if cfg.model.name not in NETS:
        raise ConfigError(f"model.name={cfg.model.name!r}: expected one of {', '.join(NETS)}")
    label_set = load_label_set(cfg.data.label_set)
    net, inputs = NETS[cfg.model.name](cfg, label_set)
    return net, list(label_set.classes), inputs
