"""Every image the container tests run, built on this machine: no registry is reachable.

- Two base images from Debian's packages (``debootstrap`` then ``podman import``): one with
  Python for charnn's image (its ``BASE_IMAGE`` build argument), one with Redis,
  PostgreSQL and Caddy for the stand-ins of the official images the compose file names.
- A wheelhouse for charnn's image (``WHEELS_ONLY=1``): ``pip download`` of
  ``requirements.lock`` through the package index this machine's pip is configured with.
- The stand-ins (``standins/*.Containerfile``): the official images' commands, ports,
  volumes, users and health-check tools, on the services base.

An image is built again only when its recipe changes: each carries the hash of what made
it in a label, so a second run on the same machine reuses it (builds from nothing take
about a minute and a half, mostly debootstrap).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.containers.engine import Podman

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
WHEELHOUSE = ROOT / "wheelhouse"
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
RECIPE_LABEL = "charnn.test.recipe"
TORCH_VERSION = "2.13.0"

# What debootstrap leaves behind that no container needs.
SCRAP = ["var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"]


@dataclass(frozen=True)
class RootfsImage:
    tag: str
    packages: Sequence[str]

    @property
    def recipe(self) -> str:
        text = "\n".join([SUITE, MIRROR, *sorted(self.packages), *SCRAP])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


PYTHON_BASE = RootfsImage(
    "localhost/charnn-test-python:bookworm", ["python3", "python3-venv", "passwd"]
)
SERVICES_BASE = RootfsImage(
    "localhost/charnn-test-services:bookworm",
    ["redis-server", "redis-tools", "postgresql-15", "caddy", "wget", "passwd"],
)
STANDIN_TAGS = {
    "redis": "localhost/charnn-test-redis:7",
    "postgres": "localhost/charnn-test-postgres:16",
    "proxy": "localhost/charnn-test-caddy:2",
}


def build_rootfs_image(podman: Podman, image: RootfsImage) -> None:
    if podman.label(image.tag, RECIPE_LABEL) == image.recipe:
        return
    with tempfile.TemporaryDirectory(prefix="charnn-rootfs-", dir="/var/tmp") as scratch:
        rootfs = Path(scratch) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(image.packages)}",
                SUITE,
                str(rootfs),
                MIRROR,
            ],
            check=True,
            capture_output=True,
        )
        for relative in SCRAP:
            shutil.rmtree(rootfs / relative, ignore_errors=True)
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            podman.run(
                "import",
                "--change",
                f"LABEL {RECIPE_LABEL}={image.recipe}",
                "-",
                image.tag,
                stdin=tar.stdout,
            )
        if tar.returncode != 0:
            raise RuntimeError(f"tar of {rootfs} failed")


def fill_wheelhouse() -> None:
    """Every wheel charnn's image installs; pip skips what the folder already holds.

    Requirements under an environment marker are fetched without it: the marker is about
    the image's Python (Debian's 3.11.2), not the one running this."""
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    conditional = [line.split(";")[0].strip() for line in lock if ";" in line]
    for requirements in (["--requirement", str(ROOT / "requirements.lock")], conditional):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--only-binary=:all:",
                "--dest",
                str(WHEELHOUSE),
                *requirements,
                f"torch=={TORCH_VERSION}",
                "setuptools",
                "wheel",
            ],
            check=True,
            capture_output=True,
        )


def build_standins(podman: Podman) -> None:
    for name, tag in STANDIN_TAGS.items():
        podman.run(
            "build",
            "--quiet",
            "--build-arg",
            f"BASE_IMAGE={SERVICES_BASE.tag}",
            "--file",
            str(STANDINS / f"{name}.Containerfile"),
            "--tag",
            tag,
            str(STANDINS),
        )


def build_all(podman: Podman) -> None:
    """The base images, the stand-ins and the wheelhouse; charnn's own image is left to
    ``docker compose up --build``, as an operator builds it."""
    # debootstrap mostly waits on the mirror: both bases and the wheels at once
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = [
            pool.submit(build_rootfs_image, podman, PYTHON_BASE),
            pool.submit(build_rootfs_image, podman, SERVICES_BASE),
            pool.submit(fill_wheelhouse),
        ]
        for future in done:
            future.result()
    build_standins(podman)
