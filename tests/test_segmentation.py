"""Segmentation: mIoU and pixel accuracy from a confusion matrix, the gated FCN (closed channels,
export, costs), the embedded digit scenes and the VOC loader, and table-voc end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from reproduce import contract
from reproduce.config import DataConfig, resolve
from reproduce.data import DatasetMissing, build_data, check_available
from reproduce.method import CostModel, export
from reproduce.method.gates import ChannelGate, gates_of
from reproduce.models import create_model
from reproduce.tasks import Segmentation, segmentation_scores, task_class

pytestmark = pytest.mark.usefixtures("fresh_seed")


def test_miou_and_pixel_accuracy_against_a_hand_computed_confusion_matrix():
    task = Segmentation(num_classes=3)
    meter = task.meter("val")
    y1 = torch.tensor([[[0, 0, 1], [1, 2, 255]]])            # one void pixel
    p1 = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
    y2 = torch.tensor([[[2, 2, 0], [255, 255, 1]]])
    p2 = torch.tensor([[[2, 0, 0], [1, 1, 1]]])
    for y, p in ((y1, p1), (y2, p2)):
        meter.update(torch.nn.functional.one_hot(p, 3).permute(0, 3, 1, 2).float() * 5, y)
    # rows = label, columns = prediction, over the 9 labelled pixels of both batches
    conf = np.array([[2, 1, 0],       # label 0: 0->0, 0->1, 0->0
                     [0, 3, 0],       # label 1: 1, 1, 1
                     [1, 0, 2]])      # label 2: 2, 2, 2->0
    iou = [2 / (3 + 3 - 2), 3 / (3 + 4 - 3), 2 / (3 + 2 - 2)]
    got = meter.compute()
    assert got[contract.VAL_MIOU] == pytest.approx(100 * np.mean(iou))
    assert got[contract.VAL_PIXEL_ACC] == pytest.approx(100 * 7 / 9)
    assert torch.equal(meter.confusion, torch.tensor(conf))
    # a class absent from labels and predictions is not averaged in
    scores = segmentation_scores(torch.tensor([[4, 0, 0], [0, 0, 0], [0, 0, 0]]))
    assert scores["val/miou"] == 100.0
    assert task.main_metric == contract.VAL_MIOU and task.direction(contract.VAL_MIOU) == "maximize"


def test_void_pixels_carry_no_loss():
    task = Segmentation(num_classes=4)
    out = torch.randn(2, 4, 5, 5, requires_grad=True)
    y = torch.randint(0, 4, (2, 5, 5))
    y[0, :2] = 255
    task.loss(out, y).backward()
    assert out.grad[0, :, :2].abs().max() == 0
    assert task_class(resolve({"data": {"dataset": "digit_scenes"}})) is Segmentation


def _gated(model):
    with torch.no_grad():
        for _, g in gates_of(model):
            g.logits.copy_(torch.randn(g.n))
            g.logits[0] = 0.5
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.num_features:
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.normal_(0, 0.5)
    return model.eval()


def test_closed_channels_are_absent_downstream_and_export_is_equal():
    model = _gated(create_model("fcn_resnet20", num_classes=5, in_channels=1, gate_blocks=True))
    head = model.classifier[2]
    closed = torch.nonzero(head.logits <= 0).flatten()
    x = torch.randn(2, 1, 16, 16)
    seen = {}
    head.register_forward_hook(lambda m, i, o: seen.setdefault("head", o))
    with torch.no_grad():
        before = model(x)
        assert seen["head"][:, closed].abs().max() == 0                   # exactly 0
        model.classifier[5].weight[:, closed] = 9.0                        # what reads them
        assert torch.equal(model(x), before)
        compact = export(model)
        torch.testing.assert_close(compact(x), before, rtol=1e-4, atol=1e-4)
    assert compact.classifier[0].out_channels == head.n - len(closed)
    assert not any(isinstance(m, ChannelGate) for m in compact.modules())


def test_costs_against_the_flop_counter_at_the_evaluation_resolution():
    def counted(m, shape) -> float:
        with torch.no_grad(), FlopCounterMode(display=False) as c:
            m.eval()(torch.zeros(1, *shape))
        return c.get_total_flops() / 2

    for shape in ((3, 32, 32), (3, 48, 40)):
        dense = create_model("fcn_resnet20", num_classes=21, gate_channels=False)
        assert CostModel(dense, shape).dense_macs == counted(dense, shape)
    gated = _gated(create_model("fcn_resnet20", num_classes=21))
    macs, params = CostModel(gated, (3, 32, 32)).hard()
    compact = export(gated)
    assert macs == counted(compact, (3, 32, 32))


def test_fcn_resnet50_is_torchvisions_fcn_resnet50():
    """Dense, it is torchvision's fcn_resnet50 (dilated ResNet-50, output stride 8, FCNHead,
    no aux head): same parameters, and torchvision's weights give the same outputs."""
    from torchvision.models.segmentation import fcn_resnet50

    torch.set_num_threads(1)
    reference = fcn_resnet50(weights=None, weights_backbone=None, aux_loss=False,
                             num_classes=21).eval()
    model = create_model("fcn_resnet50", gate_channels=False).eval()
    # the gate slot (an Identity when ungated) shifts the head's last conv from 4 to 5
    state = {k.replace("classifier.4.", "classifier.5."): v
             for k, v in reference.state_dict().items()}
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, reference(x)["out"])
        assert model.backbone.features(x).shape == (2, 2048, 8, 6)      # output stride 8
    assert out.shape == (2, 21, 64, 48)
    assert CostModel(model, (3, 64, 48)).dense_params == sum(
        m.weight.numel() + (0 if m.bias is None else m.bias.numel())
        for m in reference.modules() if isinstance(m, torch.nn.Conv2d))


def test_fcn_resnet50_closed_channels_and_export():
    """Gated ResNet-50 FCN (blocks gated too): a closed channel of the last stream and of the
    head is exactly 0 downstream; export gives the same outputs, the counted MACs and params."""
    from .model_checks import check_export, randomise_bn, randomise_gates

    torch.set_num_threads(1)
    model = create_model("fcn_resnet50", num_classes=5, width_multiplier=0.25, gate_blocks=True)
    randomise_bn(model)
    randomise_gates(model, closed_channel_gates=2)
    model.eval()
    stream, head = model.backbone.layer4.gate, model.classifier[2]
    with torch.no_grad():                   # these two partly open (others may be fully closed)
        for g in (stream, head):
            g.logits.copy_(torch.randn(g.n))
            g.logits[int(torch.randint(g.n, ()))] = 0.5
    closed = {"stream": torch.nonzero(stream.logits <= 0).flatten(),
              "head": torch.nonzero(head.logits <= 0).flatten()}
    assert len(closed["stream"]) and len(closed["head"])
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: seen.update({k: o}) and None)
             for k, m in (("stream", model.backbone.layer4), ("head", head))]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        for k in ("stream", "head"):
            assert seen[k][:, closed[k]].abs().max() == 0                 # exactly 0
            assert seen[k].abs().max() > 0
        for h in hooks:
            h.remove()
        model.classifier[0].weight[:, closed["stream"]] = 9.0             # what reads them
        model.classifier[5].weight[:, closed["head"]] = 9.0
        assert torch.equal(model(x), before)
    compact = check_export(model, (3, 64, 64))
    assert compact.classifier[0].in_channels == stream.n - len(closed["stream"])
    assert compact.classifier[0].out_channels == head.n - len(closed["head"])
    assert compact.arch["replace_stride_with_dilation"] == (False, True, True)
    assert not any(isinstance(m, ChannelGate) for m in compact.modules())


@pytest.mark.parametrize("shape", [(3, 40, 56)])      # square inputs: test_costs_export
def test_fcn_resnet50_costs_against_the_flop_counter(shape):
    torch.set_num_threads(1)
    dense = create_model("fcn_resnet50", num_classes=int(torch.randint(2, 30, ())),
                         gate_channels=False)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        dense.eval()(torch.zeros(1, *shape))
    assert CostModel(dense, shape).dense_macs == counter.get_total_flops() / 2


def test_digit_scenes_are_deterministic_with_digit_labels_and_void_rims():
    cfg = DataConfig(dataset="digit_scenes", synthetic_train=16, synthetic_val=8, batch_size=8)
    a, b = build_data(cfg), build_data(cfg)
    assert a.num_classes == 11 and a.in_channels == 1 and a.image_size == 32
    ya, yb = a.val.y, b.val.y
    assert torch.equal(ya, yb) and torch.equal(a.train.x, b.train.x)
    labels = set(torch.unique(a.train.y).tolist())
    assert 0 in labels and 255 in labels and len(labels - {0, 255}) >= 3
    ink = a.train.x[:, 0].float()
    assert ink[a.train.y == 0].mean() < ink[(a.train.y > 0) & (a.train.y < 255)].mean()


def _image(path, rng, shape) -> None:
    from PIL import Image
    Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(path)


def write_voc(root, train: list[str], val: list[str], rng) -> dict[str, np.ndarray]:
    """A miniature VOCdevkit/VOC2012 (random images, palette masks with a void top row);
    returns each image's label map."""
    from PIL import Image
    voc = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    labels = {}
    for n in train + val:
        shape = tuple(int(v) for v in rng.integers(16, 40, 2))
        _image(voc / "JPEGImages" / f"{n}.jpg", rng, shape)
        mask = rng.integers(0, 21, shape).astype(np.uint8)
        mask[0] = 255
        img = Image.fromarray(mask, mode="P")
        img.putpalette([0] * 768)
        img.save(voc / "SegmentationClass" / f"{n}.png")
        labels[n] = mask
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(train))
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(val))
    return labels


def write_sbd(root, train: list[str], val: list[str], rng) -> dict[str, np.ndarray]:
    """A miniature SBD as its release lays it out (img/<id>.jpg, cls/<id>.mat holding a GTcls
    struct whose Segmentation field is the label map, train.txt, val.txt); returns the labels."""
    from scipy.io import savemat
    sbd = root / "sbd"
    (sbd / "img").mkdir(parents=True)
    (sbd / "cls").mkdir()
    labels = {}
    for n in dict.fromkeys(train + val):
        shape = tuple(int(v) for v in rng.integers(16, 40, 2))
        _image(sbd / "img" / f"{n}.jpg", rng, shape)
        labels[n] = rng.integers(0, 21, shape).astype(np.uint8)      # SBD marks no void
        savemat(sbd / "cls" / f"{n}.mat", {"GTcls": {
            "Segmentation": labels[n], "CategoriesPresent": np.unique(labels[n])[None]}})
    (sbd / "train.txt").write_text("\n".join(train) + "\n")
    (sbd / "val.txt").write_text("\n".join(val) + "\n")
    return labels


def test_voc_is_read_through_torchvision_with_joint_transforms(tmp_path):
    cfg = DataConfig(dataset="voc", root=str(tmp_path), batch_size=2, eval_batch_size=2,
                     image_size=24)
    with pytest.raises(DatasetMissing, match="make data-voc") as e:
        check_available(cfg)
    assert str(tmp_path / "VOCdevkit" / "VOC2012") in str(e.value)
    names = [f"2007_{i:06d}" for i in range(4)]
    write_voc(tmp_path, names[:2], names[2:], np.random.default_rng())
    data = build_data(cfg)
    assert data.num_classes == 21 and data.image_size == 24
    x, y = next(iter(data.train))
    assert x.shape == (2, 3, 24, 24) and y.shape == (2, 24, 24) and y.dtype == torch.long
    assert set(torch.unique(y).tolist()) <= set(range(21)) | {255}
    xv, yv = next(iter(data.val))
    assert xv.shape == (2, 3, 24, 24) and (yv[:, 0] == 255).all()          # nearest: void kept


def test_train_aug_is_voc_train_and_sbd_without_voc_val(tmp_path):
    """data.sbd: VOC train ∪ SBD train ∪ SBD val, VOC val left out, each image once (VOC's own
    label where an image has both), SBD's labels read from its .mat files."""
    from reproduce.config import resolve
    from reproduce.errors import ConfigError
    from reproduce.data.segmentation import image_id, train_aug

    rng = np.random.default_rng()
    voc_train, voc_val = ["2007_000001", "2007_000002"], ["2007_000003", "2007_000004"]
    voc_labels = write_voc(tmp_path, voc_train, voc_val, rng)
    cfg = DataConfig(dataset="voc", root=str(tmp_path), sbd=True, batch_size=2,
                     eval_batch_size=2, image_size=16)
    with pytest.raises(DatasetMissing, match="make data-sbd") as e:
        check_available(cfg)
    assert str(tmp_path / "sbd") in str(e.value) and "data.sbd: false" in str(e.value)
    check_available(DataConfig(dataset="voc", root=str(tmp_path)))      # VOC alone is fine
    with pytest.raises(ConfigError, match="data.sbd"):
        resolve({"data": {"dataset": "digit_scenes", "sbd": True}})

    # SBD train: one VOC train image, one VOC val image, two of its own; SBD val: one of SBD
    # train's again, the other VOC val image, one of its own
    sbd_train = ["2007_000002", "2007_000003", "2008_000010", "2008_000011"]
    sbd_val = ["2008_000011", "2007_000004", "2008_000012"]
    sbd_labels = write_sbd(tmp_path, sbd_train, sbd_val, rng)
    check_available(cfg)
    ds = train_aug(str(tmp_path))
    voc_part, *sbd_parts = ds.datasets
    ids = [image_id(p) for p in voc_part.images] + \
        [image_id(part.dataset.images[i]) for part in sbd_parts for i in part.indices]
    assert ids == voc_train + ["2008_000010", "2008_000011", "2008_000012"]
    assert len(ds) == len(ids) and not set(ids) & set(voc_val)
    for i, name in enumerate(ids):
        image, target = ds[i]
        want = voc_labels[name] if name in voc_train else sbd_labels[name]
        assert np.array_equal(np.array(target), want), name
        assert image.size == want.shape[::-1]
    # 2007_000002 is in SBD too, with other labels: the VOC annotation is the one used
    assert not np.array_equal(voc_labels["2007_000002"], sbd_labels["2007_000002"])

    data = build_data(cfg)
    assert data.num_train == 5 and data.num_val == 2
    batches = list(data.train)
    assert sum(len(y) for _, y in batches) == 5                 # every image once per epoch
    for x, y in batches:
        assert x.shape[1:] == (3, 16, 16) and y.shape[1:] == (16, 16)
        assert set(torch.unique(y).tolist()) <= set(range(21)) | {255}


@pytest.mark.slow
def test_table_voc_end_to_end(tmp_path, monkeypatch, isolated_stores):
    from analysis import table_voc
    from reproduce import tracking
    from reproduce.pipeline import make

    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump({"tiny": {"seeds": [0], "config": {
        "data": {"dataset": "digit_scenes", "synthetic_train": 64, "synthetic_val": 32,
                 "batch_size": 32, "image_size": 16},
        "train": {"epochs": 2, "lr": 0.05, "threads": 1}}}}))
    exp = tmp_path / "tiny-voc.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "tiny-voc", "figures": ["table-voc"], "base": {"model": {"name": "fcn_resnet20"}},
        "runs": [{"variant": "dense", "config": {"method": "dense"}},
                 {"variant": "grow-50", "config": {"method": "grow", "budget": {"target": 0.5}}},
                 {"variant": "uniform-50",
                  "config": {"method": "dense", "model": {"width_multiplier": 0.71}}}]}))
    monkeypatch.setattr(table_voc, "EXPERIMENTS", [str(exp)])
    make("table-voc", profile="tiny", progress=False)
    out = tmp_path / "figures"
    csv = pd.read_csv(out / "table-voc.csv").set_index("variant")
    assert sorted(csv.index) == ["dense", "grow-50", "uniform-50"]
    c = tracking.client(isolated_stores)
    store = {r.info.run_id: r for r in c.search_runs([tracking.experiment_id(c, "tiny", create=False)])}
    for variant, row in csv.iterrows():
        run = store[row["run_ids"]]
        assert row["miou_mean"] == pytest.approx(run.data.metrics[contract.VAL_MIOU])
        assert row["pixel_acc_mean"] == pytest.approx(run.data.metrics[contract.VAL_PIXEL_ACC])
        steps = [m.step for m in c.get_metric_history(run.info.run_id, contract.VAL_MIOU)]
        assert steps == [1, 2]
    assert csv.loc["dense", "inference_savings_mean"] == 0
    assert csv.loc["uniform-50", "inference_savings_mean"] > 40
    grow = store[csv.loc["grow-50", "run_ids"]].data.metrics
    assert "channels/classifier.0" in grow and "channels/stage1" in grow
    md = (out / "table-voc.md").read_text()
    assert "mIoU (%)" in md and all(i in md for i in store)
