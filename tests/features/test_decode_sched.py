"""The GPU decode scheduler, on the CPU with a stand-in GPU decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import mlnb
from mlnb.exceptions import ImageLoadError
from mlnb.features import _decode_sched, engine
from mlnb.features._decode_sched import Scheduler, Share, Staging, gpu_can_take
from mlnb.features.zoo import get_spec

CPU = torch.device("cpu")


class FakeGpu:
    """Decodes like nvJPEG would, on the CPU; records the batches it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[bytes]] = []
        self.fail = fail

    def __call__(self, datas):
        from torchvision.io import ImageReadMode, decode_jpeg

        self.batches.append([bytes(d.numpy()) for d in datas])
        if self.fail:
            raise RuntimeError("nvjpeg: batch failed")
        return decode_jpeg(datas, mode=ImageReadMode.RGB)

    @property
    def seen(self) -> list[bytes]:
        return [d for b in self.batches for d in b]


def _arr(seed: int, size=(640, 480)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.random((size[1] // 16, size[0] // 16, 3)) * 255
    return np.asarray(Image.fromarray(base.astype(np.uint8)).resize(size, Image.Resampling.BILINEAR))


@pytest.fixture
def files(tmp_path):
    """name -> path: baseline JPEGs and what the GPU decoder must not get."""
    out = {}

    def save(name, img, **kw):
        p = tmp_path / name
        img.save(p, **kw)
        out[name.split(".")[0]] = str(p)

    for i in range(4):
        save(f"base{i}.jpg", Image.fromarray(_arr(i)), quality=90)
    save("progressive.jpg", Image.fromarray(_arr(5)), quality=90, progressive=True)
    save("cmyk.jpg", Image.fromarray(_arr(6)).convert("CMYK"), quality=90)
    save("png.png", Image.fromarray(_arr(7)))
    save("webp.webp", Image.fromarray(_arr(8)), quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("rotated.jpg", Image.fromarray(_arr(9)), quality=90, exif=exif)
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    out["corrupt"] = str(tmp_path / "corrupt.jpg")
    out["missing"] = str(tmp_path / "nope.jpg")
    return out


def _sched(fake, share=0.0, **kw):
    mlnb.config.decode_once = False
    return Scheduler(
        get_spec("efficientnet_lite0"), CPU, engine._pool(), gpu_decoder=fake, share=Share(cpu=share), **kw
    )


@pytest.fixture(autouse=True)
def _decode_once_back():
    yield
    mlnb.config.decode_once = True


def test_only_baseline_jpegs_reach_the_gpu(files):
    raw = {k: open(v, "rb").read() for k, v in files.items() if k != "missing"}
    assert [k for k, d in raw.items() if gpu_can_take(d)] == ["base0", "base1", "base2", "base3"]
    fake = FakeGpu()
    names = list(files)
    dec = _sched(fake).decode([(files[n], None) for n in names])
    assert sorted(fake.seen) == sorted(raw[f"base{i}"] for i in range(4))
    assert dec.routed == {"gpu": 4, "cpu": len(names) - 4}
    # errors are per row, in their places; every other row decoded, in order
    assert sorted(names[i] for i in dec.errors) == ["corrupt", "missing"]
    assert all(isinstance(e, ImageLoadError) for e in dec.errors.values())
    assert dec.rows == [i for i, n in enumerate(names) if n not in ("corrupt", "missing")]
    assert dec.images.shape == (len(dec.rows), 3, 224, 224) and dec.images.dtype == torch.uint8
    spec = get_spec("efficientnet_lite0")
    for row, img in zip(dec.rows, dec.images):
        want = engine._decode_one(spec, files[names[row]])
        got = img.permute(1, 2, 0).numpy()
        if names[row].startswith("base"):  # decoded elsewhere: close, not equal
            assert np.abs(got.astype(int) - want).mean() < 3
        else:  # the CPU path: identical
            np.testing.assert_array_equal(got, want)


def test_cpu_pool_takes_its_share_of_the_jpegs(files):
    fake = FakeGpu()
    batch = [(files[f"base{i}"], None) for i in range(4)] * 2
    dec = _sched(fake, share=0.5).decode(batch)
    assert dec.routed == {"gpu": 4, "cpu": 4} and len(fake.seen) == 4
    assert dec.rows == list(range(8))
    diff = (dec.images[:4].int() - dec.images[4:].int()).abs().float().mean()  # GPU half vs CPU half
    assert diff < 3


def test_share_follows_measured_rates():
    share = Share(cpu=0.25)
    share.update(n_cpu=10, t_cpu=1.0, n_gpu=90, t_gpu=1.0)
    assert share.cpu == pytest.approx(0.1)
    share.update(n_cpu=0, t_cpu=0.0, n_gpu=0, t_gpu=0.0)
    assert share.cpu == pytest.approx(0.1)


def test_failed_gpu_batch_falls_back_to_the_cpu_with_identical_results(files):
    batch = [(files[f"base{i}"], None) for i in range(4)] + [(files["missing"], None)]
    dec = _sched(FakeGpu(fail=True)).decode(batch)
    assert dec.routed == {"gpu": 0, "cpu": 5} and dec.rows == [0, 1, 2, 3] and list(dec.errors) == [4]
    spec = get_spec("efficientnet_lite0")
    for row, img in zip(dec.rows, dec.images):
        np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), engine._decode_one(spec, batch[row][0]))


def test_staging_never_rewrites_a_buffer_still_being_read():
    events = []

    class Fence:
        def __init__(self):
            self.waited = False
            events.append(self)

        def synchronize(self):
            self.waited = True

    st = Staging(CPU, count=2, fence=Fence)
    a, b, c = (np.full((2, 4, 4, 3), v, np.uint8) for v in (1, 2, 3))
    out_a, out_b = st.upload(a), st.upload(b)
    assert not any(e.waited for e in events)
    out_c = st.upload(c)  # buffer 0 again: its fence is waited on first
    assert events[0].waited and not events[1].waited
    assert int(out_a.max()) == 1 and int(out_b.max()) == 2 and int(out_c.max()) == 3  # no aliasing


def test_resize_crop_takes_large_factors_in_steps():
    img = torch.from_numpy(_arr(1, (4000, 3000))).permute(2, 0, 1).contiguous()
    out = _decode_sched.resize_crop(img, 256, 224)
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8
    ref = np.asarray(Image.fromarray(_arr(1, (4000, 3000))).resize((341, 256), Image.Resampling.BILINEAR))
    ref = ref[16:240, 58:282]
    assert np.abs(out.permute(1, 2, 0).numpy().astype(int) - ref).mean() < 3


@pytest.mark.slow
def test_engine_on_the_gpu_path_matches_the_cpu_path(photo_dir, monkeypatch):
    paths = sorted(str(p) for p in photo_dir.iterdir())
    mlnb.config.decode_once = False
    ref, ok = engine.embed_images(paths, use_cache=False, progress=False)
    fake = FakeGpu()
    monkeypatch.setattr(_decode_sched, "nvjpeg_decoder", lambda device: fake)
    monkeypatch.setattr(engine, "use_gpu_decode", lambda device: True)
    got, ok2 = engine.embed_images(paths, use_cache=False, progress=False)
    assert ok.all() and ok2.all() and fake.seen
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() > 0.995 and cos.mean() > 0.999


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvjpeg_features_match_the_cpu_path(photo_dir, tmp_path):
    paths = sorted(str(p) for p in photo_dir.iterdir())
    for i in range(8):  # camera-sized JPEGs too: large factors, two-step resize
        p = tmp_path / f"big{i}.jpg"
        Image.fromarray(_arr(i, (4032, 3024))).save(p, quality=92)
        paths.append(str(p))
    mlnb.config.decode_once = False
    mlnb.config.device = "cuda"
    try:
        mlnb.config.gpu_decode = False
        ref, ok = engine.embed_images(paths, use_cache=False, progress=False)
        mlnb.config.gpu_decode = True
        got, ok2 = engine.embed_images(paths, use_cache=False, progress=False)
    finally:
        mlnb.config.device = "auto"
        mlnb.config.gpu_decode = True
    assert ok.all() and ok2.all()
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    # fp16 on the GPU and a different JPEG decoder (nvJPEG's IDCT, no DCT scaling): close, not equal
    assert cos.mean() >= 0.999 and cos.min() >= 0.995, cos
