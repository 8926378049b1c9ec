"""Build script: the native extension ``deepresolve_captum._C`` (sources in csrc/).

The CPU part is C++17 with pybind11 and GCC/Clang extensions (vector types, ``__builtin_*``,
pthreads; MSVC cannot build it), threaded with std::thread (not OpenMP: torch's wheel ships its
own libgomp.so.1, which our extension would bind to, and its spinning barriers made the kernels
several times slower on a loaded 2-core machine; see csrc/stats.cpp). It is portable: no
``-march=native`` (the SYRK micro-kernel picks AVX-512 / AVX2 / generic at run time). CUDA
kernels (csrc/cuda/*.cu) are compiled with nvcc and linked in, with the CUDA runtime linked
statically, so ``_C`` never needs libcudart at import time.

The extension is optional: when it does not compile (no compiler, MSVC, missing headers), the
build prints why (pip shows it with -v) and installs the pure-Python package, which computes the
same statistics with numpy/torch (tested against the same references; slower, see
benchmarks/stats.py). ``deepresolve_captum._stats.backend(x)`` says which path a call takes.

Environment switches:
  DEEPRESOLVE_CUDA=auto|1|0     auto (default): build the CUDA kernels if nvcc is found and
                                they compile, else warn and build the CPU part only;
                                1: nvcc must be there and must succeed; 0: never.
  DEEPRESOLVE_CUDA_ARCHS="75;80;86;89;90;100;120"  GPU architectures (SASS), plus PTX for the
                                last one so newer GPUs can JIT it.
  CUDA_HOME / CUDA_PATH         where to find nvcc, headers and libcudart_static (else PATH).
  DEEPRESOLVE_NATIVE_ARCH=1     opt in to -march=native (not portable; off by default).
  DEEPRESOLVE_NO_EXT=1          build nothing native (pure-Python package; numpy/torch fallback).
  DEEPRESOLVE_REQUIRE_EXT=1     a failed build of the extension is an error, not a warning (for CI
                                and packagers, where a silent fallback would hide a broken build).
"""
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from setuptools import setup
from setuptools.errors import BaseError as DistutilsError, CCompilerError, CompileError

HERE = Path(__file__).resolve().parent
CSRC = "csrc"


def _env(name, default=""):
    return os.environ.get(name, default).strip()


def _find_nvcc():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = _env(var)
        if root and (Path(root) / "bin" / "nvcc").exists():
            return Path(root) / "bin" / "nvcc"
    found = shutil.which("nvcc")
    return Path(found) if found else None


def _cuda_lib_dir(nvcc):
    """The toolkit root and the folder with libcudart_static.a. nvcc may be a wrapper script
    (e.g. /usr/local/bin/nvcc exec'ing the real one), so look in a few likely roots."""
    roots = [Path(_env(v)) for v in ("CUDA_HOME", "CUDA_PATH") if _env(v)]
    roots += [nvcc.resolve().parent.parent, Path("/usr/local/cuda")]
    for root in roots:
        for sub in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"):
            d = root / sub
            if (d / "libcudart_static.a").exists() and (root / "include" / "cuda_runtime.h").exists():
                return root, d
    return roots[0], None


def _build_ext_class():
    from pybind11.setup_helpers import Pybind11Extension, build_ext

    class BuildExt(build_ext):
        """Adds -O3/-pthread, and nvcc-compiled objects when CUDA is wanted."""

        def _cuda_objects(self, ext):
            mode = _env("DEEPRESOLVE_CUDA", "auto").lower()
            if mode in ("0", "no", "false", "off"):
                return None
            forced = mode in ("1", "yes", "true", "on")
            nvcc = _find_nvcc()
            if nvcc is None:
                if forced:
                    raise RuntimeError("DEEPRESOLVE_CUDA=1 but nvcc was not found (set CUDA_HOME or PATH)")
                print("deepresolve_captum: nvcc not found, building the CPU kernels only")
                return None
            root, libdir = _cuda_lib_dir(nvcc)
            if libdir is None:
                msg = f"libcudart_static.a not found under {root}"
                if forced:
                    raise RuntimeError(msg)
                warnings.warn(msg + "; building the CPU kernels only")
                return None
            archs = [a.strip() for a in _env("DEEPRESOLVE_CUDA_ARCHS", "75;80;86;89;90;100;120").split(";")
                     if a.strip()]
            gencode = []
            for a in archs:
                gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
            gencode += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
            out_dir = Path(self.build_temp) / "cuda"
            out_dir.mkdir(parents=True, exist_ok=True)
            objects = []
            try:
                for src in sorted((HERE / CSRC / "cuda").glob("*.cu")):
                    obj = out_dir / (src.stem + ".o")
                    cmd = [str(nvcc), "-c", str(src), "-o", str(obj), "-O3", "-std=c++17",
                           "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
                           f"-I{HERE / CSRC}", *gencode]
                    print("deepresolve_captum:", " ".join(cmd))
                    subprocess.run(cmd, check=True)
                    objects.append(str(obj))
            except (subprocess.CalledProcessError, OSError) as e:
                if forced:
                    raise
                warnings.warn(f"nvcc failed ({e}); building the CPU kernels only")
                return None
            return objects, root, libdir

        def copy_file(self, infile, outfile, *args, **kwargs):
            """Replace an in-place .so atomically (new inode): copying over it would truncate a
            library that running processes (tests next door, a benchmark) have mapped."""
            if str(outfile).endswith((".so", ".pyd")) and not getattr(self, "dry_run", False):
                tmp = f"{outfile}.tmp{os.getpid()}"
                shutil.copyfile(infile, tmp)
                shutil.copymode(infile, tmp)
                os.replace(tmp, outfile)
                return outfile, True
            return super().copy_file(infile, outfile, *args, **kwargs)

        def build_extensions(self):
            # Rebuild every time: setuptools only compares source times, and a switch of
            # DEEPRESOLVE_CUDA / DEEPRESOLVE_NATIVE_ARCH changes flags, not sources (3 small files).
            self.force = True
            native = _env("DEEPRESOLVE_NATIVE_ARCH") == "1"
            unix = self.compiler.compiler_type == "unix"
            for ext in self.extensions:
                if unix:
                    ext.extra_compile_args = list(ext.extra_compile_args or []) + ["-O3", "-pthread"]
                    ext.extra_link_args = list(ext.extra_link_args or []) + ["-pthread"]
                    if native:
                        ext.extra_compile_args.append("-march=native")
                cuda = self._cuda_objects(ext)
                if cuda:
                    objects, root, libdir = cuda
                    ext.extra_objects = list(ext.extra_objects or []) + objects
                    ext.define_macros = list(ext.define_macros or []) + [("DR_WITH_CUDA", "1")]
                    ext.include_dirs = list(ext.include_dirs or []) + [str(root / "include")]
                    ext.library_dirs = list(ext.library_dirs or []) + [str(libdir)]
                    ext.libraries = list(ext.libraries or []) + ["cudart_static", "dl", "rt", "pthread"]
                    if unix and sys.platform.startswith("linux"):  # keep cudart's symbols private
                        ext.extra_link_args = list(ext.extra_link_args or []) + [
                            "-Wl,--exclude-libs,libcudart_static.a"]
            super().build_extensions()

        def run(self):
            # setuptools clears self.inplace while it builds (into build_lib) and copies the
            # result to the source tree after: remember where an earlier _C would be imported
            self._to_source = bool(self.inplace or getattr(self, "editable_mode", False))
            super().run()

        def _stale_builds(self, ext):
            """Where an earlier build of ``ext`` would still be imported from: build_lib, and
            the source tree for an in-place or editable build."""
            paths = [Path(self.get_ext_fullpath(ext.name))]
            if getattr(self, "_to_source", False):
                package, _, _ = ext.name.rpartition(".")
                build_py = self.get_finalized_command("build_py")
                name = Path(self.get_ext_filename(self.get_ext_fullname(ext.name))).name
                # relative to this project, whatever the current folder is (never outside it)
                source = (HERE / build_py.get_package_dir(package) / name).resolve()
                if HERE in source.parents:
                    paths.append(source)
            return paths

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except (CCompilerError, CompileError, DistutilsError) as e:  # what setuptools filters
                if ext.optional:  # setuptools then skips it (and only warns); say what it means
                    # an _C of an earlier build where this one would go (an editable install's
                    # source tree) would still be imported: old code under a "fallback" message
                    for stale in self._stale_builds(ext):
                        try:
                            stale.unlink(missing_ok=True)
                        except OSError as why:
                            print(f"deepresolve_captum: WARNING: could not remove {stale}, an "
                                  f"earlier build that would be imported instead ({why})",
                                  file=sys.stderr)
                    print(f"\ndeepresolve_captum: WARNING: the native extension {ext.name} could not "
                          f"be built ({e}).\nInstalling without it: the statistics (IL, class "
                          "similarity) use the numpy/torch fallback, equal up to rounding but "
                          "slower.\nThe extension needs GCC or Clang with C++17 (MSVC is not "
                          "supported); set DEEPRESOLVE_REQUIRE_EXT=1 to make this an error, or "
                          "DEEPRESOLVE_NO_EXT=1 to skip the attempt.\n", file=sys.stderr)
                raise

    ext = Pybind11Extension(
        "deepresolve_captum._C",
        sorted(str(Path(CSRC) / f) for f in ("module.cpp", "stats.cpp", "microkernel.cpp")),
        include_dirs=[CSRC],
        cxx_std=17,
        # a failed compile installs the pure-Python package (see build_extension above)
        optional=_env("DEEPRESOLVE_REQUIRE_EXT") != "1",
    )
    return ext, BuildExt


if _env("DEEPRESOLVE_NO_EXT") == "1":
    setup()
else:
    try:
        _ext, _build = _build_ext_class()
    except ImportError:  # pybind11 missing: only when building outside the PEP 517 isolated env
        print("deepresolve_captum: pybind11 not installed, building without the native extension",
              file=sys.stderr)
        setup()
    else:
        setup(ext_modules=[_ext], cmdclass={"build_ext": _build})
