"""Ships the native CPU kernels' sources in the wheel, as fastgen/native_src/{CMakeLists.txt,kernels/},
where fastgen.ops.native builds them once on first use. An editable install (`pip install -e .`) builds
from the checkout's own kernels/ and CMakeLists.txt instead. Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithKernels(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "fastgen" / "native_src"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ROOT / "kernels", target / "kernels")
        shutil.copy2(ROOT / "CMakeLists.txt", target / "CMakeLists.txt")


if __name__ == "__main__":  # setuptools' build backend runs this file as __main__
    setup(cmdclass={"build_py": BuildPyWithKernels})
