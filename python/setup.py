"""Build hook: compile the Go engine (python/engine) into kpush/_engine.so,
and the C extension kpush._speedups (kpush/_speedups.c, _sendfuture.c).

`pip install ./python` and `python -m build --wheel ./python` run build_py,
which runs `go build -buildmode=c-shared`. The engine module points at the
repository root (replace ../..), so build from a checkout, not an sdist.
Set KPUSH_GO (default "go") to choose the toolchain.

The extension is the asyncio producer's per-record path (packing records,
resolving futures). It is optional: without a C compiler for the CPython
API the package falls back to kpush/_fast.py (slower per record). Set
KPUSH_REQUIRE_SPEEDUPS=1 (CI does) to make a failed build an error. For a
source checkout: `python setup.py build_ext --inplace` from python/.
"""

import os
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildEngine(build_py):
    """build_py that first builds the Go shared library."""

    def run(self):
        super().run()
        go = os.environ.get("KPUSH_GO", "go")
        if shutil.which(go) is None:
            raise SystemExit(f"kpush: the Go toolchain ({go!r}) is needed to build the engine; install Go 1.26+")
        # Absolute: go build runs in engine/, and build_lib may be relative.
        out_dir = os.path.abspath(os.path.join(self.build_lib, "kpush"))
        os.makedirs(out_dir, exist_ok=True)
        out = os.path.join(out_dir, "_engine.so")
        env = dict(os.environ, CGO_ENABLED="1")
        subprocess.check_call(
            [go, "build", "-buildmode=c-shared", "-o", out, "."],
            cwd=os.path.join(HERE, "engine"),
            env=env,
        )
        if not os.path.exists(out):
            raise SystemExit(f"kpush: go build did not write {out}")
        header = os.path.join(out_dir, "_engine.h")
        if os.path.exists(header):
            os.remove(header)


class BinaryDistribution(Distribution):
    """The wheel carries a native library: mark it platform-specific."""

    def has_ext_modules(self):
        return True


speedups = Extension(
    "kpush._speedups",
    ["kpush/_speedups.c", "kpush/_sendfuture.c"],
    depends=["kpush/_speedups.h"],
    optional=os.environ.get("KPUSH_REQUIRE_SPEEDUPS") != "1",
)

# The wheel is CPython-version specific (cpXY-cpXY-<platform>) because of
# the extension; the engine itself is loaded in ABI mode (cffi dlopen).
setup(cmdclass={"build_py": BuildEngine}, distclass=BinaryDistribution, ext_modules=[speedups])
