"""The P-tuned model: any Hugging Face causal or masked LM plus a prompt encoder.

Data flow (paper §1): the template renders each example to token ids with placeholder ids
at the pseudo positions (:mod:`ptune.collate`); the LM's input embeddings are looked up,
the prompt encoder's output is written into the pseudo positions (:meth:`PTunedModel.embed`)
and the result is fed as ``inputs_embeds``; the LM's head input is read at the answer
positions (:meth:`PTunedModel.answer_hidden`) and turned into label scores
(:mod:`ptune.scoring`). Causal LMs take cached paths where they are exact (:mod:`ptune.cache`).

Nothing here looks at model names: what differs between masked and causal LMs is decided
in :mod:`ptune.lm`.

Example:
    >>> model = PTunedModel.from_base(                      # doctest: +SKIP
    ...     "gpt2", template="{premise} ? [P*3] [MASK]",
    ...     verbalizer={"entailment": "yes", "not_entailment": "no"})
    >>> model.predict([{"premise": "A cat sleeps."}])        # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import cache, scoring
from .batch import Batch, Item, Output, View
from .collate import Collator
from .config import GenerateConfig, PromptConfig, SpeedConfig
from .encoder import EncoderConfig, PromptEncoder
from .data import is_stream, iter_examples
from .errors import ConfigError
from .generate import generate, generate_text
from .inference import iter_outputs, iter_predictions
from .lm import LMRunner, LMWrapper, detect_kind, head_input, load_base
from .template import CompiledTemplate, Pseudo, Template
from .verbalizer import CompiledVerbalizer, Verbalizer

__all__ = ["PTunedModel", "Item", "Batch", "View", "Output", "LMWrapper", "detect_kind", "load_base", "head_input",
           "prediction_record"]


def prediction_record(prediction: dict[str, Any], top: int = 20) -> dict[str, Any]:
    """A prediction of :meth:`PTunedModel.predict` as ``ptune predict`` and ``ptune serve``
    write it: the label and the ``top`` best labels' probabilities rounded to 6 decimals;
    with per-example candidates, the best one's text and index and every candidate's
    probability."""
    scores = prediction["scores"]
    if not isinstance(scores, dict):
        return {"label": prediction["label"], "index": prediction["index"], "scores": [round(v, 6) for v in scores]}
    best = sorted(scores.items(), key=lambda kv: -kv[1])[:top] if len(scores) > top else scores.items()
    return {"label": prediction["label"], "scores": {label: round(v, 6) for label, v in best}}


class PTunedModel(LMWrapper):
    """A masked or causal LM with a P-tuning prompt.

    Args:
        lm: an ``AutoModelForMaskedLM`` / ``AutoModelForCausalLM`` model.
        tokenizer: its tokenizer.
        config: template, verbalizer, encoder and scoring options.
        base_model: the name or path the LM was loaded from (recorded in checkpoints).
        seed: seed of the prompt encoder's initial weights (default: the global RNG state).
        speed: the exact shortcuts to use (default: all; see :class:`ptune.config.SpeedConfig`).

    The LM starts frozen (``requires_grad=False``, dropout off); see :meth:`set_lm_trainable`.
    """

    def __init__(self, lm: nn.Module, tokenizer: Any, config: PromptConfig, *, base_model: str | None = None,
                 seed: int | None = None, speed: SpeedConfig | None = None):
        super().__init__(lm, tokenizer, config, base_model)
        self._runner = LMRunner(lm, tokenizer, self.kind)
        if config.max_length is not None and config.max_length > self._runner.max_positions:
            raise ConfigError("max_length", f"{config.max_length} is more than the {self._runner.max_positions} "
                                            "positions the model takes")
        self.template = Template.parse(config.template, x_field=config.x_field)
        self.compiled: CompiledTemplate = self.template.compile(
            tokenizer, self._runner.kind, max_length=config.max_length or self._runner.max_positions,
            truncation=config.truncation, token_types=config.token_types)
        self.per_example = config.candidates_field is not None
        self.verbalizer: Verbalizer | None = None
        self.answers: CompiledVerbalizer | None = None
        if not self.per_example:
            self.verbalizer = Verbalizer(config.verbalizer)
            self.answers = self.verbalizer.compile(tokenizer, self.compiled.answer.space_before)
        self.collator = Collator(config, self.template, self.compiled, self.verbalizer, self.answers, tokenizer,
                                 self._runner.kind, self._runner.pad_id)
        self.hidden_size = lm.get_input_embeddings().embedding_dim
        self.encoder = self._build_encoder(seed) if self.compiled.n_pseudo else None
        self._memo = cache.SharedPrefixMemo()
        self.speed = speed or SpeedConfig()
        self.set_lm_trainable(False)

    @classmethod
    def from_base(cls, model: str, template: str, verbalizer: dict[str, Any] | Verbalizer, *,
                  encoder: str | EncoderConfig = "lstm", seed: int | None = None, **options: Any) -> "PTunedModel":
        """Load a base model by hub name or folder and wrap it.

        Args:
            model: e.g. ``"gpt2"``, ``"bert-base-cased"`` or a local folder.
            template: the template text.
            verbalizer: ``{label: word(s)}``.
            encoder: ``"lstm"``, ``"mlp"``, ``"none"`` or an :class:`EncoderConfig`.
            seed: seed of the prompt encoder's initial weights.
            **options: other :class:`~ptune.config.PromptConfig` fields.
        """
        enc = EncoderConfig(type=encoder) if isinstance(encoder, str) else encoder
        vmap = verbalizer.to_dict() if isinstance(verbalizer, Verbalizer) else dict(verbalizer)
        config = PromptConfig(template=template, verbalizer=vmap, encoder=enc, **options)
        lm, tokenizer, kind = load_base(model, config.kind)
        return cls(lm, tokenizer, PromptConfig(**{**config.to_dict(), "kind": kind}), base_model=model, seed=seed)

    def _build_encoder(self, seed: int | None) -> PromptEncoder:
        table = self.lm.get_input_embeddings().weight
        # free embeddings start at the LM's own embedding scale; LSTM/MLP inputs at N(0, 1)
        std = float(table.detach().float().std()) if self.config.encoder.type == "none" else 1.0
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            return PromptEncoder(self.config.encoder, self.compiled.n_pseudo, self.hidden_size,
                                 init=self._init_from_words(), init_std=std)

    def _init_from_words(self) -> torch.Tensor | None:
        """Initial pseudo embeddings from ``[P:word]`` (NaN rows: random init)."""
        inits = [(e.count, e.init) for e in self.compiled.elements if isinstance(e, Pseudo)]
        if not any(word for _, word in inits):
            return None
        table = self.lm.get_input_embeddings().weight.detach()
        rows = []
        for count, word in inits:
            if word is None:
                rows += [torch.full((self.hidden_size,), float("nan"))] * count
                continue
            ids = self.tokenizer(" " + word, add_special_tokens=False)["input_ids"] or self.tokenizer(
                word, add_special_tokens=False)["input_ids"]
            rows += [table[ids].float().mean(0).cpu()] * count
        return torch.stack(rows)

    # ------------------------------------------------------------------ parts
    @property
    def runner(self) -> LMRunner:
        """How the LM is run (:class:`ptune.lm.LMRunner`); rebuilt if ``lm`` was replaced."""
        if self._runner.lm is not self.lm:
            self._runner = LMRunner(self.lm, self.tokenizer, self.kind)
        return self._runner

    @property
    def speed(self) -> SpeedConfig:
        """The exact shortcuts in use (:class:`ptune.config.SpeedConfig`)."""
        return self.collator.speed

    @speed.setter
    def speed(self, value: SpeedConfig) -> None:
        if not isinstance(value, SpeedConfig):
            raise TypeError(f"speed must be a SpeedConfig, got {type(value).__name__}")
        self.collator.speed = value

    @property
    def pad_id(self) -> int:
        """The token id that pads batches."""
        return self.runner.pad_id

    def prompt_parameters(self) -> list[nn.Parameter]:
        """What trains with ``TrainConfig.lr``: the prompt encoder's parameters."""
        return list(self.encoder.parameters()) if self.encoder is not None else []

    def pseudo_embeddings(self) -> torch.Tensor | None:
        """The (n_pseudo, H) pseudo-token embeddings, or ``None`` for a template without any."""
        return self.encoder() if self.encoder is not None else None

    # ------------------------------------------------------------------ data
    def prepare(self, examples: Sequence[dict[str, Any]], sources: Sequence[str] | None = None, *,
                require_labels: bool = False) -> list[Item]:
        """Validate and tokenize examples once (:meth:`ptune.collate.Collator.prepare`).

        Raises:
            DataError: naming the source (``file:line`` or ``example N``) and field of the
                first bad example.
        """
        return self.collator.prepare(examples, sources, require_labels=require_labels)

    def collate(self, items: Sequence[Item]) -> Batch:
        """Assemble and pad a batch: one view per answer length (see :class:`View`)."""
        return self.collator.collate(items)

    def batches(self, items: Sequence[Item], batch_size: int) -> Iterator[Batch]:
        return self.collator.batches(items, batch_size)

    # ------------------------------------------------------------------ forward
    def embed(self, input_ids: torch.Tensor, pseudo_index: torch.Tensor, prompt: torch.Tensor | None) -> torch.Tensor:
        """Word embeddings with the pseudo positions overwritten: (R, T, H)."""
        return self.runner.embed(input_ids, pseudo_index, prompt)

    def forward(self, batch: Batch) -> Output:
        """Label scores (B, n_labels) — or (B, C) per-example candidate scores — and, when
        all labels are known, the loss."""
        with self.runner.kernels(self.speed.lm_shortcuts):
            return scoring.score_batch(self, batch, self.pseudo_embeddings())

    def answer_hidden(self, view: View, prompt: torch.Tensor | None) -> torch.Tensor:
        """The LM head's input at the answer positions, (R, L, Hh) (logits where the head
        cannot be read apart)."""
        runner = self.runner
        emb = self.embed(view.input_ids, view.pseudo_index, prompt)
        kwargs = runner.forward_kwargs(view.attention_mask, view.token_type_ids, self.config.padding_side)
        if cache.usable(runner, self.speed):
            try:
                h = cache.answer_hidden_cached(runner, view, emb, prompt, kwargs.get("token_type_ids"),
                                               lm_trainable=self.lm_trainable, speed=self.speed, memo=self._memo)
            except Exception as e:
                cache.add_switch_hint(e, "the key/value-cache path", "model.speed.prefix_cache = False")
                raise
            if h is not None:
                return h
        answer_only = runner.answer_only(self.speed.lm_shortcuts, view.answer_positions)  # probes before capturing
        with runner.capture_head(), answer_only as restricted:
            h = self.lm(inputs_embeds=emb, **kwargs).logits
        if restricted:
            return h  # already (R, L, .) at the answer positions
        return h.gather(1, view.answer_positions.unsqueeze(-1).expand(-1, -1, h.shape[-1]))

    def answer_logits(self, view: View, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Full-vocabulary logits at the answer positions, (R, L, V)."""
        if prompt is None:
            prompt = self.pseudo_embeddings()
        return self.runner.logits(self.answer_hidden(view, prompt))

    # ------------------------------------------------------------------ use
    @torch.no_grad()
    def predict(self, examples: Any, batch_size: int = 32) -> list[dict[str, Any]] | Iterator[dict[str, Any]]:
        """Predict labels of a list of dicts, a ``datasets.Dataset`` or prepared items.

        An ``IterableDataset`` (or any iterable without a length, e.g. a generator) is read
        as it comes: the result is then an iterator, and memory stays bounded however large
        the input (:func:`ptune.inference.iter_predictions`).

        Returns:
            One dict per example: ``label`` (the best label) and ``scores`` (label ->
            probability, softmax over the labels' scores). With per-example candidates:
            ``label`` (the best candidate's text), ``index`` and ``scores`` (a list).
        """
        if is_stream(examples):
            return (p for _, _, p in iter_predictions(self, iter_examples(examples), batch_size))
        items = examples if examples and isinstance(examples[0], Item) else self.prepare(examples)  # type: ignore[arg-type]
        out = []
        for start, _, output in iter_outputs(self, items, batch_size):
            out += self.predictions(output.scores, items[start : start + len(output.scores)])  # type: ignore[arg-type]
        return out

    def predictions(self, scores: torch.Tensor, items: Sequence[Item]) -> list[dict[str, Any]]:
        """The prediction dicts of :meth:`predict` from scores (B, C) of ``items``."""
        out = []
        for item, row in zip(items, scores.float().softmax(-1).cpu()):
            best = int(row.argmax())
            if self.answers is not None:
                labels = self.answers.labels
                out.append({"label": labels[best], "scores": dict(zip(labels, row.tolist()))})
            else:
                texts = item.candidate_texts or []
                out.append({"label": texts[best], "index": best, "scores": row[: len(texts)].tolist()})
        return out

    def generate(self, items: Sequence[Item], lengths: Sequence[int], batch_size: int = 32, *,
                 ban_special: bool = True) -> list[dict[str, Any]]:
        """Greedy answers of the given token lengths at the answer slot (:func:`ptune.generate.generate`):
        masked LMs fill their masks most confident first (PET), causal LMs decode greedily;
        special tokens only with ``ban_special=False`` (left out of the text).

        Returns:
            One dict per item: ``ids``, ``text`` and ``logprob``.
        """
        return generate(self, items, lengths, batch_size, ban_special=ban_special)

    def generate_text(self, examples: Sequence[dict[str, Any]] | Sequence[Item], config: GenerateConfig | None = None,
                      batch_size: int = 16, *, progress: bool = False, **options: Any) -> list[dict[str, Any]]:
        """Open-ended text from a causal LM at the answer slot (:func:`ptune.generate.generate_text`).

        Args:
            examples: dicts with the template's fields, or prepared items.
            config: a :class:`~ptune.config.GenerateConfig`; or give its fields as ``options``
                (``max_new_tokens=20, do_sample=True, temperature=0.7, top_p=0.9, seed=0,
                stop=(".",)``).
            progress: report progress (a bar on a terminal, a line every 30 s otherwise).

        Returns:
            One dict per example: ``text``, ``ids`` and ``finish_reason`` (stop, eos, length).

        Example:
            >>> model.generate_text([{"text": "the plot"}], max_new_tokens=5)  # doctest: +SKIP
            [{'text': ' was superb .', 'ids': [...], 'finish_reason': 'length'}]
        """
        if config is not None and options:
            raise ConfigError("generate", "give a GenerateConfig or its fields, not both")
        return generate_text(self, examples, config or GenerateConfig(**options), batch_size, progress=progress)

    @torch.no_grad()
    def nearest_tokens(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """What the prompt learned: for each pseudo token, the ``k`` vocabulary tokens whose
        input embeddings are closest to it by cosine similarity (special tokens excluded).

        Example:
            >>> model.nearest_tokens(3)[0]                             # doctest: +SKIP
            [('Ġborn', 0.41), ('Ġbirthplace', 0.38), ('Ġin', 0.35)]
        """
        prompt = self.pseudo_embeddings()
        if prompt is None:
            return []
        table = self.lm.get_input_embeddings().weight.detach().float()
        sims = F.normalize(prompt.detach().float().to(table.device), dim=-1) @ F.normalize(table, dim=-1).T
        special = [i for i in self.tokenizer.all_special_ids if i < sims.shape[1]]
        sims[:, special] = float("-inf")
        values, ids = sims.topk(min(k, sims.shape[1] - len(special)), dim=-1)
        tokens = [self.tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()]
        return [[(t, round(v, 4)) for t, v in zip(ts, vs)] for ts, vs in zip(tokens, values.tolist())]
