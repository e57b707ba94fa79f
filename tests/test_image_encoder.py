"""ImageEncoder: unit vectors from any image source, clear errors, ids that follow the weights, zero-shot."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from fixtures_clip import COLOURS, TinyRun
from PIL import Image

from shoptag.core.errors import BadInput, NotFound
from shoptag.tagger.clip_config import register_shoptag_configs
from shoptag.tagger.image_encoder import ImageDecodeError, ImageEncoder


@pytest.fixture(scope="module")
def encoder(tiny_run: TinyRun) -> ImageEncoder:
    return ImageEncoder("shoptag-tiny", checkpoint=str(tiny_run.report.model_path), device="cpu", batch_size=3)


def test_encode_takes_paths_bytes_and_images_and_gives_unit_vectors(encoder: ImageEncoder, tmp_path: Path) -> None:
    photo = Image.new("RGB", (60, 80), (200, 30, 30))
    photo.save(tmp_path / "a.jpg")
    (tmp_path / "b.png").write_bytes(Path(tmp_path / "a.jpg").read_bytes())
    vectors = encoder.encode([tmp_path / "a.jpg", str(tmp_path / "b.png"), (tmp_path / "a.jpg").read_bytes(), photo])
    assert vectors.shape == (4, encoder.dim) == (4, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[2], rtol=1e-5)  # path and bytes of one file
    assert encoder.encode([]).shape == (0, 32)


def test_an_unreadable_image_raises_an_error_naming_it(encoder: ImageEncoder, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    good = Image.new("RGB", (8, 8))
    with pytest.raises(ImageDecodeError, match="item 1 .*broken.jpg"):
        encoder.encode([good, broken])
    with pytest.raises(ImageDecodeError, match=r"item 4 <3 bytes>"):
        encoder.encode([good] * 4 + [b"bad"])
    with pytest.raises(ImageDecodeError, match="missing.jpg"):
        encoder.encode([tmp_path / "missing.jpg"])


def test_model_id_follows_the_checkpoint_bytes(tiny_run: TinyRun, encoder: ImageEncoder, tmp_path: Path) -> None:
    copy = tmp_path / "copy.pt"
    shutil.copy(tiny_run.report.model_path, copy)
    assert ImageEncoder("shoptag-tiny", checkpoint=str(copy), device="cpu").model_id == encoder.model_id
    payload = torch.load(copy, weights_only=True)
    payload["state_dict"]["visual.proj"] += 0.1
    torch.save(payload, copy)
    changed = ImageEncoder("shoptag-tiny", checkpoint=str(copy), device="cpu")
    assert changed.model_id != encoder.model_id and changed.model_id.startswith("shoptag-tiny@")
    image = [tiny_run.val[0][0]]
    assert not np.allclose(changed.encode(image), encoder.encode(image))


def test_a_plain_open_clip_state_dict_loads_into_the_named_architecture(
    tiny_run: TinyRun, encoder: ImageEncoder, tmp_path: Path
) -> None:
    plain = tmp_path / "plain.pt"
    torch.save(torch.load(tiny_run.report.model_path, weights_only=True)["state_dict"], plain)
    loaded = ImageEncoder("shoptag-tiny", checkpoint=str(plain), device="cpu")
    images = [image for image, _ in tiny_run.val[:4]]
    np.testing.assert_allclose(loaded.encode(images), encoder.encode(images), rtol=1e-5, atol=1e-6)


def test_wrong_names_and_tags_are_refused_clearly(tiny_run: TinyRun) -> None:
    with pytest.raises(BadInput, match="holds a 'shoptag-tiny' model"):
        ImageEncoder("shoptag-small", checkpoint=str(tiny_run.report.model_path), device="cpu")
    with pytest.raises(NotFound, match="neither a file nor a pretrained tag"):
        ImageEncoder("ViT-B-32", checkpoint="no-such-tag", device="cpu")
    assert ImageEncoder("shoptag-tiny", device="cpu").model_id == "shoptag-tiny:init-0"


def test_zero_shot_scores_are_class_probabilities_and_the_trained_model_knows_colours(
    encoder: ImageEncoder, tiny_run: TinyRun
) -> None:
    images = [image for image, _ in tiny_run.val]
    scores = encoder.zero_shot_scores(encoder.encode(images), list(COLOURS), template="{} square")
    assert scores.shape == (len(images), len(COLOURS))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    truth = np.array([list(COLOURS).index(title.split()[0]) for _, title in tiny_run.val])
    assert (scores.argmax(axis=1) == truth).mean() > 0.5  # chance is 0.25


def test_the_text_tower_tokenizes_chinese_and_english_without_unknown_tokens(encoder: ImageEncoder) -> None:
    register_shoptag_configs()
    tokenizer = open_clip.get_tokenizer("shoptag-small")
    for title in ("韩版宽松牛仔裤女", "Turtle Check Men Navy Blue Shirt", "2024夏季新款纯棉短袖T恤男士圆领"):
        ids = tokenizer([title])[0]
        used = ids[ids != 0][1:-1].tolist()  # drop start, end and padding
        # byte-level BPE loses nothing (but case; the decoder puts spaces between words and digits)
        assert "".join(tokenizer.decode(used).split()) == "".join(title.lower().split())
    vectors = encoder.encode_text(["红色 圆形", "red circle"])
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
