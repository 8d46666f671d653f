#!/bin/sh
# install-deps [TORCH_INDEX_URL]: install the runtime dependencies of pyproject.toml (in the
# working directory) into the active virtualenv. With an index URL, torch comes from that
# index (e.g. the PyTorch CPU or cu126 wheels) and everything else from PyPI; without one,
# everything comes from PyPI.
set -eu
python - <<'PY' > /tmp/requirements.txt
import tomllib

with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
if [ -n "${1:-}" ]; then
  grep -E '^torch([<>=!~ ;[]|$)' /tmp/requirements.txt > /tmp/torch.txt
  pip install --index-url "$1" -r /tmp/torch.txt
fi
pip install -r /tmp/requirements.txt
rm -f /tmp/requirements.txt /tmp/torch.txt
