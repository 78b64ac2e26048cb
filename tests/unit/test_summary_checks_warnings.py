"""summary.json as `compress report` reads it: ticket.sparsity a fraction in [0, 1], `warnings` a
list of {check: str, message: str, stage: str | null} (the report indexes w["check"])."""
from __future__ import annotations

import pytest

from compress.core.errors import DataError
from compress.report.summary_checks import check_summary

PATH = "run/summary.json"
GOOD = {"check": "parity", "message": "DeepSparse differs", "stage": "evaluate"}


@pytest.mark.parametrize("sparsity", [1.5, -0.1])
def test_ticket_sparsity_outside_0_1_is_refused(sparsity):
    with pytest.raises(DataError, match="allowed: a fraction in \\[0, 1\\]") as caught:
        check_summary({"ticket": {"sparsity": sparsity}}, PATH)
    assert caught.value.key == "ticket.sparsity"


@pytest.mark.parametrize("warnings, key", [
    ("parity failed", "warnings"),
    (["parity failed"], "warnings[0]"),
    ([GOOD, {"message": "no check named"}], "warnings[1].check"),
    ([{"check": "parity", "message": 3}], "warnings[0].message"),
    ([{**GOOD, "stage": 7}], "warnings[0].stage"),
])
def test_badly_shaped_warnings_are_one_data_error(warnings, key):
    with pytest.raises(DataError) as caught:
        check_summary({"warnings": warnings}, PATH)
    assert caught.value.key == key


def test_warnings_as_the_run_writes_them_pass():
    check_summary({"ticket": {"sparsity": 0.8}, "warnings": [GOOD, {**GOOD, "stage": None},
                                                              {**GOOD, "extra": 1}]}, PATH)
