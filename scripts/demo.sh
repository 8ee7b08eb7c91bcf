#!/usr/bin/env bash
# Placeholder until the synthetic benchmark lands.
echo "scripts/demo.sh: not yet available (the synthetic motion benchmark is being built)."
