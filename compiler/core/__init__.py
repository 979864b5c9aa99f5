"""The vocabulary every layer shares: errors, the interface contract, host facts, tolerances and
parity metrics, latency statistics, hashing, the feeds format, runtime settings and records.

Modules here import nothing else of the project. Some (errors, host, tolerance, parity,
latency, hashing, feeds, settings, runtime) use only the standard library and numpy, so the
emulated aarch64 worker and the GPU verification script can import them on a bare host.
"""
