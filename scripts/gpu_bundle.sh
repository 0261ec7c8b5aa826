#!/usr/bin/env bash
# What the GPU machine needs to run localizer_node (issue 17, "GPU, through ROS"), built here.
#
# That machine has Python 3.12 with torch, OpenCV and safetensors, no package registry and
# perhaps no compiler; what it lacks travels with the working tree (64 MiB at most per call).
# This writes OUT (default .gpu_bundle, git-ignored):
#   wheels/    cp312 wheels of the ROS 2 runtime (rclpy, the message packages) and faiss-cpu,
#              not those the machine has (numpy, pyyaml, setuptools, packaging, tqdm);
#   msgs/      selavpr_msgs built here for Python 3.12 (generated code and its libraries), so
#              nothing is compiled there;
#   install.sh run there: a venv that sees the machine's torch, the wheels, this package, and
#              an env.sh that puts msgs/ on the paths.
#
#   PYTHON312=/path/to/python3.12 scripts/gpu_bundle.sh [OUT]
#
# Then, through the device tool, with carry [".gpu_bundle"]:
#   .gpu_bundle/install.sh && . .gpu_bundle/env.sh && python bench/run.py --device cuda \
#       --sections node
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(realpath -m "${1:-$repo/.gpu_bundle}")"
py="${PYTHON312:-python3.12}"
"$py" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null \
  || { echo "gpu_bundle: needs Python 3.12 (PYTHON312=...): '$py' is not" >&2; exit 1; }

rm -rf "$out" && mkdir -p "$out/wheels"
echo "gpu_bundle: a Python 3.12 build environment with the ROS 2 wheels"
"$py" -m venv "$out/build-venv"
numpy_pin="$(grep -E '^numpy==' "$repo/requirements-core.txt" | cut -d' ' -f1)"
"$out/build-venv/bin/python" -m pip install --quiet -r "$repo/requirements-ros.txt" "$numpy_pin"

echo "gpu_bundle: selavpr_msgs for Python 3.12"
(
  export VIRTUAL_ENV="$out/build-venv" PATH="$out/build-venv/bin:$PATH"
  INSTALL_PREFIX="$out/msgs" BUILD_DIR="$out/build-msgs" "$repo/scripts/build_msgs.sh"
)

echo "gpu_bundle: runtime wheels (cp312, manylinux)"
runtime="$out/runtime.txt"
# the ROS runtime: requirements-ros.txt up to its build tooling; of the core libraries only
# faiss is missing there (torch, OpenCV, safetensors, tqdm, pyyaml and numba are installed)
sed '/^# Build tooling/,$d' "$repo/requirements-ros.txt" | grep -E '^[a-z]' > "$runtime"
grep -E '^faiss-cpu==' "$repo/requirements-core.txt" | cut -d' ' -f1 >> "$runtime"
# empy (needed by rosidl-adapter's metadata) exists only as a source archive: wheel it here
empy="$("$out/build-venv/bin/python" -m pip show empy | sed -n 's/^Version: //p')"
"$out/build-venv/bin/python" -m pip wheel --quiet --no-deps -w "$out/wheels" "empy==$empy"
"$out/build-venv/bin/python" -m pip download --quiet --only-binary=:all: --python-version 3.12 \
  --find-links "$out/wheels" \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d "$out/wheels" -r "$runtime"
# what the GPU machine's Python has already (its package list): the bundle must stay under
# 64 MiB together with the working tree
for name in numpy pyyaml setuptools packaging; do rm -f "$out/wheels/$name"-*.whl; done

cat > "$out/install.sh" <<'EOS'
#!/usr/bin/env bash
# On the GPU machine: a venv that sees its torch/OpenCV, plus the carried wheels and messages.
set -euo pipefail
bundle="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$bundle")"
python3 -m venv --system-site-packages "$bundle/venv"
"$bundle/venv/bin/python" -m pip install --quiet --no-index --find-links "$bundle/wheels" \
  -r "$bundle/runtime.txt"
# this package from the working tree (PYTHONPATH, env.sh) and its executables as small scripts:
# an editable install would need setuptools, which may not be there
for entry in selavpr=selavpr_ros.cli localizer_node=selavpr_ros.nodes.localizer_node \
    map_builder_node=selavpr_ros.nodes.map_builder_node \
    loop_closure_node=selavpr_ros.nodes.loop_closure_node; do
  printf '#!%s\nfrom %s import main\nraise SystemExit(main())\n' \
    "$bundle/venv/bin/python" "${entry#*=}" > "$bundle/venv/bin/${entry%%=*}"
  chmod +x "$bundle/venv/bin/${entry%%=*}"
done
. "$bundle/env.sh"
python -c "import rclpy, faiss, torch; from selavpr_msgs.msg import PlaceRecognition; \
print('gpu_bundle: ROS', rclpy.__name__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
EOS
cat > "$out/env.sh" <<'EOS'
# Source on the GPU machine after install.sh: the bundle's venv and messages on the paths.
bundle="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$bundle/venv/bin/activate"
export AMENT_PREFIX_PATH="$bundle/msgs:$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export LD_LIBRARY_PATH="$bundle/msgs/lib:$VIRTUAL_ENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONPATH="$bundle/msgs/lib/python3.12/site-packages:$(dirname "$bundle")${PYTHONPATH:+:$PYTHONPATH}"
EOS
chmod +x "$out/install.sh"
rm -rf "$out/build-venv" "$out/build-msgs" "$out/build-msgs.cmake.log"
echo "gpu_bundle: $(du -sh "$out" | cut -f1) in $out (the device tool carries at most 64 MiB)"
