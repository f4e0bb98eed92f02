#!/usr/bin/env bash
# Run the atheris fuzz targets one after another; exit non-zero if any of them finds something.
#
#   fuzz/run.sh [-t SECONDS] [-n NATIVE_BUILD] [-c CORPUS_ROOT] [-a ARTIFACT_DIR] [TARGET...]
#
#   -t  seconds per target (default 10)
#   -n  a build made by fuzz/build_native.sh: its clang/ASan/UBSan/libFuzzer-instrumented
#       extension is fuzzed with native coverage (default: whatever `import logstore` finds,
#       fuzzed with Python-level coverage only)
#   -c  corpus root, one directory per target, kept between runs (default: a temporary one);
#       fresh seeds from fuzz/make_corpus.py are added to it on every run
#   -a  where crashing inputs go (default: ./fuzz-artifacts)
#   TARGET  batch append_batch varint index checkpoint segment open (default: all)
#
# A finding is a file <artifact dir>/<target>-crash-<sha1> (or -oom-, -timeout-); replay it with
# `python fuzz/fuzz_<target>.py <file>` (same environment), then add it to tests/fuzz_regressions/
# as <target>-<what>.bin.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python}
seconds=10 native="" corpus="" artifacts="$PWD/fuzz-artifacts"
while getopts "t:n:c:a:" opt; do
    case $opt in
        t) seconds=$OPTARG ;;
        n) native=$(cd "$OPTARG" && pwd) ;;
        c) corpus=$OPTARG ;;
        a) artifacts=$OPTARG ;;
        *) sed -n '2,18p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(batch append_batch varint index checkpoint segment open)

scratch=$(mktemp -d "${TMPDIR:-/tmp}/logstore-fuzz.XXXXXX")
# the targets' scratch logs and index files: on tmpfs when there is one (the open target fsyncs)
if [[ -d /dev/shm && -w /dev/shm ]]; then files=$(mktemp -d /dev/shm/logstore-fuzz.XXXXXX); else files="$scratch/files"; fi
trap 'rm -rf "$scratch" "$files"' EXIT
export LOGSTORE_FUZZ_TMP="$files"
[[ -n "$corpus" ]] || corpus="$scratch/corpus"
mkdir -p "$corpus" "$artifacts"
artifacts=$(cd "$artifacts" && pwd)

if [[ -n "$native" ]]; then
    # shellcheck disable=SC1091  # written by fuzz/build_native.sh
    source "$native/env.sh"
fi

"$PYTHON" "$here/make_corpus.py" "$corpus"

failed=()
for t in "${targets[@]}"; do
    [[ -f "$here/fuzz_$t.py" ]] || { echo "fuzz/run.sh: no target $t" >&2; exit 2; }
    mkdir -p "$corpus/$t"
    echo "=== $t: ${seconds}s" >&2
    # -rss_limit_mb: an ASan build holds ~1 GiB (quarantine, shadow) before it does anything
    if ! "$PYTHON" "$here/fuzz_$t.py" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 \
            -print_final_stats=1 -artifact_prefix="$artifacts/$t-" "$corpus/$t" 2>"$scratch/$t.log"; then
        failed+=("$t")
        grep -v -E '^#[0-9]+' "$scratch/$t.log" | tail -n 60 >&2
    else
        grep -E '^(logstore fuzz target|Done|stat::peak_rss_mb)' "$scratch/$t.log" >&2 || true
        grep -E '^INFO: (Loaded|Using)' "$scratch/$t.log" | head -n 2 >&2 || true
    fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz/run.sh: findings in: ${failed[*]} (inputs under $artifacts)" >&2
    exit 1
fi
echo "fuzz/run.sh: no findings (${targets[*]}; ${seconds}s each)" >&2
