#!/usr/bin/env bash
# `pip install .` as a user runs it (scikit-build-core over the CMake project), into a temporary
# target folder, then the Python tests against the installed package from another directory.
# CI builds the wheel with the CPU backend (MXMOE_CUDA=OFF) to stay within its time; scripts/gpu-check
# torch builds and tests the CUDA wheel on the device.
set -euo pipefail
src="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip install -q --no-build-isolation --no-deps --target "$work/site" \
  -C build-dir="$work/build" -C cmake.define.MXMOE_CUDA=OFF "$src"
test -f "$work/site/mxmoe/libmxmoe_c.so" || { echo "libmxmoe_c.so missing from the installed package"; exit 1; }
"$work/site/bin/mxmoe" --help >/dev/null
cd "$work"
PYTHONPATH="$work/site" MXMOE_TEST_INSTALLED=1 python3 -m pytest -q -p no:cacheprovider "$src/tests/python"
