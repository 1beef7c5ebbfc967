import pytest

from vdi.text import QueryError, QueryParser, normalize_query


@pytest.fixture(scope="module")
def parser():
    return QueryParser()


def test_static_and_dynamic_split(parser):
    parsed = parser.parse_one("a person opens the door of the refrigerator and takes out food.")
    assert parsed.static == "a person, the door, the refrigerator, food"
    assert parsed.dynamic == "opens of and takes out ."
    assert parsed.has_static and parsed.has_dynamic


def test_no_noun_chunk_gives_empty_static(parser):
    parsed = parser.parse_one("walks away")
    assert parsed.static == "" and not parsed.has_static
    assert parsed.dynamic == "walks away"


def test_only_noun_chunks_gives_empty_dynamic(parser):
    for text in ["the red circle", "the red circle."]:
        parsed = parser.parse_one(text)
        assert parsed.static == "the red circle"
        assert parsed.dynamic == "" and not parsed.has_dynamic


def test_whitespace_and_non_ascii(parser):
    parsed = parser.parse_one("  the  woman   pours café au lait  ")
    assert parsed.query == "the woman pours café au lait"
    assert "café" in parsed.query and "pours" in parsed.dynamic
    assert normalize_query("e\u0301") == "\u00e9"  # NFC


def test_empty_query_raises_with_position(parser):
    with pytest.raises(QueryError, match="query 1 is empty"):
        parser.parse(["a person sits", "   "])


def test_batch_parse_matches_single(parser):
    texts = ["a man jumps", "the dog runs to the ball", "nothing here"]
    assert parser.parse(texts) == [parser.parse_one(t) for t in texts]


def test_real_charades_sentences(parser, annotations_dir):
    lines = (annotations_dir / "charades_sta" / "charades_sta_test.txt").read_text().splitlines()
    sentences = [line.split("##", 1)[1] for line in lines[:600]]
    parsed = parser.parse(sentences)
    assert len(parsed) == 600
    with_both = sum(p.has_static and p.has_dynamic for p in parsed)
    assert with_both / len(parsed) > 0.9  # most Charades queries are "a person <verb> <object>"
    for item in parsed:
        # masking drops words: every static chunk and dynamic word comes from the query
        for chunk in filter(None, item.static.split(", ")):
            assert chunk in item.query
        for word in item.dynamic.split():
            assert word in item.query
