"""IDX parsing and the verified, multi-source MNIST fetch (real files, real HTTP)."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.lib import mnist
from tests.conftest import ROOT, free_port_url, tool_env

NAMES = list(mnist.FILES)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


# --- IDX parsing ----------------------------------------------------------------

def test_parse_idx_roundtrip_images_and_labels() -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28) % 256
    labels = np.array([3, 1, 4], dtype=np.uint8)
    np.testing.assert_array_equal(mnist.parse_idx(idx_bytes(images)), images)
    np.testing.assert_array_equal(mnist.parse_idx(idx_bytes(labels)), labels)


def test_parse_real_idx(mnist_dir: Path) -> None:
    labels = mnist.parse_idx(gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_parse_idx_bad_magic() -> None:
    data = bytearray(idx_bytes(np.zeros(5, np.uint8)))
    data[2] = 0x0D  # float type, not unsigned bytes
    with pytest.raises(mnist.MnistError, match=r"labels\.idx: bad IDX magic number 0x00000d01"):
        mnist.parse_idx(bytes(data), "labels.idx")


def test_parse_idx_wrong_dimensions() -> None:
    data = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    # Header claims three images, the payload holds two.
    data = data[:4] + (3).to_bytes(4, "big") + data[8:]
    with pytest.raises(mnist.MnistError, match=r"shape \(3, 28, 28\) .*2368 bytes in all.*1584 bytes"):
        mnist.parse_idx(data, "images.idx")


def test_parse_idx_truncated_payload_and_header() -> None:
    data = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(mnist.MnistError, match="but the file has 1000 bytes"):
        mnist.parse_idx(data[:1000])
    with pytest.raises(mnist.MnistError, match="truncated IDX header"):
        mnist.parse_idx(data[:10])


# --- sources --------------------------------------------------------------------

def bad_copies(src: Path, dst: Path, how: str) -> Path:
    """A mirror whose every file is corrupted (one content byte changed) or truncated."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        raw = (src / name).read_bytes()
        if how == "corrupt":
            content = bytearray(gzip.decompress(raw))
            content[-1] ^= 0xFF
            raw = gzip.compress(bytes(content), compresslevel=1, mtime=0)
        else:
            raw = raw[: len(raw) // 2]
        (dst / name).write_bytes(raw)
    return dst


@pytest.fixture(scope="session")
def bad_mirror(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """bad_mirror(how) -> a folder of corrupted or truncated copies, made once per session."""
    made: dict[str, Path] = {}

    def get(how: str) -> Path:
        if how not in made:
            made[how] = bad_copies(mnist_dir, tmp_path_factory.mktemp(how), how)
        return made[how]
    return get


def check_arrays(arrays: dict[str, np.ndarray]) -> None:
    assert {k: v.shape for k, v in arrays.items()} == {
        "x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}
    assert all(v.dtype == np.uint8 for v in arrays.values())
    assert arrays["y_train"][:5].tolist() == [5, 0, 4, 1, 9]


def test_fetch_from_local_folder(mnist_dir: Path, tmp_path: Path) -> None:
    arrays = mnist.fetch([], tmp_path / "cache", 5, 0, env={"MNIST_MIRROR": str(mnist_dir)})
    check_arrays(arrays)
    assert not (tmp_path / "cache").exists()  # a local folder is read in place


def test_fetch_from_http_server_caches_downloads(mnist_dir: Path, tmp_path: Path, serve) -> None:
    server = serve(mnist_dir)
    cache = tmp_path / "cache"
    check_arrays(mnist.fetch([server.url], cache, 5, 0, env={}))
    assert sorted(p.name for p in cache.iterdir()) == sorted(NAMES)  # no temp files left
    server.close()
    # Served from the verified cache now that the server is gone.
    check_arrays(mnist.fetch([server.url], cache, 1, 0, env={}))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_cached_download_is_fetched_again(mnist_dir: Path, tmp_path: Path, serve, damage: str) -> None:
    """A file of the download cache that no longer matches its checksum (a flipped byte, a cut-off
    copy) is not used: fetch downloads that one file again, and only that one, and repairs the cache."""
    import http.server

    requests: list[str] = []

    class Counting(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path.rsplit("/", 1)[-1])
            super().do_GET()

    server = serve(mnist_dir, Counting)
    cache = tmp_path / "cache"
    mnist.fetch([server.url], cache, 5, 0, env={})
    assert sorted(requests) == sorted(NAMES)
    victim = cache / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 2:]
    victim.write_bytes(bytes(data))
    requests.clear()
    check_arrays(mnist.fetch([server.url], cache, 5, 0, env={}))
    assert requests == [victim.name]
    assert victim.read_bytes() == (mnist_dir / victim.name).read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == sorted(NAMES)


@pytest.mark.parametrize("how", ["corrupt", "truncate"])
def test_bad_first_source_falls_back_to_second(mnist_dir: Path, tmp_path: Path, serve, bad_mirror,
                                               how: str) -> None:
    bad = serve(bad_mirror(how))
    good = serve(mnist_dir)
    cache = tmp_path / "cache"
    check_arrays(mnist.fetch([bad.url, good.url], cache, 5, 0, env={}))
    assert sorted(p.name for p in cache.iterdir()) == sorted(NAMES)


def test_all_sources_bad_names_every_file_source_and_checksum(tmp_path: Path, serve, bad_mirror) -> None:
    corrupt = bad_mirror("corrupt")
    truncated = serve(bad_mirror("truncate"))
    with pytest.raises(mnist.MnistError) as err:
        mnist.fetch([truncated.url], tmp_path / "cache", 5, 0, env={"MNIST_MIRROR": str(corrupt)})
    text = str(err.value)
    for name, (_, sha, _) in mnist.FILES.items():
        assert name in text and sha in text
        actual = hashlib.sha256(gzip.decompress((corrupt / name).read_bytes())).hexdigest()
        assert f"got {actual}" in text
    assert text.count(f"{corrupt}: checksum mismatch") == 4
    assert text.count(f"{truncated.url}: not a complete gzip file") == 4
    assert list((tmp_path / "cache").iterdir()) == []  # nothing partial in the download cache


def test_missing_file_and_http_404_move_on(mnist_dir: Path, tmp_path: Path, serve) -> None:
    empty = serve(tmp_path)  # serves no MNIST file: 404 for each
    check_arrays(mnist.fetch([empty.url, str(tmp_path / "nowhere"), str(mnist_dir)], tmp_path / "c", 5, 0, env={}))


def test_offline_without_mirror_says_how_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(mnist.MnistError) as err:
        mnist.fetch([free_port_url(), free_port_url()], tmp_path / "cache", 2, 0, env={})
    text = str(err.value)
    assert "No source was reachable (offline?) and MNIST_MIRROR is not set." in text
    assert "Set MNIST_MIRROR to a local folder" in text
    assert "unreachable" in text


class FlakyHandler(http.server.SimpleHTTPRequestHandler):
    """Answers 503 to the first request for each path, then serves the file."""
    seen: set[str] = set()

    def do_GET(self) -> None:
        if self.path not in self.seen:
            self.seen.add(self.path)
            self.send_error(503, "try again")
            return
        super().do_GET()


def test_transient_http_errors_are_retried(mnist_dir: Path, tmp_path: Path, serve) -> None:
    FlakyHandler.seen = set()
    server = serve(mnist_dir, FlakyHandler)
    with pytest.raises(mnist.MnistError, match="HTTP 503"):
        mnist.fetch([server.url], tmp_path / "c0", 5, retries=0, env={})
    FlakyHandler.seen = set()
    check_arrays(mnist.fetch([server.url], tmp_path / "c1", 5, retries=2, env={}))


# --- the stage ------------------------------------------------------------------

def run_stage(cwd: Path, mirror: str) -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "params.yaml", cwd / "params.yaml")
    return subprocess.run([sys.executable, "-m", "stages.fetch"], cwd=cwd, capture_output=True, text=True,
                          env=tool_env(MNIST_MIRROR=mirror, PYTHONPATH=str(ROOT)))


def test_stage_output_is_the_same_from_folder_and_http(mnist_dir: Path, tmp_path: Path, serve) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert run_stage(a, str(mnist_dir)).returncode == 0
    assert run_stage(b, serve(mnist_dir).url).returncode == 0
    out_a, out_b = (a / "data/mnist.npz").read_bytes(), (b / "data/mnist.npz").read_bytes()
    assert out_a == out_b
    with np.load(a / "data/mnist.npz", allow_pickle=False) as d:
        check_arrays({k: d[k] for k in d.files})


def test_stage_failure_leaves_no_output(tmp_path: Path, bad_mirror) -> None:
    corrupt = bad_mirror("corrupt")
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(
        f"fetch:\n  mirrors: ['{free_port_url()}']\n  timeout: 2\n  retries: 0\n")
    result = subprocess.run([sys.executable, "-m", "stages.fetch"], cwd=work, capture_output=True, text=True,
                            env=tool_env(MNIST_MIRROR=str(corrupt), PYTHONPATH=str(ROOT)))
    assert result.returncode != 0
    assert "error: Could not obtain verified MNIST files" in result.stderr
    assert "checksum mismatch" in result.stderr
    assert not (work / "data/mnist.npz").exists()
    assert [p.name for p in (work / "data").rglob("*") if p.is_file()] == []
