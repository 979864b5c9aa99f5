"""Serving: read a package's manifest, rank its artifacts for this host, load the best one.

Imports the vocabulary (compiler.core) and the targets' runtime modules only: a serving
process loads no pass and no build-only backend code.
"""
