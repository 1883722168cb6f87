"""A PEP 517 build backend with no dependencies, for the limitd package.

setuptools needs the ``wheel`` package to build wheels (before setuptools
70.1) and pip's build isolation downloads both, which fails where no Python
package index is reachable. A pure-Python package needs none of that: a
wheel is a zip file with a ``.dist-info`` folder. So ``pip install
./client/python`` works offline, with or without build isolation, and
``pip install -e`` too (PEP 660, through a ``.pth`` file).

Metadata comes from the ``[project]`` table of pyproject.toml; only plain
``key = "string"`` entries are read, which is all this project uses
(``tomllib`` is 3.11+ and this backend runs on the installing Python).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile
from typing import Any, Dict, List, Optional, Tuple

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGE = "limitd"
_TAG = "py3-none-any"


def _project() -> Dict[str, str]:
    with open(os.path.join(_ROOT, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    fields: Dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
            continue
        m = re.match(r'^([A-Za-z][\w-]*)\s*=\s*"([^"]*)"\s*$', line)
        if section == "[project]" and m:
            fields[m.group(1)] = m.group(2)
    for key in ("name", "version"):
        if key not in fields:
            raise RuntimeError(f"pyproject.toml: [project] has no {key}")
    return fields


def _dist_name(p: Dict[str, str]) -> str:
    return f"{re.sub(r'[-_.]+', '_', p['name'])}-{p['version']}"


def _metadata(p: Dict[str, str]) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {p['name']}",
        f"Version: {p['version']}",
    ]
    if "description" in p:
        lines.append(f"Summary: {p['description']}")
    if "requires-python" in p:
        lines.append(f"Requires-Python: {p['requires-python']}")
    lines += ["Classifier: Programming Language :: Python :: 3", "Classifier: Typing :: Typed"]
    body = ""
    readme = p.get("readme")
    if readme:
        lines.append("Description-Content-Type: text/markdown")
        with open(os.path.join(_ROOT, readme), encoding="utf-8") as f:
            body = f.read()
    return "\n".join(lines) + "\n\n" + body


def _wheel_file() -> str:
    return f"Wheel-Version: 1.0\nGenerator: limitd_build\nRoot-Is-Purelib: true\nTag: {_TAG}\n"


def _package_files() -> List[Tuple[str, str]]:
    """(archive name, path on disk) of every file of the package."""
    out = []
    pkg = os.path.join(_ROOT, _PACKAGE)
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith((".py", ".typed")):
                full = os.path.join(dirpath, name)
                out.append((os.path.relpath(full, _ROOT).replace(os.sep, "/"), full))
    return out


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _write_wheel(wheel_directory: str, files: List[Tuple[str, bytes]]) -> str:
    p = _project()
    dist = _dist_name(p)
    info = f"{dist}.dist-info"
    files = files + [
        (f"{info}/METADATA", _metadata(p).encode("utf-8")),
        (f"{info}/WHEEL", _wheel_file().encode("utf-8")),
    ]
    record = [_record_line(n, d) for n, d in files] + [f"{info}/RECORD,,"]
    files.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode("utf-8")))
    filename = f"{dist}-{_TAG}.whl"
    # A fixed timestamp keeps the wheel reproducible.
    stamp = (2020, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files:
            zi = zipfile.ZipInfo(name, stamp)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return filename


# -- PEP 517 / 660 hooks ------------------------------------------------------


def get_requires_for_build_wheel(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Optional[Dict[str, Any]] = None) -> str:
    p = _project()
    info = f"{_dist_name(p)}.dist-info"
    os.makedirs(os.path.join(metadata_directory, info), exist_ok=True)
    with open(os.path.join(metadata_directory, info, "METADATA"), "w", encoding="utf-8") as f:
        f.write(_metadata(p))
    with open(os.path.join(metadata_directory, info, "WHEEL"), "w", encoding="utf-8") as f:
        f.write(_wheel_file())
    return info


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(
    wheel_directory: str, config_settings: Optional[Dict[str, Any]] = None, metadata_directory: Optional[str] = None
) -> str:
    files = []
    for name, path in _package_files():
        with open(path, "rb") as f:
            files.append((name, f.read()))
    return _write_wheel(wheel_directory, files)


def build_editable(
    wheel_directory: str, config_settings: Optional[Dict[str, Any]] = None, metadata_directory: Optional[str] = None
) -> str:
    # A .pth line puts the source folder on sys.path: edits take effect at once.
    return _write_wheel(wheel_directory, [(f"_{_PACKAGE}_editable.pth", (_ROOT + "\n").encode("utf-8"))])


def build_sdist(sdist_directory: str, config_settings: Optional[Dict[str, Any]] = None) -> str:
    p = _project()
    dist = _dist_name(p)
    filename = f"{dist}.tar.gz"
    names = ["pyproject.toml", "README.md", "_build/limitd_build.py"] + [n for n, _ in _package_files()]
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            with open(os.path.join(_ROOT, name), "rb") as f:
                data = f.read()
            ti = tarfile.TarInfo(f"{dist}/{name}")
            ti.size = len(data)
            ti.mtime = int(time.time())
            ti.mode = 0o644
            tar.addfile(ti, io.BytesIO(data))
        pkg_info = _metadata(p).encode("utf-8")
        ti = tarfile.TarInfo(f"{dist}/PKG-INFO")
        ti.size = len(pkg_info)
        ti.mtime = int(time.time())
        ti.mode = 0o644
        tar.addfile(ti, io.BytesIO(pkg_info))
    return filename
