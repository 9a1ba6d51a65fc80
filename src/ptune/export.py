"""Taking a prompt out of ptune and bringing one in: PEFT adapters and plain embeddings.

* :func:`export_peft` writes a PEFT ``PROMPT_TUNING`` adapter folder (``adapter_config.json``
  and ``adapter_model.safetensors`` holding one tensor, ``prompt_embeddings`` (n, H)) that
  ``PeftModel.from_pretrained(base, folder)`` loads. PEFT puts its pseudo tokens before the
  whole input, so only causal-LM templates whose pseudo tokens all precede the input can be
  exported; the tokenizer's leading special tokens (Llama's BOS), which ptune reads before
  the pseudo tokens, become the adapter's first rows, and PEFT's input is then tokenized
  without special tokens: the label probabilities are the same.
* :func:`export_embeddings` writes the pseudo-token embeddings (safetensors) with the
  template and the verbalizer as JSON, for any layout; :func:`ptune.generate.input_embeds`
  turns an example into the embedding sequence a serving engine accepts.
* :func:`import_peft` turns a PEFT ``PROMPT_TUNING`` or ``P_TUNING`` adapter of a causal LM
  into a :class:`~ptune.model.PTunedModel` whose pseudo tokens precede the given template
  (``encoder="none"``), ready to evaluate, save and train further.

Every export writes a model card (:mod:`ptune.card`).

Example:
    >>> notes = export_checkpoint("runs/sst", "peft", "exports/sst-peft")        # doctest: +SKIP
    >>> model, notes = import_peft("adapters/imdb", template="{text}[MASK]",      # doctest: +SKIP
    ...                            verbalizer={"pos": "good", "neg": "bad"})
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from . import __version__
from .card import Card, RunFacts, read_card, write_card
from .checkpoint import load_checkpoint, read_meta, resolve
from .config import PromptConfig
from .errors import CheckpointError, ConfigError, TemplateError
from .files import atomic_dir, write_json_atomic
from .lm import load_base
from .model import PTunedModel
from .template import Answer, Field, Pseudo, Sep, Template, Text, special_token_frame

__all__ = ["export_peft", "export_embeddings", "export_checkpoint", "import_peft", "FORMATS"]

FORMATS = ("peft", "embeddings")
PEFT_TENSOR = "prompt_embeddings"
EMBEDDINGS_NAME = "pseudo_embeddings.safetensors"


# ----------------------------------------------------------------------------- PEFT layout
def _peft() -> Any:
    """The ``peft`` package (imported when needed: only exports and imports use it)."""
    try:
        import peft
        import peft.utils
    except ImportError:
        raise ConfigError("format", "PEFT adapters need the peft package: pip install peft") from None
    return peft


def _where(e: Any) -> str:
    return f"{{{e.name}}}" if isinstance(e, Field) else "[SEP]" if isinstance(e, Sep) else repr(e.text.strip())


def _check_peft_layout(model: PTunedModel) -> None:
    """Raise unless every pseudo token stands before the input's first token."""
    if model.runner.kind.answer_in_input:
        raise ConfigError("format", "PEFT has no prompt-learning task type for masked LMs; "
                                    "export with --format embeddings")
    text = model.config.template
    if not model.compiled.n_pseudo:
        raise TemplateError(text, None, "has no pseudo tokens to export")
    last, n, misplaced, column = None, 0, [], None
    for e in model.compiled.elements:
        if isinstance(e, Pseudo):
            if last is not None:
                name = f"P{n + 1}" if e.count == 1 else f"P{n + 1}-P{n + e.count}"
                misplaced.append(f"{name} after {_where(last)}")
                column = e.column if column is None else column
            n += e.count
        elif isinstance(e, (Field, Sep)) or (isinstance(e, Text) and e.text.strip()):
            last = e
    if misplaced:
        raise TemplateError(text, column, f"pseudo tokens {', '.join(misplaced)}: a PEFT prompt-learning adapter "
                                          "puts all its pseudo tokens before the whole input, so it cannot express "
                                          "this layout; export with --format embeddings (any layout)")


def _input_text(model: PTunedModel) -> str:
    """The template between its (leading) pseudo tokens and the answer slot: PEFT's input."""
    elements = model.compiled.elements
    first = next(e for e in elements if not isinstance(e, Pseudo))
    answer = next(e for e in elements if isinstance(e, Answer))
    return model.config.template[first.column : answer.column].rstrip() if first is not answer else ""


# ----------------------------------------------------------------------------- exports
def export_peft(model: PTunedModel, out: str | os.PathLike, facts: RunFacts | None = None) -> list[str]:
    """Write ``model``'s prompt as a PEFT ``PROMPT_TUNING`` adapter folder (see the module doc).

    Returns:
        Notes on how PEFT's use differs from ptune's (also in the folder's card).

    Raises:
        TemplateError: a pseudo token stands after part of the input (naming each such one).
        ConfigError: a masked LM, or a tuned LM (an adapter holds the prompt only).
    """
    PromptTuningConfig = _peft().PromptTuningConfig
    _check_peft_layout(model)
    _check_frozen(model)
    prefix = model.compiled.prefix
    rows = _pseudo_rows(model)
    if prefix:  # ptune reads the leading special tokens first; PEFT's rows come first
        rows = torch.cat([_word_rows(model.lm, prefix), rows])
    text_config = model.lm.config.get_text_config()
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=rows.shape[0], token_dim=rows.shape[1],
                                num_transformer_submodules=1, num_layers=text_config.num_hidden_layers,
                                num_attention_heads=text_config.num_attention_heads,
                                base_model_name_or_path=model.base_model, inference_mode=True)
    special = model.tokenizer.convert_ids_to_tokens(prefix)
    notes = [f"PEFT's input is the template's text after its pseudo tokens, up to the answer slot: "
             f"{_input_text(model)!r} with the fields filled in; the next tokens are the answer, scored by the "
             f"verbalizer's words{' spelled after a space' if model.compiled.answer.space_before else ''}."]
    if prefix:
        notes.append(f"The first {len(prefix)} of the {rows.shape[0]} virtual tokens are the input embeddings of "
                     f"the tokenizer's leading special token(s) {' '.join(special)}, which ptune reads before its "
                     "pseudo tokens: tokenize PEFT's input with add_special_tokens=False to get ptune's "
                     "probabilities.")
    with atomic_dir(out) as tmp:
        config.save_pretrained(str(tmp))
        save_file({PEFT_TENSOR: rows.contiguous()}, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        write_card(tmp, _card(model, "A PEFT prompt-tuning adapter exported from a ptune prompt",
                              _merge(facts, notes), _peft_usage(model, bool(prefix))))
    return notes


def export_embeddings(model: PTunedModel, out: str | os.PathLike, facts: RunFacts | None = None) -> list[str]:
    """Write the pseudo-token embeddings (``pseudo_embeddings.safetensors``, (n, H)), the
    template (``template.json``: its text, parts and the tokenizer's special tokens) and the
    verbalizer (``verbalizer.json``: words and their token ids), for any template layout.

    Returns:
        Notes for the user (also in the folder's card).
    """
    _check_frozen(model)
    if not model.compiled.n_pseudo:
        raise TemplateError(model.config.template, None, "has no pseudo tokens to export")
    rows = _pseudo_rows(model)
    notes = ["Rebuild an input the way ptune does with ptune.input_embeds(model, examples) (a loaded "
             "checkpoint); template.json lists the parts in order for other tools."]
    with atomic_dir(out) as tmp:
        save_file({"pseudo_embeddings": rows.contiguous()}, str(tmp / EMBEDDINGS_NAME),
                  metadata={"format": "pt", "ptune_version": __version__})
        write_json_atomic(tmp / "template.json", _template_json(model))
        write_json_atomic(tmp / "verbalizer.json", _verbalizer_json(model))
        write_card(tmp, _card(model, "Pseudo-token embeddings exported from a ptune prompt", _merge(facts, notes),
                              _embeddings_usage(model)))
    return notes


def export_checkpoint(checkpoint: str | os.PathLike, format: str, out: str | os.PathLike,
                      base: str | None = None) -> list[str]:
    """Export checkpoint (or run folder) ``checkpoint`` in ``format`` (``peft`` or
    ``embeddings``) to folder ``out``; the card keeps the checkpoint's metrics and training
    config. Returns the export's notes."""
    if format not in FORMATS:
        raise ConfigError("format", f"{format!r}; accepted: {', '.join(FORMATS)}")
    path = resolve(checkpoint)
    if "prompt" not in read_meta(path):
        raise CheckpointError(f"{path}: a fine-tuned classifier; only P-tuned prompts can be exported")
    model = load_checkpoint(path, base)
    saved = read_card(path).get("ptune", {})
    facts = RunFacts(metrics=saved.get("metrics"), training=saved.get("training"),
                     notes=(f"Exported from the ptune checkpoint {path.name}/ (ptune {__version__}).",))
    return (export_peft if format == "peft" else export_embeddings)(model, out, facts)


@torch.no_grad()
def _pseudo_rows(model: PTunedModel) -> torch.Tensor:
    """The pseudo-token embeddings as served (eval mode), (n, H) float32 on the CPU."""
    was = model.training
    model.eval()
    try:
        return model.pseudo_embeddings().detach().float().cpu()
    finally:
        model.train(was)


@torch.no_grad()
def _word_rows(lm: Any, ids: list[int]) -> torch.Tensor:
    """The LM's input embeddings of token ``ids``, (len(ids), H) float32 on the CPU."""
    table = lm.get_input_embeddings()
    return table(torch.tensor(ids, device=table.weight.device)).float().cpu()


def _check_frozen(model: PTunedModel) -> None:
    if model.lm_trainable or getattr(model, "own_lm", False):
        raise ConfigError("checkpoint", "the LM was tuned with the prompt; an export holds the prompt only and "
                                        "would run on the untuned base model")


def _merge(facts: RunFacts | None, notes: list[str]) -> RunFacts:
    facts = facts or RunFacts()
    return RunFacts(metrics=facts.metrics, training=facts.training, notes=(*facts.notes, *notes))


def _card(model: PTunedModel, title: str, facts: RunFacts, usage: str) -> Card:
    return Card(title=title, base_model=model.base_model, config={**model.config.to_dict(), "kind": model.kind},
                n_pseudo=model.compiled.n_pseudo, facts=facts, usage=usage)


def _template_json(model: PTunedModel) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    n = 0
    for e in model.compiled.elements:
        if isinstance(e, Pseudo):
            parts.append({"pseudo": list(range(n, n + e.count))})
            n += e.count
        elif isinstance(e, Field):
            parts.append({"field": e.name, "space_before": e.space_before})
        elif isinstance(e, Text) and e.text.strip():
            parts.append({"text": e.text})
        elif isinstance(e, Sep):
            parts.append({"sep": model.tokenizer.sep_token})
        elif isinstance(e, Answer):
            parts.append({"answer": "continuation" if not model.runner.kind.answer_in_input else "mask"})
    tok = model.tokenizer
    return {"template": model.config.template, "kind": model.kind, "n_pseudo": n, "parts": parts,
            "leading_special_tokens": tok.convert_ids_to_tokens(model.compiled.prefix),
            "trailing_special_tokens": tok.convert_ids_to_tokens(model.compiled.suffix),
            "prompt_config": model.config.to_dict(), "base_model": model.base_model}


def _verbalizer_json(model: PTunedModel) -> dict[str, Any]:
    if model.answers is None:
        return {"candidates_field": model.config.candidates_field}
    token_ids: dict[str, list[list[int]]] = {label: [] for label in model.answers.labels}
    for ids, label in zip(model.answers.candidates, model.answers.cand_label_list):
        token_ids[model.answers.labels[label]].append(list(ids))
    return {"verbalizer": model.config.verbalizer, "token_ids": token_ids,
            "normalize": model.config.normalize, "length_norm": model.config.length_norm}


def _peft_usage(model: PTunedModel, baked: bool) -> str:
    base = model.base_model or "BASE"
    return (f"```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f"base = AutoModelForCausalLM.from_pretrained({base!r})\ntokenizer = AutoTokenizer.from_pretrained({base!r})\n"
            f"model = PeftModel.from_pretrained(base, \"PATH\")  # this folder\n"
            f"text = {_input_text(model)!r}.format(...)  # the example's fields\n"
            f"ids = tokenizer(text, return_tensors=\"pt\"{', add_special_tokens=False' if baked else ''})\n"
            "next_token_logits = model(**ids).logits[0, -1]  # compare the verbalizer's word tokens\n```")


def _embeddings_usage(model: PTunedModel) -> str:
    return ("With ptune and the checkpoint, `ptune.input_embeds(model, examples)` gives each example's input "
            "embedding sequence (T, H); a causal LM continues after it. With vLLM (`enable_prompt_embeds=True`):\n\n"
            "```python\nimport ptune\nfrom vllm import LLM\n\n"
            "model = ptune.load_checkpoint(\"CHECKPOINT\")\n"
            "embeds = ptune.input_embeds(model, [{...}])  # one example's fields\n"
            f"llm = LLM({(model.base_model or 'BASE')!r}, enable_prompt_embeds=True)\n"
            "out = llm.generate({\"prompt_embeds\": embeds[0].cpu()})\n```\n\n"
            f"`{EMBEDDINGS_NAME}` holds the pseudo tokens' embeddings in template order; `template.json` the "
            "template's parts, `verbalizer.json` the labels' words and token ids.")


# ----------------------------------------------------------------------------- import
def _read_adapter(folder: Path) -> tuple[Any, torch.Tensor]:
    """PEFT's config and prompt embeddings of an adapter folder, checked to map onto ptune."""
    peft = _peft()
    if not (folder / "adapter_config.json").is_file():
        inside = sorted(p.parent.name for p in folder.glob("*/adapter_config.json"))
        hint = f"; it holds the adapters {', '.join(inside)}: import one of them" if inside else ""
        raise CheckpointError(f"{folder}: not a PEFT adapter (no adapter_config.json){hint}")
    try:
        config = peft.PeftConfig.from_pretrained(str(folder))
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{folder / 'adapter_config.json'}: not a readable PEFT config ({e})") from None
    kind = str(getattr(config.peft_type, "value", config.peft_type))
    task = str(getattr(config.task_type, "value", config.task_type))
    if kind not in ("PROMPT_TUNING", "P_TUNING"):
        raise CheckpointError(f"{folder}: a {kind} adapter; only PROMPT_TUNING and P_TUNING adapters are pseudo "
                              "tokens before the input, which a ptune prompt can hold")
    if task == "SEQ_2_SEQ_LM" or config.num_transformer_submodules != 1:
        raise CheckpointError(f"{folder}: a seq2seq adapter ({config.num_transformer_submodules} groups of virtual "
                              f"tokens, task type {task}); ptune runs causal and masked LMs with one group")
    if task != "CAUSAL_LM":
        raise CheckpointError(f"{folder}: task type {task}; only CAUSAL_LM adapters score through the LM's head, "
                              "as a ptune verbalizer does")
    weights = peft.utils.load_peft_weights(str(folder), device="cpu")
    rows = weights.get(PEFT_TENSOR)
    want = (config.num_virtual_tokens, config.token_dim)
    if rows is None or tuple(rows.shape) != want or len(weights) != 1:
        got = {k: tuple(v.shape) for k, v in weights.items()}
        raise CheckpointError(f"{folder}: expected one tensor {PEFT_TENSOR!r} of shape {want}, found {got}")
    return config, rows.float()


def import_peft(adapter: str | os.PathLike, *, base: str | None = None, template: str,
                **prompt: Any) -> tuple[PTunedModel, list[str]]:
    """A PEFT ``PROMPT_TUNING`` / ``P_TUNING`` adapter of a causal LM as a P-tuned model.

    Args:
        adapter: the adapter folder (``adapter_config.json``, ``adapter_model.safetensors``).
        base: the base model (default: the adapter's ``base_model_name_or_path``).
        template: the input after the pseudo tokens, without pseudo tokens, e.g.
            ``"{text}[MASK]"``; the adapter's n pseudo tokens are put before it.
        **prompt: other :class:`~ptune.config.PromptConfig` fields (``verbalizer``, ...).

    Returns:
        The model (encoder ``none`` holding the adapter's embeddings) and notes for the user.

    Raises:
        CheckpointError: not a PEFT adapter, or one that cannot be mapped (another PEFT
            type, a seq2seq or non-causal task, a size that does not fit the base model).
        ConfigError: no base model known; a template with pseudo tokens.
    """
    folder = Path(adapter)
    config, rows = _read_adapter(folder)
    base = base or config.base_model_name_or_path
    if not base:
        raise ConfigError("model", f"{folder}: the adapter names no base model; give one")
    for key, why in (("encoder", "an imported prompt is its embeddings (encoder none)"),
                     ("kind", "a CAUSAL_LM adapter runs on a causal LM")):
        if key in prompt:
            raise ConfigError(key, f"set by the import: {why}")
    if Template.parse(template).n_pseudo:
        raise ConfigError("template", f"{template!r} holds pseudo tokens; the adapter's {rows.shape[0]} pseudo "
                                      "tokens are put before it, give the rest of the input")
    lm, tokenizer, kind = load_base(base, "causal")
    hidden = lm.get_input_embeddings().embedding_dim
    if rows.shape[1] != hidden:
        raise CheckpointError(f"{folder}: token_dim {rows.shape[1]} does not fit {base!r} (hidden size {hidden})")
    notes = [f"Imported from the PEFT {getattr(config.peft_type, 'value', config.peft_type)} adapter {folder.name}/ "
             f"({rows.shape[0]} virtual tokens)."]
    prefix = special_token_frame(tokenizer)[0]
    if prefix:
        emb = _word_rows(lm, prefix)
        special = " ".join(tokenizer.convert_ids_to_tokens(prefix))
        if rows.shape[0] > len(prefix) and torch.allclose(rows[: len(prefix)], emb, rtol=0, atol=1e-6):
            rows = rows[len(prefix):]
            notes.append(f"The adapter's first {len(prefix)} rows are the embeddings of {special}, which ptune "
                         "puts before the pseudo tokens itself; the scores equal PEFT's on inputs tokenized "
                         "without special tokens.")
        else:
            notes.append(f"PEFT puts the virtual tokens before the tokenizer's leading {special}; ptune puts its "
                         f"pseudo tokens after it, so scores differ from PEFT's (which sees {special} after the "
                         "prompt).")
    n = rows.shape[0]
    config_p = PromptConfig(template=f"[P*{n}]{template}", encoder="none", kind=kind, **prompt)
    model = PTunedModel(lm, tokenizer, config_p, base_model=base)
    with torch.no_grad():
        model.encoder.embedding.weight.copy_(rows.to(model.encoder.embedding.weight.dtype))  # type: ignore[union-attr]
    return model.eval(), notes
