"""Run by test_distributed.py: train a tiny prompt for a GPT-2 and a BERT, then score
held-out examples; rank 0 saves the prompts and scores. Under accelerate launch with
ACCELERATE_USE_FSDP=true and FSDP_VERSION=2 the LMs' layers are sharded across the processes.

With RUN_DIR, a GPT-2 prompt also trains in run folders there: once straight through, and
once stopped after step 3 and resumed (``resume=True``); both prompts are saved.

Usage: python dist_fsdp.py OUT.safetensors [RUN_DIR]
"""

import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for conftest
from conftest import pair, sentiment  # noqa: E402

from ptune import PromptConfig, PTunedModel, TrainConfig  # noqa: E402
from ptune.inference import iter_outputs  # noqa: E402
from ptune.distributed import exit_with  # noqa: E402
from ptune.trainer import train  # noqa: E402

TEMPLATES = {"gpt2": "[P*2] {text} [P*2] [MASK]", "bert": "[P*2] {text} [P*2] [MASK] ."}


def _gpt2_prompt() -> tuple[PTunedModel, list]:
    lm, tok = pair("gpt2", hidden=64, init_range=0.2)  # a fresh LM: sharding changes it in place
    torch.manual_seed(0)
    model = PTunedModel(lm, tok, PromptConfig(template=TEMPLATES["gpt2"], verbalizer={"pos": "yes", "neg": "no"}))
    return model, model.prepare(sentiment(32), require_labels=True)


def run_folders(run_dir: str) -> dict:
    """The prompt of a run straight through and of one stopped after step 3 and resumed."""
    config = TrainConfig(steps=6, lr=1e-2, batch_size=8, eval_every=2)
    out = {}
    model, items = _gpt2_prompt()
    train(model, items, items[:8], config, os.path.join(run_dir, "whole"), progress=False)
    out.update({f"run.whole.{k}": v.contiguous() for k, v in model.encoder.state_dict().items()})
    model, items = _gpt2_prompt()
    train(model, items, items[:8], config, os.path.join(run_dir, "cut"), stop_at_step=3, progress=False)
    model, items = _gpt2_prompt()
    train(model, items, items[:8], config, os.path.join(run_dir, "cut"), resume=True, progress=False)
    out.update({f"run.resumed.{k}": v.contiguous() for k, v in model.encoder.state_dict().items()})
    return out


def main(out: str, run_dir: str | None = None) -> None:
    tensors = {}
    for family, template in TEMPLATES.items():
        lm, tok = pair(family, hidden=64, init_range=0.2)
        torch.manual_seed(0)
        model = PTunedModel(lm, tok, PromptConfig(template=template, verbalizer={"pos": "yes", "neg": "no"}))
        tensors.update({f"{family}.initial.{k}": v.detach().clone() for k, v in model.encoder.state_dict().items()})
        items = model.prepare(sentiment(32), require_labels=True)
        train(model, items, items[:8], TrainConfig(steps=4, lr=1e-2, batch_size=8, eval_every=2), progress=False)
        held_out = model.prepare(sentiment(12, seed=5), require_labels=True)  # every process scores all of them
        tensors[f"{family}.scores"] = torch.cat([o.scores for _, _, o in iter_outputs(model, held_out, 4)])
        tensors.update({f"{family}.{k}": v.contiguous() for k, v in model.encoder.state_dict().items()})
        from torch.distributed.tensor import DTensor

        layer = next(p for n, p in lm.named_parameters() if ".0." in n and p.ndim == 2)
        tensors[f"{family}.sharded"] = torch.tensor(isinstance(layer, DTensor) and layer.to_local().numel() < layer.numel())
    if run_dir is not None:
        tensors.update(run_folders(run_dir))
    if int(os.environ.get("RANK", "0")) == 0:
        save_file(tensors, out)


if __name__ == "__main__":
    exit_with(lambda: main(*sys.argv[1:]))  # under a launcher: no interpreter teardown, which can abort
