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

__version__ = "0.1.0"

from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .config import GenerateConfig, PromptConfig, SpeedConfig, TrainConfig  # noqa: E402
from .encoder import EncoderConfig, PromptEncoder  # noqa: E402
from .evaluation import evaluate  # noqa: E402
from .errors import CheckpointError, ConfigError, DataError, PtuneError, TemplateError  # noqa: E402
from .export import export_checkpoint, import_peft  # noqa: E402
from .finetune import ClassifierConfig, ClassifierModel  # noqa: E402
from .generate import input_embeds  # noqa: E402
from .lm import detect_kind, load_base  # noqa: E402
from .model import PTunedModel  # noqa: E402
from .multi import PromptBank  # noqa: E402
from .template import Template  # noqa: E402
from .trainer import TrainResult, train  # noqa: E402
from .verbalizer import Verbalizer  # noqa: E402

__all__ = [
    "PTunedModel",
    "PromptBank",
    "PromptConfig",
    "ClassifierModel",
    "ClassifierConfig",
    "TrainConfig",
    "SpeedConfig",
    "GenerateConfig",
    "input_embeds",
    "export_checkpoint",
    "import_peft",
    "load_base",
    "detect_kind",
    "EncoderConfig",
    "PromptEncoder",
    "Template",
    "Verbalizer",
    "train",
    "evaluate",
    "TrainResult",
    "save_checkpoint",
    "load_checkpoint",
    "PtuneError",
    "TemplateError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    "__version__",
]
