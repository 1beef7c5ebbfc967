"""The shard format: one WebDataset sample per video, and one manifest per dataset split.

A split folder holds ``shard-000000.tar, shard-000001.tar, ...`` and ``manifest.json``. Each
sample (key = running index, so video ids with dots are safe) has:

* ``features.npy``: [F, D] float16 per-frame global CLIP features at ``fps`` frames per second;
* ``patches.npy`` (optional): [F, P, D] float16 projected patch tokens;
* ``meta.json``: video id, duration, fps and every query of the video with its moment and the
  Q^s / Q^d parse made once at preparation time (spaCy never runs per epoch): a
  :class:`QueryRecord` each.

The manifest records counts, per-shard sha256 and sizes, the encoder (name and weights
identity), fps and feature shapes; training refuses shards whose manifest does not match its
model config (:func:`check_compatible`). :class:`vdi.data.writer.SplitWriter` writes the format,
:class:`vdi.data.loader.ShardStream` reads it.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vdi.batch import VideoSample
from vdi.errors import UserError
from vdi.text import ParsedQuery

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class ShardError(UserError, RuntimeError):
    """Shards that cannot be used: missing, corrupt, or built for another model."""


@dataclass
class QueryRecord:
    """One query of a video as its sample's ``meta.json`` stores it."""

    sentence: str
    static: str  # Q^s
    dynamic: str  # Q^d
    start: float  # seconds
    end: float
    # per-query fields kept from the source (CG splits: "news" / "novels"); data_prep always
    # writes one (maybe {}), the tests' and benchmarks' writers none: None leaves the key out
    extra: dict | None = None

    def as_dict(self) -> dict:
        """The JSON object, keys in the order shards store them."""
        record = {
            "sentence": self.sentence,
            "static": self.static,
            "dynamic": self.dynamic,
            "start": self.start,
            "end": self.end,
        }
        if self.extra is not None:
            record["extra"] = self.extra
        return record


@dataclass
class ShardInfo:
    name: str
    sha256: str
    bytes: int
    num_videos: int
    num_queries: int


@dataclass
class EncoderInfo:
    name: str
    # "tag:openai", "sha256:<hex of the checkpoint file>" or "random"
    weights: str


@dataclass
class ShardManifest:
    dataset: str
    split: str
    num_videos: int
    num_queries: int
    encoder: EncoderInfo
    fps: float
    feature_dim: int
    num_patches: int  # 0 when patch tokens were not stored
    shards: list[ShardInfo] = field(default_factory=list)
    hygiene: list[str] = field(default_factory=list)
    max_duration: float = 0.0  # longest video, seconds (the Predictor's window for long videos)
    # patch tokens per video: 0 = one per frame; N = resampled to N pre-clips (only a model with
    # model.num_pre_clips = N can use them)
    patch_clips: int = 0
    created: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def has_patches(self) -> bool:
        return self.num_patches > 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> ShardManifest:
        data = dict(data)
        data["encoder"] = EncoderInfo(**data["encoder"])
        data["shards"] = [ShardInfo(**s) for s in data.get("shards", [])]
        return cls(**data)


def read_manifest(split_dir: str | Path) -> ShardManifest:
    path = Path(split_dir) / MANIFEST_NAME
    if not path.exists() and not Path(split_dir).exists() and Path(split_dir).parent.is_dir():
        splits = sorted(p.name for p in Path(split_dir).parent.iterdir() if (p / MANIFEST_NAME).is_file())
        raise ShardError(
            f"no split '{Path(split_dir).name}' in {Path(split_dir).parent} (its splits: {', '.join(splits) or 'none'})"
        )
    if not path.exists():
        raise ShardError(
            f"no {MANIFEST_NAME} in {split_dir}; build the split with `python -m data_prep shards ...` "
            "(or `python -m data_prep synthetic` for the embedded default)"
        )
    try:
        manifest = ShardManifest.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as error:
        raise ShardError(f"{path} is not a valid shard manifest ({error}); rebuild the shards") from None
    if manifest.format_version != FORMAT_VERSION:
        raise ShardError(f"{path} has shard format {manifest.format_version}, this vdi reads {FORMAT_VERSION}")
    return manifest


def write_manifest(split_dir: str | Path, manifest: ShardManifest) -> None:
    path = Path(split_dir) / MANIFEST_NAME
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(manifest.to_json())
    temporary.replace(path)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardFault:
    """Why a shard file does not match its manifest entry (each caller words it its own way)."""

    kind: str  # "missing", "size" or "sha256"
    size: int = 0  # the file's bytes, for "size"


def check_shard(path: Path, shard: ShardInfo, digest: Callable[[Path], str] | None = sha256_file) -> ShardFault | None:
    """The shard file at ``path`` against its manifest entry: missing, another size, or (unless
    ``digest`` is None) other content; None when it matches. The one check behind both
    ``python -m data_prep verify`` and the loader's refusal / skipping of corrupt shards."""
    if not path.exists():
        return ShardFault("missing")
    size = path.stat().st_size
    if size != shard.bytes:
        return ShardFault("size", size)
    if digest is not None and digest(path) != shard.sha256:
        return ShardFault("sha256")
    return None


def listed_totals_mismatch(manifest: ShardManifest) -> tuple[int, int] | None:
    """The (videos, queries) its shard list adds up to, when they disagree with the manifest's
    totals (an edited manifest, or one from another build); None when they agree."""
    listed = (sum(s.num_videos for s in manifest.shards), sum(s.num_queries for s in manifest.shards))
    return None if listed == (manifest.num_videos, manifest.num_queries) else listed


def weights_identity(pretrained: str | None) -> str:
    """How a CLIP's weights are named in manifests: a tag, the checkpoint's sha256, or random."""
    from vdi.config import looks_like_path

    if pretrained is None:
        return "random"
    if looks_like_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ShardError(f"CLIP checkpoint {path} not found (model.clip.pretrained)")
        return f"sha256:{sha256_file(path)}"
    return f"tag:{pretrained}"


def check_compatible(
    manifest: ShardManifest,
    clip_name: str,
    weights: str,
    feature_dim: int,
    needs_patches: bool,
    where: str,
    num_pre_clips: int | None = None,
) -> None:
    """Refuse shards built with another encoder, feature size, without patches L^sd needs, or
    with patch tokens stored at another pre-clip count than the model's."""
    problems = []
    if manifest.encoder.name != clip_name:
        problems.append(f"encoder {manifest.encoder.name} != model.clip.name {clip_name}")
    if manifest.encoder.weights != weights:
        problems.append(f"encoder weights {manifest.encoder.weights} != model.clip.pretrained ({weights})")
    if manifest.feature_dim != feature_dim:
        problems.append(f"feature size {manifest.feature_dim} != text tower size {feature_dim}")
    if needs_patches and not manifest.has_patches:
        problems.append(
            "no patch tokens but L^sd needs them (rebuild them with python -m data_prep without --no-patches, "
            "or set injection.spatial_dynamic=none)"
        )
    if needs_patches and manifest.patch_clips and num_pre_clips is not None and manifest.patch_clips != num_pre_clips:
        problems.append(
            f"patch tokens stored at {manifest.patch_clips} pre-clips per video, but model.num_pre_clips is "
            f"{num_pre_clips} (re-extract with --patch-clips {num_pre_clips}, or 0 for every frame)"
        )
    if problems:
        raise ShardError(f"shards in {where} do not match the model config: " + "; ".join(problems))


def encode_sample(
    index: int,
    video_id: str,
    duration: float,
    fps: float,
    features: np.ndarray,
    patches: np.ndarray | None,
    queries: list[QueryRecord],
) -> dict:
    """A WebDataset sample dict (bytes values) for one video."""

    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array, dtype=np.float16), allow_pickle=False)
        return buffer.getvalue()

    meta = {
        "video_id": video_id,
        "duration": float(duration),
        "fps": float(fps),
        "num_frames": int(features.shape[0]),
        "queries": [query.as_dict() for query in queries],
    }
    sample = {"__key__": f"{index:09d}", "features.npy": npy(features), "meta.json": json.dumps(meta).encode()}
    if patches is not None:
        sample["patches.npy"] = npy(patches)
    return sample


def decode_sample(raw: dict, load_patches: bool = True) -> VideoSample:
    """A raw WebDataset sample (bytes) -> VideoSample; raises ShardError naming the sample."""
    try:
        meta = json.loads(raw["meta.json"])
        features = np.load(io.BytesIO(raw["features.npy"]), allow_pickle=False)
        patches = None
        if load_patches and "patches.npy" in raw:
            patches = np.load(io.BytesIO(raw["patches.npy"]), allow_pickle=False)
        queries = [ParsedQuery(q["sentence"], q["static"], q["dynamic"]) for q in meta["queries"]]
        moments = np.array([[q["start"], q["end"]] for q in meta["queries"]], dtype=np.float64).reshape(-1, 2)
    except (KeyError, ValueError, json.JSONDecodeError) as error:
        raise ShardError(f"sample {raw.get('__key__')} of {raw.get('__url__')} is malformed: {error}") from None
    return VideoSample(meta["video_id"], meta["duration"], features, queries, moments, patches)


__all__ = [
    "MANIFEST_NAME",
    "EncoderInfo",
    "QueryRecord",
    "ShardError",
    "ShardFault",
    "ShardInfo",
    "ShardManifest",
    "check_compatible",
    "check_shard",
    "decode_sample",
    "encode_sample",
    "listed_totals_mismatch",
    "read_manifest",
    "sha256_file",
    "weights_identity",
    "write_manifest",
]
