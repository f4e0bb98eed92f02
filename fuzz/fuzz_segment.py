"""atheris harness: the ``segment`` target of checks.py (input layout: checks.check_segment).

    python fuzz/fuzz_segment.py [libFuzzer options] [corpus dirs]
"""

from _harness import run

if __name__ == "__main__":
    run("segment")
