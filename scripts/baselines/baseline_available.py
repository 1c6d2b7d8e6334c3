"""Whether the baselines named on the command line import in this Python.

    python3 scripts/baselines/baseline_available.py liger [trl]

Exit 0 when every one imports, 1 when one does not (its name on stderr), 2 for
an unknown name. The tests of the bench drivers ask this instead of naming
the baselines' packages themselves.
"""
import importlib
import sys

PACKAGES = {"liger": "liger_kernel", "trl": "trl"}


def main(names):
    unknown = [n for n in names if n not in PACKAGES]
    if not names or unknown:
        print(f"usage: baseline_available.py {{{','.join(PACKAGES)}}} ...; unknown: {' '.join(unknown)}",
              file=sys.stderr)
        return 2
    for name in names:
        try:
            importlib.import_module(PACKAGES[name])
        except Exception:  # absent, or present but unusable here
            print(f"{name}: not importable", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
