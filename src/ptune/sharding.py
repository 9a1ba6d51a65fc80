"""A frozen LM sharded across processes with FSDP2; the prompt replicated.

Under ``accelerate launch`` with an FSDP config (``examples/fsdp.yaml``: Accelerate's
``FullyShardedDataParallelPlugin``, ``fsdp_version: 2``), or with ``ACCELERATE_USE_FSDP=true``
on CPU-only machines (where Accelerate itself runs no FSDP), the trainer shards the LM's
layers with ``torch.distributed.fsdp.fully_shard``: each process keeps 1/N of every
layer's weights and gathers a layer's full weights just for its forward and backward.
Which modules are layers: the plugin's ``transformer_cls_names_to_wrap``, else the
model's ``_no_split_modules`` (``GPT2Block``, ``BertLayer``...). The input embeddings and
the output head stay whole on every process (ptune reads them outside the LM's forward),
and so does the prompt encoder: each process computes its gradient on its slice of the
global batch and :func:`average_gradients` makes them equal, as DDP would.

Every process must run the same sequence of LM calls (each layer's gather is collective),
so a sharded run turns off the key/value-cache shortcuts, whose number of LM calls
depends on the batch, and evaluates every dev example on every process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["fsdp_plugin", "shard_lm", "shard_for_launch", "average_gradients", "outside_accelerate_fsdp"]


@contextlib.contextmanager
def outside_accelerate_fsdp() -> Iterator[None]:
    """Build an ``Accelerator`` inside this: under an FSDP launch it then stays out of
    Accelerate's own FSDP mode (ptune shards the LM itself, :func:`shard_for_launch`), so
    it saves and loads resume state as for any model it did not wrap, and run folders
    work as with DDP. The launch's FSDP settings stay in the environment for
    :func:`fsdp_plugin`. (Accelerate runs FSDP only on accelerators; on CPU this changes
    nothing.)"""
    asked = os.environ.get("ACCELERATE_USE_FSDP")
    if asked is None or asked.lower() != "true":
        yield
        return
    os.environ["ACCELERATE_USE_FSDP"] = "false"
    try:
        yield
    finally:
        os.environ["ACCELERATE_USE_FSDP"] = asked


def fsdp_plugin(accelerator: Any) -> Any | None:
    """Accelerate's FSDP plugin of this run: the accelerator's (GPU runs of an FSDP config),
    or one read from the environment (``ACCELERATE_USE_FSDP=true``, ``FSDP_*`` variables),
    or None: no sharding."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        from accelerate import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin()
    if plugin is None or accelerator.num_processes < 2:
        return None
    if plugin.fsdp_version != 2:
        raise ConfigError("fsdp_version", "ptune shards a frozen LM with FSDP2: set fsdp_version: 2 in the "
                                          "accelerate config (FSDP_VERSION=2)")
    return plugin


def _layers(lm: nn.Module, plugin: Any) -> list[nn.Module]:
    names = set(plugin.transformer_cls_names_to_wrap or getattr(lm, "_no_split_modules", None) or [])
    kept = {id(m) for m in (lm.get_input_embeddings(), lm.get_output_embeddings()) if m is not None}
    layers = [m for m in lm.modules() if type(m).__name__ in names  # not BertEmbeddings & co: ptune reads those
              and not any(id(sub) in kept for sub in m.modules())]
    if not layers:
        raise ConfigError("transformer_cls_names_to_wrap", f"no module of {type(lm).__name__} is one of "
                          f"{sorted(names) or 'its layer classes'}; name the layer class in the accelerate config")
    return layers


def shard_lm(lm: nn.Module, plugin: Any) -> int:
    """Shard each layer of ``lm`` across the processes (in place); how many layers."""
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    offload = CPUOffloadPolicy() if getattr(plugin.cpu_offload, "offload_params", False) else OffloadPolicy()
    reshard = plugin.reshard_after_forward if isinstance(plugin.reshard_after_forward, bool) else True
    layers = _layers(lm, plugin)
    for layer in layers:
        fully_shard(layer, reshard_after_forward=reshard, offload_policy=offload)
    # the root: what ptune reads outside the LM's forward stays whole (not managed by FSDP)
    kept = {p for m in (lm.get_input_embeddings(), lm.get_output_embeddings()) if m is not None for p in m.parameters()}
    fully_shard(lm, reshard_after_forward=reshard, offload_policy=offload, ignored_params=kept)
    return len(layers)


def shard_for_launch(model: nn.Module, accelerator: Any, finetune_lm: bool, run_folder: bool) -> bool:
    """Shard the frozen LM of ``model`` (a P-tuned model) when the launch asks for FSDP;
    whether it did."""
    plugin = fsdp_plugin(accelerator)
    if plugin is None:
        return False
    if finetune_lm:
        raise ConfigError("finetune_lm", "FSDP shards a frozen LM here; tune the LM jointly with DDP")
    if run_folder and accelerator.distributed_type == "FSDP":  # an Accelerator built before ptune's (the API)
        raise ConfigError("output_dir", "a run sharded under Accelerate's own FSDP mode keeps its weights in memory "
                          "(Accelerate saves no resume state for a model it did not wrap); give no output folder, or "
                          "let ptune build the first Accelerator of the process")
    shard_lm(model.lm, plugin)  # type: ignore[arg-type]
    if hasattr(model, "speed"):  # one plain LM call per forward: FSDP's gathers pair with autograd's uses
        model.speed = dataclasses.replace(model.speed, prefix_cache=False, lm_shortcuts=False)
    return True


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over the processes (one all-reduce per tensor)."""
    import torch.distributed as dist

    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)
