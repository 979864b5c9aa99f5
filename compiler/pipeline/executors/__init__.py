"""Executors: where the scheduler's nodes run. `in-process` runs them one after another in the
build's own process; `processes` runs each in a worker process of its own, several at once, so
a crash, a signal or a limit fails only that node; `ray` runs each as a task on a Ray cluster,
on a machine that offers what the node needs. Nodes exchange data only through the
content-addressed cache, so each gives the same package."""
