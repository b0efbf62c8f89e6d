"""Tests for reproduce.data: splits, epochs, augmentation, on-disk formats, missing data."""

from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reproduce import data as D
from reproduce.config import DataConfig
from reproduce.data import imagefolder as IF
from reproduce.data import loaders as L
from reproduce.data import tensor as T

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def rng() -> np.random.Generator:
    seed = int(np.random.SeedSequence().entropy % 2**32)  # fresh inputs every run
    print(f"rng seed {seed}")  # shown by pytest when the test fails
    return np.random.default_rng(seed)


def epoch(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


# --- digits -----------------------------------------------------------------------------------

def test_digits_shapes_split_and_normalisation(rng):
    frac = float(rng.uniform(0.1, 0.4))
    cfg = DataConfig(dataset="digits", val_fraction=frac, augment=False, batch_size=64)
    a = D.build_data(cfg, seed=int(rng.integers(1000)))
    b = D.build_data(cfg, seed=1000 + int(rng.integers(1000)))
    assert (a.num_classes, a.in_channels, a.image_size, a.name) == (10, 1, 8, "digits")
    assert a.num_train + a.num_val == 1797
    assert abs(a.num_val - frac * 1797) <= 1
    x, y = next(iter(a.train))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    # the split ignores the run seed
    xa, ya = epoch(a.val)
    xb, yb = epoch(b.val)
    assert len(xa) == a.num_val and torch.equal(xa, xb) and torch.equal(ya, yb)
    assert set(ya.tolist()) == set(range(10))
    tr, va = T.digits_split(frac)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 1797
    # stratified: every class keeps about the same share in val
    from sklearn.datasets import load_digits
    target = load_digits().target
    share = np.bincount(target[va], minlength=10) / np.bincount(target, minlength=10)
    assert np.abs(share - frac).max() < 0.02
    # train-set normalisation
    xt, _ = epoch(a.train)
    assert abs(xt.mean().item()) < 0.05 and abs(xt.std().item() - 1) < 0.05



def test_digits_resampled_to_another_side_are_the_same_images(rng):
    side = 8 * int(rng.integers(2, 5))          # 16, 24, 32: whole 8-pixel blocks
    frac = float(rng.uniform(0.1, 0.4))
    base = DataConfig(dataset="digits", val_fraction=frac, augment=False, batch_size=64)
    small = D.build_data(base, seed=0)
    large = D.build_data(dataclasses.replace(base, image_size=side), seed=0)
    assert large.image_size == side and (large.num_train, large.num_val) == (small.num_train,
                                                                              small.num_val)
    xs, ys = epoch(small.val)
    xl, yl = epoch(large.val)
    assert xl.shape == (small.num_val, 1, side, side) and torch.equal(ys, yl)
    # area-averaging the resampled images back to 8×8 gives the originals, up to interpolation
    back = F.adaptive_avg_pool2d(xl, 8)
    err = (back - xs).abs().mean().item()
    other = (back - xs[torch.randperm(len(xs))]).abs().mean().item()
    assert err < 0.35 * other
    assert D.build_data(dataclasses.replace(base, image_size=8), seed=0).image_size == 8
    with pytest.raises(Exception, match="image_size"):
        DataConfig(dataset="digits", image_size=-int(rng.integers(1, 32)))

# --- epochs: coverage, reshuffling, reproducibility ---------------------------------------------

def synthetic(n_train: int, batch_size: int, **kw) -> DataConfig:
    return DataConfig(dataset="synthetic", synthetic_train=n_train, synthetic_val=16,
                      batch_size=batch_size, **kw)


def test_num_batches_drop_rule():
    assert D.num_batches(100, 32, drop_small=True) == 3   # 4 left < 16: dropped
    assert D.num_batches(100, 40, drop_small=True) == 3   # 20 left >= 20: kept
    assert D.num_batches(100, 32, drop_small=False) == 4
    assert D.num_batches(5, 32, drop_small=True) == 1     # the only batch is kept
    assert D.num_batches(64, 32, drop_small=True) == 2


@pytest.mark.parametrize("device", DEVICES)
def test_train_epoch_covers_reshuffles_and_reproduces(rng, device):
    n, bs = int(rng.integers(60, 120)), int(rng.integers(8, 20))
    seed = int(rng.integers(10_000))
    bundle = D.build_data(synthetic(n, bs, augment=False), device=device, seed=seed)
    assert len(bundle.train) == D.num_batches(n, bs, drop_small=True)
    e1, e2 = epoch(bundle.train), epoch(bundle.train)
    assert e1[0].device.type == device
    kept = min(n, len(bundle.train) * bs)
    for x, y in (e1, e2):  # every kept sample exactly once: rows are unique (continuous noise)
        assert len(x) == kept == len(y)
        assert len(torch.unique(x.flatten(1), dim=0)) == kept
    if kept == n:  # the same samples in both epochs, in a different order
        assert torch.equal(torch.unique(e1[0].flatten(1), dim=0), torch.unique(e2[0].flatten(1), dim=0))
    assert not torch.equal(e1[0], e2[0])
    again = D.build_data(synthetic(n, bs, augment=False), device=device, seed=seed)
    f1, f2 = epoch(again.train), epoch(again.train)
    assert torch.equal(e1[0], f1[0]) and torch.equal(e1[1], f1[1]) and torch.equal(e2[0], f2[0])
    other = D.build_data(synthetic(n, bs, augment=False), device=device, seed=seed + 1)
    assert not torch.equal(e1[0], epoch(other.train)[0])
    # val: fixed order, whole set
    v1, v2 = epoch(bundle.val), epoch(bundle.val)
    assert len(v1[0]) == bundle.num_val and torch.equal(v1[0], v2[0])


def test_set_epoch_resumes_order(rng):
    cfg = synthetic(64, 16)
    seed = int(rng.integers(10_000))
    a = D.build_data(cfg, seed=seed)
    epoch(a.train)
    second = epoch(a.train)
    b = D.build_data(cfg, seed=seed)
    b.train.epoch = 1
    assert torch.equal(second[0], epoch(b.train)[0])


# --- augmentation --------------------------------------------------------------------------------

def reference_crop_flip(x, dy, dx, flips, pad):
    xp = F.pad(x, (pad,) * 4)
    out = []
    for i in range(len(x)):
        h, w = x.shape[2:]
        c = xp[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out.append(c.flip(2) if flips[i] else c)
    return torch.stack(out)


@pytest.mark.parametrize("device", DEVICES)
def test_crop_flip_matches_reference(rng, device):
    x = torch.from_numpy(rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)).to(device)
    gen = torch.Generator().manual_seed(int(rng.integers(10_000)))
    dy, dx, flips = L.draw_crop_flip(16, 4, True, gen)
    out = L.crop_flip(x, dy, dx, flips, pad=4)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.equal(out.cpu(), reference_crop_flip(x.cpu(), dy, dx, flips, 4))
    assert dy.min() >= 0 and dy.max() <= 8
    # no flips and no padding is the identity
    same = L.crop_flip(x, torch.zeros(16, dtype=torch.long), torch.zeros(16, dtype=torch.long),
                       torch.zeros(16, dtype=torch.bool), pad=0)
    assert torch.equal(same, x)


def test_draw_flip_off_never_flips(rng):
    gen = torch.Generator().manual_seed(int(rng.integers(10_000)))
    assert not L.draw_crop_flip(500, 1, False, gen)[2].any()
    flips = L.draw_crop_flip(500, 1, True, gen)[2]
    assert 150 < flips.sum() < 350


def test_augment_changes_batches_but_not_order(rng):
    seed = int(rng.integers(10_000))
    for name in ("digits", "synthetic"):
        on = D.build_data(DataConfig(dataset=name, augment=True, batch_size=64), seed=seed)
        off = D.build_data(DataConfig(dataset=name, augment=False, batch_size=64), seed=seed)
        (xa, ya), (xo, yo) = next(iter(on.train)), next(iter(off.train))
        assert xa.shape == xo.shape and torch.equal(ya, yo)
        assert not torch.equal(xa, xo)
        assert off.train.pad == 0 and not off.train.flip
    assert (on.train.pad, on.train.flip) == (1, True)


def test_digits_augmentation_is_shift_only(rng):
    seed = int(rng.integers(10_000))
    on = D.build_data(DataConfig(dataset="digits", augment=True, batch_size=256), seed=seed)
    off = D.build_data(DataConfig(dataset="digits", augment=False, batch_size=256), seed=seed)
    assert (on.train.pad, on.train.flip) == (1, False)
    (xa, _), (xo, _) = next(iter(on.train)), next(iter(off.train))
    fill = xo.min()  # raw 0 (every digit has background pixels), normalised
    xp = F.pad(xo - fill, (1, 1, 1, 1)) + fill
    shifts = torch.stack([xp[:, :, i:i + 8, j:j + 8] for i in range(3) for j in range(3)], 1)
    match = (shifts - xa[:, None]).abs().flatten(2).amax(2) < 1e-5  # (N, 9)
    assert match.any(1).all()  # every augmented digit is a shift of the original, never a mirror
    assert (~match[:, 4]).sum() > 64  # and most are actually shifted
    mirrored = torch.stack([xp[:, :, i:i + 8, j:j + 8].flip(3) for i in range(3) for j in range(3)], 1)
    assert ((mirrored - xa[:, None]).abs().flatten(2).amax(2) < 1e-5).sum() < 5


# --- CIFAR on-disk format ---------------------------------------------------------------------

def write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar10(root, rng) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    parts = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = int(rng.integers(2, 6))
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n).tolist()
        write_pickle(folder / name, {"batch_label": name, "labels": y, "data": x.reshape(n, 3072),
                                     "filenames": [f"{i}.png" for i in range(n)]})
        parts[name] = (x, np.array(y))
    write_pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)],
                                           "num_cases_per_batch": 10000, "num_vis": 3072})
    return parts


def make_cifar100(root, rng) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    parts = {}
    for name in ("train", "test"):
        n = int(rng.integers(5, 15))
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        write_pickle(folder / name, {"filenames": [f"{i}.png" for i in range(n)], "batch_label": name,
                                     "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                                     "data": x.reshape(n, 3072)})
        parts[name] = (x, np.array(fine))
    write_pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                                   "coarse_label_names": [f"c{i}" for i in range(20)]})
    return parts


def unnormalise(x: torch.Tensor, name: str) -> torch.Tensor:
    mean = torch.tensor(T.CIFAR[name]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(T.CIFAR[name]["std"]).view(1, 3, 1, 1)
    return ((x * std + mean) * 255).round()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_python_pickles(tmp_path, rng, name):
    parts = (make_cifar10 if name == "cifar10" else make_cifar100)(tmp_path, rng)
    test = parts.pop("test_batch" if name == "cifar10" else "test")
    train_x = np.concatenate([p[0] for p in parts.values()])
    train_y = np.concatenate([p[1] for p in parts.values()])
    bundle = D.build_data(DataConfig(dataset=name, root=str(tmp_path), batch_size=4,
                                     eval_batch_size=3, augment=False), seed=int(rng.integers(100)))
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (
        10 if name == "cifar10" else 100, 3, 32)
    assert (bundle.num_train, bundle.num_val) == (len(train_x), len(test[0]))
    x, y = next(iter(bundle.train))
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64
    # val keeps file order, pixels round-trip through the normalisation, channel planes intact
    xv, yv = epoch(bundle.val)
    assert torch.equal(yv, torch.from_numpy(test[1]))
    assert torch.equal(unnormalise(xv, name), torch.from_numpy(test[0]).float())
    # train: same multiset of (image, label) pairs
    xt, yt = epoch(D.build_data(DataConfig(dataset=name, root=str(tmp_path), augment=False,
                                           batch_size=len(train_x))).train)
    got = sorted(zip(unnormalise(xt, name).flatten(1).sum(1).tolist(), yt.tolist()))
    want = sorted(zip(train_x.reshape(len(train_x), -1).sum(1).astype(float).tolist(), train_y.tolist()))
    assert got == want


def test_cifar10_requires_all_five_batches(tmp_path, rng):
    make_cifar10(tmp_path, rng)
    k = int(rng.integers(1, 6))
    os.remove(tmp_path / "cifar-10-batches-py" / f"data_batch_{k}")
    with pytest.raises(D.DatasetMissing, match=f"data_batch_{k}"):
        D.build_data(DataConfig(dataset="cifar10", root=str(tmp_path)))


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"),
                                         ("cifar100", "cifar-100-python")])
def test_missing_cifar_names_path_and_command(tmp_path, name, folder):
    root = tmp_path / "nowhere"
    with pytest.raises(D.DatasetMissing) as err:
        D.build_data(DataConfig(dataset=name, root=str(root)))
    assert isinstance(err.value, FileNotFoundError)
    assert os.path.join(str(root), folder) in str(err.value)
    assert f"make data-{name}" in str(err.value)


def test_data_dir_env_and_download_hook(tmp_path, rng, monkeypatch):
    make_cifar10(tmp_path / "env", rng)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "env"))
    assert D.build_data(DataConfig(dataset="cifar10")).num_val > 0
    calls = []

    def fetch(cfg):
        calls.append((cfg.dataset, cfg.root))
        make_cifar10(tmp_path / "dl", rng)

    from reproduce.data import registry
    monkeypatch.setitem(registry._DATASETS, "cifar10",
                        dataclasses.replace(D.dataset("cifar10"), download=fetch))
    cfg = DataConfig(dataset="cifar10", root=str(tmp_path / "dl"), download=True)
    D.check_available(cfg)                               # fetched on demand: passes
    with pytest.raises(D.DatasetMissing):
        D.check_available(dataclasses.replace(cfg, download=False))
    bundle = D.build_data(cfg)
    assert calls == [("cifar10", str(tmp_path / "dl"))] and bundle.num_train > 0
    D.build_data(cfg)                                    # there now: not fetched again
    assert len(calls) == 1


def test_download_rejects_other_datasets(tmp_path):
    for name in ("digits", "synthetic", "imagefolder", "ptb", "pydoc_text", "digit_scenes"):
        with pytest.raises(ValueError, match="only cifar10, cifar100, voc and sbd are downloadable"):
            D.download(name, str(tmp_path))


# --- imagefolder -------------------------------------------------------------------------------

def make_tree(root, rng, classes=("cat", "dog"), per_class=3):
    from PIL import Image
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")


def test_imagefolder(tmp_path, rng):
    make_tree(tmp_path, rng)
    bundle = D.build_data(DataConfig(dataset="imagefolder", root=str(tmp_path), image_size=32,
                                     batch_size=4, eval_batch_size=4), seed=int(rng.integers(100)))
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (2, 3, 32)
    assert (bundle.num_train, bundle.num_val, len(bundle.train)) == (6, 6, 2)
    for loader in (bundle.train, bundle.val):
        x, y = next(iter(loader))
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and set(y.tolist()) <= {0, 1}
    assert sorted(epoch(bundle.val)[1].tolist()) == [0, 0, 0, 1, 1, 1]


def test_imagefolder_missing_and_mismatched(tmp_path, rng):
    with pytest.raises(D.DatasetMissing) as err:
        D.build_data(DataConfig(dataset="imagefolder", root=str(tmp_path / "none")))
    assert str(tmp_path / "none" / "train") in str(err.value) and "<class>" in str(err.value)
    make_tree(tmp_path / "t", rng)
    (tmp_path / "t" / "val" / "dog").rename(tmp_path / "t" / "val" / "eel")
    with pytest.raises(ValueError, match="class folders"):
        D.build_data(DataConfig(dataset="imagefolder", root=str(tmp_path / "t")))


# --- synthetic ---------------------------------------------------------------------------------

def test_synthetic_shapes_and_fixed_data(rng):
    size, k = int(rng.integers(6, 16)), int(rng.integers(2, 7))
    cfg = DataConfig(dataset="synthetic", image_size=size, num_classes=k, synthetic_train=40,
                     synthetic_val=20, augment=False)
    a, b = D.build_data(cfg, seed=1), D.build_data(cfg, seed=2)
    assert (a.num_classes, a.in_channels, a.image_size, a.num_train, a.num_val) == (k, 3, size, 40, 20)
    assert torch.equal(epoch(a.val)[0], epoch(b.val)[0])  # data does not depend on the run seed
    d = D.build_data(DataConfig(dataset="synthetic"))
    assert (d.num_classes, d.image_size) == (4, 8)


def test_synthetic_is_learnable(rng):
    torch.manual_seed(int(rng.integers(10_000)))
    bundle = D.build_data(DataConfig(dataset="synthetic", batch_size=32),
                          seed=int(rng.integers(10_000)))
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, bundle.num_classes))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):
        for x, y in bundle.train:
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    with torch.no_grad():
        correct = sum((net(x).argmax(1) == y).sum().item() for x, y in bundle.val)
    assert correct / bundle.num_val > 0.7  # chance is 0.25


# --- ImageNet-style folders ----------------------------------------------------------------------

def test_imagenet_root_defaults_to_data_dir(tmp_path, rng, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    make_tree(tmp_path / "imagenet", rng, per_class=2)
    cfg = DataConfig(dataset="imagenet", image_size=24, batch_size=2, eval_batch_size=4)
    assert IF.folder_root(cfg) == str(tmp_path / "imagenet")
    D.check_available(cfg)
    bundle = D.build_data(cfg)
    assert (bundle.name, bundle.num_classes, bundle.image_size) == ("imagenet", 2, 24)
    x, _ = next(iter(bundle.val))
    assert x.shape == (4, 3, 24, 24)
    info = IF.describe_image_folder(IF.folder_root(cfg))
    assert (info["train"]["classes"], info["train"]["images"], info["val"]["images"]) == (2, 4, 4)
    assert info["same_classes"] and not info["train"]["empty_classes"]


def test_flat_imagenet_val_stops_with_the_fix(tmp_path, rng):
    make_tree(tmp_path, rng, per_class=1)
    for c in ("cat", "dog"):                      # the raw download: images directly in val/
        for f in (tmp_path / "val" / c).iterdir():
            f.rename(tmp_path / "val" / f"ILSVRC2012_val_{c}.JPEG")
    cfg = DataConfig(dataset="imagenet", root=str(tmp_path))
    for call in (D.check_available, D.build_data):
        with pytest.raises(D.DatasetMissing, match="valprep") as err:
            call(cfg)
        assert "torchvision.datasets.ImageNet" in str(err.value)


def test_image_size_comes_from_the_model_and_is_stated():
    from reproduce.config import resolve
    cfg = resolve({"data": {"dataset": "imagenet"}, "model": {"name": "resnet50"}})
    assert cfg.data.image_size == 224
    cfg = resolve({"data": {"dataset": "imagefolder"}, "model": {"name": "resnet20"}})
    assert cfg.data.image_size == 32               # a CIFAR model: 32-px crops, not 224
    cfg = resolve({"data": {"dataset": "imagenet_smoke"}, "model": {"name": "mobilenet_v1"}})
    assert cfg.data.image_size == 64
    cfg = resolve({"data": {"dataset": "imagenet", "image_size": 96}, "model": {"name": "resnet50"}})
    assert cfg.data.image_size == 96
    assert resolve({}).data.image_size == 0        # tensor datasets are unchanged


def test_smoke_imagenet_tree(tmp_path):
    counts = IF.make_smoke_imagenet(str(tmp_path / "smoke"), size=32, per_class=2)
    assert counts == {"train": 20, "val": 20}
    from PIL import Image
    info = IF.describe_image_folder(str(tmp_path / "smoke"))
    assert info["train"]["classes"] == info["val"]["classes"] == 10
    img = Image.open(next((tmp_path / "smoke" / "train" / "digit_0").iterdir()))
    assert img.size == (32, 32) and img.mode == "RGB"
    again = IF.make_smoke_imagenet(str(tmp_path / "again"), size=32, per_class=2)
    assert again == counts and (tmp_path / "again" / "val" / "digit_9").is_dir()
    first = sorted(p.name for p in (tmp_path / "smoke" / "val" / "digit_9").iterdir())
    assert first == sorted(p.name for p in (tmp_path / "again" / "val" / "digit_9").iterdir())
    bundle = D.build_data(DataConfig(dataset="imagenet_smoke", root=str(tmp_path / "smoke"),
                                     image_size=32, batch_size=8))
    x, y = next(iter(bundle.train))
    assert x.shape == (8, 3, 32, 32) and bundle.num_classes == 10


def test_smoke_imagenet_digits_contrast_with_their_background(tmp_path):
    """Every generated image's digit differs from its background in luminance (the version-1
    generator drew both colours at random, often nearly equal, and nothing could learn it), and
    in every channel the same way (version 2 drew independent hues: docs/METHOD.md), one near
    black and the other near white."""
    from PIL import Image
    root = tmp_path / "smoke"
    IF.make_smoke_imagenet(str(root), size=32, per_class=3)
    luma = np.array([0.299, 0.587, 0.114])
    for path in root.glob("*/digit_*/*.png"):
        img = np.asarray(Image.open(path), dtype=np.float64) @ luma
        # the brightest and darkest tenths: digit vs background, both sides past the noise
        lo, hi = np.percentile(img, [5, 95])
        assert hi - lo > 0.6 * IF.SMOKE_MIN_LUMA_GAP, path
        # version 3: the digit is lighter (or darker) than the background in every channel, so
        # the darkest pixels by luminance are the darkest in each channel too
        rgb = np.asarray(Image.open(path), dtype=np.float64).reshape(-1, 3)
        dark, light = rgb[img.ravel() <= lo].mean(0), rgb[img.ravel() >= hi].mean(0)
        assert (light - dark > 0.3 * IF.SMOKE_MIN_LUMA_GAP).all(), path
        # version 4: one level near black, the other near white (under the cast); version 3's
        # levels anywhere in the range slowed learning (docs/METHOD.md)
        assert img.min() < IF.SMOKE_LEVEL_SPREAD + 16, path
        assert img.max() > (255 - IF.SMOKE_LEVEL_SPREAD) * (1 - IF.SMOKE_CAST) - 16, path


def test_an_older_smoke_imagenet_tree_is_rewritten(tmp_path, capsys):
    """A tree written before the generator's current version (no VERSION file, as version 1
    wrote it) is rewritten on use, with a note; one of the current version is kept."""
    root = tmp_path / "imagenet-smoke"
    IF.make_smoke_imagenet(str(root), size=16, per_class=1)
    assert IF.smoke_imagenet_version(str(root)) == IF.SMOKE_TREE_VERSION
    (root / IF.SMOKE_VERSION_FILE).unlink()                      # as the old generator left it
    stale = root / "train" / "digit_3" / "stale.png"
    stale.write_bytes(b"")
    cfg = DataConfig(dataset="imagenet_smoke", root=str(root), image_size=16, batch_size=4)
    bundle = D.build_data(cfg)
    assert "rewriting" in capsys.readouterr().err
    assert IF.smoke_imagenet_version(str(root)) == IF.SMOKE_TREE_VERSION and not stale.exists()
    assert bundle.num_train == 1437 and bundle.num_val == 360   # the whole tree, rewritten
    marker = root / "val" / "digit_0" / "kept.png"
    marker.write_bytes(b"")
    assert IF.make_smoke_imagenet(str(root), if_missing=True) is None and marker.exists()


def test_a_foreign_tree_at_the_smoke_imagenet_root_is_not_replaced(tmp_path):
    root = tmp_path / "mine"
    make_tree(root, np.random.default_rng(), per_class=2)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(D.DatasetMissing, match="make-smoke-imagenet"):
        D.build_data(DataConfig(dataset="imagenet_smoke", root=str(root), image_size=16))
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def _smoke_tree_if_missing(root: str):
    return IF.make_smoke_imagenet(root, size=16, per_class=3, if_missing=True)


def test_smoke_imagenet_tree_is_written_once_when_runs_start_together(tmp_path):
    """Two processes asking for the missing tree at once (JOBS=2): one writes it, the other
    waits and reads it, and the tree is whole."""
    import multiprocessing

    root = str(tmp_path / "data" / "imagenet-smoke")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(_smoke_tree_if_missing, [root, root])
    assert sorted(results, key=lambda r: r is None) == [{"train": 30, "val": 30}, None]
    info = IF.describe_image_folder(root)
    assert info["train"]["images"] == info["val"]["images"] == 30
    assert not info["train"]["empty_classes"] and info["same_classes"]
    assert _smoke_tree_if_missing(root) is None             # there: kept as it is


def test_data_cli_check_and_make(tmp_path, monkeypatch, capsys):
    from reproduce.cli import main
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert main(["data", "check", "imagenet"]) == 2          # missing: the path looked at
    assert str(tmp_path / "imagenet" / "train") in capsys.readouterr().err
    IF.make_smoke_imagenet(str(tmp_path / "imagenet"), size=16, per_class=1)
    assert main(["data", "check", "imagenet"]) == 0
    out = capsys.readouterr().out
    assert "10 classes" in out and "10 images" in out

