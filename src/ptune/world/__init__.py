"""A synthetic knowledge world in LAMA's formats, with its own pretrained LMs (no download).

The offline demo of LAMA knowledge probing (paper §2): invented persons, cities, companies
and countries are linked by 12 real LAMA relations. Each fact is stated ``reps`` times in a
pretraining corpus using 4 training wordings per relation; LAMA's manual template is held
out, so it never appears in the corpus. A BPE tokenizer (every object is one token) and a
small GPT-2 and BERT are pretrained on that corpus on the CPU. The world folder holds:

- ``lama/relations.jsonl``, ``lama/fact-retrieval/<rel>/{train,dev,test}.jsonl`` and
  ``lama/common_vocab_cased.txt``: the facts in LAMA's own formats;
- ``gpt/`` and ``bert/``: ``save_pretrained`` folders that load with the Auto classes;
- ``world.json``: config, counts, timings, versions and the memorization check.

The demo's world (``WorldConfig.tiny()``, seed 0) ships with the package
(:func:`shipped_world_dir`) with ``MANIFEST.json``, the sha256 and size of each file:
:func:`verify_manifest` checks a folder against its manifest, :func:`compare_with_shipped`
lists how a rebuilt world differs from the shipped one.

Modules: ``spec`` (relations, name pools, :class:`WorldConfig`), ``facts`` (entities,
facts, corpus, LAMA files), ``pretrain`` (tokenizers, the two LMs, the memorization
check), ``build`` (:func:`build_world`, the manifest), ``refresh`` (:func:`refresh_wordings`:
the hand-written wordings added to a world that an older ptune built).

Example:
    >>> meta = build_world("world", WorldConfig.tiny())                  # doctest: +SKIP
    >>> meta["memorized"]["gpt"]["oracle_mean"], memorized("world", "bert")["P36"]  # doctest: +SKIP
    (1.0, 1.0)
"""

from .build import (MANIFEST, SHIPPED_SEED, build_world, compare_with_shipped, corpus_key, read_manifest,
                    shipped_world_dir, verify_manifest, write_corpus, write_manifest)
from .facts import corpus
from .refresh import refresh_wordings
from .pretrain import memorized
from .spec import RELATIONS, SPLITS, Relation, WorldConfig

__all__ = ["Relation", "RELATIONS", "SPLITS", "WorldConfig", "corpus", "build_world", "memorized", "MANIFEST",
           "SHIPPED_SEED", "shipped_world_dir", "write_manifest", "read_manifest", "verify_manifest",
           "compare_with_shipped", "write_corpus", "corpus_key", "refresh_wordings"]
