"""Images are read as a viewer shows them, and real folders are handled: EXIF orientation is applied; FIFOs,
sockets, devices and symlink loops are skipped without being opened; empty and garbage files are skipped with
one warning each; a signal raised while decoding is never taken for an unreadable image; an index past the end
is one clear IndexError."""
import errno
import logging
import os
import signal
import socket
import stat
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lucent_inhibit.core.validate import InputError
from lucent_inhibit.data.batching import iter_batches
from lucent_inhibit.data.folders import ImageFolder
from lucent_inhibit.data.images import load_image, resize_center, to_tensor

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and UNIX sockets need a POSIX system")

SIZE = 16
#: Seconds a FIFO may be waited on before the test unblocks it (opening it would block for ever otherwise).
PATIENCE = 3.0
#: The files of the folder that must be skipped, and a word of the warning that names each.
SKIPPED = {"a.png": "FIFO", "s.png": "socket", "loop.png": "loop", "null.png": "character device",
           "empty.png": "empty", "bad.png": "unreadable"}


def _upright() -> np.ndarray:
    """A smooth (24, 40, 3) uint8 image that no rotation maps onto itself (red: x ramp, green: y ramp)."""
    h, w = 24, 40
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 100)], -1).astype(np.uint8)


class FifoGuard:
    """After ``PATIENCE`` seconds, open and close the write end of ``fifo`` until stopped, so that any reader
    blocked opening it (this process or a worker) gets end-of-file; ``fired`` says whether it had to."""

    def __init__(self, fifo: str):
        self.fifo, self.fired, self._stop = fifo, False, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        if self._stop.wait(PATIENCE):
            return
        while not self._stop.wait(0.05):
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
                self.fired = True
            except OSError as exc:  # ENXIO: no reader has it open right now
                if exc.errno != errno.ENXIO:
                    raise

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A folder of every kind of file a real one can hold: special files, broken files, a phone photo whose
    pixels are stored sideways with EXIF orientation 6, two good images."""
    root = tmp_path / "photos"
    root.mkdir()
    upright = _upright()
    Image.fromarray(upright).save(root / "good1.png")
    Image.fromarray(255 - upright).save(root / "good2.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(root / "rotated.jpg", quality=100,
                                                                       subsampling=0, exif=exif)
    os.mkfifo(root / "a.png")
    monkeypatch.chdir(root)  # a relative socket path: tmp paths can exceed AF_UNIX's 108 bytes
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("s.png")
    os.symlink("loop.png", root / "loop.png")
    os.symlink(os.devnull, root / "null.png")
    (root / "empty.png").write_bytes(b"")
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n these are not the bytes of an image")
    monkeypatch.chdir(tmp_path)
    modes = {name: os.lstat(root / name).st_mode for name in SKIPPED}
    assert stat.S_ISFIFO(modes["a.png"]) and stat.S_ISSOCK(modes["s.png"]) and stat.S_ISLNK(modes["loop.png"])
    assert stat.S_ISCHR(os.stat(root / "null.png").st_mode)
    with Image.open(root / "rotated.jpg") as im:
        assert im.getexif()[0x0112] == 6 and im.size == (24, 40)  # stored sideways: 24 wide, 40 high
    yield root
    sock.close()


@pytest.fixture
def guard(folder):
    """The FIFO of ``folder`` unblocked after ``PATIENCE`` seconds, so that no code under test hangs the run."""
    with FifoGuard(str(folder / "a.png")) as g:
        yield g


def _skipped_warnings(records):
    return [str(w.message) for w in records if "skipped" in str(w.message)]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_real_folder_builds_and_iterates_in_bounded_time(folder, guard, workers, caplog):
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with caplog.at_level(logging.INFO, logger="lucent_inhibit"):
            ds = ImageFolder(str(folder), size=SIZE, workers=workers)
            images = torch.cat([x for _, x in iter_batches(ds, 2)])
    assert not guard.fired, "the FIFO was opened"
    assert time.monotonic() - start < 10
    assert sorted(os.path.basename(p) for p in ds.paths) == ["good1.png", "good2.png", "rotated.jpg"]
    assert images.shape == (3, 3, SIZE, SIZE)
    assert all(torch.equal(images[i], ds[i]) for i in range(3))  # workers decode as the main process does
    said = _skipped_warnings(rec)
    assert len(said) == len(SKIPPED), said
    for name, word in SKIPPED.items():
        mine = [m for m in said if name in m]
        assert len(mine) == 1 and word in mine[0], (name, said)
        assert "\n" not in mine[0]
    assert ds.exif_rotated == 1
    lines = [r.getMessage() for r in caplog.records if "EXIF orientation" in r.getMessage()]
    assert len(lines) == 1 and "1 image" in lines[0] and "rotated upright" in lines[0]
    assert all(r.levelno == logging.INFO for r in caplog.records if "EXIF" in r.getMessage())


def test_exif_orientation_is_applied(folder, guard):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = ImageFolder(str(folder), size=SIZE)
    upright = resize_center(to_tensor(_upright()), SIZE)
    stored = resize_center(to_tensor(np.asarray(Image.open(folder / "rotated.jpg").convert("RGB"))), SIZE)
    item = ds[ds.paths.index(str(folder / "rotated.jpg"))]
    assert float((stored - upright).abs().max()) > 0.3  # the test would fail without the rotation
    assert float((item - upright).abs().max()) < 0.05
    full = load_image(str(folder / "rotated.jpg"))
    assert full.shape == (3, 24, 40)
    assert float((full - to_tensor(_upright())).abs().max()) < 0.05


@pytest.mark.parametrize("name,what", [("a.png", "a FIFO"), ("s.png", "a socket"),
                                       ("null.png", "a character device")])
def test_load_image_refuses_special_files_without_opening_them(folder, guard, name, what):
    start = time.monotonic()
    with pytest.raises(InputError) as info:
        load_image(str(folder / name))
    assert not guard.fired and time.monotonic() - start < PATIENCE
    message = str(info.value)
    assert "\n" not in message and name in message and f"{what}, not a regular file" in message


def test_load_image_names_loops_and_empty_files(folder, guard):
    with pytest.raises(InputError, match=r"loop\.png.*symlink loop"):
        load_image(str(folder / "loop.png"))
    with pytest.raises(InputError, match=r"empty\.png.*empty \(0 bytes\)"):
        load_image(str(folder / "empty.png"))
    with pytest.raises(ValueError, match=r"bad\.png.*cannot be read"):
        load_image(str(folder / "bad.png"))


@pytest.mark.parametrize("stage,flag", [("invert", "--image"), ("tense", "--seed-image")])
def test_the_cli_refuses_a_fifo_with_exit_status_2(folder, guard, tmp_path, capsys, stage, flag):
    from lucent_inhibit.app.cli import main

    args = [stage, "--model", "conftest:TinyConvNet", "--layer", "conv3", "--unit", "1", "--attr-layer", "relu2",
            "--size", "16", "--steps", "2", flag, str(folder / "a.png"), "--out", str(tmp_path / "out")]
    start = time.monotonic()
    code = main(args)
    err = capsys.readouterr().err
    assert not guard.fired and time.monotonic() - start < 10
    assert code == 2 and "a FIFO, not a regular file" in err and "a.png" in err, err


class Timeout(Exception):
    """What a SIGALRM handler of the caller's raises: not an image error, never to be swallowed."""


def test_a_signal_while_decoding_propagates(folder, monkeypatch):
    for name in SKIPPED:
        os.remove(folder / name)
    real_open = Image.open

    def slow_open(*args, **kwargs):
        time.sleep(1.0)
        return real_open(*args, **kwargs)

    def on_alarm(signum, frame):
        raise Timeout("the caller's deadline")

    monkeypatch.setattr(Image, "open", slow_open)
    previous = signal.signal(signal.SIGALRM, on_alarm)
    start = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a swallowed Timeout would be an "unreadable file" warning
            with pytest.raises(Timeout):
                ImageFolder(str(folder), size=SIZE)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - start < 1.0


def test_an_index_past_the_end_is_one_clear_index_error(folder, guard):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = ImageFolder(str(folder), size=SIZE)
    with pytest.raises(IndexError) as info:
        ds[99]
    message = str(info.value)
    assert "99" in message and "3 images" in message and str(folder) in message and "\n" not in message
    with pytest.raises(IndexError, match="-4"):
        ds[-4]
    assert torch.equal(ds[-1], ds[2])
    assert len(list(ds)) == 3  # iteration stops at the IndexError of the sequence protocol

