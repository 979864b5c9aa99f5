"""Measuring one artifact on a host: parity against the reference outputs, latency next to the
reference model, and runs under aarch64 emulation."""
