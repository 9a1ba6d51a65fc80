"""A frozen LM larger than one device: Accelerate's big-model dispatch, with the parts
ptune reads itself kept on the main device.

``--device-map auto`` loads the LM with transformers' ``device_map`` over the GPUs, the
CPU and, past ``max_memory``, a folder on disk (``offload_folder``): each layer runs where
it lives and Accelerate's hooks move the activations between devices (and load offloaded
weights for the layer's forward and backward). ptune reads the input embeddings and the
output head's weights outside the LM's forward (to splice in the pseudo tokens and to
score only the candidate words), so this module builds the map with those modules pinned
to the first device; the other layers are placed by ``accelerate.infer_auto_device_map``.
The prompt encoder trains on the first device, its gradients flowing back through every
layer wherever it lives.

Example:
    >>> lm, tok, kind = load_dispatched("gpt2-xl", {0: "10GiB", "cpu": "30GiB"})   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any, Mapping

import torch
from torch import nn

from .errors import ConfigError
from .lm import detect_kind, hub_kwargs, kind_of, load_base

__all__ = ["device_map_for", "load_dispatched", "load_placed", "add_arguments", "is_dispatched", "main_device", "place",
           "parse_max_memory"]

_OFF = ("disk", "meta")


def parse_max_memory(text: str) -> dict[int | str, int | str]:
    """``"0=20GiB,1=20GiB,cpu=60GiB"`` → ``{0: "20GiB", 1: "20GiB", "cpu": "60GiB"}``
    (GPU indices as ints, as Accelerate expects)."""
    out: dict[int | str, int | str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not value.strip():
            raise ConfigError("max_memory", f"{part!r}: write DEVICE=SIZE, e.g. 0=20GiB,cpu=60GiB")
        key = key.strip()
        value = value.strip()
        out[int(key) if key.isdigit() else key] = int(value) if value.isdigit() else value  # bytes, or "20GiB"
    if not out:
        raise ConfigError("max_memory", "give at least one DEVICE=SIZE")
    return out


def _pinned(model: nn.Module) -> list[str]:
    """Names of the modules ptune reads outside the forward: input and output embeddings."""
    names = {id(m): n for n, m in model.named_modules()}
    found = [names.get(id(m)) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None]
    return [n for n in found if n]


def device_map_for(name_or_path: str, max_memory: Mapping[int | str, str] | None = None,
                   kind: str | None = None) -> dict[str, int | str]:
    """A ``device_map`` for the LM: Accelerate's placement under ``max_memory`` (default:
    what the devices have), with the input embeddings and the output head on the first
    device. Raises ConfigError when nothing fits on a real device."""
    import transformers
    from accelerate import infer_auto_device_map, init_empty_weights

    config = transformers.AutoConfig.from_pretrained(name_or_path, **hub_kwargs())
    auto = getattr(transformers, kind_of(kind or detect_kind(config)).auto_class)
    with init_empty_weights():
        empty = auto.from_config(config, **hub_kwargs())
    empty.tie_weights()
    split = list(getattr(empty, "_no_split_modules", None) or [])
    device_map = dict(infer_auto_device_map(empty, max_memory=dict(max_memory) if max_memory else None,
                                            no_split_module_classes=split))
    first = next((d for d in device_map.values() if d not in _OFF), None)
    if first is None:
        raise ConfigError("max_memory", f"no layer of {name_or_path} fits on a device within {dict(max_memory or {})}")
    for name in _pinned(empty):
        for key in list(device_map):
            if key.startswith(name + "."):
                device_map[key] = first
            elif (key in ("", name) or name.startswith(key + ".")) and device_map[key] != first:
                if key != name:  # the entry holds the pinned module among others
                    raise ConfigError("max_memory", f"{key or 'the model'} holds {name}, which must stay on "
                                      f"{first!r}; give that device more memory")
                device_map[key] = first
    return device_map


def load_dispatched(name_or_path: str, max_memory: Mapping[int | str, str] | None = None, kind: str | None = None,
                    offload_folder: str | None = None) -> tuple[nn.Module, Any, str]:
    """``load_base`` with the LM spread over the devices (and disk) by :func:`device_map_for`.
    Offloaded layers go to ``offload_folder`` (default: a temporary folder)."""
    device_map = device_map_for(name_or_path, max_memory, kind)
    folder = offload_folder
    if folder is None and any(d == "disk" for d in device_map.values()):
        folder = tempfile.mkdtemp(prefix="ptune-offload-")
    return load_base(name_or_path, kind, device_map=device_map, offload_folder=folder,
                     **({"max_memory": dict(max_memory)} if max_memory else {}))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--device-map``, ``--max-memory``, ``--offload-folder`` of the commands that load an LM."""
    p.add_argument("--device-map", choices=["auto"], help="spread the LM over the GPUs, the CPU and disk "
                   "(Accelerate's big-model dispatch; the prompt trains through it): docs/scaling.md")
    p.add_argument("--max-memory", help="with --device-map auto: memory per device, e.g. 0=20GiB,1=20GiB,cpu=60GiB "
                                        "(default: what each device has)")
    p.add_argument("--offload-folder", help="with --device-map auto: where layers past --max-memory go "
                                            "(default: a temporary folder)")


def load_placed(options: Mapping[str, Any], kind: str | None = None, processes: int = 1) -> tuple[nn.Module, Any, str]:
    """The LM of a command's ``options`` (``model`` and :func:`add_arguments`' options):
    ``load_base``, or spread over the devices with ``device_map="auto"``."""
    if not options.get("device_map"):
        for flag in ("max_memory", "offload_folder"):
            if options.get(flag):
                raise ConfigError("--" + flag.replace("_", "-"), "applies with --device-map auto only")
        return load_base(options["model"], kind)
    if processes > 1:
        raise ConfigError("--device-map", "spreads one LM over this machine's devices from one process; run it "
                          "without accelerate launch / torchrun (several processes: FSDP, docs/scaling.md)")
    memory = parse_max_memory(options["max_memory"]) if options.get("max_memory") else None
    return load_dispatched(options["model"], memory, kind, options.get("offload_folder"))


def is_dispatched(lm: nn.Module) -> bool:
    """Whether the LM was loaded over several devices (or partly offloaded) by Accelerate."""
    return len(set((getattr(lm, "hf_device_map", None) or {}).values())) > 1


def main_device(lm: nn.Module) -> torch.device:
    """Where a dispatched LM takes its input: the device of its input embeddings."""
    return lm.get_input_embeddings().weight.device


def place(model: nn.Module, device: torch.device | str) -> None:
    """Move ``model`` to ``device``, or, when its LM is dispatched, everything but the LM to
    the LM's main device."""
    lm = getattr(model, "lm", None)
    if lm is None or not is_dispatched(lm):
        model.to(device)
        return
    for child in model.children():
        if child is not lm:
            child.to(main_device(lm))

