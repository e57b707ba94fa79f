"""CLIP image vectors for products, from an open_clip model: pretrained (hub tag) or trained by shoptag.

A checkpoint is a local file or an open_clip pretrained tag. Files written by ``shoptag train-clip``
store their model config, so a custom architecture rebuilds without any registry; a plain open_clip
state dict loads into the named architecture. ``model_id`` names the weights (architecture + a hash of
the checkpoint file's bytes, or the tag), so vectors stored with another id are stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image, UnidentifiedImageError
from shoptag.core.errors import BadInput, NotFound
from shoptag.tagger.augment import eval_transform
from shoptag.tagger.clip_config import config_digest, register_config, register_shoptag_configs

from .text_encoder import resolve_device

ImageSource = Path | str | bytes | Image.Image


class ImageDecodeError(BadInput):
    """An image that cannot be read or decoded; the message names the item."""


def describe(item: ImageSource) -> str:
    """How an image source is named in error messages."""
    if isinstance(item, bytes):
        return f"<{len(item)} bytes>"
    if isinstance(item, Image.Image):
        return f"<PIL image {item.size}>"
    return str(item)


DRAFT_SIDE = 512  # above every tower's input side (224-336): the towers resize down anyway


def open_image(item: ImageSource, position: int | None = None) -> Image.Image:
    """Decode a path, encoded bytes or a PIL image to RGB; raise ImageDecodeError naming the item."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    try:
        with Image.open(io.BytesIO(item) if isinstance(item, bytes) else Path(item)) as image:
            image.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))  # a JPEG decodes at the smallest scale still this big
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as error:
        where = f"item {position} " if position is not None else ""
        # Pillow names an in-memory image by its buffer's repr (`<_io.BytesIO object at 0x…>`): say what it is
        why = "not an image in a format Pillow reads" if isinstance(error, UnidentifiedImageError) else str(error)
        raise ImageDecodeError(f"cannot read image {where}{describe(item)}: {why}") from error


def as_torch_device(device: str) -> torch.device:
    """The torch device for a settings value (`auto`: the first CUDA GPU when there is one, else the CPU)."""
    return torch.device(resolve_device(device))


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on CUDA with `dtype`; a no-op on CPU or when `dtype` is None."""
    if device.type != "cuda" or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def file_digest(path: Path) -> str:
    """The first 12 hex digits of the sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def checkpoint_model_id(model_name: str, path: Path) -> str:
    """The id of vectors made with the weights in file `path`: changes whenever the file's bytes do."""
    return f"{model_name}@{file_digest(path)}"


@dataclass
class LoadedClip:
    """An open_clip model with what describes it: the config to rebuild it and the id of its weights."""

    model: open_clip.CLIP | open_clip.CustomTextCLIP
    tokenizer: Any
    model_name: str
    model_cfg: dict[str, Any]
    model_id: str
    device: torch.device


def load_clip(model_name: str, checkpoint: str | None, device: torch.device, seed: int = 0) -> LoadedClip:
    """Build `model_name` with the weights of `checkpoint` (file or pretrained tag) on `device`.

    Without a checkpoint the weights are a random init drawn from `seed` (training from scratch).
    """
    register_shoptag_configs()
    arch = model_name
    payload: dict[str, Any] = {}
    path = Path(checkpoint) if checkpoint and Path(checkpoint).is_file() else None
    tag = checkpoint if checkpoint and path is None else None
    if path is not None:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model_id = checkpoint_model_id(model_name, path)
        if isinstance(payload, dict) and "model_cfg" in payload:
            if payload["model_name"] != model_name:
                raise BadInput(f"checkpoint {path} holds a {payload['model_name']!r} model, not {model_name!r}")
            stored = payload["model_cfg"]
            same = open_clip.get_model_config(model_name) == stored
            arch = model_name if same else register_config(f"{model_name}-{config_digest(stored)}", stored)
    elif tag is not None:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if tag not in tags:
            raise NotFound(
                f"checkpoint {checkpoint!r} is neither a file nor a pretrained tag of {model_name} (tags: {tags})"
            )
        model_id = f"{model_name}:{tag}"
    else:
        model_id = f"{model_name}:init-{seed}"
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise BadInput(f"unknown open_clip model {model_name!r}; known: {open_clip.list_models()}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(arch, pretrained=tag, output_dict=True)
    if "state_dict" in payload and "model_cfg" in payload:
        model.load_state_dict(payload["state_dict"])
        open_clip.set_model_preprocess_cfg(model, payload["preprocess_cfg"])
    elif path is not None:
        open_clip.load_checkpoint(model, str(path))
    return LoadedClip(
        model=model.to(device),
        tokenizer=open_clip.get_tokenizer(arch),
        model_name=model_name,
        model_cfg=model_cfg,
        model_id=model_id,
        device=device,
    )


def batches(items: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    """(start, chunk) pairs covering `items` in chunks of `size`."""
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


class ImageEncoder:
    """L2-normalised CLIP vectors of product images and of texts, plus zero-shot class scores."""

    def __init__(self, model_name: str, checkpoint: str | None = None, device: str = "auto", batch_size: int = 128):
        self._setup(load_clip(model_name, checkpoint, as_torch_device(device)), batch_size)

    @classmethod
    def from_clip(cls, clip: LoadedClip, batch_size: int = 128) -> ImageEncoder:
        """Encode with an already built model (training evaluates the model it is training this way)."""
        encoder = cls.__new__(cls)
        encoder._setup(clip, batch_size)
        return encoder

    def _setup(self, clip: LoadedClip, batch_size: int) -> None:
        self.clip = clip
        self.batch_size = batch_size
        clip.model.eval()
        preprocess = open_clip.get_model_preprocess_cfg(clip.model)
        size = preprocess["size"]
        self._transform = eval_transform(size if isinstance(size, int) else size[0], preprocess["mean"], preprocess["std"])
        self._dtype = torch.float16 if clip.device.type == "cuda" else None

    @property
    def model_id(self) -> str:
        return self.clip.model_id

    @property
    def dim(self) -> int:
        return int(self.clip.model_cfg["embed_dim"])

    def _run(self, encode: Any, batch: torch.Tensor) -> np.ndarray:
        with torch.no_grad(), autocast(self.clip.device, self._dtype):
            vectors = encode(batch.to(self.clip.device), normalize=True)
        return vectors.float().cpu().numpy()

    def encode(self, images: Sequence[ImageSource]) -> np.ndarray:
        """float32 (n, dim) unit vectors; an unreadable image raises ImageDecodeError naming it."""
        chunks = [np.zeros((0, self.dim), np.float32)]
        for start, chunk in batches(images, self.batch_size):
            pixels = torch.stack([self._transform(open_image(item, start + i)) for i, item in enumerate(chunk)])
            chunks.append(self._run(self.clip.model.encode_image, pixels))
        return np.concatenate(chunks)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, dim) unit vectors of texts in the image space (prompts, titles)."""
        chunks = [np.zeros((0, self.dim), np.float32)]
        for _, chunk in batches(texts, self.batch_size):
            chunks.append(self._run(self.clip.model.encode_text, self.clip.tokenizer(list(chunk))))
        return np.concatenate(chunks)

    def zero_shot_scores(
        self, image_vectors: np.ndarray, class_names: Sequence[str], template: str = "a photo of {}"
    ) -> np.ndarray:
        """(n, classes) probabilities: softmax over the model's scaled cosine to each class prompt."""
        prompts = self.encode_text([template.format(name) for name in class_names])
        scale = self.clip.model.logit_scale.detach().exp().item()
        logits = scale * image_vectors @ prompts.T
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)
