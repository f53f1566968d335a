"""The wandbfs benchmark: ``scripts/bench`` (``python -m wandbfs.bench``); see docs/bench.md.

Modules: ``runner`` (options, set-up, the run, clean-up), ``cases`` (R1-R9), ``data`` (the
bench's own registry data, published with the SDK), ``infra`` (emulator, nginx, mounts,
timers), ``netns`` (the simulated WAN link), ``proxy`` (its delaying TCP proxy),
``sdkjobs`` (the SDK side, in child processes) and ``report`` (table and JSON).
"""
