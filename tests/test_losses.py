import pytest
import torch
from helpers import planted_samples

from vdi.batch import collate
from vdi.config import load_config
from vdi.encoders import FrozenVisualEncoder, Tokenizer, create_clip
from vdi.injection import build_vdi_model
from vdi.losses import contrastive_loss, iou_loss, spatial_dynamic_loss, visual_context_loss
from vdi.text import ParsedQuery


def _model_and_batch(overrides=(), num_videos=3):
    cfg = load_config("tiny", list(overrides))
    model = build_vdi_model(cfg)
    batch = collate(planted_samples(num_videos), Tokenizer(cfg.model.clip.name), cfg.model.num_pre_clips)
    return cfg, model, batch


def _text_grad(model, term):
    model.zero_grad()
    term.backward(retain_graph=True)
    grads = [p.grad for p in model.retriever.text_encoder.parameters() if p.grad is not None]
    return sum(float(g.abs().sum()) for g in grads)


@pytest.mark.parametrize("form", ["paper", "contrastive"])
def test_injection_losses_send_gradient_to_the_text_encoder(form):
    _, model, batch = _model_and_batch([f"injection.vc_form={form}", f"injection.sd_form={form}"])
    terms = model(batch)
    assert _text_grad(model, terms.terms["visual_context"]) > 0
    assert _text_grad(model, terms.terms["spatial_dynamic"]) > 0


def test_visual_tower_receives_no_gradient():
    cfg, model, _ = _model_and_batch()
    clip = create_clip(cfg.model.clip.name, None)
    visual = FrozenVisualEncoder(clip)
    frames = torch.randint(0, 255, (2 * cfg.model.num_pre_clips, 32, 32, 3), dtype=torch.uint8)
    pooled, patches = visual(visual.preprocess(frames))
    assert not pooled.requires_grad and not patches.requires_grad
    samples = planted_samples(2)
    for index, sample in enumerate(samples):
        rows = slice(index * cfg.model.num_pre_clips, (index + 1) * cfg.model.num_pre_clips)
        sample.features, sample.patches = pooled[rows], patches[rows]
    batch = collate(samples, Tokenizer(cfg.model.clip.name), cfg.model.num_pre_clips)
    model(batch).total.backward()
    assert all(p.grad is None for p in visual.parameters())


def test_switched_off_terms_contribute_exactly_zero():
    _, model, batch = _model_and_batch(["loss.lambda_vc=0", "injection.spatial_dynamic=off"])
    assert model.visual_context is None and model.spatial_dynamic is None
    terms = model(batch)
    assert set(terms.terms) == {"iou", "contrastive_video", "contrastive_sentence"}
    expected = terms.terms["iou"] + 0.05 * (terms.terms["contrastive_video"] + terms.terms["contrastive_sentence"])
    assert torch.equal(terms.total, expected)
    # the same batch under a model with injection on has the same retrieval terms
    torch.manual_seed(0)
    _, with_injection, _ = _model_and_batch()
    with_injection.retriever.load_state_dict(model.retriever.state_dict())
    with_injection.eval(), model.eval()
    on, off = with_injection(batch), model(batch)
    for name in ("iou", "contrastive_video", "contrastive_sentence"):
        torch.testing.assert_close(on.terms[name], off.terms[name])


def test_contrastive_weight_decays_after_mmn_epochs():
    _, model, batch = _model_and_batch()
    assert model(batch, epoch=7).weights["contrastive_video"] == pytest.approx(0.05)
    assert model(batch, epoch=8).weights["contrastive_video"] == pytest.approx(0.0005)


def test_empty_static_or_dynamic_queries_are_masked_not_nan():
    cfg = load_config("tiny")
    model = build_vdi_model(cfg)
    samples = planted_samples(2)
    samples[0].queries = [
        ParsedQuery("walks away", "", "walks away"),
        ParsedQuery("the red circle", "the red circle", ""),
    ]
    samples[1].queries = [ParsedQuery("jumps", "", "jumps"), ParsedQuery("sits", "", "sits")]
    batch = collate(samples, Tokenizer(cfg.model.clip.name), cfg.model.num_pre_clips)
    terms = model(batch)
    assert terms.terms["visual_context"].item() == 0.0  # no sample has both Q^s and Q^d
    assert torch.isfinite(terms.terms["spatial_dynamic"])
    terms.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_loss_functions_on_hand_cases():
    scores = torch.tensor([[0.5, 0.99]])
    target = torch.tensor([[0.5, 1.0]])  # rescaled to [0, 1]
    expected = -(torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.99))) / 2
    torch.testing.assert_close(iou_loss(scores, target, 0.5, 1.0), expected)
    predicted = torch.tensor([[1.0, 1.0], [5.0, 5.0]])
    target_vc = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert visual_context_loss(predicted, target_vc, torch.tensor([True, False])).item() == 1.0
    same = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert spatial_dynamic_loss(same, same * 3, torch.tensor([True, True])).item() == 0.0
    flipped = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # eps^v = [[1,0],[0,1]], eps^q = all ones: two of four pairs differ by 1
    assert spatial_dynamic_loss(same, flipped, torch.tensor([True, True])).item() == pytest.approx(0.5)


def _reference_contrastive(features, sentences, sentence_video, target_iou, moments, cfg):
    """Loop version of eq. 8 with MMN's negative sets (negatives excluded, not zeroed)."""
    import torch.nn.functional as F

    from vdi.metrics import temporal_iou

    features = F.normalize(features, dim=1)
    sentences = F.normalize(sentences, dim=1)
    video_losses, sentence_losses = [], []
    for s in range(len(sentences)):
        v = int(sentence_video[s])
        positive_feature = features[v, :, int(target_iou[s].argmax())]
        positive = float(positive_feature @ sentences[s]) - cfg.margin
        terms = [positive / cfg.tau_video]
        for t in range(len(sentences)):
            if t == s:
                continue
            same = int(sentence_video[t]) == v
            if same and float(temporal_iou(moments[s], moments[t])) >= cfg.sentence_removal_iou:
                continue
            terms.append(float(positive_feature @ sentences[t]) / cfg.tau_video)
        video_losses.append(-(terms[0] - float(torch.logsumexp(torch.tensor(terms), 0))))
        terms = [positive / cfg.tau_sentence]
        for b in range(features.shape[0]):
            for c in range(features.shape[2]):
                if b == v and float(target_iou[s, c]) >= cfg.negative_video_iou:
                    continue
                terms.append(float(features[b, :, c] @ sentences[s]) / cfg.tau_sentence)
        sentence_losses.append(-(terms[0] - float(torch.logsumexp(torch.tensor(terms), 0))))
    return sum(video_losses) / len(video_losses), sum(sentence_losses) / len(sentence_losses)


def test_contrastive_loss_matches_reference_loop():
    cfg = load_config("tiny").loss
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(3, 8, 10, generator=generator, dtype=torch.float64)
    sentences = torch.randn(5, 8, generator=generator, dtype=torch.float64)
    sentence_video = torch.tensor([0, 0, 1, 2, 2])
    target_iou = torch.rand(5, 10, generator=generator, dtype=torch.float64)
    moments = torch.tensor([[0, 5], [1, 5], [2, 4], [0, 3], [5, 9]], dtype=torch.float64)
    video, sentence = contrastive_loss(features, sentences, sentence_video, target_iou, moments, cfg)
    expected_video, expected_sentence = _reference_contrastive(
        features, sentences, sentence_video, target_iou, moments, cfg
    )
    assert float(video) == pytest.approx(expected_video, rel=1e-5)
    assert float(sentence) == pytest.approx(expected_sentence, rel=1e-5)


def test_spatial_dynamic_pairs_of_one_video_are_left_out():
    """With one m~ per video, two sentences of one video (different actions) have eps^v = 1;
    counting that pair would pull their Q^d together. Only different-video pairs count."""
    video = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # sentences 0, 1: video 0; 2: video 1
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # sentence 1 describes another action
    valid = torch.ones(3, dtype=torch.bool)
    sentence_video = torch.tensor([0, 0, 1])
    # different-video ordered pairs: (0,2), (2,0): eps^v 0, eps^q 0; (1,2), (2,1): eps^v 0, eps^q 1
    assert spatial_dynamic_loss(video, query, valid, sentence_video).item() == pytest.approx(0.5)
    # every pair (the old form): the same-video pair (0,1) adds (1 - 0)^2 twice over 9 pairs
    assert spatial_dynamic_loss(video, query, valid).item() == pytest.approx(4 / 9)
    # a batch with only one video has no pair to compare: the loss is 0, not NaN
    one = spatial_dynamic_loss(video[:2], query[:2], valid[:2], sentence_video[:2])
    assert one.item() == 0.0


def test_contrastive_injection_loss_cannot_be_solved_by_a_constant_target():
    """The variant of eq. 2 / 5: matched targets give a low loss, a collapsed (constant) target
    gives exactly log(N), and sentences sharing their video's m~ are not each other's negatives."""
    import math

    from vdi.losses import contrastive_injection_loss

    torch.manual_seed(0)
    query = torch.randn(6, 8)
    valid = torch.ones(6, dtype=torch.bool)
    matched = contrastive_injection_loss(query, query * 2, valid, tau=0.1)
    constant = contrastive_injection_loss(query, torch.ones(6, 8), valid, tau=0.1)
    assert matched.item() < 0.1 and constant.item() == pytest.approx(math.log(6), abs=1e-5)
    shuffled = contrastive_injection_loss(query, query.roll(1, 0), valid, tau=0.1)
    assert shuffled.item() > constant.item()
    # sentences 0 and 1 share a target (one video's m~): neither is the other's negative
    target = torch.cat([query[:1], query[:1], query[2:]])
    video = torch.tensor([0, 0, 1, 2, 3, 4])
    shared = contrastive_injection_loss(query, target, valid, 0.1, video[:, None] == video[None, :])
    unmasked = contrastive_injection_loss(query, target, valid, 0.1)
    assert shared.item() < unmasked.item()
    assert contrastive_injection_loss(query, target, torch.zeros(6, dtype=torch.bool), 0.1).item() == 0.0


def test_a_frozen_token_embedding_gets_no_gradient_while_the_rest_of_the_text_tower_does():
    _, model, batch = _model_and_batch(["optim.freeze_token_embedding=true"])
    text = model.retriever.text_encoder
    model(batch).total.backward()
    assert not text.token_embedding.weight.requires_grad and text.token_embedding.weight.grad is None
    assert float(text.text_projection.grad.abs().sum()) > 0
    assert float(text.positional_embedding.grad.abs().sum()) > 0
    _, trained, _ = _model_and_batch()
    assert trained.retriever.text_encoder.token_embedding.weight.requires_grad  # the default trains it
