"""The stage microbenchmark runs the real pipeline stages against a real upstream and reports a
time for each one; the stages account for the whole pipeline. No speed is asserted."""

from __future__ import annotations

import math
import shutil

import pytest

from bench import stages

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx (make bench)")


def test_stages_time_every_stage_of_both_paths() -> None:
    figures = stages.run(20, journal=False).figures()
    proxy = figures["columns"]["proxy, file sink"]
    capability = figures["columns"]["capability, file sink"]
    for stage in stages.PROXY_STAGES:
        assert proxy[stage] > 0, stage
    for stage in stages.CAPABILITY_STAGES:
        assert capability[stage] > 0, stage
    for medians, names in ((proxy, stages.PROXY_STAGES), (capability, stages.CAPABILITY_STAGES)):
        total = sum(medians[s] for s in names)
        # Medians of parts need not add up exactly; a missing or doubled stage would be far off.
        assert 0.4 < total / medians["whole pipeline"] < 2.5
    depths = figures["decide_by_token_depth_us"]
    assert len(depths) == 4 and all(us > 0 and not math.isnan(us) for us in depths)
    table = stages.table(figures["columns"])
    rows = set(stages.PROXY_STAGES) | set(stages.CAPABILITY_STAGES)
    assert table.count("\n") == 1 + len(rows) + 2  # the rule, each stage, the sum and the whole
