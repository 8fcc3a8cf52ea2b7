"""The `tao` application: the command line (`tao.cli`) and the demo (`tao.demo`).

It composes the two libraries, `gateway` (serving, logging, rollout) and `distill` (the offline
job). Neither library depends on it: `gateway/__main__.py` only hands `python -m gateway`, an alias
the CLI contract keeps, to `tao.cli.main`.
"""
