#!/usr/bin/env bash
# pip inside Dockerfile.runpod's build: the build secrets `pip-conf` (a pip configuration file: a mirror's index,
# say) and `pip-cert` (the CA bundle that index needs), when the builder passes them, apply to this one call and
# are never written into a layer (`make image` passes PIP_CONFIG_FILE and PIP_CERT from its environment).
#   scripts/image-pip.sh install ...
set -euo pipefail
if [ -s /run/secrets/pip-conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip-conf; fi
if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi
exec python -m pip "$@"
