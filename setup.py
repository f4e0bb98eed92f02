"""Build the native units. Knobs (environment):

  LOGSTORE_DEBUG=1     -O0 -g, Cython line tracing and annotated HTML next to each .pyx
  LOGSTORE_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer (run with LD_PRELOAD=libasan)
  LOGSTORE_UNITS=a,b   build only these units (development: rebuild one unit while editing another)
"""

import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("LOGSTORE_DEBUG") == "1"
SANITIZE = os.environ.get("LOGSTORE_SANITIZE") == "1"
UNITS = ["codec", "index", "segment", "core", "compact", "producer"]
if os.environ.get("LOGSTORE_UNITS"):
    UNITS = [u for u in UNITS if u in os.environ["LOGSTORE_UNITS"].split(",")]

compile_args, link_args, macros = [], [], [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if sys.platform != "win32":
    compile_args += ["-O0", "-g"] if DEBUG else ["-O3"]
    compile_args += ["-Wno-unused-function", "-Wno-unreachable-code"]
    if SANITIZE:
        flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        compile_args += flags + ["-fno-wrapv"]  # CPython passes -fwrapv, which hides UBSan overflow checks
        link_args += flags
if DEBUG:
    macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]

extensions = [
    Extension(
        f"logstore._native.{unit}",
        [f"src/logstore/_native/{unit}.pyx"],
        include_dirs=["src/logstore/_native", numpy.get_include()],
        define_macros=macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for unit in UNITS
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["src"],
        annotate=DEBUG,
        compiler_directives={
            "language_level": "3",
            "linetrace": DEBUG,
            "embedsignature": True,
            # objects holding raw pointers (mmaps, buffers, fds) must not be pickled or copied
            "auto_pickle": False,
        },
    ),
)
