"""atheris harness: the ``open`` target of checks.py (input layout: checks.check_open).

    python fuzz/fuzz_open.py [libFuzzer options] [corpus dirs]
"""

from _harness import run

if __name__ == "__main__":
    run("open")
