"""TensorRT for the gpu target (written against the TensorRT 10.x Python API).

Build: `TensorRTBackend.build` makes a prebuilt engine where TensorRT and a GPU are present,
else a deferred build spec. Serve: `TensorRTBackend.runner` loads the prebuilt engine, an
engine built earlier on this host, or starts a background build (see docs/tensorrt.md).

Loader API: `decide_engine` (what to do on this host), `check_compatibility` (why an engine
is refused), `engine_cache_key`, `build_from_spec` / `EngineBuildJob` (deferred builds) and
`SwitchingRunner` (serve a fallback until the engine is ready).
"""

from __future__ import annotations

from targets.tensorrt.backend import TensorRTBackend, default_cache_dir
from targets.tensorrt.cache import EngineCache, engine_cache_key
from targets.tensorrt.compat import (
    CompatibilityRecord,
    EngineDecision,
    check_compatibility,
    decide_engine,
    host_can_build,
)
from targets.tensorrt.engine import EngineBuildJob, build_engine, build_from_spec
from targets.tensorrt.options import (
    BuilderSettings,
    TensorRTOptions,
    builder_settings,
    derive_profiles,
)
from targets.tensorrt.preflight import Finding, preflight
from targets.tensorrt.runner import SwitchingRunner, TensorRTRunner, select_profile
from targets.tensorrt.spec import BuildSpec, read_spec

__all__ = [
    "BuildSpec",
    "BuilderSettings",
    "CompatibilityRecord",
    "EngineBuildJob",
    "EngineCache",
    "EngineDecision",
    "Finding",
    "SwitchingRunner",
    "TensorRTBackend",
    "TensorRTOptions",
    "TensorRTRunner",
    "build_engine",
    "build_from_spec",
    "builder_settings",
    "check_compatibility",
    "decide_engine",
    "default_cache_dir",
    "derive_profiles",
    "engine_cache_key",
    "host_can_build",
    "preflight",
    "read_spec",
    "select_profile",
]
