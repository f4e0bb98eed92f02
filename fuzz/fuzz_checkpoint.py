"""atheris harness: the ``checkpoint`` target of checks.py (input layout: checks.check_checkpoint).

    python fuzz/fuzz_checkpoint.py [libFuzzer options] [corpus dirs]
"""

from _harness import run

if __name__ == "__main__":
    run("checkpoint")
