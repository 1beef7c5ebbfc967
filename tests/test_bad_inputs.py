"""Every bad input of tests/bad_inputs.py gets what it must: a one-line error naming the thing and
the fix (no traceback), or a counted skip or warning with the job going on."""

import pytest
from bad_inputs import CASES, build_assets, run_case


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_assets(tmp_path_factory.mktemp("bad_input_assets"))


def test_the_suite_has_at_least_30_distinct_bad_inputs_of_every_kind():
    assert len(CASES) >= 30 and len({case.name for case in CASES}) == len(CASES)
    kinds = {case.kind for case in CASES}
    assert {"video", "annotations", "features", "shards", "manifest", "checkpoint", "config", "queries"} <= kinds


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case, assets, tmp_path):
    outcome = run_case(case, assets, tmp_path)
    assert not outcome.problems, (
        f"{case.name}: {outcome.problems}\nexit {outcome.code}\nstdout:\n{outcome.stdout[-2000:]}\n"
        f"stderr:\n{outcome.stderr[-3000:]}"
    )
