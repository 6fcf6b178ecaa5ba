"""The engine is imported and the base model's tokenizers loaded ahead of a job, so a run's
set-up does not hold the window (see tests/benchmarks/gui_smoothness.py for the figures)."""

from __future__ import annotations

import os
import shutil
import sys
import time

from lora_studio.core.models.loading import load_pipeline
from lora_studio.core.models.tokenizers import load_tokenizer, pipeline_tokenizers
from lora_studio.core.warmup import ENGINE_MODULES, engine_imported, import_engine, prefetch_model


def test_import_engine_imports_what_jobs_need_once():
    import_engine()
    assert engine_imported()
    assert all(name in sys.modules for name in ENGINE_MODULES)
    started = time.perf_counter()
    import_engine()  # the second call only checks
    assert time.perf_counter() - started < 0.05


def test_a_prefetched_models_pipelines_share_its_tokenizer(tiny_model_dir):
    prefetch_model(str(tiny_model_dir))
    cached = pipeline_tokenizers(tiny_model_dir)["tokenizer"]
    first = load_pipeline(str(tiny_model_dir))
    second = load_pipeline(str(tiny_model_dir))
    assert first.tokenizer is cached and second.tokenizer is cached
    assert first.tokenizer("a red star").input_ids == \
        type(cached).from_pretrained(tiny_model_dir / "tokenizer")("a red star").input_ids


def test_an_edited_tokenizer_folder_loads_again(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir / "tokenizer", tmp_path / "tokenizer")
    first = load_tokenizer(folder)
    assert load_tokenizer(folder) is first
    vocab = folder / "tokenizer_config.json"
    stat = vocab.stat()
    os.utime(vocab, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_tokenizer(folder) is not first


def test_prefetching_a_model_that_cannot_be_found_leaves_it_to_the_job(tmp_path):
    prefetch_model(str(tmp_path / "no-such-model"))  # no error: the job says what is wrong
