"""The `tao` application: the command line (`tao.cli`) and the demo (`tao.demo`).

It composes the two libraries, `gateway` (serving, logging, rollout) and `distill` (the offline
job); neither of them imports this package.
"""
