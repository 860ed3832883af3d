#!/usr/bin/env bash
# Install the peer systems of the side-by-side benchmark (issue 9), each in its own virtualenv:
#
#   benchmarks/peers/.venv-palimpzest   Palimpzest (Python 3.12: Palimpzest 1.x needs >= 3.12)
#   benchmarks/peers/.venv-lotus        LOTUS, package lotus-ai (Python 3.11)
#
#   bash benchmarks/peers/install.sh            # both (idempotent: an installed venv is skipped)
#   bash benchmarks/peers/install.sh lotus      # one of them
#   FORCE=1 bash benchmarks/peers/install.sh    # rebuild
#
# Versions are pinned here; the runners record them again in their JSON output, and a full
# `pip freeze` of each venv is written to <venv>/freeze.txt.
#
# No CUDA torch. Both peers pull torch through sentence-transformers, which the legal-discovery
# query (filter + extract, no embeddings) never uses:
# - LOTUS (3.11): torch is pinned to 2.13.0, which resolves to the CPU build (2.13.0+cpu) that lies
#   in this machine's local wheel folder (pip's find-links), so nothing multi-GB is downloaded.
#   Elsewhere, pass TORCH_SPEC / TORCH_PIP_ARGS as for the Makefile (a CPU wheel index).
# - Palimpzest (3.12): there is no local CPU torch for 3.12 and PyPI's Linux torch pulls the CUDA
#   stack, so palimpzest is installed with --no-deps plus its declared dependencies minus
#   sentence-transformers (torch) and the ones no module of the package imports (gradio, datasets,
#   anthropic, together, pytest, pytest-mock, ruff). palimpzest's topk.py/join.py import
#   `sentence_transformers` at module level; run_palimpzest.py stands in a stub module for it
#   (embedding operators are not part of this query) -- see its docstring.
#
# litellm is pinned to 1.82.6 in both: LOTUS 1.2.4 requires litellm < 1.82.7 (1.82.7 and 1.82.8
# were the compromised releases), Palimpzest 1.5.3 requires >= 1.80.0.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY312="${PY312:-/root/.pyenv/versions/3.12.1/bin/python}"
PY311="${PY311:-/root/.pyenv/versions/3.11.7/bin/python}"

PALIMPZEST_VERSION=1.5.3
LOTUS_VERSION=1.2.4
LITELLM_VERSION=1.82.6
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_PIP_ARGS="${TORCH_PIP_ARGS:-}"  # as in the Makefile, e.g. "--index-url <a CPU wheel index>"

# Palimpzest 1.5.3's Requires-Dist, less sentence-transformers==5.0.0 and the packages it never
# imports (see above). Version ranges are palimpzest's own.
PZ_DEPS=(
  "litellm==${LITELLM_VERSION}"
  "numpy==2.0.2" "pandas>=2.1.1" "pyarrow>=20.0.0" "pydantic>=2"
  "chromadb>=1.0.15" "smolagents[toolkit]" "google-genai>=1.0.0" "openai>=1.0"
  "fastapi>=0.115.0" "beautifulsoup4>=4.13.4" "colorama>=0.4.6" "pillow>=11.3.0"
  "prettytable>=3.9.0" "psutil==5.9.5" "PyLD>=2.0.4" "pypdf>=5.1.0" "python-dotenv>=1.2.1"
  "pyyaml>=6.0.1" "requests>=2.25" "setuptools>=70.1.1" "tabulate>=0.9.0" "tqdm~=4.66.1"
  "rich[jupyter]>=13.9.2"
)

TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(palimpzest lotus)

installed() {  # installed VENV DIST VERSION
  [ -x "$1/bin/python" ] && [ "$("$1/bin/python" -c "import importlib.metadata as m; print(m.version('$2'))" 2>/dev/null)" = "$3" ]
}

pipq() {  # pipq VENV ARGS...: quietly, without this machine's notes on its empty local indexes
  local venv="$1"; shift
  "$venv/bin/python" -m pip -q "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

freeze() {
  "$1/bin/python" -m pip freeze >"$1/freeze.txt"
  echo "  $(du -sh "$1" | cut -f1) in $1; pip freeze in $1/freeze.txt"
}

install_palimpzest() {
  local venv="$HERE/.venv-palimpzest"
  if [ -z "${FORCE:-}" ] && installed "$venv" palimpzest "$PALIMPZEST_VERSION" \
      && installed "$venv" litellm "$LITELLM_VERSION"; then
    echo "palimpzest $PALIMPZEST_VERSION already installed in $venv"; return
  fi
  echo "installing palimpzest $PALIMPZEST_VERSION into $venv"
  local t0=$SECONDS
  rm -rf "$venv"
  "$PY312" -m venv "$venv"
  pipq "$venv" install --upgrade pip
  pipq "$venv" install "${PZ_DEPS[@]}"
  pipq "$venv" install --no-deps "palimpzest==${PALIMPZEST_VERSION}"
  freeze "$venv"
  echo "  palimpzest installed in $((SECONDS - t0)) s"
}

install_lotus() {
  local venv="$HERE/.venv-lotus"
  if [ -z "${FORCE:-}" ] && installed "$venv" lotus-ai "$LOTUS_VERSION" \
      && installed "$venv" litellm "$LITELLM_VERSION"; then
    echo "lotus-ai $LOTUS_VERSION already installed in $venv"; return
  fi
  echo "installing lotus-ai $LOTUS_VERSION into $venv"
  local t0=$SECONDS
  rm -rf "$venv"
  "$PY311" -m venv "$venv"
  pipq "$venv" install --upgrade pip
  # torch first, alone, so the resolver never considers a CUDA build for it afterwards
  # shellcheck disable=SC2086
  pipq "$venv" install $TORCH_PIP_ARGS "$TORCH_SPEC"
  local torch_now
  torch_now="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))')"
  pipq "$venv" install "lotus-ai==${LOTUS_VERSION}" "litellm==${LITELLM_VERSION}" \
    "torch==${torch_now}"
  if "$venv/bin/python" -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
    echo "  WARNING: CUDA packages (nvidia-*) were installed into $venv" >&2
  fi
  freeze "$venv"
  echo "  lotus-ai installed in $((SECONDS - t0)) s (torch $torch_now)"
}

for t in "${TARGETS[@]}"; do
  case "$t" in
    palimpzest) install_palimpzest ;;
    lotus) install_lotus ;;
    *) echo "unknown peer: $t (palimpzest, lotus)" >&2; exit 2 ;;
  esac
done
