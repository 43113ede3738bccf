"""The speaker settings compared: ExaBGP's and the announcer's shipped ones, and the fastest found by `tune`."""

from __future__ import annotations

from bench.scenarios import Settings

# ExaBGP's own defaults where the announcer's DEFAULT_ENVIRONMENT differs (it sets reactor.speed 0.1).
EXABGP_DEFAULTS = {"exabgp.reactor.speed": "1.0"}

# The per-route "route added to ..." INFO lines ExaBGP logs (source 'processes') cost about a quarter of its
# CPU in a bulk load; WARNING keeps warnings and errors (and ExaBGP's own process start/exit messages at
# that level) and drops them. reactor.speed 0.1 is the lowest setting that still sleeps (1 ms) when idle:
# below it ExaBGP's poll timeout rounds to 0 ms and it spins a core for as long as it runs.
FAST_ENVIRONMENT = {"exabgp.reactor.speed": "0.1", "exabgp.log.level": "WARNING"}

FLOOR_DEFAULT = Settings("floor, 500/line, ExaBGP defaults", environment=EXABGP_DEFAULTS, per_line=500, window=0)
FLOOR_BEST = Settings("floor, fastest found", environment=FAST_ENVIRONMENT, per_line=500, window=0)

ANNOUNCER_SHIPPED = Settings("announcer, shipped defaults")
# prefixes_per_line and max_in_flight: no setting measured better than the shipped 500 and 8 beyond the noise
# (`tune`); batch_delay 0.001 cut D's median from 10 to 7 ms with E unchanged, 0 made E slower (`tune --steady`).
ANNOUNCER_BEST = Settings(
    "announcer, recommended",
    environment=FAST_ENVIRONMENT,
    speaker={"prefixes_per_line": 500, "max_in_flight": 8, "batch_delay": 0.001},
)


def tune_candidates() -> list[tuple[str, Settings]]:
    """What `python3 -m bench tune` compares: ('floor' | 'announcer', settings)."""
    fast = FAST_ENVIRONMENT
    floor = [
        Settings("ExaBGP defaults (speed 1.0), 500/line", environment=EXABGP_DEFAULTS),
        Settings("DEFAULT_ENVIRONMENT (speed 0.1), 500/line"),
        Settings("speed 0.1 + log WARNING, 500/line", environment=fast),
        Settings("speed 0.1 + log.processes false, 500/line",
                 environment={"exabgp.reactor.speed": "0.1", "exabgp.log.processes": "false"}),
        Settings("speed 0.1 + log.enable false, 500/line",
                 environment={"exabgp.reactor.speed": "0.1", "exabgp.log.enable": "false"}),
        Settings("fast env, 100/line", environment=fast, per_line=100),
        Settings("fast env, 250/line", environment=fast, per_line=250),
        Settings("fast env, 1000/line", environment=fast, per_line=1000),
        Settings("fast env, 2000/line", environment=fast, per_line=2000),
        Settings("fast env, 500/line, 1 line awaiting ack", environment=fast, window=1),
        Settings("fast env, 500/line, 8 lines awaiting ack", environment=fast, window=8),
        Settings("fast env + api.ack false, 500/line", environment={**fast, "exabgp.api.ack": "false"}),
        Settings("fast env, 500/line, families interleaved", environment=fast, interleave=True),
        Settings("speed 0.05 (spins a core when idle) + log WARNING",
                 environment={"exabgp.reactor.speed": "0.05", "exabgp.log.level": "WARNING"}),
    ]  # fmt: skip
    announcer = [
        Settings("shipped defaults (500/line, 8 in flight, DEFAULT_ENVIRONMENT)"),
        Settings("log WARNING", environment=fast),
        Settings("log WARNING, 250/line", environment=fast, speaker={"prefixes_per_line": 250}),
        Settings("log WARNING, 1000/line", environment=fast, speaker={"prefixes_per_line": 1000}),
        Settings("log WARNING, 2000/line", environment=fast, speaker={"prefixes_per_line": 2000}),
        Settings("log WARNING, 1 in flight", environment=fast, speaker={"max_in_flight": 1}),
        Settings("log WARNING, 2 in flight", environment=fast, speaker={"max_in_flight": 2}),
        Settings("log WARNING, 64 in flight", environment=fast, speaker={"max_in_flight": 64}),
        Settings("log WARNING, batch_delay 0", environment=fast, speaker={"batch_delay": 0.0}),
    ]
    return [("floor", settings) for settings in floor] + [("announcer", settings) for settings in announcer]
