"""The environment fingerprint every results file carries, and the machine's name."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import os
import platform
import re
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("numpy", "matplotlib", "rich", "cuda-bindings", "nvidia-cuda-nvrtc",
            "cupy-cuda13x", "cupy-cuda12x", "torch", "mojo", "mojo-compiler", "max-core", "max-mojo-libs")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def last_level_cache_bytes() -> int | None:
    """Largest CPU cache, from sysfs (None where sysfs does not say)."""
    best = None
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        m = re.fullmatch(r"(\d+)([KMG]?)", f.read_text().strip())
        if m:
            size = int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
            best = max(best or 0, size)
    return best


def blas_info() -> str:
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        # Only name/version/configuration: the dict also holds build-machine paths.
        return " ".join(str(cfg.get(k, "")) for k in ("name", "version")).strip() + (
            f" ({cfg['openblas configuration'].split()[-2]})" if "openblas configuration" in cfg else "")
    except Exception:
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                           text=True, timeout=5)
        if r.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return r.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def slug(text: str) -> str:
    text = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*$", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def machine_name(gpu: str | None = None) -> str:
    """A short, path-safe name for results/<machine>/: the GPU when GPU backends ran
    (e.g. nvidia-h200), else the CPU model and core count (e.g. amd-epyc-2core)."""
    if gpu:
        return slug(gpu)
    s = slug(cpu_model())
    return f"{s}-{os.cpu_count()}core" if s else f"{platform.machine()}-{os.cpu_count()}core"


def fingerprint(extra: dict | None = None) -> dict:
    env = {
        "machine": machine_name(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_simd": sorted(cpu_flags() & {"sse4_2", "avx", "avx2", "fma", "avx512f", "neon", "asimd"}),
        "llc_bytes": last_level_cache_bytes(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_info(),
        "packages": package_versions(),
        "git_commit": git_commit(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        env.update(extra)
    return env
