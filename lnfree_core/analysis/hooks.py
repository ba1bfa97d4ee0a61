"""Forward hooks that read (or replace) activations for the analyses, and eager attention on demand.

Residual stream points of a model with L blocks (numbered like TransformerLens' `resid_pre`):

    resid_pre.l  = input of block l,         l = 0 .. L-1   (resid_pre.0 = token + position embedding)
    resid_final  = input of the final norm   (= output of block L-1, before LN^f)

All of them are [batch, pos, d_model]. Hooks are registered for the duration of a `with` block and
always removed afterwards, also when the forward raises.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from ..method.adapters import adapter_for


def first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden states a module was called with (first positional argument or `hidden_states=`)."""
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    raise ValueError("hooked module was called without hidden states")


@contextlib.contextmanager
def hooks(pre: list[tuple[nn.Module, Callable]] = (), post: list[tuple[nn.Module, Callable]] = ()) -> Iterator[None]:
    """Register forward pre-hooks fn(module, args, kwargs) and forward hooks fn(module, args, kwargs, output).

    A pre-hook may return (args, kwargs) to replace the inputs; a forward hook may return a new output.
    """
    handles = []
    try:
        for module, fn in pre:
            handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
        for module, fn in post:
            handles.append(module.register_forward_hook(fn, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def residual_points(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """[(name, module)] whose *input* is each residual-stream point, in order (L + 1 of them)."""
    ad = adapter_for(model)
    points = [(f"resid_pre.{i}", block) for i, block in enumerate(ad.blocks(model))]
    points.append(("resid_final", ad.final_norm(model)))
    return points


@contextlib.contextmanager
def capture_residual(model: nn.Module, fn: Callable[[int, torch.Tensor], None]) -> Iterator[list[str]]:
    """Call fn(point_index, x [batch, pos, d_model]) for every residual point during forwards in the block.

    Yields the point names. fn should reduce x at once (the tensors are not kept).
    """
    points = residual_points(model)

    def make(i):
        def pre(module, args, kwargs):
            fn(i, first_input(args, kwargs))
        return pre

    with hooks(pre=[(m, make(i)) for i, (_, m) in enumerate(points)]):
        yield [name for name, _ in points]


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run the model with eager attention inside the block (attention modules then return their
    probabilities [batch, head, query, key]); restore the previous implementation afterwards.

    SDPA and flash attention never materialise the probabilities (transformers silently returns none).
    The switch changes the model's config while the block runs: do not share the model with another
    thread meanwhile (it would run eager attention too: slower, same results).
    """
    previous = getattr(model.config, "_attn_implementation", None)
    if previous == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
