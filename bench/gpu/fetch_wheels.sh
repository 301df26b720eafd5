#!/usr/bin/env bash
# Download the wheels of bench/gpu/wheels.txt for the GPU machine (CPython 3.12, manylinux
# x86-64) into .gpu/whl, with the device README's recipe. Run from anywhere; needs PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
mkdir -p .gpu/whl
grep -v '^#' bench/gpu/wheels.txt | grep -v '^$' | while read -r spec; do
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .gpu/whl "$spec"
done
ls .gpu/whl | wc -l | xargs echo "wheels in .gpu/whl:"
du -sh .gpu/whl
