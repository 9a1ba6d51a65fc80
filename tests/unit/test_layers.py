"""The architecture: a module imports only from the layers above it (style guide §3)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "ptune"
ORDER = ["errors", "progress", "batcher", "files", "lock", "integrity", "data", "tracking", "kernels", "lm", "placement", "encoder", "verbalizer", "syntax", "template", "batch", "config", "selection", "inference",
         "cache", "scoring", "collate", "generate", "model", "metrics", "evaluation", "finetune", "card", "checkpoint", "multi", "registry", "export", "runfolder", "sharding", "optimization", "trainstate", "trainer", "restarts",
         "distributed", "tiny", "tasks.results", "tasks.autoprompt", "tasks.mining",
         "tasks.lama_vocab", "tasks.lama", "tasks.superglue_data", "tasks.submission", "tasks.superglue_losses", "tasks.recipe",
         "tasks.superglue", "world.spec", "world.facts",
         "world.pretrain", "world.build", "world.refresh", "world", "report", "demo", "bench", "config_file", "options", "cli_prompts", "cli_harness", "service", "worker", "serve", "guard", "cli"]


def _imports(path: Path) -> set[str]:
    pkg = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)] if pkg else []
            mod = ".".join([p for p in base if p] + ([node.module] if node.module else []))
            if not mod and node.names:  # "from . import x"
                found.update(n.name for n in node.names)
            elif mod:
                found.add(mod)
    return found


def test_no_upward_imports():
    for name in ORDER:
        path = SRC / (name.replace(".", "/") + ".py")
        if not path.is_file():
            continue
        allowed = set(ORDER[: ORDER.index(name)])
        for dep in _imports(path):
            if dep == "" or dep not in ORDER:
                continue
            assert dep in allowed, f"{name} imports {dep}, which is below it"


def test_every_module_is_placed():
    modules = {".".join(p.relative_to(SRC).with_suffix("").parts) for p in SRC.rglob("*.py")}
    modules = {m for m in modules if not m.endswith("__init__")}
    assert modules <= set(ORDER), modules - set(ORDER)


def test_the_architecture_page_names_every_module():
    page = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    modules = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if p.name != "__init__.py"}
    missing = sorted(m for m in modules if f"`{m}`" not in page)
    assert not missing, f"docs/architecture.md does not describe {missing}"
