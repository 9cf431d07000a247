"""Build hook: compile the Go engine (python/engine) into kpush/_engine.so.

`pip install ./python` and `python -m build --wheel ./python` run build_py,
which runs `go build -buildmode=c-shared`. The engine module points at the
repository root (replace ../..), so build from a checkout, not an sdist.
Set KPUSH_GO (default "go") to choose the toolchain.
"""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:
    from wheel.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    bdist_wheel = None

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


cmdclass = {"build_py": BuildEngine}
if bdist_wheel is not None:

    class Wheel(bdist_wheel):
        """py3-none-<platform>: ABI mode (cffi dlopen) works on every CPython 3."""

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = Wheel

setup(cmdclass=cmdclass, distclass=BinaryDistribution)
