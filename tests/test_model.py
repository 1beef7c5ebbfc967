import pytest
import torch
from helpers import planted_samples
from torch.utils._python_dispatch import TorchDispatchMode

from vdi.batch import collate
from vdi.config import load_config
from vdi.encoders import Tokenizer, create_clip
from vdi.injection import build_vdi_model
from vdi.metrics import sparse_mask
from vdi.model import ProposalConv, SparseMaxPool


@pytest.mark.parametrize("num_clips,counts", [(16, [15]), (64, [15, 8, 8]), (8, [3, 2])])
def test_sparse_max_pool_cells_are_range_maxima(num_clips, counts):
    pool = SparseMaxPool(num_clips, counts)
    clips = torch.randn(2, 3, num_clips)
    map2d = pool(clips)
    mask = sparse_mask(num_clips, counts)
    for i, j in mask.nonzero().tolist():
        torch.testing.assert_close(map2d[:, :, i, j], clips[:, :, i : j + 1].max(dim=2).values)
    assert map2d[:, :, ~mask].abs().sum() == 0


def test_proposal_conv_weights_count_valid_cells():
    mask = sparse_mask(4, [3])
    conv = ProposalConv(2, 2, 3, 2, 2)
    weights = ProposalConv.layer_weights(mask, conv.convs)
    assert len(weights) == 2 and weights[-1].shape == (4, 4)
    # the first layer's output is 6x6 (padding 2): its corner sees one valid cell
    assert weights[0][0, 0] == 1.0


def _batch(cfg, num_videos=3):
    samples = planted_samples(num_videos, dim=64, num_patches=16)
    return collate(samples, Tokenizer(cfg.model.clip.name), cfg.model.num_pre_clips)


def test_shapes_of_outputs_and_losses():
    cfg = load_config("tiny")
    model = build_vdi_model(cfg)
    batch = _batch(cfg)
    scores = model.retriever(batch.video_features, batch.query_tokens, batch.sentence_video)
    candidates = int(sparse_mask(cfg.model.num_clips, cfg.model.pooling_counts).sum())
    assert scores.iou.shape == (batch.num_sentences, candidates)
    assert scores.contrastive.shape == (batch.num_sentences, candidates)
    assert ((scores.iou > 0) & (scores.iou < 1)).all()
    terms = model(batch)
    assert set(terms.terms) == {
        "iou",
        "contrastive_video",
        "contrastive_sentence",
        "visual_context",
        "spatial_dynamic",
    }
    assert torch.isfinite(terms.total)


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
        self.ops.append((str(func), shapes))
        return result


def test_inference_of_vdi_and_baseline_have_same_parameters_and_operations():
    vdi_cfg = load_config("tiny")
    baseline_cfg = load_config("tiny", ["injection.visual_context=none", "injection.spatial_dynamic=off"])
    clip = create_clip("vdi-test-tiny", None)
    vdi = build_vdi_model(vdi_cfg, clip)
    baseline = build_vdi_model(baseline_cfg, clip)
    assert vdi.visual_context is not None and vdi.spatial_dynamic is not None
    assert baseline.visual_context is None and baseline.spatial_dynamic is None
    vdi_params = {k: v.shape for k, v in vdi.retriever.state_dict().items()}
    baseline_params = {k: v.shape for k, v in baseline.retriever.state_dict().items()}
    assert vdi_params == baseline_params
    batch = _batch(vdi_cfg)
    recorded = []
    for model in (vdi, baseline):
        model.eval()
        with torch.no_grad(), _OpRecorder() as recorder:
            model.retriever(batch.video_features, batch.query_tokens, batch.sentence_video)
        recorded.append(recorder.ops)
    assert len(recorded[0]) > 50
    assert recorded[0] == recorded[1]
    # and a retriever trained with injection loads into a baseline retriever as-is
    baseline.retriever.load_state_dict(vdi.retriever.state_dict(), strict=True)


def test_clip_conv_lets_the_head_tell_a_change_from_its_reverse():
    """Max-pooling a moment's clips keeps no order: without ``model.clip_conv_kernel`` a video and
    its time reversal pool to the same whole-video 2D-map cell; with it they differ. Its residual
    starts at zero, so an untrained head equals the paper's."""
    from vdi.model import MMNHead

    plain_cfg = load_config("tiny")
    conv_cfg = load_config("tiny", ["model.clip_conv_kernel=3"])
    torch.manual_seed(0)
    plain = MMNHead(plain_cfg.model, 8).eval()
    with_conv = MMNHead(conv_cfg.model, 8).eval()
    missing, unexpected = with_conv.load_state_dict(plain.state_dict(), strict=False)
    assert set(missing) == {"clip_conv.weight", "clip_conv.bias"} and not unexpected
    features = torch.randn(1, plain_cfg.model.num_pre_clips, 8)
    reverse = features.flip(1)
    last = plain_cfg.model.num_clips - 1

    def whole_cell(head, video):
        return head.map2d(head.clips(video))[:, :, 0, last]

    torch.testing.assert_close(with_conv.video_maps(features).iou, plain.video_maps(features).iou)
    torch.testing.assert_close(whole_cell(plain, features), whole_cell(plain, reverse))
    torch.nn.init.normal_(with_conv.clip_conv.weight)
    assert (whole_cell(with_conv, features) - whole_cell(with_conv, reverse)).abs().max() > 1e-3


def test_clip_conv_kernel_must_be_odd():
    from vdi.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.clip_conv_kernel"):
        load_config("tiny", ["model.clip_conv_kernel=2"])
