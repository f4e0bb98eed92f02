"""atheris harness: the ``append_batch`` target of checks.py (input layout: checks.check_append_batch).

    python fuzz/fuzz_append_batch.py [libFuzzer options] [corpus dirs]
"""

from _harness import run

if __name__ == "__main__":
    run("append_batch")
