"""Backends, one per folder: how to compile an artifact (build side) and one small runtime module
that loads and runs it. The build-side registry is targets/registry.py."""
