"""The paper's strategies compute exactly their formulas (Liu et al. 2020, arXiv 2105.07205)."""

from __future__ import annotations

import pickle

import pytest
import torch
from jsonargparse import ArgumentParser
from torch import Tensor, nn

from skipln.errors import ConfigError
from skipln.skip import BlockSite, Plain, PostLN, PreLN, RecursiveSkipLN, Scaled, SkipStrategy
from skipln.skip.base import FinalNorm, StackBoundary

FEATURES = 6


def ln(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    """LayerNorm written out, with the module's own affine parameters."""
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def randomize(module: nn.Module) -> nn.Module:
    """Random affine parameters, so a test notices a norm that is skipped or swapped."""
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-2.0, 2.0)
    return module


@pytest.fixture
def x() -> Tensor:
    return torch.randn(3, 5, FEATURES)


@pytest.fixture
def body() -> nn.Linear:
    return randomize(nn.Linear(FEATURES, FEATURES))


def test_plain_is_x_plus_f(x: Tensor, body: nn.Linear) -> None:
    torch.testing.assert_close(Plain().build(FEATURES)(x, body), x + body(x))


@pytest.mark.parametrize("scale", [0.5, 2.0, -1.0])
def test_scaled_is_lambda_x_plus_f(x: Tensor, body: nn.Linear, scale: float) -> None:
    torch.testing.assert_close(Scaled(scale).build(FEATURES)(x, body), scale * x + body(x))


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_post_ln_is_ln_of_lambda_x_plus_f(x: Tensor, body: nn.Linear, scale: float) -> None:
    connection = randomize(PostLN(scale).build(FEATURES))
    torch.testing.assert_close(connection(x, body), ln(scale * x + body(x), connection.norm))


def test_pre_ln_is_x_plus_f_of_ln(x: Tensor, body: nn.Linear) -> None:
    connection = randomize(PreLN().build(FEATURES))
    torch.testing.assert_close(connection(x, body), x + body(ln(x, connection.norm)))


def test_pre_ln_normalizes_the_input_at_its_own_width_where_the_block_widens() -> None:
    # A block from 4 to 6 features: LN over x's 4, the body and the shortcut map to 6.
    connection = randomize(PreLN().build(FEATURES, site=BlockSite(in_features=4)))
    body, shortcut = randomize(nn.Linear(4, FEATURES)), randomize(nn.Linear(4, FEATURES))
    x = torch.randn(3, 4)
    torch.testing.assert_close(connection(x, body, shortcut), shortcut(x) + body(ln(x, connection.norm)))


def test_block_site_input_features_default_to_the_output_features() -> None:
    assert BlockSite().input_features(8) == 8 and BlockSite(in_features=4).input_features(8) == 4
    with pytest.raises(ValueError, match="in_features must be >= 1"):
        BlockSite(in_features=0)


def test_pre_ln_asks_for_a_final_norm_and_others_do_not() -> None:
    assert isinstance(PreLN().build_boundary(FEATURES), FinalNorm)
    for strategy in (Plain(), Scaled(2.0), PostLN(), RecursiveSkipLN(2)):
        boundary = strategy.build_boundary(FEATURES)
        assert type(boundary) is StackBoundary
        assert not list(boundary.parameters())


@pytest.mark.parametrize("recursions", [1, 2, 3])
def test_recursive_skip_ln_unrolls_to_the_papers_recursion(x: Tensor, body: nn.Linear, recursions: int) -> None:
    connection = randomize(RecursiveSkipLN(recursions).build(FEATURES))
    norms = list(connection.norms)
    y = ln(x + body(x), norms[0])
    for i in range(1, recursions):
        y = ln(x + y, norms[i])
    torch.testing.assert_close(connection(x, body), y)


def test_recursive_skip_ln_with_one_recursion_equals_post_ln(x: Tensor, body: nn.Linear) -> None:
    recursive, post = RecursiveSkipLN(1).build(FEATURES), PostLN().build(FEATURES)
    post.load_state_dict({k.replace("norms.0", "norm"): v for k, v in randomize(recursive).state_dict().items()})
    torch.testing.assert_close(recursive(x, body), post(x, body))


def test_recursive_skip_ln_has_one_norm_per_recursion_unless_shared() -> None:
    assert len(RecursiveSkipLN(3).build(FEATURES).norms) == 3
    assert len(RecursiveSkipLN(3, share_norm=True).build(FEATURES).norms) == 1


def test_recursive_skip_ln_with_shared_norm_reuses_it(x: Tensor, body: nn.Linear) -> None:
    connection = randomize(RecursiveSkipLN(2, share_norm=True).build(FEATURES))
    norm = connection.norms[0]
    torch.testing.assert_close(connection(x, body), ln(x + ln(x + body(x), norm), norm))


@pytest.mark.parametrize("strategy", [Plain(), Scaled(2.0), PostLN(2.0), PreLN(), RecursiveSkipLN(3)])
def test_body_is_called_exactly_once(x: Tensor, strategy: SkipStrategy) -> None:
    calls = []

    def body(t: Tensor) -> Tensor:
        calls.append(t)
        return 2 * t

    strategy.build(FEATURES)(x, body)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Plain(), lambda s, f, c: s + f),
        (Scaled(0.5), lambda s, f, c: 0.5 * s + f),
        (PostLN(2.0), lambda s, f, c: ln(2.0 * s + f, c.norm)),
        (RecursiveSkipLN(2), lambda s, f, c: ln(s + ln(s + f, c.norms[0]), c.norms[1])),
    ],
)
def test_shortcut_is_applied_on_the_skip_path_only(x: Tensor, strategy: SkipStrategy, expected) -> None:
    connection = randomize(strategy.build(FEATURES))
    shortcut = randomize(nn.Linear(FEATURES, FEATURES))
    f = torch.tanh(x)
    torch.testing.assert_close(connection(x, torch.tanh, shortcut), expected(shortcut(x), f, connection))


@pytest.mark.parametrize("strategy", [PostLN(), PreLN(), RecursiveSkipLN(2)])
def test_two_builds_share_no_parameters(strategy: SkipStrategy) -> None:
    a, b = strategy.build(FEATURES), strategy.build(FEATURES)
    assert {id(p) for p in a.parameters()}.isdisjoint(id(p) for p in b.parameters())


def test_norm_argument_replaces_layer_norm() -> None:
    connection = PostLN().build(4, norm=lambda c: nn.GroupNorm(1, c))
    assert isinstance(connection.norm, nn.GroupNorm)
    x = torch.randn(2, 4, 3, 3)
    y = connection(x, torch.zeros_like)
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        ("class_path: skipln.skip.Plain", Plain()),
        ("class_path: skipln.skip.Scaled\ninit_args: {scale: 0.5}", Scaled(0.5)),
        ("class_path: skipln.skip.PostLN\ninit_args: {scale: 2}", PostLN(2.0)),
        ("class_path: skipln.skip.PreLN", PreLN()),
        ("class_path: skipln.skip.RecursiveSkipLN\ninit_args: {recursions: 3, share_norm: true}", RecursiveSkipLN(3, True)),
    ],
)
def test_strategy_round_trips_through_yaml_class_path(yaml: str, expected: SkipStrategy) -> None:
    parser = ArgumentParser()
    parser.add_argument("--skip", type=SkipStrategy)
    config = parser.parse_string("skip:\n  " + yaml.replace("\n", "\n  "))
    strategy = parser.instantiate_classes(config).skip
    assert strategy == expected
    dumped = parser.dump(config)
    assert parser.instantiate_classes(parser.parse_string(dumped)).skip == expected


@pytest.mark.parametrize("strategy", [Plain(), Scaled(0.5), PostLN(2.0), PreLN(), RecursiveSkipLN(3, True)])
def test_strategies_pickle(strategy: SkipStrategy) -> None:
    assert pickle.loads(pickle.dumps(strategy)) == strategy


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: RecursiveSkipLN(0), "recursions"),
        (lambda: RecursiveSkipLN(-2), "recursions"),
        (lambda: RecursiveSkipLN(2.5), "recursions"),  # type: ignore[arg-type]
        (lambda: Scaled(float("inf")), "scale"),
        (lambda: Scaled(float("nan")), "scale"),
        (lambda: PostLN(float("-inf")), "scale"),
    ],
)
def test_invalid_hyperparameters_name_the_argument_and_allowed_values(make, argument: str) -> None:
    with pytest.raises(ConfigError, match=f"'{argument}' must be (an integer >= 1|a finite real number)"):
        make()


@pytest.mark.parametrize(
    ("strategy", "tag"),
    [
        (Plain(), "skip"),
        (Scaled(0.5), "xskip-0.5"),
        (PostLN(), "post_ln"),
        (PostLN(2.0), "xskip_ln-2"),
        (PreLN(), "pre_ln"),
        (RecursiveSkipLN(2), "rskip_ln-r2"),
        (RecursiveSkipLN(3, share_norm=True), "rskip_ln-r3-shared"),
    ],
)
def test_tags_name_strategy_and_hyperparameters(strategy: SkipStrategy, tag: str) -> None:
    assert strategy.tag == tag
