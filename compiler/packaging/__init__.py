"""Packages on disk: assembling one from a DAG run, writing it atomically, reports, packing,
re-verification and comparison."""
