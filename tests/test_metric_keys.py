"""vdi.metric_keys: one owner for every spelling of a metric name."""

import ast
import re
from pathlib import Path

import pytest

from vdi.metric_keys import (
    COUNT_NAMES,
    MetricKey,
    flatten_results,
    grounding_name,
    is_grounding_name,
    recall_name,
    recall_names,
    unflatten_results,
)

PROJECT = Path(__file__).resolve().parents[1]


def test_spellings_of_one_key():
    key = MetricKey("test", recall_name(1, 0.5), variant="static", stage="probe")
    assert key.table == "test [Q^s]"
    assert key.flat == "probe/test [Q^s]/R1@0.5"
    # the MLflow spelling is what stores and old runs hold: it must not drift
    assert key.mlflow == "probe/test_Qs/R1_iou0.5"
    assert MetricKey("val", grounding_name("gain", 0.5), stage="best").mlflow == "best/val/gain_R1_iou0.5"
    assert MetricKey("ood", "mIoU").flat == "ood/mIoU"


@pytest.mark.parametrize(
    "flat", ["test/R1@0.5", "best/val/gain R1@0.7", "probe/test [Q^d]/R5@0.3", "test [Q^s]/mIoU", "val/scored videos"]
)
def test_parse_inverts_flat(flat):
    assert MetricKey.parse(flat).flat == flat


def test_bad_keys_are_refused():
    with pytest.raises(ValueError, match="not a metric key"):
        MetricKey.parse("loss/total/x/y")
    with pytest.raises(ValueError, match="variant"):
        MetricKey("test", "mIoU", variant="static part")
    with pytest.raises(ValueError, match="grounding kind"):
        grounding_name("gains", 0.5)


def test_names_and_their_kinds():
    assert recall_names([1, 5], [0.3, 0.5]) == ["R1@0.3", "R1@0.5", "R5@0.3", "R5@0.5", "mIoU"]
    assert is_grounding_name("xgain R1@0.5") and not is_grounding_name("R1@0.5")
    assert not any(is_grounding_name(name) for name in COUNT_NAMES)


def test_flatten_and_unflatten_round_trip():
    results = {"test": {"R1@0.5": 40.0, "queries": 3.0}, "test [Q^s]": {"R1@0.5": 20.0}}
    flat = flatten_results(results)
    assert flat == {"test/R1@0.5": 40.0, "test/queries": 3.0, "test [Q^s]/R1@0.5": 20.0}
    assert unflatten_results(flat | {"epoch": 3}) == results
    assert set(flatten_results(results, "best")) == {f"best/{k}" for k in flat}


def test_the_report_spells_no_metric_name_itself():
    """sweeps/report.py reads metrics by keys made in vdi.metric_keys only; a literal such as
    'R1_iou0.5' or 'test [Q^s]' there would quietly read NaN after a rename."""
    tree = ast.parse((PROJECT / "sweeps" / "report.py").read_text())
    pattern = re.compile(r"R\d+(@|_iou)\d|mIoU|\[Q\^[sd]\]|_Q[sd]\b|(gain|ceiling|prior) R1")
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef)) and ast.get_docstring(node) is not None
    }
    literals = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]
    assert [text for text in literals if pattern.search(text)] == []
