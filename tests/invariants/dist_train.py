"""Run by test_distributed.py: train a tiny prompt, save its weights (main process only).

Usage: python dist_train.py OUT.safetensors [RUN_DIR]   (or under accelerate launch / torchrun)

With RUN_DIR it also trains the same prompt in that run folder, interrupted after step 3
and resumed, and saves those final weights as ``resumed.*`` in OUT.
"""

import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for conftest
from conftest import pair, sentiment  # noqa: E402

from ptune import PromptConfig, PTunedModel, TrainConfig  # noqa: E402
from ptune.distributed import exit_with  # noqa: E402
from ptune.trainer import train  # noqa: E402

CONFIG = TrainConfig(steps=6, lr=1e-2, batch_size=8, eval_every=3)


def _model() -> PTunedModel:
    lm, tok = pair("gpt2", hidden=64, init_range=0.2)
    torch.manual_seed(0)
    return PTunedModel(lm, tok, PromptConfig(template="{text} [P*3] [MASK]", verbalizer={"pos": "yes", "neg": "no"}))


def main(out: str, run_dir: str | None = None) -> None:
    model = _model()
    initial = {f"initial.{k}": v.detach().clone() for k, v in model.encoder.state_dict().items()}
    items = model.prepare(sentiment(32), require_labels=True)
    result = train(model, items, items, CONFIG, progress=False)
    tensors = {**{k: v.contiguous() for k, v in model.encoder.state_dict().items()}, **initial}
    if run_dir is not None:
        train(_model(), items, items, CONFIG, run_dir, stop_at_step=3, progress=False)
        resumed = _model()
        train(resumed, items, items, CONFIG, run_dir, resume=True, progress=False)
        tensors.update({f"resumed.{k}": v.contiguous() for k, v in resumed.encoder.state_dict().items()})
    if int(os.environ.get("RANK", "0")) == 0:
        save_file(tensors, out, metadata={"world": str(result.num_processes)})


if __name__ == "__main__":
    exit_with(lambda: main(*sys.argv[1:]))  # under a launcher: no interpreter teardown, which can abort
