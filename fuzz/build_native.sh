#!/usr/bin/env bash
# Build logstore's extension for native-coverage fuzzing: clang with -fsanitize=fuzzer-no-link
# (libFuzzer's coverage counters and comparison hooks) plus ASan + UBSan (setup.py's
# LOGSTORE_SANITIZE=1), into OUT_DIR, never into the source tree.
#
#   fuzz/build_native.sh OUT_DIR      # then: fuzz/run.sh -n OUT_DIR ...   or   source OUT_DIR/env.sh
#
# Needs clang, clang++ and clang's compiler-rt (Debian: apt-get install clang). The atheris wheel
# carries its own libFuzzer but no sanitizer runtime; an ASan runtime preloaded next to it would
# take the coverage callbacks (ASan defines them weakly), so, as atheris's documentation
# describes for its asan_with_fuzzer.so, one shared library is linked from clang's ASan runtime
# and clang's libFuzzer (no main), and preloaded. atheris then uses that libFuzzer.
set -euo pipefail
[[ $# -eq 1 ]] || { sed -n '2,12p' "$0" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
PYTHON=${PYTHON:-python}
CLANG=${CLANG:-clang}
CLANGXX=${CLANGXX:-clang++}
arch=$(uname -m)
rt=$("$CLANG" --print-runtime-dir)
for lib in "$rt/libclang_rt.asan-$arch.a" "$rt/libclang_rt.fuzzer_no_main-$arch.a"; do
    [[ -f "$lib" ]] || { echo "build_native: $lib missing (clang's compiler-rt)" >&2; exit 1; }
done

# 1. ASan runtime + libFuzzer in one preloadable library (the preinit object cannot go in a .so)
rm -rf "$out/rt" && mkdir -p "$out/rt"
cp "$rt/libclang_rt.asan-$arch.a" "$out/rt/asan.a"
ar d "$out/rt/asan.a" "$(ar t "$out/rt/asan.a" | grep preinit)"
"$CLANGXX" -shared -o "$out/asan_with_fuzzer.so" \
    -Wl,--whole-archive "$rt/libclang_rt.fuzzer_no_main-$arch.a" "$out/rt/asan.a" -Wl,--no-whole-archive \
    -lpthread -ldl

# 2. the extension, from a copy of the sources (cythonize writes .c files next to the .pyx)
rm -rf "$out/src" "$out/lib" "$out/build" && mkdir -p "$out/src" "$out/lib"
cp "$root/setup.py" "$root/pyproject.toml" "$root/README.md" "$out/src/"
cp -r "$root/src" "$out/src/src"
find "$out/src/src" \( -name '*.so' -o -name '*.pyd' -o -name '*.c' -o -name '*.html' -o -name __pycache__ \) \
    -prune -exec rm -rf {} +
# -fno-wrapv: CPython's CFLAGS carry -fwrapv, which switches off UBSan's signed-overflow check
(cd "$out/src" && CC="$CLANG" LDSHARED="$CLANG -shared" CFLAGS="-fsanitize=fuzzer-no-link -fno-wrapv" \
    LOGSTORE_SANITIZE=1 "$PYTHON" setup.py -q build_ext -j "$(nproc 2>/dev/null || echo 2)" \
    -b "$out/lib" -t "$out/build") >"$out/build.log" 2>&1 || { tail -n 40 "$out/build.log" >&2; exit 1; }
(cd "$root/src" && find logstore \( -name '*.py' -o -name '*.pyi' -o -name py.typed \) \
    -exec cp --parents {} "$out/lib/" \;)
for so in "$out"/lib/logstore/_native/*.so; do
    syms=$(nm -D "$so")  # (not piped into grep -q: pipefail would see nm's SIGPIPE)
    grep -q __sanitizer_cov_8bit_counters_init <<<"$syms" || {
        echo "build_native: $so has no libFuzzer coverage instrumentation" >&2; exit 1; }
done

# 3. the environment a fuzzing run needs
cat >"$out/env.sh" <<EOF
# source me: fuzz logstore's instrumented build from $out
export PYTHONPATH="$out/lib\${PYTHONPATH:+:\$PYTHONPATH}"
export LD_PRELOAD="$out/asan_with_fuzzer.so"
# detect_leaks=0: CPython leaks by design at exit. allocator_may_return_null=1: a huge allocation
# becomes a MemoryError (which the harness reports) instead of an allocator abort.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:allocator_may_return_null=1:quarantine_size_mb=64"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$root/fuzz/ubsan.supp"
EOF
echo "build_native: built into $out (source $out/env.sh, or fuzz/run.sh -n $out)" >&2
