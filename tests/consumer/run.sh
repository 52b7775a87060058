#!/usr/bin/env bash
# Builds and runs tests/consumer against mxmoe, one way: run.sh package BUILD_DIR | run.sh subdirectory
#   package:      installs BUILD_DIR (a configured, built mxmoe) into a temporary prefix, then find_package
#   subdirectory: add_subdirectory of the source tree (CPU backend, to stay quick), and checks that
#                 mxmoe's tests and tools are not part of a consumer's build
set -euo pipefail
mode=$1
src="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ "$mode" = package ]; then
  cmake --install "$2" --prefix "$work/prefix" >/dev/null
  test -f "$work/prefix/lib/cmake/mxmoe/mxmoeConfig.cmake" || { echo "no mxmoeConfig.cmake installed"; exit 1; }
  test ! -e "$work/prefix/include/kernels" || { echo "private src/ headers were installed"; exit 1; }
  cmake -S "$src/tests/consumer" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
else
  cmake -S "$src/tests/consumer" -B "$work/build" -G Ninja -DMXMOE_CONSUMER_MODE=subdirectory \
    -DMXMOE_SOURCE_DIR="$src" -DMXMOE_CUDA=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
  if cmake --build "$work/build" --target help | grep -E "mxmoe_tests|mxmoe_cli"; then
    echo "a consumer's build contains mxmoe's tests or tools"; exit 1
  fi
fi
cmake --build "$work/build" -j"$(nproc)" >/dev/null
"$work/build/consumer"
