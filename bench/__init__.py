"""The announcer benchmark: speaker floor, announcer, BIRD, steady state, churn and footprint in one table."""
