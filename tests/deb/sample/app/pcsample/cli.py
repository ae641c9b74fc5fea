import sys

from pcsample import report

if __name__ == "__main__":
    print(report())
    sys.exit(0)
