"""A mount's daemon: lifecycle, wiring, signals, metrics."""
