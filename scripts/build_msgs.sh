#!/usr/bin/env bash
# Build the selavpr_msgs interface package (msg/) and install it into the active virtual
# environment, so `from selavpr_msgs.msg import PlaceRecognition` works with nothing sourced.
# On a robot with ROS 2 from apt use colcon instead (see README).
set -euo pipefail
: "${VIRTUAL_ENV:?activate the virtual environment first (. .venv/bin/activate)}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$repo/build/selavpr_msgs}"   # BUILD_DIR, INSTALL_PREFIX: scripts/gpu_bundle.sh
prefix="${INSTALL_PREFIX:-$VIRTUAL_ENV}"
mkdir -p "$build"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV"   # rosidl finds its type supports through the ament index
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$repo/msg" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_PREFIX_PATH="$VIRTUAL_ENV" \
  -DPython3_EXECUTABLE="$VIRTUAL_ENV/bin/python" >"$build.cmake.log" 2>&1 || { cat "$build.cmake.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" >/dev/null
cmake --install "$build" >/dev/null
echo "selavpr_msgs installed into $prefix"
