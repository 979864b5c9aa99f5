"""Executors: where the scheduler's nodes run. `in-process` runs them one after another in the
build's own process; `processes` runs each in a worker process of its own, several at once, so
a crash, a signal or a limit fails only that node. Nodes exchange data only through the
content-addressed cache, so either gives the same package."""
