"""Tests for the model zoo (fedforget.models)."""

from __future__ import annotations

import copy
import io
import json
import sys
import types

import pytest
import torch
from torch import nn

from fedforget.config import ConfigError, RunConfig
from fedforget.data.base import DatasetInfo
from fedforget.models import (
    MODELS,
    build,
    build_model,
    count_parameters,
    criterion,
    criterion_for,
    default_model,
    resolve_model_name,
)

INFOS = {
    info.name: info
    for info in (
        DatasetInfo("mnist", (1, 28, 28), 10, "image"),
        DatasetInfo("cifar10", (3, 32, 32), 10, "image"),
        DatasetInfo("digits", (64,), 10, "tabular"),
        DatasetInfo("location", (446,), 30, "tabular"),
        DatasetInfo("letter", (16,), 26, "tabular"),
        DatasetInfo("breast-cancer", (30,), 2, "tabular"),
        DatasetInfo("adult", (108,), 2, "tabular"),
        DatasetInfo("gray16", (1, 16, 12), 3, "image"),  # non-square, small: generic flatten sizes
        DatasetInfo("rgb8", (3, 8, 8), 4, "image"),  # smallest image cnn / resnet18 accept
    )
}

CASES = [
    pytest.param(name, info, id=f"{name}-{info.name}")
    for name, spec in MODELS.items()
    for info in INFOS.values()
    if spec.fits(info)
]

EXPECTED_FITS = {
    "mlp": set(INFOS),
    "logreg": set(INFOS),
    "svm": set(INFOS),
    "lenet": {"mnist", "cifar10", "gray16"},
    "cnn": {"mnist", "cifar10", "gray16", "rgb8"},
    "resnet18": {"cifar10", "rgb8"},
}


def _batch(name: str, info: DatasetInfo, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A small random batch; labels deliberately unbalanced (a balanced batch can zero the svm bias grad)."""
    n = 2 if name == "resnet18" else 5
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *info.input_shape), generator=gen)
    y = torch.arange(n) % 2
    return x, y


def test_registry_and_compatibility_table() -> None:
    assert list(MODELS) == ["mlp", "lenet", "cnn", "resnet18", "logreg", "svm"]
    for name, spec in MODELS.items():
        assert {i.name for i in INFOS.values() if spec.fits(i)} == EXPECTED_FITS[name], name


@pytest.mark.parametrize(("name", "info"), CASES)
def test_forward_gives_finite_logits(name: str, info: DatasetInfo) -> None:
    model = build_model(name, info, seed=0)
    x, _ = _batch(name, info)
    for mode in (model.train, model.eval):
        mode()
        with torch.no_grad():
            out = model(x)
        assert out.shape == (len(x), info.num_classes)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "info"), CASES)
def test_backward_gives_nonzero_gradient_for_every_parameter(name: str, info: DatasetInfo) -> None:
    model = build_model(name, info, seed=0)
    model.train()
    x, y = _batch(name, info)
    loss = criterion_for(model)(model(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    params = list(model.named_parameters())
    assert params
    for pname, p in params:
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize(("name", "info"), CASES)
def test_seeded_build_is_deterministic_and_leaves_global_rng_alone(name: str, info: DatasetInfo) -> None:
    rng_state = torch.get_rng_state()
    a = build_model(name, info, seed=7).state_dict()
    b = build_model(name, info, seed=7).state_dict()
    c = build_model(name, info, seed=8).state_dict()
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(("name", "info"), CASES)
def test_state_dict_round_trip_reproduces_outputs(name: str, info: DatasetInfo) -> None:
    source = build_model(name, info, seed=1)
    x, y = _batch(name, info, seed=3)
    # One training step so the weights (and batch-norm statistics) are not the initial ones.
    source.train()
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1)
    criterion_for(source)(source(x), y).backward()
    optimizer.step()
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = build_model(name, info, seed=2)
    target.load_state_dict(torch.load(buffer, weights_only=True))
    source.eval()
    target.eval()
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_param_counts_match_docstrings() -> None:
    counts = {
        ("mlp", "digits"): 50_826,
        ("mlp", "location"): 151_198,
        ("lenet", "mnist"): 61_706,
        ("cnn", "cifar10"): 356_810,
        ("resnet18", "cifar10"): 11_173_962,
        ("logreg", "mnist"): 7_850,
        ("svm", "digits"): 650,
    }
    for (name, dataset), expected in counts.items():
        assert count_parameters(build_model(name, INFOS[dataset], seed=0)) == expected, (name, dataset)


def test_resnet18_is_torchvision_resnet_with_cifar_stem() -> None:
    from torchvision.models import ResNet

    model = build_model("resnet18", INFOS["cifar10"], seed=0)
    assert isinstance(model, ResNet)
    assert isinstance(model, nn.Module)
    conv1 = model.conv1
    assert isinstance(conv1, nn.Conv2d)
    assert (conv1.kernel_size, conv1.stride, conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert isinstance(model.maxpool, nn.Identity)
    assert "layer4.1.bn2.running_var" in model.state_dict()


def test_default_model() -> None:
    expected = {"mnist": "lenet", "cifar10": "cnn", "gray16": "lenet", "rgb8": "cnn"}
    for info in INFOS.values():
        assert default_model(info) == expected.get(info.name, "mlp"), info.name
        assert resolve_model_name("auto", info) == default_model(info)
    assert default_model(DatasetInfo("tiny", (1, 6, 6), 2, "image")) == "mlp"


def test_resolve_is_case_insensitive() -> None:
    assert resolve_model_name(" LeNet ", INFOS["mnist"]) == "lenet"
    assert resolve_model_name("ResNet18", INFOS["cifar10"]) == "resnet18"


def test_unknown_model_name_suggests_and_lists() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_model_name("resnet", INFOS["cifar10"])
    message = str(err.value)
    assert "Unknown model 'resnet'" in message
    assert "Did you mean 'resnet18'?" in message
    for name in ("auto", *MODELS):
        assert name in message
    with pytest.raises(ConfigError, match="Unknown model"):
        build_model("transformer", INFOS["digits"])


@pytest.mark.parametrize("name", ["lenet", "cnn", "resnet18"])
def test_image_models_refuse_tabular_data(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_model(name, INFOS["digits"])
    message = str(err.value)
    assert f"'{name}' does not fit dataset 'digits'" in message
    assert "tabular" in message
    assert "mlp, logreg, svm" in message


def test_resnet18_refuses_single_channel_images() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_model_name("resnet18", INFOS["mnist"])
    message = str(err.value)
    assert "3-channel" in message
    assert "mlp, lenet, cnn, logreg, svm" in message
    assert "auto = lenet" in message


def test_too_small_images_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 12x12"):
        build_model("lenet", INFOS["rgb8"])


def test_criterion_dispatch() -> None:
    assert isinstance(criterion("svm"), nn.MultiMarginLoss)
    for name in ("auto", "mlp", "lenet", "cnn", "resnet18", "logreg"):
        assert isinstance(criterion(name), nn.CrossEntropyLoss), name
    for name, info in (("svm", INFOS["digits"]), ("logreg", INFOS["digits"]), ("cnn", INFOS["cifar10"])):
        model = build_model(name, info, seed=0)
        assert type(criterion_for(model)) is type(criterion(name))
    assert isinstance(criterion_for(nn.Linear(2, 2)), nn.CrossEntropyLoss)
    with pytest.raises(ConfigError, match="Did you mean 'svm'"):
        criterion("svn")


def test_svm_criterion_is_multiclass_hinge() -> None:
    scores = torch.tensor([[0.1, 0.2, 0.4], [2.0, 0.0, -1.0], [0.5, 0.9, 0.0]])
    labels = torch.tensor([2, 0, 1])
    # Hand computation: per sample sum_{j != y} max(0, 1 - s_y + s_j) / num_classes, then the mean.
    #   sample 0: (max(0, 1 - 0.4 + 0.1) + max(0, 1 - 0.4 + 0.2)) / 3 = (0.7 + 0.8) / 3 = 0.5
    #   sample 1: (max(0, 1 - 2 + 0) + max(0, 1 - 2 - 1)) / 3 = 0
    #   sample 2: (max(0, 1 - 0.9 + 0.5) + max(0, 1 - 0.9 + 0.0)) / 3 = (0.6 + 0.1) / 3
    expected = (0.5 + 0.0 + 0.7 / 3) / 3
    loss = criterion("svm")(scores, labels)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", ["logreg", "svm"])
def test_short_training_on_separable_toy_problem(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    info = DatasetInfo("toy", (5,), 3, "tabular")
    centers = 3.0 * torch.randn((3, 5), generator=gen)
    y = torch.randint(0, 3, (300,), generator=gen)
    x = centers[y] + 0.5 * torch.randn((300, 5), generator=gen)
    model = build_model(name, info, seed=0)
    loss_fn = criterion(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):  # epochs of mini-batch SGD
        for idx in torch.randperm(300, generator=gen).split(32):
            optimizer.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
    assert accuracy > 0.95


@pytest.fixture
def fake_data_info(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """Stand-in for fedforget.data (its info() is static metadata); records the calls."""
    calls: list[tuple[str, str | None]] = []

    def info(name: str, data_dir: str | None = None) -> DatasetInfo:
        calls.append((name, data_dir))
        return INFOS[name]

    module = types.ModuleType("fedforget.data")
    module.info = info  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fedforget.data", module)
    return calls


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_build_from_run_config_and_config_json(fake_data_info: list[tuple[str, str | None]]) -> None:
    config = RunConfig(dataset="digits", data_dir="/data", model="auto", seed=3, num_rounds=7)
    model = build(config)
    assert fake_data_info == [("digits", "/data")]
    assert _same_state(model, build_model("mlp", INFOS["digits"], seed=3))

    record = json.loads(json.dumps(config.to_dict()))  # what a run record's config.json holds
    record["some-future-key"] = 1  # extra keys are ignored
    rebuilt = build(record)
    assert fake_data_info[-1] == ("digits", "/data")
    assert _same_state(rebuilt, model)
    rebuilt.load_state_dict(model.state_dict())

    assert not _same_state(build(record, seed=4), model)
    svm = build({"dataset": "mnist", "model": "svm"})  # defaults: data-dir "" -> None, seed 0
    assert fake_data_info[-1] == ("mnist", None)
    assert _same_state(svm, build_model("svm", INFOS["mnist"], seed=0))
    assert isinstance(criterion_for(svm), nn.MultiMarginLoss)


def test_build_rejects_bad_mappings(fake_data_info: list[tuple[str, str | None]]) -> None:
    with pytest.raises(ConfigError, match="no 'dataset'"):
        build({"model": "mlp"})
    with pytest.raises(ConfigError, match="seed"):
        build({"dataset": "digits", "seed": -1})
    with pytest.raises(ConfigError, match="does not fit"):
        build({"dataset": "digits", "model": "lenet"})


def test_build_with_real_dataset_info() -> None:
    try:
        from fedforget.data import info
    except ImportError:
        pytest.skip("fedforget.data.info is not available yet")
    model = build(RunConfig(dataset="digits", model="auto", seed=0))
    digits = info("digits")
    assert model(torch.zeros((2, *digits.input_shape))).shape == (2, digits.num_classes)


@pytest.mark.parametrize("shape", [(7, 6, 28, 28), (3, 2, 9, 11), (4, 5, 8), (1, 1, 2, 2)])
def test_fast_max_pool_equals_torch_max_pool_bit_for_bit(shape: tuple[int, ...]) -> None:
    """The no-grad path of MaxPool2x2 (strided maxima) gives exactly nn.MaxPool2d(2)'s output, ties,
    NaN, odd sizes (floor mode) and 3-D inputs included; with autograd it is nn.MaxPool2d(2) itself."""
    from fedforget.models.pooling import MaxPool2x2

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator).round(decimals=1)  # rounding makes ties
    x.view(-1)[0] = float("nan")
    reference, fast = nn.MaxPool2d(2), MaxPool2x2()
    with torch.no_grad():
        expected, got = reference(x), fast(x)
    assert got.shape == expected.shape
    assert torch.equal(got.isnan(), expected.isnan()) and got.isnan().any()
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(expected))
    leaf = torch.randn(*shape, generator=generator).requires_grad_()
    (reference(leaf) ** 2).sum().backward()
    grad_reference = leaf.grad.clone()
    leaf.grad = None
    (fast(leaf) ** 2).sum().backward()
    assert torch.equal(leaf.grad, grad_reference)


def test_lenet_inference_is_unchanged_by_the_fast_pooling() -> None:
    """LeNet's no-grad logits equal those of the same weights with nn.MaxPool2d(2) modules."""
    model = build_model("lenet", INFOS["mnist"], seed=0).eval()
    plain = copy.deepcopy(model)
    for name, module in list(plain.features.named_children()):
        if isinstance(module, nn.MaxPool2d):
            plain.features[int(name)] = nn.MaxPool2d(2)
    assert type(plain.features[2]) is nn.MaxPool2d and type(model.features[2]) is not nn.MaxPool2d
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
