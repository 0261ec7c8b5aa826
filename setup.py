"""Build script for the selavpr_ros ament_python package (also a plain pip-installable package).

The version lives in package.xml only; this file reads it from there.
"""

import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "selavpr_ros"
HERE = Path(__file__).resolve().parent
VERSION = re.search(r"<version>([^<]+)</version>", (HERE / "package.xml").read_text()).group(1)

setup(
    name=PACKAGE,
    version=VERSION,
    packages=find_packages(exclude=["test", "test.*", "bench", "bench.*"]),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="selavpr_ros maintainers",
    maintainer_email="maintainers@selavpr-ros.dev",
    description="SelaVPR visual place recognition and localization for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "selavpr = selavpr_ros.cli:main",
            "localizer_node = selavpr_ros.nodes.localizer_node:main",
            "map_builder_node = selavpr_ros.nodes.map_builder_node:main",
            "loop_closure_node = selavpr_ros.nodes.loop_closure_node:main",
        ],
    },
)
