"""Model packages as a model source: the real ``hearline[whisper]`` wheels, and stand-in distributions for faults.

Stand-ins are real distributions (a ``.dist-info`` with a RECORD on ``sys.path``), found by the same
``importlib.metadata`` lookup as the installed wheels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hearline.config import Settings
from hearline.models import packages, resolve
from hearline.models.catalog import load_catalog
from hearline.models.download import ModelUnavailable, install_package
from hearline.models.resolve import POCKETSPHINX, default_spec, load_engine, resolve_model


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_distribution(site: Path, name: str, files: dict[str, bytes]) -> None:
    """A minimal installed distribution: METADATA, RECORD and the files it lists."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    rows = []
    for rel, data in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append(f"{rel},,{len(data)}")
    rows += [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(rows) + "\n")


PART1, PART2, CONFIG = b"first half of the weights " * 1000, b"second half" * 777, b'{"x": 1}'


@pytest.fixture()
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> packages.ModelPackage:
    site = tmp_path / "site"
    make_distribution(site, "hl-test-model-1", {"hl_test_model_1/data/model.bin.part1": PART1})
    make_distribution(
        site, "hl-test-model-2", {"hl_test_model_2/data/model.bin.part2": PART2, "hl_test_model_2/data/c.json": CONFIG}
    )
    monkeypatch.syspath_prepend(str(site))
    return packages.package_from_dict(
        {
            "extra": "test",
            "files": {
                "model.bin": {
                    "sha256": sha256(PART1 + PART2),
                    "parts": [
                        {"distribution": "hl-test-model-1", "path": "hl_test_model_1/data/model.bin.part1",
                         "sha256": sha256(PART1)},
                        {"distribution": "hl-test-model-2", "path": "hl_test_model_2/data/model.bin.part2",
                         "sha256": sha256(PART2)},
                    ],
                },
                "config.json": {"distribution": "hl-test-model-2", "path": "hl_test_model_2/data/c.json",
                                "sha256": sha256(CONFIG)},
            },
        }
    )  # fmt: skip


def install_stand_in(package: packages.ModelPackage, tmp_path: Path) -> Path:
    """``package`` installed as model ``m`` through the models' installer (lock, staging, rename)."""
    entry = replace(load_catalog()["base"], name="m", dir="m", package=package)
    return install_package(entry, Settings.load(model_dir=tmp_path / "models", offline=True))


def staging(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "models" / ".hearline-partial").iterdir())


def test_split_parts_are_joined_in_order_and_verified(stand_in: packages.ModelPackage, tmp_path: Path) -> None:
    assert packages.available(stand_in)
    target = install_stand_in(stand_in, tmp_path)
    assert target == tmp_path / "models" / "m"
    assert (target / "model.bin").read_bytes() == PART1 + PART2
    assert (target / "config.json").read_bytes() == CONFIG
    assert staging(tmp_path) == []  # nothing left in staging


def test_a_mismatching_part_is_refused_naming_distribution_and_file(
    stand_in: packages.ModelPackage, tmp_path: Path
) -> None:
    part = next(tmp_path.glob("site/hl_test_model_2/data/model.bin.part2"))
    part.write_bytes(PART2[:-1] + b"X")  # same size, one byte changed
    with pytest.raises(ModelUnavailable) as info:
        install_stand_in(stand_in, tmp_path)
    assert isinstance(info.value.__cause__, packages.PackageError)
    message = str(info.value)
    assert "hl-test-model-2" in message and "hl_test_model_2/data/model.bin.part2" in message
    assert not (tmp_path / "models" / "m").exists()  # nothing half-written is ever used
    assert staging(tmp_path) == []


def test_an_incomplete_package_is_refused_naming_what_is_missing(
    stand_in: packages.ModelPackage, tmp_path: Path
) -> None:
    next(tmp_path.glob("site/hl_test_model_1/data/model.bin.part1")).unlink()
    assert not packages.available(stand_in)
    assert packages.problems(stand_in) == ["distribution 'hl-test-model-1' lacks hl_test_model_1/data/model.bin.part1"]
    missing_dist = packages.package_from_dict(
        {"extra": "x", "files": {"a": {"distribution": "hl-no-such-dist", "path": "a", "sha256": "0" * 64}}}
    )
    assert packages.problems(missing_dist) == ["distribution 'hl-no-such-dist' is not installed"]
    (tmp_path / "m").mkdir()
    with pytest.raises(packages.PackageError) as info:
        packages.assemble(stand_in, tmp_path / "m", "m")
    assert "'hl-test-model-1' lacks hl_test_model_1/data/model.bin.part1" in str(info.value)


def test_install_package_maps_a_bad_package_to_model_unavailable(
    stand_in: packages.ModelPackage, tmp_path: Path
) -> None:
    next(tmp_path.glob("site/hl_test_model_2/data/c.json")).write_bytes(b'{"x": 2}')
    entry = load_catalog()["base"]
    broken = replace(entry, name="broken", dir="broken", package=stand_in)
    settings = Settings.load(model_dir=tmp_path / "models", offline=True)
    with pytest.raises(ModelUnavailable) as info:
        install_package(broken, settings)
    assert "hl_test_model_2/data/c.json in distribution 'hl-test-model-2'" in str(info.value)
    assert not (tmp_path / "models" / "broken").exists()


def test_the_whisper_packages_install_base_and_tiny_en_once_offline(tmp_path: Path) -> None:
    settings = Settings.load(model_dir=tmp_path / "models", offline=True, threads=1, max_concurrency_per_model=1)
    catalog = load_catalog()
    for name in ("base", "tiny.en"):
        spec = resolve_model(name, settings)
        assert spec.options["installed"] and spec.options["packaged"], name
    engine = load_engine(resolve_model("base", settings), settings)
    engine.close()
    folder = tmp_path / "models" / "faster-whisper-base"
    pinned = {f.name: f.sha256 for f in catalog["base"].package.files}  # type: ignore[union-attr]
    assert {p.name: sha256(p.read_bytes()) for p in folder.iterdir()} == pinned
    assert pinned["model.bin"] == "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
    stamp = (folder / "model.bin").stat().st_mtime_ns
    again = resolve_model("base", settings)
    assert again.options["installed"] and not again.options["packaged"] and again.path == folder
    load_engine(again, settings).close()
    assert (folder / "model.bin").stat().st_mtime_ns == stamp  # assembled once


def test_models_list_shows_the_packaged_models_installed(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path), "HEARLINE_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "hearline.cli", "models", "list", "--installed", "--json"],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    ).stdout  # fmt: skip
    rows = {row["name"]: row for row in json.loads(out)}
    assert {"base", "tiny.en", POCKETSPHINX} <= set(rows)
    assert rows["base"]["engine"] == rows["tiny.en"]["engine"] == "faster-whisper"


def test_default_is_base_when_packaged_else_pocketsphinx_and_the_log_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("HEARLINE_MODEL")
    monkeypatch.setattr(resolve, "_default_logged", set())  # the choice is logged once per process: start afresh
    caplog.set_level(logging.INFO, logger="hearline.models.resolve")
    settings = Settings.load(model_dir=tmp_path / "a", models_file=tmp_path / "none.yaml")
    assert default_spec(settings).name == "base"
    assert "default model: Whisper base (from its model package)" in caplog.text
    # a models.yaml entry named base that is not installed hides the packaged one: PocketSphinx, and why
    registry = tmp_path / "models.yaml"
    registry.write_text("models:\n  base:\n    engine: faster-whisper\n    dir: /nonexistent/base\n")
    settings = Settings.load(model_dir=tmp_path / "b", models_file=registry)
    assert default_spec(settings).name == POCKETSPHINX
    assert "Whisper base is not installed" in caplog.text
