"""ptune: P-tuning ("GPT Understands, Too", Liu et al. 2021) for Hugging Face LMs.

Pseudo tokens anywhere in a template, produced by a prompt encoder (LSTM, MLP or free
embeddings), in front of any causal or masked language model; verbalizers with
multi-token words; a training loop with checkpoints that both resume and serve.

Example:
    >>> import ptune                                                    # doctest: +SKIP
    >>> model = ptune.PTunedModel.from_base("bert-base-cased",
    ...     template="{premise} ? [P*3] [MASK] , {hypothesis}",
    ...     verbalizer={"entailment": "Yes", "not_entailment": "No"})
    >>> ptune.train(model, train_examples, dev_examples,
    ...     ptune.TrainConfig(steps=500), output_dir="runs/rte")
"""

from .config import PromptConfig, TrainConfig
from .encoder import EncoderConfig, PromptEncoder
from .errors import CheckpointError, ConfigError, DataError, PtuneError, TemplateError
from .model import PTunedModel
from .template import Template
from .verbalizer import Verbalizer

__version__ = "0.1.0"

__all__ = [
    "PTunedModel",
    "PromptConfig",
    "TrainConfig",
    "EncoderConfig",
    "PromptEncoder",
    "Template",
    "Verbalizer",
    "PtuneError",
    "TemplateError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    "__version__",
]
