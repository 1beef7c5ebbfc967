"""Metric names with one owner: every spelling of a metric (in a split's table, flat with its
split, with its stage prefix, and as an MLflow key) is made and read here.

    MetricKey("test", R1_AT_05).flat                                 'test/R1@0.5'
    MetricKey("test", R1_AT_05, variant="static", stage="probe").flat 'probe/test [Q^s]/R1@0.5'
    MetricKey("test", R1_AT_05, variant="static", stage="probe").mlflow 'probe/test_Qs/R1_iou0.5'
    MetricKey.parse("best/test [Q^d]/gain R1@0.5")                   the key back

Names inside a split: ``R{k}@{t}`` (recall at IoU t), ``mIoU``, the grounding figures
``ceiling|prior|gain|xgain R1@{t}`` and the counts in :data:`COUNT_NAMES`. Stages: "" (an
epoch's evaluation), "best" (the selected epoch's), "probe" (the dynamics probe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

VARIANT_LABELS = {"query": "", "static": "Q^s", "dynamic": "Q^d"}  # the sentence the model was given
STAGES = ("", "best", "probe")
GROUNDING_KINDS = ("ceiling", "prior", "gain", "xgain")
COUNT_NAMES = ("queries", "videos", "single-query videos", "scored videos", "skipped shards")
MIOU = "mIoU"

# MLflow keys allow letters, digits, _ - . / and spaces; the spelling must stay stable (stores hold it)
_MLFLOW_SPELLING = str.maketrans({"@": "_iou", "^": "", "[": "", "]": "", " ": "_", ",": "_", "=": "_"})


def recall_name(k: int, threshold: float) -> str:
    """'R1@0.5': the percentage of queries with a top-k moment at IoU >= threshold."""
    return f"R{k}@{threshold:g}"


def grounding_name(kind: str, threshold: float) -> str:
    """'gain R1@0.5': a grounding figure (:data:`GROUNDING_KINDS`) of R1 at ``threshold``."""
    if kind not in GROUNDING_KINDS:
        raise ValueError(f"grounding kind {kind!r} is not one of {GROUNDING_KINDS}")
    return f"{kind} {recall_name(1, threshold)}"


def recall_names(recall_ks: Sequence[int], iou_thresholds: Sequence[float]) -> list[str]:
    """The R@k names of a table in their column order, then mIoU."""
    return [recall_name(k, t) for k in recall_ks for t in iou_thresholds] + [MIOU]


def is_grounding_name(name: str) -> bool:
    return name.split(" ", 1)[0] in GROUNDING_KINDS and " " in name


R1_AT_05 = recall_name(1, 0.5)  # the field's headline number, and the paired comparisons' metric
R1_AT_07 = recall_name(1, 0.7)
GAIN_R1_AT_05 = grounding_name("gain", 0.5)
CEILING_R1_AT_05 = grounding_name("ceiling", 0.5)


def mlflow_spelling(name: str) -> str:
    """Any logged name as an MLflow key: 'test [Q^s]/R1@0.5' -> 'test_Qs/R1_iou0.5'."""
    return name.translate(_MLFLOW_SPELLING)


@dataclass(frozen=True)
class MetricKey:
    split: str
    name: str
    variant: str = "query"
    stage: str = ""

    def __post_init__(self) -> None:
        if self.variant not in VARIANT_LABELS:
            raise ValueError(f"metric variant {self.variant!r} is not one of {sorted(VARIANT_LABELS)}")
        if self.stage not in STAGES:
            raise ValueError(f"metric stage {self.stage!r} is not one of {STAGES}")

    @property
    def table(self) -> str:
        """The row label of a results table: 'test' or 'test [Q^s]'."""
        label = VARIANT_LABELS[self.variant]
        return f"{self.split} [{label}]" if label else self.split

    @property
    def flat(self) -> str:
        return "/".join(part for part in (self.stage, self.table, self.name) if part)

    @property
    def mlflow(self) -> str:
        return mlflow_spelling(self.flat)

    def at(self, stage: str) -> MetricKey:
        return MetricKey(self.split, self.name, self.variant, stage)

    @classmethod
    def parse(cls, flat: str) -> MetricKey:
        """The key of a flat spelling ('best/test [Q^s]/R1@0.5'); ValueError when it is not one."""
        parts = flat.split("/")
        stage = parts.pop(0) if len(parts) == 3 else ""
        if len(parts) != 2 or stage not in STAGES:
            raise ValueError(f"{flat!r} is not a metric key (<stage>/<split>/<name> or <split>/<name>)")
        table, name = parts
        split, variant = table, "query"
        for candidate, label in VARIANT_LABELS.items():
            if label and table.endswith(f" [{label}]"):
                split, variant = table[: -len(label) - 3], candidate
        return cls(split, name, variant, stage)


def table_label(split: str, variant: str = "query") -> str:
    """The row label of ``split`` evaluated with ``variant`` sentences ('test [Q^d]')."""
    return MetricKey(split, MIOU, variant).table


def flatten_results(results: dict[str, dict[str, float]], stage: str = "") -> dict[str, float]:
    """{"test": {"R1@0.5": 40.1}} -> {"test/R1@0.5": 40.1} (with ``stage``: "best/test/R1@0.5")."""
    prefix = f"{stage}/" if stage else ""
    return {f"{prefix}{label}/{name}": value for label, metrics in results.items() for name, value in metrics.items()}


def unflatten_results(flat: dict[str, float]) -> dict[str, dict[str, float]]:
    """The inverse of :func:`flatten_results` for unstaged keys; other entries (e.g. "epoch") are left out."""
    results: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        if "/" in key:
            label, name = key.split("/", 1)
            results.setdefault(label, {})[name] = value
    return results
