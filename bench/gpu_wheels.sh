#!/usr/bin/env bash
# Wheels for bench/gpu_smoke.sh on a GPU machine without network: the packages this project needs that the
# GPU machine's image lacks (it has torch, transformers, numpy, pandas, scipy, scikit-learn, pyarrow,
# matplotlib, safetensors, huggingface-hub, tokenizers, ...), at the versions this checkout's .venv has
# (constraints.txt), for that machine's Python (PY_VERSION, default 3.12) on x86-64 Linux, into .whl/.
# (plotly, which TransformerLens uses only to draw, is left out: it is 10 MB of the 64 MiB a device call
# carries.) Run here, with network; .whl/ is ignored by git (.git/info/exclude) and travels with the command.
#
#     bash bench/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION=${PY_VERSION:-3.12}
NEEDED="annotated-types argparse-dataclass babe beartype better-abc conda-inject config2py ConfigArgParse
connection_pool datasets defusedxml dill distro docstring_parser docutils dol dpath eai-sparsify fancy-einsum
fastjsonschema gitdb GitPython graze humanfriendly i2 immutables importlib_resources jsonschema
jsonschema-specifications jupyter_core multiprocess natsort nbformat platformdirs PuLP
py2store pydantic pydantic_core python-dotenv referencing rpds-py sae-lens schedulefree simple-parsing
smart_open smmap snakemake snakemake-executor-plugin-slurm snakemake-executor-plugin-slurm-jobstep
snakemake-interface-common snakemake-interface-executor-plugins snakemake-interface-logger-plugins
snakemake-interface-report-plugins snakemake-interface-scheduler-plugins snakemake-interface-storage-plugins
sniffio tenacity throttler traitlets transformer-lens transformers-stream-generator typeguard
typing-inspection tzdata wandb yte"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
freeze=$(.venv/bin/python -m pip list --format=freeze)
mkdir -p .whl
pins=()
for name in $NEEDED; do
    pin=$(grep -i "^${name}==" <<<"$freeze" || true)
    [ -n "$pin" ] || { echo "gpu_wheels: $name is not in .venv (run make venv first)" >&2; exit 1; }
    pins+=("$pin")
done
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
    platforms+=(--platform "$p")
done
# One call per package: pip then says which one has no wheel for that Python. A package published only
# as a source archive is built into a wheel here, and kept only when that wheel is pure Python.
for pin in "${pins[@]}"; do
    if ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
            --implementation cp "${platforms[@]}" -d .whl "$pin" 2>/dev/null; then
        built=$(mktemp -d)
        .venv/bin/python -m pip wheel -q --no-deps -w "$built" "$pin"
        whl=$(ls "$built"/*.whl)
        case "$whl" in
            *-py3-none-any.whl|*-py2.py3-none-any.whl) mv "$whl" .whl/ ;;
            *) echo "gpu_wheels: $pin has no wheel for Python $PY_VERSION and is not pure Python" >&2; exit 1 ;;
        esac
        rm -rf "$built"
    fi
done
du -sh .whl
