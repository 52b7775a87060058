import pathlib
import sys

# The package from the source tree (python/mxmoe) unless an installed one is asked for; the library
# from MXMOE_LIBRARY, the installed package, or build/ (python/mxmoe/_capi.py).
import os

if not os.environ.get("MXMOE_TEST_INSTALLED"):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
