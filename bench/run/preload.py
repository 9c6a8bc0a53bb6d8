"""What the worker forkserver imports once per run, so that each cell's fresh worker need not.

A cell's worker is a fresh process (its memory figures are its own), and a spawned one spent
about 4.4 s of every cell importing torch, transformers and peft (2-core Xeon; docs/speed.md).
On a machine without GPUs, :mod:`bench.run.parallel` forks every worker from a forkserver that
imported this module first: the worker starts with the modules in memory, as every other worker
of the run does, so its figures still describe its own cell alone.

Importing this module must run no tensor operation (a forked child inherits no OpenMP thread
pool then) and must not touch CUDA (a worker sets ``CUDA_VISIBLE_DEVICES`` after the fork; that is
why machines with GPUs spawn their workers instead).
"""

from __future__ import annotations

import peft  # noqa: F401
import torch  # noqa: F401
import transformers.models.bert.modeling_bert  # noqa: F401
import transformers.models.llama.modeling_llama  # noqa: F401
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

import bench.kinds.classification  # noqa: F401
import bench.run.cell  # noqa: F401
from bench.run.quiet import quiet_libraries

quiet_libraries()
