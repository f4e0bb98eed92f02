"""atheris harness: the ``varint`` target of checks.py (input layout: checks.check_varint).

    python fuzz/fuzz_varint.py [libFuzzer options] [corpus dirs]
"""

from _harness import run

if __name__ == "__main__":
    run("varint")
