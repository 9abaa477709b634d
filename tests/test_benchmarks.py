"""The benchmarks are not run by the tests (minutes each), but they must still import and parse their arguments:
a name moved between modules once broke `make bench-throughput` while every test passed."""

from __future__ import annotations

import pytest

from benchmarks import quality, throughput


def test_the_benchmarks_import_and_parse_their_arguments():
    assert quality._parse(["--quick", "--only", "B1"]).only == "B1"
    with pytest.raises(SystemExit) as shown:
        throughput.main(["--help"])
    assert shown.value.code == 0
