"""Every measured unit of work, built by name for a size preset.

Names:

* ``transformer/<strategy>`` — one training step (forward, label-smoothed loss, backward,
  Adam step) of skipln's Transformer with that skip strategy (:data:`STRATEGIES`) and the
  translation task's loss; ``transformer/torch`` — the same step of
  :class:`benchmarks.references.TorchSeq2Seq` with the same loss written with
  ``F.cross_entropy``. ``transformer/<model>/<loss>`` swaps the loss (``skipln_loss`` or
  ``torch_loss``), so that the model and the loss are credited separately;
  ``transformer/<strategy>/torch_dropout`` is skipln's model and loss with ``nn.Dropout`` in
  place of :class:`skipln.models.dropout.Dropout`, to credit the dropout. All count
  non-padding target tokens.
* ``flops/post_ln`` — the Post-LN training step at the FLOP row's sizes (d 512),
  ``flops/headline`` at the training rows' sizes, counting matmul FLOPs; ``matmul`` — one
  large matmul, counting its FLOPs (the machine's peak).
* ``beam/cached``, ``beam/recompute`` — beam search (beam 5) over a batch of sentences with
  the key/value cache, or recomputing every prefix (projecting only the last position onto
  the vocabulary, as a user would); ``beam/marian`` — Hugging Face
  ``MarianMTModel.generate`` at the same sizes, settings and stopping rule (needs
  ``transformers``). All count sentences and record the decoder steps they ran.
* ``resnet/<strategy>/<layout>[/B]`` — one SGD training step of skipln's CIFAR ResNet with
  that strategy (shortcut option A, or B with ``/B``); ``resnet/torchvision/<layout>`` of
  :class:`benchmarks.references.TorchvisionCifarResNet` (torchvision's ``BasicBlock``,
  projection shortcuts); ``layout`` is ``contiguous`` or ``channels_last``. They count images.
* the end-to-end rows over the embedded corpus (:mod:`benchmarks.endtoend`): ``fit/...``,
  ``corpus/...``, ``data/...``, ``tokenize/...``.

Every builder seeds torch, so ours and the reference see the same data, and takes the run's
:class:`benchmarks.settings.Settings` (device, precision, compile), the same for both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.flops import transformer_training_flops
from benchmarks.harness import Skipped, Workload, matmul_workload
from benchmarks.references import TorchSeq2Seq, TorchvisionCifarResNet
from benchmarks.settings import Settings
from benchmarks.sizes import Sizes
from skipln.decoding import SpecialTokens, beam_search
from skipln.errors import ConfigError
from skipln.models.dropout import Dropout
from skipln.models.resnet import ResNet
from skipln.models.transformer import Transformer
from skipln.skip import DeepNorm, Plain, PostLN, PreLN, RecursiveSkipLN, ReZero, ResiDual, SandwichLN, SkipStrategy
from skipln.losses import label_smoothed_nll_loss

#: The strategies the benchmarks compare, by the names of their configs in configs/skip/.
STRATEGIES: dict[str, Callable[[], SkipStrategy]] = {
    "skip": Plain,
    "post_ln": PostLN,
    "pre_ln": PreLN,
    "xskip_ln2": lambda: PostLN(2.0),
    "rskip_ln2": lambda: RecursiveSkipLN(2),
    "rskip_ln3": lambda: RecursiveSkipLN(3),
    "deepnorm": DeepNorm,
    "rezero": ReZero,
    "residual": ResiDual,
    "sandwich_ln": SandwichLN,
}

#: fairseq's special token ids (the same in every model here).
SPECIAL = SpecialTokens(bos=0, pad=1, eos=2)

DROPOUT = 0.1
LABEL_SMOOTHING = 0.1
BEAM = 5
MAX_LEN_A = 1.2
LAYOUTS = ("contiguous", "channels_last")
SHORTCUTS = ("A", "B")


def _strategy(name: str) -> SkipStrategy:
    if name not in STRATEGIES:
        raise ConfigError(f"benchmarks: unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()


# --------------------------------------------------------------------------- translation


def translation_batch(sizes: Sizes, sentences: int, source_len: int, target_len: int, vocab: int) -> dict[str, Tensor]:
    """A right-padded batch: every other sentence's source and target end in ``pad_tail`` padding tokens."""
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(3, vocab, (sentences, source_len), generator=generator)
    prev = torch.randint(3, vocab, (sentences, target_len), generator=generator)
    target = torch.randint(3, vocab, (sentences, target_len), generator=generator)
    src_lengths = torch.full((sentences,), source_len)
    src_lengths[1::2] = source_len - sizes.pad_tail
    src[1::2, source_len - sizes.pad_tail :] = SPECIAL.pad
    prev[1::2, target_len - sizes.pad_tail :] = SPECIAL.pad
    target[1::2, target_len - sizes.pad_tail :] = SPECIAL.pad
    prev[:, 0] = SPECIAL.bos
    return {"src_tokens": src, "src_lengths": src_lengths, "prev_output_tokens": prev, "target": target}


Loss = Callable[[Tensor, Tensor, int], Tensor]


def skipln_loss(logits: Tensor, target: Tensor, pad: int = SPECIAL.pad) -> Tensor:
    """The translation task's loss: :func:`skipln.losses.label_smoothed_nll_loss` (fused backward)."""
    return label_smoothed_nll_loss(logits, target, LABEL_SMOOTHING, pad)[0]


def pytorch_loss(logits: Tensor, target: Tensor, pad: int = SPECIAL.pad) -> Tensor:
    """The same loss as one writes it with PyTorch: ``F.cross_entropy`` with ``label_smoothing``.

    PyTorch spreads ε over all V tokens, fairseq over the V − 1 others; ε·V/(V − 1) makes the
    two equal (tests/test_losses.py checks it).
    """
    vocab = logits.shape[-1]
    return F.cross_entropy(
        logits.reshape(-1, vocab), target.reshape(-1), ignore_index=pad,
        label_smoothing=LABEL_SMOOTHING * vocab / (vocab - 1), reduction="sum",
    )


def _translation_steps(
    model: nn.Module, batches: list[dict[str, Tensor]], loss_fn: Loss, settings: Settings, pad: int = SPECIAL.pad
) -> Callable[[], None]:
    """Forward, label-smoothed loss per target token, backward, Adam step: once per batch, in order."""
    settings.prepare(model)
    model.train()
    keys = ("src_tokens", "src_lengths", "prev_output_tokens", "target")
    batches = [{key: batch[key].to(settings.device) for key in keys} for batch in batches]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
    ntokens = [int((batch["target"] != pad).sum()) for batch in batches]

    def steps() -> None:
        for batch, count in zip(batches, ntokens, strict=True):
            optimizer.zero_grad(set_to_none=True)
            with settings.autocast():
                logits = model(batch["src_tokens"], batch["src_lengths"], batch["prev_output_tokens"])
                loss = loss_fn(logits, batch["target"], pad)
            (loss / count).backward()
            optimizer.step()

    return steps


def _translation_step(model: nn.Module, batch: dict[str, Tensor], loss_fn: Loss, settings: Settings) -> Callable[[], None]:
    """One training step on ``batch`` (see :func:`_translation_steps`)."""
    return _translation_steps(model, [batch], loss_fn, settings)


def _ours_transformer(vocab: int, skip: SkipStrategy, *, dim: int, ffn_dim: int, heads: int, layers: int) -> Transformer:
    # nn.Transformer has one dropout rate for residuals, attention weights and activations: match all three.
    return Transformer(
        vocab, skip, layers, layers, dim, ffn_dim, heads,
        dropout=DROPOUT, attention_dropout=DROPOUT, activation_dropout=DROPOUT,
    )


#: The losses a training row can pair with a model: each model's own by default; the ablation rows swap them.
LOSSES: dict[str, Loss] = {"skipln_loss": skipln_loss, "torch_loss": pytorch_loss}
#: The variant of a training row that swaps skipln's dropout for ``nn.Dropout`` (the dropout's ablation).
TORCH_DROPOUT = "torch_dropout"


def transformer_model(vocab: int, model_name: str, *, dim: int, ffn_dim: int, heads: int, layers: int) -> nn.Module:
    """skipln's Transformer with strategy ``model_name``, or ``torch``: :class:`TorchSeq2Seq`, at these sizes."""
    if model_name == "torch":
        return TorchSeq2Seq(vocab, dim, heads, layers, ffn_dim, DROPOUT)
    return _ours_transformer(vocab, _strategy(model_name), dim=dim, ffn_dim=ffn_dim, heads=heads, layers=layers)


def with_torch_dropout(model: nn.Module) -> nn.Module:
    """``model`` with every :class:`skipln.models.dropout.Dropout` replaced by an ``nn.Dropout`` of the same rate."""
    for module in list(model.modules()):
        for child_name, child in module.named_children():
            if isinstance(child, Dropout):
                setattr(module, child_name, nn.Dropout(child.p))
    return model


def transformer_training(sizes: Sizes, model_name: str, settings: Settings, variant: str | None = None) -> Workload:
    """``transformer/<strategy|torch>[/<variant>]``: one training step; each model trains with its own loss and dropout
    unless ``variant`` names a loss (:data:`LOSSES`) or ``torch_dropout``."""
    name = f"transformer/{model_name}" + (f"/{variant}" if variant is not None else "")
    torch_dropout = variant == TORCH_DROPOUT
    if torch_dropout and model_name == "torch":
        raise ConfigError("benchmarks: transformer/torch already uses nn.Dropout; torch_dropout is for skipln's models")
    loss_name = "torch_loss" if model_name == "torch" else "skipln_loss"
    if variant is not None and not torch_dropout:
        loss_name = variant
    if loss_name not in LOSSES:
        raise ConfigError(f"benchmarks: unknown variant {variant!r}; choose one of {', '.join([*LOSSES, TORCH_DROPOUT])}")
    torch.manual_seed(0)
    shape = {"dim": sizes.dim, "ffn_dim": sizes.ffn_dim, "heads": sizes.heads, "layers": sizes.layers}
    model = transformer_model(sizes.vocab, model_name, **shape)
    if torch_dropout:
        model = with_torch_dropout(model)
    batch = translation_batch(sizes, sizes.sentences, sizes.source_len, sizes.target_len, sizes.vocab)
    tokens = float((batch["target"] != SPECIAL.pad).sum())
    return Workload(
        name, _translation_step(model, batch, LOSSES[loss_name], settings), tokens, "tok", settings.device,
        info={
            **shape, "vocab": sizes.vocab, "sentences": sizes.sentences, "dropout": DROPOUT, "loss": loss_name,
            "dropout_module": "nn.Dropout" if torch_dropout or model_name == "torch" else "skipln Dropout",
        },
    )


def flops_training(sizes: Sizes, at: str, settings: Settings) -> Workload:
    """``flops/post_ln`` (the FLOP row's sizes, d 512) or ``flops/headline`` (the training rows' sizes): counts matmul FLOPs."""
    torch.manual_seed(0)
    if at == "headline":
        shape = {"dim": sizes.dim, "ffn_dim": sizes.ffn_dim, "heads": sizes.heads, "layers": sizes.layers}
    else:
        shape = {"dim": sizes.flops_dim, "ffn_dim": sizes.flops_ffn_dim, "heads": sizes.flops_heads, "layers": sizes.flops_layers}
    model = _ours_transformer(sizes.vocab, PostLN(), **shape)
    batch = translation_batch(sizes, sizes.sentences, sizes.source_len, sizes.target_len, sizes.vocab)
    flops = transformer_training_flops(
        sentences=sizes.sentences, source_len=sizes.source_len, target_len=sizes.target_len, dim=shape["dim"],
        ffn_dim=shape["ffn_dim"], vocab=sizes.vocab, encoder_layers=shape["layers"], decoder_layers=shape["layers"],
    )
    step = _translation_step(model, batch, skipln_loss, settings)
    output_share = (sizes.sentences * sizes.target_len * 2 * shape["dim"] * sizes.vocab * 3) / flops
    return Workload(
        f"flops/{at}", step, flops, "FLOP", settings.device,
        info={**shape, "vocab": sizes.vocab, "output_projection_share": round(output_share, 3)},
    )


# --------------------------------------------------------------------------- beam search


def _beam_inputs(sizes: Sizes, settings: Settings) -> tuple[Tensor, Tensor, int]:
    """Sources of equal length, so every decoder applies the same length limit to every sentence."""
    generator = torch.Generator().manual_seed(1)
    src = torch.randint(3, sizes.vocab, (sizes.beam_sentences, sizes.beam_source_len), generator=generator)
    src[:, -1] = SPECIAL.eos
    lengths = torch.full((sizes.beam_sentences,), sizes.beam_source_len)
    max_len = int(MAX_LEN_A * sizes.beam_source_len + sizes.beam_max_len_b)
    return src.to(settings.device), lengths.to(settings.device), max_len


def _counting_calls(module: nn.Module) -> list[int]:
    """A one-element counter of ``module``'s forward calls (a decoder called once per decoding step)."""
    calls = [0]

    def count(_module: nn.Module, _args: Any) -> None:
        calls[0] += 1

    module.register_forward_pre_hook(count)
    return calls


def _decoding_workload(name: str, search: Callable[[], Tensor], steps: list[int], sizes: Sizes, settings: Settings) -> Workload:
    """Runs ``search`` once to record the work it does: decoding steps and generated lengths, the same in every run."""
    lengths = search()
    done = steps[0]
    steps[0] = 0
    info = {
        "beam": BEAM, "max_len_a": MAX_LEN_A, "max_len_b": sizes.beam_max_len_b, "decoder_steps": done,
        "generated_tokens_mean": round(float(lengths.float().mean()), 3),
    }
    return Workload(name, search, float(sizes.beam_sentences), "sent", settings.device, info=info)


def beam_decoding(sizes: Sizes, mode: str, settings: Settings) -> Workload:
    """``beam/cached``, ``beam/recompute`` or ``beam/marian``."""
    if mode == "marian":
        return marian_generate(sizes, settings)
    torch.manual_seed(0)
    model = Transformer(sizes.vocab, PostLN(), sizes.beam_layers, sizes.beam_layers, sizes.beam_dim, sizes.beam_ffn_dim, sizes.beam_heads)
    settings.prepare(model, compile=False).eval()
    src, lengths, _ = _beam_inputs(sizes, settings)
    use_cache = mode == "cached"
    steps = _counting_calls(model.decoder_layers[0])

    def run() -> Tensor:
        with settings.autocast():
            found = beam_search(
                model, src, lengths, SPECIAL, beam_size=BEAM, max_len_a=MAX_LEN_A, max_len_b=sizes.beam_max_len_b, use_cache=use_cache
            )
        return found.lengths

    return _decoding_workload(f"beam/{mode}", run, steps, sizes, settings)


def marian_generate(sizes: Sizes, settings: Settings) -> Workload:
    """Hugging Face MarianMT ``generate`` with beam 5, random weights, the same sizes, inputs and stopping rule as ``beam/cached``.

    No weights are downloaded: the model is built from a ``MarianConfig``. ``early_stopping=True``
    is fairseq's rule, which skipln follows: a sentence is done when ``beam`` hypotheses have
    finished. The row checks that both sides then run the same number of decoder steps.
    """
    try:
        from transformers import MarianConfig, MarianMTModel
    except ImportError:
        raise Skipped("transformers is not installed: pip install -e '.[bench]'") from None
    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=sizes.vocab,
        d_model=sizes.beam_dim,
        encoder_layers=sizes.beam_layers,
        decoder_layers=sizes.beam_layers,
        encoder_attention_heads=sizes.beam_heads,
        decoder_attention_heads=sizes.beam_heads,
        encoder_ffn_dim=sizes.beam_ffn_dim,
        decoder_ffn_dim=sizes.beam_ffn_dim,
        activation_function="relu",
        max_position_embeddings=1024,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=SPECIAL.pad,
        eos_token_id=SPECIAL.eos,
        bos_token_id=SPECIAL.bos,
        decoder_start_token_id=SPECIAL.bos,
        forced_eos_token_id=SPECIAL.eos,
        scale_embedding=True,
    )
    model = settings.prepare(MarianMTModel(config), compile=False).eval()
    src, lengths, max_len = _beam_inputs(sizes, settings)
    attention_mask = torch.ones_like(src)
    steps = _counting_calls(model.get_decoder())

    def run() -> Tensor:
        with torch.no_grad(), settings.autocast():
            # skipln allows max_len tokens before eos and forces eos after them: max_len + 1 new tokens.
            out = model.generate(
                input_ids=src,
                attention_mask=attention_mask,
                num_beams=BEAM,
                num_return_sequences=1,
                do_sample=False,
                length_penalty=1.0,
                max_new_tokens=max_len + 1,
                min_new_tokens=1,
                early_stopping=True,
                use_cache=True,
            )
        # Generated tokens up to and including eos, the decoder-start token excluded.
        generated = out[:, 1:]
        return (generated != SPECIAL.pad).sum(dim=1)

    return _decoding_workload("beam/marian", run, steps, sizes, settings)


# --------------------------------------------------------------------------- ResNet


def resnet_training(sizes: Sizes, model_name: str, layout: str, settings: Settings, shortcut: str = "A") -> Workload:
    """``resnet/<strategy>/<layout>[/B]`` (skipln's ResNet, shortcut option A unless ``/B``) or ``resnet/torchvision/<layout>``."""
    if layout not in LAYOUTS:
        raise ConfigError(f"benchmarks: unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if shortcut not in SHORTCUTS:
        raise ConfigError(f"benchmarks: unknown shortcut {shortcut!r}; choose one of {', '.join(SHORTCUTS)}")
    torch.manual_seed(0)
    if model_name == "torchvision":
        model: nn.Module = TorchvisionCifarResNet(sizes.resnet_depth)
        shortcut = "B"
    else:
        model = ResNet(sizes.resnet_depth, "basic", skip=_strategy(model_name), shortcut=shortcut)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(sizes.resnet_batch, 3, sizes.image_size, sizes.image_size, generator=generator)
    labels = torch.randint(0, 10, (sizes.resnet_batch,), generator=generator)
    images, labels = images.to(settings.device), labels.to(settings.device)
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    settings.prepare(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with settings.autocast():
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    name = f"resnet/{model_name}/{layout}" + ("/B" if shortcut == "B" and model_name != "torchvision" else "")
    return Workload(
        name, step, float(sizes.resnet_batch), "img", settings.device,
        info={"depth": sizes.resnet_depth, "batch": sizes.resnet_batch, "layout": layout, "shortcut": shortcut},
    )


def _layer_norm_flat(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """LN over each sample's flattened (C, H, W) with the per-channel affine broadcast over it: one ``layer_norm`` call."""
    _, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        nhwc = F.layer_norm(x.permute(0, 2, 3, 1), (h, w, c), weight.expand(h, w, c), bias.expand(h, w, c))
        return nhwc.permute(0, 3, 1, 2)
    return F.layer_norm(x, (c, h, w), weight[:, None, None].expand(c, h, w), bias[:, None, None].expand(c, h, w))


#: Ways to layer-normalize a feature map with a per-channel affine (the ResNet's LN): forward and backward.
FEATURE_NORMS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "group_norm": lambda x, weight, bias: F.group_norm(x, 1, weight, bias),
    "layer_norm_flat": _layer_norm_flat,
}


def feature_norm(sizes: Sizes, impl: str, stage: int, layout: str, settings: Settings) -> Workload:
    """``norm/<impl>/<stage>/<layout>``: LN of a ResNet stage's feature map (forward, backward), as :data:`FEATURE_NORMS` computes it."""
    if impl not in FEATURE_NORMS or stage not in (1, 2, 3) or layout not in LAYOUTS:
        raise ConfigError(f"benchmarks: expected norm/<{'|'.join(FEATURE_NORMS)}>/<1|2|3>/<{'|'.join(LAYOUTS)}>")
    channels, side = 16 * 2 ** (stage - 1), sizes.image_size // 2 ** (stage - 1)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(sizes.resnet_batch, channels, side, side, generator=generator)
    grad = torch.randn(x.shape, generator=generator)
    if layout == "channels_last":
        x, grad = x.contiguous(memory_format=torch.channels_last), grad.contiguous(memory_format=torch.channels_last)
    x = x.to(settings.device).requires_grad_()
    grad = grad.to(settings.device)
    weight = torch.ones(channels, device=settings.device, requires_grad=True)
    bias = torch.zeros(channels, device=settings.device, requires_grad=True)
    norm = FEATURE_NORMS[impl]

    def run() -> None:
        with settings.autocast():
            out = norm(x, weight, bias)
        torch.autograd.grad(out, (x, weight, bias), grad)

    return Workload(f"norm/{impl}/{stage}/{layout}", run, float(sizes.resnet_batch), "img", settings.device,
                    info={"shape": list(x.shape), "layout": layout})


# --------------------------------------------------------------------------- by name


def build(name: str, sizes: Sizes, settings: Settings | None = None) -> Workload:
    """The workload called ``name`` (see the module's docstring) at ``sizes``, run as ``settings`` say (default: CPU, float32)."""
    from benchmarks import endtoend  # the rows over the real corpus: they import Lightning and the data module

    settings = settings or Settings()
    parts = name.split("/")
    builders: dict[str, Callable[[], Workload]] = {}
    if parts[0] == "transformer" and len(parts) in (2, 3):
        builders[name] = lambda: transformer_training(sizes, parts[1], settings, parts[2] if len(parts) == 3 else None)
    elif parts[0] == "beam" and len(parts) == 2 and parts[1] in ("cached", "recompute", "marian"):
        builders[name] = lambda: beam_decoding(sizes, parts[1], settings)
    elif parts[0] == "resnet" and len(parts) in (3, 4):
        builders[name] = lambda: resnet_training(sizes, parts[1], parts[2], settings, parts[3] if len(parts) == 4 else "A")
    elif parts[0] == "flops" and len(parts) == 2 and parts[1] in ("post_ln", "headline"):
        builders[name] = lambda: flops_training(sizes, parts[1], settings)
    elif parts[0] == "norm" and len(parts) == 4 and parts[2].isdigit():
        builders[name] = lambda: feature_norm(sizes, parts[1], int(parts[2]), parts[3], settings)
    elif name == "matmul":
        builders[name] = lambda: matmul_workload(sizes.matmul_size, settings.device, settings.dtype)
    elif name in endtoend.WORKLOADS:
        builders[name] = lambda: endtoend.WORKLOADS[name](sizes, settings)
    if name not in builders:
        raise ConfigError(
            f"benchmarks: unknown workload {name!r}; expected transformer/<strategy|torch>[/<loss>|torch_dropout], "
            f"beam/<cached|recompute|marian>, resnet/<strategy|torchvision>/<contiguous|channels_last>[/B], "
            f"flops/<post_ln|headline>, matmul or one of {', '.join(endtoend.WORKLOADS)}"
        )
    return builders[name]()


def info_of(workload: Workload) -> dict[str, Any]:
    """The workload's recorded settings with its unit count."""
    return {"units_per_run": workload.units, "unit": workload.unit, **workload.info}


__all__ = ["LAYOUTS", "SPECIAL", "STRATEGIES", "build", "info_of", "translation_batch"]
