"""python -m data_prep audit: how the paper's Q^s / Q^d rule splits a dataset's queries.

The rule (``vdi.text``: Q^s = the noun chunks, Q^d = the rest) is what both injection losses
train on, so a share of queries whose Q^d is empty, or has no verb, is a share of training
signal lost. Reported per split:

* ``empty Q^s`` / ``empty Q^d``: no noun chunk / nothing left once the chunks are masked;
* ``no verb in Q^d``: Q^d keeps no token spaCy tags VERB (an action swallowed by a noun chunk,
  or a sentence with no verb at all);
* the 20 most frequent Q^d strings;
* on the synthetic world, which knows each sentence's object phrase and action phrase: the
  share whose action phrase lies entirely in Q^d *and* object phrase entirely in Q^s (the
  intended split), and each half alone.

    python -m data_prep audit --dataset charades_sta --annotations ../shared/data/annotations/charades_sta
    python -m data_prep audit --synthetic data/synthetic
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SplitAudit:
    split: str
    queries: int = 0
    empty_static: int = 0
    empty_dynamic: int = 0
    no_verb_dynamic: int = 0
    top_dynamic: list[tuple[str, int]] = field(default_factory=list)
    # the synthetic world only (None elsewhere)
    intended: int | None = None
    action_in_dynamic: int | None = None
    object_in_static: int | None = None
    examples: list[dict] = field(default_factory=list)

    def share(self, count: int | None) -> float:
        return float("nan") if count is None or not self.queries else 100.0 * count / self.queries

    def lines(self) -> list[str]:
        text = [
            f"{self.split}: {self.queries} queries; empty Q^s {self.share(self.empty_static):.1f}%, "
            f"empty Q^d {self.share(self.empty_dynamic):.1f}%, no verb in Q^d {self.share(self.no_verb_dynamic):.1f}%"
        ]
        if self.intended is not None:
            text.append(
                f"  intended split (object phrase all in Q^s, action phrase all in Q^d): "
                f"{self.share(self.intended):.1f}%; action phrase in Q^d {self.share(self.action_in_dynamic):.1f}%, "
                f"object phrase in Q^s {self.share(self.object_in_static):.1f}%"
            )
            for example in self.examples:
                text.append(f"  e.g. {example['query']!r} -> Q^s {example['static']!r}, Q^d {example['dynamic']!r}")
        text.append("  top Q^d: " + "; ".join(f"{value!r} {count}" for value, count in self.top_dynamic))
        return text

    def as_dict(self) -> dict:
        shares = {
            "empty_static_pct": self.share(self.empty_static),
            "empty_dynamic_pct": self.share(self.empty_dynamic),
            "no_verb_dynamic_pct": self.share(self.no_verb_dynamic),
        }
        if self.intended is not None:
            shares |= {
                "intended_pct": self.share(self.intended),
                "action_in_dynamic_pct": self.share(self.action_in_dynamic),
                "object_in_static_pct": self.share(self.object_in_static),
            }
        return {"split": self.split, "queries": self.queries, **shares, "top_dynamic": self.top_dynamic}


def _words(text: str) -> list[str]:
    return [w.strip(".,;:!?").lower() for w in text.split() if w.strip(".,;:!?")]


def contains_phrase(part: str, phrase: str) -> bool:
    """``phrase``'s words appear in ``part`` as one contiguous run (case and punctuation ignored)."""
    words, target = _words(part), _words(phrase)
    if not target:
        return True
    return any(words[i : i + len(target)] == target for i in range(len(words) - len(target) + 1))


def audit_queries(
    split: str,
    queries: Sequence[str],
    nlp,
    phrases: Sequence[tuple[str, str]] | None = None,
    top: int = 20,
    examples: int = 3,
) -> SplitAudit:
    """Audit one split's sentences with a loaded spaCy pipeline; ``phrases`` gives each
    sentence's (object phrase, action phrase) where the generator knows them."""
    from vdi.text import normalize_queries, split_doc

    texts = normalize_queries(list(queries))
    report = SplitAudit(split, queries=len(texts))
    dynamic_counts: Counter[str] = Counter()
    if phrases is not None:
        report.intended = report.action_in_dynamic = report.object_in_static = 0
    for index, doc in enumerate(nlp.pipe(texts, batch_size=256)):
        parsed = split_doc(texts[index], doc)
        report.empty_static += not parsed.has_static
        report.empty_dynamic += not parsed.has_dynamic
        in_chunk = set()
        for chunk in doc.noun_chunks:
            in_chunk.update(range(chunk.start, chunk.end))
        has_verb = any(token.pos_ == "VERB" for token in doc if token.i not in in_chunk)
        report.no_verb_dynamic += not has_verb
        dynamic_counts[parsed.dynamic] += 1
        if phrases is not None:
            obj, action = phrases[index]
            action_ok = contains_phrase(parsed.dynamic, action)
            object_ok = any(contains_phrase(chunk, obj) for chunk in parsed.static.split(", "))
            report.action_in_dynamic += action_ok
            report.object_in_static += object_ok
            report.intended += action_ok and object_ok
            if not (action_ok and object_ok) and len(report.examples) < examples:
                report.examples.append({"query": texts[index], "static": parsed.static, "dynamic": parsed.dynamic})
    report.top_dynamic = dynamic_counts.most_common(top)
    return report


def audit_annotations(dataset: str, files: dict[str, Path], nlp) -> list[SplitAudit]:
    from data_prep.annotations import read_annotation_file

    reports = []
    for split, path in files.items():
        read = read_annotation_file(path, verbose=False)
        sentences = [moment.sentence for record in read.records for moment in record.moments]
        reports.append(audit_queries(split, sentences, nlp))
    return reports


def audit_synthetic(world: Path, nlp) -> list[SplitAudit]:
    """Audit the synthetic world's splits with the generator's own object / action phrases."""
    from data_prep.synthetic.build import world_specs
    from data_prep.synthetic.world import video_query_parts

    info_path = world / "world.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path} not found: build the world first (python -m data_prep synthetic)")
    info = json.loads(info_path.read_text())
    specs = world_specs(info["counts"], info["seed"], info["ood_colours"])
    reports = []
    for split, split_specs in specs.items():
        parts = [part for spec in split_specs for part in video_query_parts(spec)]
        reports.append(audit_queries(split, [p[0] for p in parts], nlp, [(p[1], p[2]) for p in parts]))
    return reports


__all__ = ["SplitAudit", "audit_annotations", "audit_queries", "audit_synthetic", "contains_phrase"]
