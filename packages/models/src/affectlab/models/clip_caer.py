"""CLIP-CAER: context-aware academic emotion recognition from face and context clips, built on DFER-CLIP.

Video side: one shared, fine-tuned CLIP image encoder embeds every frame of every stream; a temporal transformer per
stream turns a clip into one vector; the stream vectors are concatenated and linearly projected to the CLIP
embedding size. Text side: class descriptors with learnable class-specific context (CoOp) through the frozen CLIP
text encoder. Logits = logit_scale * cos(video, text) (CLIP / DFER-CLIP; 100 = 1 / temperature 0.01).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affectlab.models.errors import ModelError
from affectlab.models.prompts import PromptLearner, TextEncoder
from affectlab.models.temporal import TemporalTransformer

STREAMS = ("face", "context")


class ClipCaer(nn.Module):
    """Clips [B, T, 3, H, W] per stream (normalised with the CLIP's mean/std) -> logits [B, C] for cross-entropy.

    Submodules: image_encoder (the CLIP's visual tower), temporal[stream], projection, prompt_learner, text_encoder
    (the CLIP's text transformer, frozen). The CLIP's token embedding is used once, to embed the prompts.
    """

    def __init__(self, clip_model: nn.Module, tokenizer, class_texts: list[str], *, num_frames: int = 16,
                 streams: tuple[str, ...] = STREAMS, n_ctx: int = 8, learnable_ctx: bool = True,
                 temporal_depth: int = 1, temporal_heads: int = 8, logit_scale: float = 100.0,
                 freeze_image_encoder: bool = False, temporal_mlp_dim: int | None = None,
                 temporal_activation: str = "gelu"):
        super().__init__()
        streams = tuple(streams)
        unknown = [s for s in streams if s not in STREAMS]
        if not streams or unknown or len(set(streams)) != len(streams):
            raise ModelError(f"ClipCaer streams={streams}; expected distinct names from {STREAMS}")
        self.streams = streams
        self.logit_scale = logit_scale

        self.image_encoder = clip_model.visual
        self.image_encoder.requires_grad_(not freeze_image_encoder)
        self.prompt_learner = PromptLearner(clip_model, tokenizer, class_texts, n_ctx=n_ctx, learnable=learnable_ctx)
        self.text_encoder = TextEncoder(clip_model)
        self.text_encoder.requires_grad_(False)

        projection = clip_model.text_projection
        dim = projection.out_features if isinstance(projection, nn.Linear) else projection.shape[1]
        self.temporal = nn.ModuleDict({
            stream: TemporalTransformer(dim, num_frames, depth=temporal_depth, heads=temporal_heads,
                                        mlp_dim=temporal_mlp_dim, activation=temporal_activation)
            for stream in streams
        })
        self.projection = nn.Linear(len(streams) * dim, dim)
        self._text_positions = (None, 0)  # (key of the prompt token ids it was computed for, positions)
        self._text_features = (None, None)  # (key of the weights and autocast state, class features): encode_text

    def encode_video(self, face: Tensor | None = None, context: Tensor | None = None) -> Tensor:
        """L2-normalised video features [B, D]; clips of streams this model does not use are ignored.

        A stream is given either as frames [B, T, 3, H, W] or as the image encoder's per-frame embeddings [B, T, D]
        (the frozen-encoder feature cache, affectlab.lab.features), which skip the encoder; all streams alike.
        """
        given = {"face": face, "context": context}
        clips = [given[stream] for stream in self.streams]
        for stream, clip in zip(self.streams, clips):
            if clip is None:
                raise ModelError(f"ClipCaer with streams={self.streams} needs the {stream!r} clip; it was not given")
        dim = self.projection.out_features
        if all(clip.ndim == 3 for clip in clips):
            for stream, clip in zip(self.streams, clips):
                if clip.shape[2] != dim or clip.shape[0] != clips[0].shape[0]:
                    raise ModelError(f"{stream!r} frame embeddings have shape {tuple(clip.shape)}; expected [B, T, "
                                     f"{dim}] with the same B as {self.streams[0]!r} {tuple(clips[0].shape)}")
            features = clips
        else:
            for stream, clip in zip(self.streams, clips):
                if clip.ndim != 5 or clip.shape[2] != 3 or clip.shape[:1] != clips[0].shape[:1] \
                        or clip.shape[3:] != clips[0].shape[3:]:
                    raise ModelError(f"{stream!r} clip has shape {tuple(clip.shape)}; expected [B, T, 3, H, W] with "
                                     f"the same B, H, W as {self.streams[0]!r} {tuple(clips[0].shape)} (or frame "
                                     f"embeddings [B, T, {dim}] for every stream)")
            # One pass of the shared encoder over every frame of every stream: one big batch beats one per stream.
            frames = torch.cat([clip.flatten(0, 1) for clip in clips])
            features = self.image_encoder(frames).split([clip.shape[0] * clip.shape[1] for clip in clips])
            features = [feature.unflatten(0, clip.shape[:2]) for clip, feature in zip(clips, features)]
        summaries = [self.temporal[stream](feature) for stream, feature in zip(self.streams, features)]
        return F.normalize(self.projection(torch.cat(summaries, dim=-1)), dim=-1)

    def encode_text(self) -> Tensor:
        """L2-normalised class features [C, D] from the (learned) prompts, cut after the longest prompt's EOS.

        When no gradient can reach the prompts (evaluation, or learnable_ctx=False with the text encoder frozen) the
        features only change with the weights, so they are computed once and kept until a prompt or text-encoder
        tensor is replaced or updated in place (an optimiser step, load_state_dict, .to())."""
        text_parts = (self.prompt_learner, self.text_encoder)
        if torch.is_grad_enabled() and any(p.requires_grad for part in text_parts for p in part.parameters()):
            return self._encode_text()
        device = self.prompt_learner.tokens.device.type
        key = (torch.is_inference_mode_enabled(), torch.is_autocast_enabled(device),
               torch.get_autocast_dtype(device),
               *((t.data_ptr(), t._version) for part in text_parts for t in (*part.parameters(), *part.buffers())))
        if self._text_features[0] != key:
            self._text_features = (key, self._encode_text())
        return self._text_features[1]

    def _encode_text(self) -> Tensor:
        length = self.text_positions()
        prompts, tokens = self.prompt_learner()[:, :length], self.prompt_learner.tokens[:, :length]
        return F.normalize(self.text_encoder(prompts, tokens), dim=-1)

    def text_positions(self) -> int:
        """TextEncoder.positions_read of the prompts' token ids, recomputed only when they change (loading a
        checkpoint replaces them): reading it every step would wait for the GPU each time."""
        tokens = self.prompt_learner.tokens
        key = (tokens.data_ptr(), tokens._version, tokens.shape)
        if self._text_positions[0] != key:
            self._text_positions = (key, self.text_encoder.positions_read(tokens))
        return self._text_positions[1]

    def forward(self, face: Tensor | None = None, context: Tensor | None = None) -> Tensor:
        return self.logit_scale * self.encode_video(face, context) @ self.encode_text().t()

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimiser group; CLIP-CAER trains them with different learning rates
        (temporal 1e-2, image encoder 1e-5, prompt 1e-3). A group is an empty list when all of it is frozen."""
        modules = {"temporal": self.temporal, "image_encoder": self.image_encoder,
                   "prompt": self.prompt_learner, "projection": self.projection}
        return {group: [p for p in module.parameters() if p.requires_grad] for group, module in modules.items()}
