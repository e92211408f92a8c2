#!/usr/bin/env bash
# Stops the single-node cluster started by slurm/local/start.sh (munged is left running).
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
echo "SLURM stopped"
