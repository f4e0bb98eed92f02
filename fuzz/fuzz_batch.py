"""atheris harness: the ``batch`` target of checks.py (input layout: checks.check_batch).

    python fuzz/fuzz_batch.py [libFuzzer options] [corpus dirs]
"""

from _harness import run

if __name__ == "__main__":
    run("batch")
