"""memtrim for `pip install`: the CLI and libmemtrim.so (bin/ and lib/ beside this file).

`memtrim` (the console script) and `python -m memtrim` both run the packaged program, which
preloads the packaged library: it looks for it in ../lib from its own directory."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "bin", "memtrim")
LIB = os.path.join(HERE, "lib", "libmemtrim.so")


def main():
    os.execv(BIN, [BIN] + sys.argv[1:])
