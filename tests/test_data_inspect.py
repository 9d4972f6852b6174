"""Errors that say what to do: an archive instead of a folder, a parent folder, the images folder,
the wrong source, images not found (named, with where they were looked for), nothing usable
(``data inspect`` exits non-zero)."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from medattn.cli import SOURCES, main
from medattn.data import READERS, load_dataset, load_task
from medattn.data.detect import EXPECTS, NAMES, SIGNATURES
from medattn.errors import DataError

from tests.test_data_isic_challenges import write_isic2019
from tests.test_data_readers import write_isic_new, write_pad


def test_every_source_is_registered_everywhere():
    assert tuple(READERS) == SOURCES
    assert set(READERS) == set(EXPECTS) == set(NAMES)
    assert set(READERS) - {"medmnist"} == {s.source for s in SIGNATURES}


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_an_archive_is_refused_with_the_command_to_unpack_it(tmp_path, kind, capsys):
    root, _ = write_pad(tmp_path / "PAD-UFES-20")
    if kind == "zip":
        archive = Path(shutil.make_archive(str(tmp_path / "PAD-UFES-20"), "zip", root))
        command = "unzip"
    else:
        archive = tmp_path / "PAD-UFES-20.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(root, arcname="PAD-UFES-20")
        command = "tar -xf"
    assert main(["data", "inspect", f"pad-ufes-20:{archive}"]) == 2
    err = capsys.readouterr().err
    assert f"{archive} is an archive" in err and command in err
    assert f"pad-ufes-20:{tmp_path / 'PAD-UFES-20'}" in err and "Traceback" not in err
    with pytest.raises(DataError, match=f"{archive} is an archive"):   # a path into the archive
        load_dataset(f"pad-ufes-20:{archive}/PAD-UFES-20")


def test_a_parent_folder_names_the_metadata_found_one_level_down(tmp_path):
    write_pad(tmp_path / "data" / "pad")
    with pytest.raises(DataError) as err:
        load_dataset(f"pad-ufes-20:{tmp_path / 'data'}")
    msg = str(err.value)
    assert "metadata file not found" in msg
    assert f"found {tmp_path / 'data' / 'pad' / 'metadata.csv'} one level down" in msg
    assert f"use pad-ufes-20:{tmp_path / 'data' / 'pad'}" in msg


def test_the_images_folder_points_to_its_parent(tmp_path):
    root, _ = write_isic2019(tmp_path / "c19", n=8)
    with pytest.raises(DataError, match=f"in the parent folder: use isic2019:{root}$"):
        load_dataset(f"isic2019:{root / 'ISIC_2019_Training_Input'}")


def test_a_folder_of_another_source_names_it(tmp_path):
    root, _ = write_pad(tmp_path / "pad")
    with pytest.raises(DataError, match=f"holds metadata.csv .the PAD-UFES-20 download.: read it "
                       f"as pad-ufes-20:{root}"):
        load_dataset(f"isic:{root}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"isic:{tmp_path / 'nowhere'}")


def test_missing_images_are_named_with_what_was_looked_for_and_where(tmp_path, capsys):
    root, expected = write_isic_new(tmp_path / "isic", n=8)
    assert main(["data", "inspect", f"isic:{root}"]) == 0
    out = capsys.readouterr().out
    assert "1 image(s) not found (ISIC_0000003)" in out
    assert f"looked for e.g. {root}/**/ISIC_0000003.jpg (or .png/.tif)" in out
    assert f"folder(s) searched below {root}" in out and "image files found in ." in out


def test_nothing_usable_exits_nonzero_and_says_to_unpack(tmp_path, capsys):
    """PAD-UFES-20 as published: images/imgs_part_N.zip, not yet unpacked."""
    src, _ = write_pad(tmp_path / "unpacked")
    root = tmp_path / "pad"
    (root / "images").mkdir(parents=True)
    shutil.copy(src / "metadata.csv", root / "metadata.csv")
    for k in (1, 2, 3):
        with zipfile.ZipFile(root / "images" / f"imgs_part_{k}.zip", "w") as z:
            for f in sorted((src / f"imgs_part_{k}").iterdir()):
                z.write(f, f.name)
    assert main(["data", "inspect", f"pad-ufes-20:{root}"]) == 1
    out = capsys.readouterr().out
    assert "0 usable" in out and "no usable image" in out
    assert "24 image(s) not found (PAT_100_500_0.png" in out
    assert "unpack the archive(s)" in out and "images/imgs_part_1.zip" in out
    with pytest.raises(DataError, match="no usable images"):
        load_task(f"pad-ufes-20:{root}")
    # unpacked in place (the publisher's layout), the same folder reads in full
    for k in (1, 2, 3):
        with zipfile.ZipFile(root / "images" / f"imgs_part_{k}.zip") as z:
            z.extractall(root / "images" / f"imgs_part_{k}")
    assert main(["data", "inspect", f"pad-ufes-20:{root}"]) == 0


def test_corrupt_images_are_named(tmp_path, capsys):
    root, _ = write_isic_new(tmp_path / "isic", n=8)
    main(["data", "inspect", f"isic:{root}"])
    out = capsys.readouterr().out
    assert "1 corrupt image(s) left out" in out and str(root / "ISIC_0000002.jpg") in out


def test_macos_resource_forks_and_hidden_folders_are_not_images(tmp_path):
    root, expected = write_pad(tmp_path / "pad")
    junk = root / "__MACOSX" / "imgs_part_1"
    junk.mkdir(parents=True)
    name = next(iter(expected)) + ".png"
    (junk / f"._{name}").write_bytes(b"\x00\x05\x16\x07")
    (root / ".thumbs").mkdir()
    (root / ".thumbs" / "PAT_102_502_8.png").write_bytes(b"not an image")  # the missing one
    t = load_dataset(f"pad-ufes-20:{root}")
    assert "__MACOSX" not in "".join(t["path"]) and ".thumbs" not in "".join(t["path"])
    assert t.attrs["skipped"]["missing image"] == 1
