"""Run by test_distributed.py: train a tiny prompt, save its weights (main process only).

Usage: python dist_train.py OUT.safetensors   (or under accelerate launch / torchrun)
"""

import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from conftest import pair, sentiment  # noqa: E402

from ptune import PromptConfig, PTunedModel, TrainConfig  # noqa: E402
from ptune.trainer import train  # noqa: E402


def main(out: str) -> None:
    lm, tok = pair("gpt2", hidden=64, init_range=0.2)
    torch.manual_seed(0)
    model = PTunedModel(lm, tok, PromptConfig(template="{text} [P*3] [MASK]", verbalizer={"pos": "yes", "neg": "no"}))
    initial = {f"initial.{k}": v.detach().clone() for k, v in model.encoder.state_dict().items()}
    items = model.prepare(sentiment(32), require_labels=True)
    result = train(model, items, items, TrainConfig(steps=6, lr=1e-2, batch_size=8, eval_every=3), progress=False)
    if int(os.environ.get("RANK", "0")) == 0:
        final = {k: v.contiguous() for k, v in model.encoder.state_dict().items()}
        save_file({**final, **initial}, out, metadata={"world": str(result.num_processes)})


if __name__ == "__main__":
    main(sys.argv[1])
