import pytest
import torch

from vdi.encoders import FrozenVisualEncoder, ModelMissing, TextEncoder, Tokenizer, create_clip

TEXTS = [
    "a person opens the door of the refrigerator and takes out food.",
    "walks",
    "",
    "the small red circle moves to the left of the big blue square while a green star spins",
]


@pytest.fixture(scope="module", params=["vdi-test-tiny", "vdi-test-tiny-rn"])
def clip(request):
    torch.manual_seed(0)
    return request.param, create_clip(request.param, None)


def test_trimmed_text_forward_equals_padded(clip):
    name, model = clip
    tokens = Tokenizer(name)(TEXTS).tokens
    padded = model.encode_text(tokens)  # open_clip's own forward over all 77 positions
    encoder = TextEncoder(model)
    assert encoder.can_trim
    torch.testing.assert_close(encoder(tokens, trim=True), padded, atol=1e-5, rtol=0)
    torch.testing.assert_close(encoder(tokens, trim=False), padded, atol=1e-5, rtol=0)


def test_packed_blocks_equal_separate_forwards(clip):
    name, model = clip
    tokenizer = Tokenizer(name)
    encoder = TextEncoder(model)
    first = tokenizer(TEXTS).tokens
    second = tokenizer(list(reversed(TEXTS))).tokens
    third = tokenizer(["jumps", "a dog", "", "the cat sleeps"]).tokens
    packed = encoder.forward_blocks([first, second, third])
    for block, features in zip([first, second, third], packed):
        torch.testing.assert_close(features, model.encode_text(block), atol=1e-5, rtol=0)


def test_packed_backward_is_bitwise_reproducible_with_threads():
    """Packed positions repeat within a row; their gradient must not depend on thread scheduling
    (advanced indexing's backward did, and seeded runs drifted apart)."""
    torch.manual_seed(0)
    model = create_clip("vdi-test-tiny", None)
    encoder = TextEncoder(model)
    tokenizer = Tokenizer("vdi-test-tiny")
    blocks = [tokenizer(TEXTS * 8).tokens, tokenizer(list(reversed(TEXTS)) * 8).tokens]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gradients = []
        for _ in range(4):
            encoder.zero_grad()
            torch.stack(encoder.forward_blocks(blocks)).pow(2).sum().backward()
            gradients.append(encoder.positional_embedding.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(gradients[0], other) for other in gradients[1:])


def test_truncation_is_counted():
    tokenizer = Tokenizer("vdi-test-tiny")
    batch = tokenizer(["word " * 200, "a short one", "x " * 75])
    assert batch.truncated == 1  # 75 BPE tokens + start + end fit exactly
    assert batch.tokens.shape == (3, 77)
    assert int(batch.lengths[0]) == 77


def test_visual_tower_is_frozen_and_projects_patches(clip):
    _, model = clip
    encoder = FrozenVisualEncoder(model)
    frames = torch.randint(0, 255, (3, 40, 52, 3), dtype=torch.uint8)
    images = encoder.preprocess(frames)
    assert images.shape == (3, 3, encoder.image_size, encoder.image_size)
    pooled, patches = encoder(images)
    torch.testing.assert_close(pooled, model.encode_image(images))
    assert patches.shape[0] == 3 and patches.shape[2] == pooled.shape[1]
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.visual.training  # stays in eval mode (frozen BatchNorm statistics)


def test_local_checkpoint_roundtrip_and_errors(tmp_path):
    model = create_clip("vdi-test-tiny", None)
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    loaded = create_clip("vdi-test-tiny", str(path))
    torch.testing.assert_close(loaded.text_projection, model.text_projection)
    with pytest.raises(ModelMissing, match="not found"):
        create_clip("vdi-test-tiny", str(tmp_path / "missing.pt"))
    with pytest.raises(ModelMissing, match="does not fit"):
        create_clip("vdi-test-tiny-rn", str(path))
    with pytest.raises(ModelMissing, match="unknown CLIP model"):
        create_clip("ViT-Nope-1", None)
    with pytest.raises(ModelMissing, match="no pretrained tag 'banana'"):
        create_clip("ViT-B-32", "banana")


def test_offline_tag_names_the_local_checkpoint_option(monkeypatch):
    import open_clip

    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'openai'")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(ModelMissing, match=r"model.clip.pretrained=/abs/path"):
        create_clip("ViT-B-32", "openai")
