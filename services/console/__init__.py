"""``wecom-bus console``: the operator console (web) for lag, traffic, dead letters, sends."""
