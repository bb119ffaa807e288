#!/usr/bin/env bash
# Build gpu_carry/, what the GPU check needs on a device machine that has torch but not this
# project's other packages, nor the data (README "On one GPU": the H100 lacked ofa, qpsolvers,
# OSQP, Ray, alipy and gdown):
#   bash bench/gpu_carry.sh            here, where the package registry and Fashion-MNIST are
#   -> gpu_carry/wheels/               wheels for the device's Python (GPU_PYTHON, default 3.12), from the
#                                      registry with `pip download`: ofa, qpsolvers and OSQP at the versions
#                                      of requirements.txt, and OSQP's own jinja2 and joblib
#   -> gpu_carry/FashionMNIST/raw/     the four .gz files of Fashion-MNIST, from $DIAM_DATA_ROOT or the first of
#                                      ./data and ./shared/datasets that holds them (a data root beside the
#                                      project is named by DIAM_DATA_ROOT, e.g. DIAM_DATA_ROOT=../shared/datasets)
# The folder is ignored by git; the device call carries it (run(..., carry=["gpu_carry"])), under
# the carrying limit of 64 MiB (it is about 32 MiB). bench/gpu_check.sh installs the wheels there
# into gpu_carry/site (pip --target: no system packages touched) for the modules that do not import,
# and reads the data from gpu_carry. Ray (79 MB) is not carried: the check runs in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python || command -v python3 || echo python)}
GPU_PYTHON=${GPU_PYTHON:-3.12}
CARRY=gpu_carry
# The versions requirements.txt pins.
pinned() { sed -n "s/^$1==\([^ ]*\).*/\1/p" requirements.txt; }
PACKAGES=("ofa==$(pinned ofa)" "qpsolvers==$(pinned qpsolvers)" "osqp==$(pinned osqp)" jinja2 joblib)
for spec in "${PACKAGES[@]:0:3}"; do
    if [[ "$spec" == *"==" ]]; then
        echo "error: requirements.txt pins no version for ${spec%==}; gpu_carry.sh reads the versions from it." >&2
        exit 2
    fi
done

DATA_ROOT=${DIAM_DATA_ROOT:-}
if [ -z "$DATA_ROOT" ]; then
    for root in data shared/datasets; do
        if [ -d "$root/FashionMNIST/raw" ]; then DATA_ROOT=$root; break; fi
    done
fi
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
for name in "${FILES[@]}"; do
    if [ -z "$DATA_ROOT" ] || [ ! -f "$DATA_ROOT/FashionMNIST/raw/$name.gz" ]; then
        echo "error: no Fashion-MNIST .gz files found (looked for FashionMNIST/raw/$name.gz under" \
             "${DATA_ROOT:-./data and ./shared/datasets}). Set DIAM_DATA_ROOT to the folder" \
             "that holds FashionMNIST/raw." >&2
        exit 2
    fi
done

BUILD=$(mktemp -d "${TMPDIR:-/tmp}/gpu_carry.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
mkdir -p "$BUILD/wheels" "$BUILD/FashionMNIST/raw"
# Binary wheels for the device's interpreter, whatever this machine's Python is; no dependencies
# (torch, numpy and scipy are the device's own).
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --dest "$BUILD/wheels" "${PACKAGES[@]}"
for name in "${FILES[@]}"; do cp "$DATA_ROOT/FashionMNIST/raw/$name.gz" "$BUILD/FashionMNIST/raw/"; done
rm -rf "$CARRY"
mv "$BUILD" "$CARRY"
trap - EXIT
chmod -R u+rwX,go+rX "$CARRY"
echo "gpu_carry.sh: $(du -sh "$CARRY" | cut -f1) in $CARRY/ (wheels for Python $GPU_PYTHON, Fashion-MNIST from $DATA_ROOT):"
ls -1 "$CARRY/wheels"
echo "carry it with the device call: run(command=\"bash bench/gpu_check.sh\", carry=[\"$CARRY\"], timeout_s=600)"
