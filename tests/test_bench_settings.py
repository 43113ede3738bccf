"""Every setting the benchmark compares is one the announcer's schema accepts, or goes to ExaBGP directly."""

from __future__ import annotations

import pytest

from announcer.config_load import parse_config
from announcer.exabgp_conf import exabgp_environment
from announcer.exabgp_settings import PIPE_SETTINGS
from bench.lab_env import announcer_config, split_environment
from bench.scenarios import Settings
from bench.settings import ANNOUNCER_BEST, ANNOUNCER_SHIPPED, FLOOR_BEST, FLOOR_DEFAULT, tune_candidates

EVERY_SETTING = [ANNOUNCER_SHIPPED, ANNOUNCER_BEST, FLOOR_DEFAULT, FLOOR_BEST] + [s for _, s in tune_candidates()]


@pytest.mark.parametrize("settings", EVERY_SETTING, ids=[settings.name for settings in EVERY_SETTING])
def test_each_benchmark_setting_reaches_exabgp_through_a_configuration_check_config_accepts(
    settings: Settings,
) -> None:
    """`api.ack false` (a floor row) is refused in speaker.environment now: the bench sets it in the environment it
    starts ExaBGP with, over what `exabgp-env` renders, so ExaBGP still gets every setting of the row."""
    through_config, direct = split_environment(settings.environment)
    config = parse_config(announcer_config(settings.speaker, through_config), "bench", environ={})
    assert {**exabgp_environment(config), **direct} == {**exabgp_environment(config), **settings.environment}
    assert set(direct) <= set(PIPE_SETTINGS)
