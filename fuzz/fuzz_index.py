"""atheris harness: the ``index`` target of checks.py (input layout: checks.check_index).

    python fuzz/fuzz_index.py [libFuzzer options] [corpus dirs]
"""

from _harness import run

if __name__ == "__main__":
    run("index")
