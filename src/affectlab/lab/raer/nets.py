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
        # their GenerateModel always has tanh-GELU temporal transformers and OpenAI's QuickGELU CLIP: with another
        # activation their weights load without a complaint and give logits off by ~1e-3
        built = architecture(cfg, net, None)
        wrong = [f"{key}={built[key]!r}" for key, needed in (("temporal_activation", "gelu_tanh"), ("quick_gelu", True))
                 if built[key] != needed]
        if wrong:
            raise ConfigError(f"model.checkpoint={cfg.model.checkpoint}: the authors' weights need "
                              f"temporal_activation=gelu_tanh and quick_gelu=true, this config builds "
                              f"{', '.join(wrong)}; use config=raer_authors")
        load_clip_caer_checkpoint(net, cfg.model.checkpoint)
    return net, pixels(cfg, clip.image_size, clip.mean, clip.std)


def pixels(cfg: DictConfig, image_size: int, mean, std) -> InputSpec:
    """What the network's frames are: its size, and CLIP's normalisation or none (``data.pixel_norm=unit``: pixel /
    255, the authors' pipeline)."""
    if cfg.data.get("pixel_norm", "clip") == "unit":
        return InputSpec(int(image_size), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return InputSpec(int(image_size), tuple(mean), tuple(std))


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
    return net, pixels(cfg, spec.image_size, data["mean"], data["std"])


NETS = {"clip_caer": build_clip_caer, "former_dfer": build_former_dfer}


def architecture(cfg: DictConfig, net, inputs: InputSpec | None) -> dict:
    """What a checkpoint's weights need to be loaded into and fed: the network, its parts' shapes and activations (read
    off the built network where the config may leave them to the weights: QuickGELU, the temporal activation), the
    frame count, the classes, and the pixels (size and normalisation)."""
    from affectlab.models.temporal import TanhGelu

    model = cfg.model
    record = {"net": model.name, "streams": list(model.streams), "num_frames": int(cfg.data.num_segments),
              "label_set": str(cfg.data.label_set), "temporal_depth": int(model.temporal_depth),
              "temporal_heads": int(model.temporal_heads)}
    modules = list(net.modules())
    record["temporal_activation"] = "gelu_tanh" if any(isinstance(m, TanhGelu) for m in modules) else "gelu"
    if model.name == "clip_caer":
        record.update(backbone=model.backbone, n_ctx=int(model.n_ctx), learnable_ctx=bool(model.learnable_ctx),
                      temporal_mlp_dim=int(net.temporal[net.streams[0]].encoder.layers[0].linear1.out_features),
                      logit_scale=float(model.logit_scale), text=model.text,
                      quick_gelu=any(type(m).__name__ == "QuickGELU" for m in modules))
    else:
        record.update(backbone=model.former_dfer.backbone)
    if inputs is not None:
        record.update(image_size=int(inputs.image_size), mean=[float(v) for v in inputs.mean],
                      std=[float(v) for v in inputs.std])
    return record


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
