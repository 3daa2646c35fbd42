#!/usr/bin/env python3
"""Set up and run kinswarm with nothing but Python >= 3.11.

    python3 scripts/dev.py test     # create .venv if needed, install, ruff, mypy, pytest
    python3 scripts/dev.py run ...  # create .venv if needed, install, run `kinswarm run ...`
    python3 scripts/dev.py bench    # the benchmarks under bench/

The virtual environment is rebuilt when pyproject.toml changes (a hash stamp in .venv), so a
fresh clone and an old checkout both end up with exactly what the project declares.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".kinswarm-installed"


def python_in_venv() -> Path:
    return BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_environment() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this check exists for older Pythons
        sys.exit(f"kinswarm needs Python >= 3.11; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted and python_in_venv().exists():
        return
    if not python_in_venv().exists():
        print("creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing kinswarm and its test tools into .venv", flush=True)
    pip = [str(python_in_venv()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True, cwd=ROOT)
    STAMP.write_text(wanted)


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(result.returncode)


def tool(name: str) -> str:
    return str(BIN / (f"{name}.exe" if os.name == "nt" else name))


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in {"test", "run", "bench", "setup"}:
        sys.exit(__doc__)
    command, rest = argv[0], argv[1:]
    ensure_environment()
    if command == "test":
        run(tool("ruff"), "check", ".")
        run(tool("ruff"), "format", "--check", ".")
        run(tool("mypy"))
        run(tool("pytest"), "-q", *rest)
    elif command == "run":
        # Become the node (on POSIX), so Ctrl-C and SIGTERM reach it directly.
        if os.name == "posix":
            os.execv(tool("kinswarm"), [tool("kinswarm"), "run", *rest])
        run(tool("kinswarm"), "run", *rest)
    elif command == "bench":
        for script in sorted((ROOT / "bench").glob("bench_*.py")):
            run(str(python_in_venv()), str(script), *rest)


if __name__ == "__main__":
    main(sys.argv[1:])
