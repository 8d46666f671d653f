#!/bin/sh
# ensure-model: train and promote a first model when the registry has none under the
# trainer's alias (TAGSTREAM_TRAINER_ALIAS, default `production`); otherwise do nothing.
# Workers stay unready until the alias points at a model, so a fresh cluster runs this once
# (compose: the `first-model` service; Kubernetes: the trainer's init container).
set -eu
if python - <<'PY'
import sys

from common.settings import RedisSettings, load
from model.registry import Registry
from model.settings import RegistrySettings
from trainer.settings import TrainerSettings

alias = load(TrainerSettings).alias
with Registry.from_settings(load(RedisSettings), load(RegistrySettings)) as registry:
    version = registry.aliases().get(alias)
if version is None:
    sys.exit(1)
print(f"ensure-model: {alias} is version {version}; nothing to do")
PY
then
  exit 0
fi
echo "ensure-model: no model is promoted yet; training the first one"
exec tagstream trainer run-once
