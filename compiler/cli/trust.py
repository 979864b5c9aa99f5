"""Commands that keep packages and the cache trustworthy: `sign`, `keygen`, `unpack`,
`cache prune` (threat model: docs/security.md)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from compiler.cli.app import cli, console
from compiler.core.errors import ConfigError
from compiler.packaging.write import unpack as unpack_
from compiler.pipeline.cache import Cache, default_cache_dir
from compiler.serving.signing import generate_key, sign_package

__all__ = ["cache", "keygen", "parse_size", "sign", "unpack"]

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5GiB', '1048576' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise ConfigError(f"--max-size {text!r}: give a size like 500M, 2G or 1048576 (bytes)")
    return int(float(m[1]) * _UNITS[m[2]])


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


@cli.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option(
    "--key",
    "key",
    required=True,
    type=click.Path(path_type=Path),
    help="ed25519 private key (PEM; an encrypted one reads $COMPILE_PKG_SIGNING_KEY_PASSWORD)",
)
@click.option("--signer", default="", help="a name shown with the signature (informational)")
def sign(package: Path, key: Path, signer: str) -> None:
    """Sign PACKAGE's core (after checking every file) into its signatures.json."""

    rec = sign_package(package, key, signer)
    console.print(
        f"signed {package} (core {rec.statement.core_sha256[:12]}…) with key {rec.key_id}"
        + (f" ({rec.signer})" if rec.signer else ""),
        highlight=False,
    )


@cli.command()
@click.argument("private_key", type=click.Path(path_type=Path))
@click.option(
    "--public",
    "public_key",
    type=click.Path(path_type=Path),
    help="where the public key goes (default PRIVATE_KEY.pub)",
)
def keygen(private_key: Path, public_key: Path | None) -> None:
    """Write a new ed25519 signing key (mode 0600) and its public key."""

    if private_key.exists():
        raise ConfigError(f"{private_key}: exists; give a new path for the private key")
    public = public_key or private_key.with_name(private_key.name + ".pub")
    kid = generate_key(private_key, public)
    console.print(f"wrote {private_key} and {public} (key {kid})", highlight=False)


@cli.command()
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def unpack(archive: Path, output: Path) -> None:
    """Extract a packed package safely (every member and file checked) into OUTPUT."""

    m = unpack_(archive, output)
    console.print(f"unpacked {m.package.name} {m.package.version} into {output}", highlight=False)


@cli.group()
def cache() -> None:
    """The node cache shared by builds."""


@cache.command()
@click.option("--max-size", required=True, help="keep at most this much, e.g. 2G or 500M")
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    help="default ~/.cache/compile-pkg or $COMPILE_PKG_CACHE",
)
def prune(max_size: str, cache_dir: Path | None) -> None:
    """Remove least recently used entries until the cache fits in --max-size."""

    report = Cache(cache_dir or default_cache_dir()).prune(parse_size(max_size))
    console.print(
        f"removed {report.removed} entries ({_mib(report.removed_bytes)}), kept {report.kept} "
        f"({_mib(report.kept_bytes)}); {report.busy} in use left alone; "
        f"{report.scratch_collected} stale scratch folders collected",
        highlight=False,
    )
