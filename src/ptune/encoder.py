"""The prompt encoder: turns ``n_pseudo`` learned vectors into pseudo-token embeddings.

Three types (paper §1):

* ``lstm`` — the paper's: free embeddings (n, H) → 2-layer bidirectional LSTM with h
  hidden units per direction → Linear(2h, H) → ReLU → Linear(H, H); h = H/2 by default
  (the paper's LAMA code), ``lstm_hidden`` = H as its few-shot SuperGLUE code (ALBERT:
  128 per direction, then 256 → 128 → 128).
* ``mlp`` — free embeddings → Linear(H, H) → ReLU → Linear(H, H).
* ``none`` — the free embeddings themselves (prompt tuning's parameterisation).

The encoder takes no input from the example: one forward pass gives an (n, H) matrix
shared by every example of the batch. In eval mode with gradients off its output is
cached until a parameter changes.

Example:
    >>> enc = PromptEncoder(EncoderConfig(type="lstm"), n_pseudo=6, hidden_size=16)
    >>> enc().shape
    torch.Size([6, 16])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["EncoderConfig", "PromptEncoder", "ENCODER_TYPES"]

EncoderType = Literal["lstm", "mlp", "none"]
ENCODER_TYPES: tuple[str, ...] = ("lstm", "mlp", "none")


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """How pseudo-token embeddings are produced."""

    type: EncoderType = "lstm"
    """``lstm`` (the paper's), ``mlp`` or ``none`` (free embeddings)."""
    lstm_dropout: float = 0.0
    """Dropout between the two LSTM layers (only for ``lstm``)."""
    lstm_hidden: int | None = None
    """LSTM units per direction (only for ``lstm``); the MLP after it maps their 2x to the
    LM's embedding size H. ``None``: H/2 (the paper's LAMA code); the paper's few-shot
    SuperGLUE code used H."""

    def __post_init__(self) -> None:
        if self.type not in ENCODER_TYPES:
            raise ConfigError(
                "encoder.type", f"{self.type!r}; accepted: {', '.join(ENCODER_TYPES)}"
            )
        if isinstance(self.lstm_dropout, bool) or not isinstance(self.lstm_dropout, (int, float)) or not (
                0.0 <= self.lstm_dropout < 1.0):
            raise ConfigError("encoder.lstm_dropout", f"{self.lstm_dropout} is not in [0, 1)")
        if self.lstm_dropout and self.type != "lstm":
            raise ConfigError(
                "encoder.lstm_dropout", f"only applies to the lstm encoder, not {self.type!r}"
            )
        if self.lstm_hidden is not None:
            if isinstance(self.lstm_hidden, bool) or not isinstance(self.lstm_hidden, int) or self.lstm_hidden < 1:
                raise ConfigError("encoder.lstm_hidden", f"must be a positive integer, got {self.lstm_hidden!r}")
            if self.type != "lstm":
                raise ConfigError("encoder.lstm_hidden", f"only applies to the lstm encoder, not {self.type!r}")

    def to_dict(self) -> dict:
        """The fields; ``lstm_hidden`` only when set, so that configs recorded without it
        (checkpoints, harness settings) compare equal."""
        d = asdict(self)
        if d["lstm_hidden"] is None:
            del d["lstm_hidden"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        if not isinstance(d, dict):
            raise ConfigError("encoder", f"expected a mapping or an encoder name, got {type(d).__name__}")
        unknown = set(d) - {"type", "lstm_dropout", "lstm_hidden"}
        if unknown:
            raise ConfigError("encoder", f"unknown keys {sorted(unknown)}; accepted: type, lstm_dropout, lstm_hidden")
        return cls(**d)


class PromptEncoder(nn.Module):
    """Produces the (n_pseudo, hidden_size) pseudo-token embeddings.

    Args:
        config: the encoder type and options.
        n_pseudo: number of pseudo tokens of the template (all blocks, in order).
        hidden_size: the LM's input embedding size.
        init: optional (n_pseudo, hidden_size) tensor to initialise the free embeddings
            (e.g. word embeddings); rows that are NaN keep their random init.
        init_std: standard deviation of the random init; the LSTM and MLP encoders use
            N(0, 1) as the paper, ``none`` should match the LM's embedding scale.
    """

    def __init__(
        self,
        config: EncoderConfig,
        n_pseudo: int,
        hidden_size: int,
        init: torch.Tensor | None = None,
        init_std: float = 1.0,
    ):
        super().__init__()
        if n_pseudo < 1:
            raise ConfigError("n_pseudo", f"a prompt encoder needs pseudo tokens, got {n_pseudo}")
        self.config = config
        self.n_pseudo = n_pseudo
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(n_pseudo, hidden_size)
        nn.init.normal_(self.embedding.weight, std=init_std)
        if init is not None:
            with torch.no_grad():
                keep = ~torch.isnan(init).any(-1)
                self.embedding.weight[keep] = init[keep].to(self.embedding.weight.dtype)
        self.lstm: nn.LSTM | None = None
        self.mlp: nn.Sequential | None = None
        mlp_in = hidden_size
        if config.type == "lstm":
            if config.lstm_hidden is None and hidden_size % 2:
                raise ConfigError("encoder.type", f"lstm needs an even hidden size, got {hidden_size}")
            units = config.lstm_hidden or hidden_size // 2
            mlp_in = 2 * units
            self.lstm = nn.LSTM(
                hidden_size,
                units,
                num_layers=2,
                bidirectional=True,
                batch_first=True,
                dropout=config.lstm_dropout,
            )
        if config.type in ("lstm", "mlp"):
            self.mlp = nn.Sequential(
                nn.Linear(mlp_in, hidden_size),
                nn.ReLU(),
                nn.Linear(hidden_size, hidden_size),
            )
        # eval-mode output cache, kept out of the state dict: {"key": ..., "value": tensor}
        self._cached: dict[str, object] = {}

    def _param_key(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.parameters())

    def forward(self) -> torch.Tensor:
        """Returns the pseudo-token embeddings, shape (n_pseudo, hidden_size)."""
        cacheable = not self.training and not torch.is_grad_enabled()
        if cacheable and self._cached and self._cached["key"] == self._param_key():
            return self._cached["value"]  # type: ignore[return-value]
        h = self.embedding.weight  # (n, H)
        if self.lstm is not None:
            h = self.lstm(h.unsqueeze(0))[0].squeeze(0)  # (n, 2h): [forward ; backward]
        if self.mlp is not None:
            h = self.mlp(h)
        if cacheable:
            self.set_cache(h)
        else:
            self._cached.clear()
        return h

    def set_cache(self, value: torch.Tensor) -> None:
        """Serve ``value`` as the output until a parameter changes (used by checkpoints)."""
        self._cached.clear()
        self._cached.update(key=self._param_key(), value=value)
