"""Many prompts on one frozen LM: rows of different prompts in one forward pass.

A :class:`PromptBank` holds one base LM and any number of P-tuned prompts trained on it
(checkpoints, or models built on the bank's LM object), each with its own template,
prompt encoder and verbalizer or candidates. A batch may mix rows of every prompt:

* each prompt collates its own rows (its template, truncation and answer words);
* the prompts' pseudo-token embeddings are stacked into one table and each row's pseudo
  positions point into its prompt's part of it;
* the rows are padded to one length (on each prompt's padding side) and the frozen LM runs
  once over all of them; the head's input is read at each row's answer positions;
* each prompt turns its rows' hidden states into scores as it does alone
  (:mod:`ptune.scoring`).

The scores equal those of each prompt run alone (``tests/invariants/test_multi.py``
compares them, causal and masked). Only PET's iterative filling of multi-token words
(``multi_token="iterative"``) needs passes that see earlier choices; those rows run their
extra passes per prompt.

Open-ended generation mixes prompts the same way: each row's input embeddings come from its
prompt, and the rows of a batch share the LM's ``generate`` calls
(:meth:`PromptBank.generate_text`).

Example:
    >>> bank = PromptBank.from_base("gpt2")                              # doctest: +SKIP
    >>> bank.add("sentiment", "runs/sst")                                 # doctest: +SKIP
    >>> bank.add("topic", "runs/topic")                                   # doctest: +SKIP
    >>> bank.predict([("sentiment", {"text": "great film"}),              # doctest: +SKIP
    ...               ("topic", {"text": "the match ended 2-1"})])
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from . import scoring
from .batch import Item, View
from .checkpoint import load_checkpoint, read_meta, resolve
from .config import GenerateConfig, SpeedConfig
from .errors import CheckpointError, ConfigError
from .generate import generate_text_rows
from .inference import model_device
from .lm import LMRunner, load_base
from .model import PTunedModel

__all__ = ["PromptBank"]


class PromptBank:
    """One frozen base LM and the prompts that run on it, scored together.

    Args:
        lm, tokenizer: the base model and its tokenizer (the LM is frozen and put in eval mode).
        base_model: its hub name or folder (for messages).
        kind: ``"masked"`` or ``"causal"`` (default: read from the model).
        speed: the LM shortcuts used in the shared pass (``lm_shortcuts``; the key/value
            cache paths of single prompts do not apply to rows of several prompts).
    """

    def __init__(self, lm: torch.nn.Module, tokenizer: Any, *, base_model: str | None = None,
                 kind: str | None = None, speed: SpeedConfig | None = None) -> None:
        self.lm, self.tokenizer = lm, tokenizer
        self.runner = LMRunner(lm, tokenizer, kind)
        self.base_model = base_model or getattr(lm.config, "_name_or_path", "") or "unknown"
        self.speed = speed or SpeedConfig()
        self.prompts: dict[str, PTunedModel] = {}
        for p in lm.parameters():
            p.requires_grad_(False)
        lm.eval()

    @classmethod
    def from_base(cls, model: str, kind: str | None = None, *, device: str | torch.device | None = None,
                  speed: SpeedConfig | None = None) -> "PromptBank":
        """Load a base model by hub name or folder (see :func:`ptune.lm.load_base`)."""
        lm, tokenizer, kind = load_base(model, kind)
        if device is not None:
            lm.to(device)
        return cls(lm, tokenizer, base_model=model, kind=kind, speed=speed)

    # ------------------------------------------------------------------ prompts
    def add(self, name: str, prompt: PTunedModel | str | os.PathLike) -> PTunedModel:
        """Add (or replace) the prompt ``name``: a checkpoint folder (or run folder) loaded
        onto the bank's LM, or a :class:`~ptune.model.PTunedModel` built on ``bank.lm``
        (put in eval mode: the bank serves it).

        Raises:
            CheckpointError: the checkpoint was trained on another base model, holds its
                own tuned LM or a classifier, or the model runs another LM.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError("name", f"a prompt needs a non-empty name, got {name!r}")
        if isinstance(prompt, PTunedModel):
            model, where = prompt, f"prompt {name!r}"
            if model.lm is not self.lm:
                raise CheckpointError(f"{where}: runs another LM object than the bank's; build it on bank.lm "
                                      "or add its checkpoint folder")
        else:
            model, where = self._load(prompt), str(prompt)
        if model.lm_trainable:
            raise CheckpointError(f"{where}: its LM is being tuned; a bank serves prompts of a frozen LM")
        if model.runner.kind is not self.runner.kind:
            raise CheckpointError(f"{where}: a prompt for a {model.runner.kind.name} LM; the bank's base "
                                  f"{self.base_model!r} is {self.runner.kind.name}")
        model.to(model_device(self.lm)).eval()
        self.prompts[name] = model
        return model

    def _load(self, path: str | os.PathLike) -> PTunedModel:
        meta = read_meta(path)
        folder = resolve(path)
        if "prompt" not in meta:
            raise CheckpointError(f"{folder}: holds a fine-tuned classifier, not a prompt")
        if meta.get("lm_included"):
            raise CheckpointError(f"{folder}: holds its own tuned LM; only prompts of a frozen LM share a base")
        model = load_checkpoint(folder, (self.lm, self.tokenizer))  # checks the base's fingerprint
        assert isinstance(model, PTunedModel)
        return model

    def remove(self, name: str) -> None:
        """Forget the prompt ``name``."""
        self.prompts.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self.prompts

    def __getitem__(self, name: str) -> PTunedModel:
        if name not in self.prompts:
            raise ConfigError("prompt", f"unknown prompt {name!r}; known: {', '.join(sorted(self.prompts)) or 'none'}")
        return self.prompts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    # ------------------------------------------------------------------ scoring
    def prepare(self, name: str, examples: Sequence[dict[str, Any]],
                sources: Sequence[str] | None = None) -> list[Item]:
        """Validate and tokenize examples for the prompt ``name`` (see :meth:`PTunedModel.prepare`)."""
        return self[name].prepare(examples, sources)

    @torch.no_grad()
    def score(self, rows: Sequence[tuple[str, Item]]) -> list[torch.Tensor]:
        """Scores of each ``(prompt name, prepared item)``: one 1-D tensor per row, over its
        prompt's labels (or its candidates), equal to the prompt's own scores. The LM runs
        once for all rows."""
        groups: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(rows):
            groups.setdefault(name, []).append(i)
        device = model_device(self.lm)
        parts = []
        for name, idx in groups.items():
            model = self[name]
            batch = model.collate([rows[i][1] for i in idx]).to(device)
            parts.append((model, idx, batch, model.pseudo_embeddings()))
        views = [(view, prompt, model.config.padding_side) for model, _, batch, prompt in parts
                 for view in batch.views if not scoring.fills_iteratively(model, view)]
        with self.runner.kernels(self.speed.lm_shortcuts):
            hidden = self._shared_pass(views)
            out: list[torch.Tensor] = [torch.empty(0)] * len(rows)
            for model, idx, batch, prompt in parts:
                scores = scoring.score_batch(_Replay(model, hidden), batch, prompt).scores
                for j, i in enumerate(idx):
                    out[i] = scores[j]
        return out

    def predict(self, rows: Sequence[tuple[str, dict[str, Any] | Item]], batch_size: int = 32) -> list[dict[str, Any]]:
        """Predictions as :meth:`PTunedModel.predict` gives them, for rows of any prompts;
        each batch of ``batch_size`` rows runs the LM once."""
        if batch_size < 1:
            raise ConfigError("batch_size", f"must be at least 1, got {batch_size}")
        items = self._items(rows)
        out: list[dict[str, Any]] = []
        for s in range(0, len(rows), batch_size):
            chunk = [(rows[i][0], items[i]) for i in range(s, min(s + batch_size, len(rows)))]
            for (name, item), scores in zip(chunk, self.score(chunk)):
                out += self[name].predictions(scores.unsqueeze(0), [item])
        return out

    def generate_text(self, rows: Sequence[tuple[str, dict[str, Any] | Item]], config: GenerateConfig | None = None,
                      batch_size: int = 16) -> list[dict[str, Any]]:
        """Open-ended text (:func:`ptune.generate.generate_text`) for rows of any prompts of a
        causal LM; the rows of a batch share the LM's ``generate`` calls whatever their
        prompts, and each row's text is the one its prompt writes alone."""
        items = self._items(rows)
        return generate_text_rows([(self[name], item) for (name, _), item in zip(rows, items)], config, batch_size)

    def _items(self, rows: Sequence[tuple[str, dict[str, Any] | Item]]) -> list[Item]:
        """Prepared items of the rows; examples are prepared per prompt (sources: ``example N``)."""
        items: list[Item | None] = [r if isinstance(r, Item) else None for _, r in rows]
        todo: dict[str, list[int]] = {}
        for i, (name, r) in enumerate(rows):
            if items[i] is None:
                todo.setdefault(name, []).append(i)
        for name, idx in todo.items():
            examples = [rows[i][1] for i in idx]
            prepared = self.prepare(name, examples, [f"example {i + 1}" for i in idx])  # type: ignore[arg-type]
            for i, item in zip(idx, prepared):
                items[i] = item
        return items  # type: ignore[return-value]

    def _shared_pass(self, views: list[tuple[View, torch.Tensor | None, str]]) -> dict[int, tuple[View, torch.Tensor]]:
        """The head's input at each view's answer positions, ``(R_v, L_v, H)``, from one
        forward pass over the rows of every view. Each view is padded further on its own
        padding side; position ids make the padding invisible."""
        if not views:
            return {}
        t = max(v.input_ids.shape[1] for v, _, _ in views)
        width = max(v.answer_positions.shape[1] for v, _, _ in views)
        pad_id = self.runner.pad_id
        cols: dict[str, list[torch.Tensor]] = {"ids": [], "mask": [], "pseudo": [], "types": [], "answer": []}
        tables, offset = [], 0
        for view, prompt, side in views:
            extra, left = t - view.input_ids.shape[1], side == "left"
            pseudo = view.pseudo_index
            if prompt is not None:
                pseudo = torch.where(pseudo >= 0, pseudo + offset, pseudo)
                tables.append(prompt.to(self.lm.get_input_embeddings().weight.dtype))
                offset += prompt.shape[0]
            for key, tensor, fill in (("ids", view.input_ids, pad_id), ("mask", view.attention_mask, 0),
                                      ("pseudo", pseudo, -1), ("types", view.token_type_ids, 0)):
                cols[key].append(F.pad(tensor, (extra, 0) if left else (0, extra), value=fill))
            pos = view.answer_positions + (extra if left else 0)
            cols["answer"].append(torch.cat([pos, pos[:, -1:].expand(-1, width - pos.shape[1])], 1))
        ids, mask, pseudo, types, answer = (torch.cat(cols[k]) for k in ("ids", "mask", "pseudo", "types", "answer"))
        emb = self.runner.embed(ids, pseudo, torch.cat(tables) if tables else None)
        side = "left" if any(s == "left" for _, _, s in views) else "right"
        kwargs = self.runner.forward_kwargs(mask, types, side)
        with self.runner.answer_only(self.speed.lm_shortcuts, answer) as restricted, self.runner.capture_head():
            h = self.lm(inputs_embeds=emb, **kwargs).logits
        if not restricted:
            h = h.gather(1, answer.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        out, start = {}, 0
        for view, _, _ in views:
            r, length = view.answer_positions.shape
            out[id(view)] = (view, h[start : start + r, :length])
            start += r
        return out


class _Replay:
    """A prompt's model whose ``answer_hidden`` returns the shared pass's hidden states for
    the views that were in it (and runs the prompt's own pass for any other view)."""

    def __init__(self, model: PTunedModel, hidden: dict[int, tuple[View, torch.Tensor]]) -> None:
        self._model, self._hidden = model, hidden

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def answer_hidden(self, view: View, prompt: torch.Tensor | None) -> torch.Tensor:
        seen = self._hidden.get(id(view))
        if seen is not None and seen[0] is view:
            return seen[1]
        return self._model.answer_hidden(view, prompt)
