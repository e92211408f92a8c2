#!/usr/bin/env bash
# Starts a single-node SLURM cluster on this machine (Debian slurm-wlm + munge, as root, no
# systemd, no cgroups, no accounting): used by the slurm-marked tests, .ci/run and laptops.
#   sudo bash slurm/local/start.sh          # install if needed, configure, start, smoke-test
#   bash slurm/local/stop.sh                # stop the daemons
# Idempotent: a cluster that already answers `sinfo` with an idle node is left as it is.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ "$(id -u)" != 0 ]; then
  echo "error: slurm/local/start.sh must run as root (it starts munged, slurmctld and slurmd)" >&2
  exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "installing slurm-wlm and munge (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
if timeout 10 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
  echo "SLURM is already running: $(sinfo -h -o '%P %a %D %T' | head -1)"
  exit 0
fi
H="$(hostname -s)"
# the node must resolve (SlurmctldHost and NodeName are this host)
getent hosts "$H" >/dev/null || echo "127.0.1.1 $H" >> /etc/hosts
# the cores this machine gives us (nproc also honours OMP_NUM_THREADS, which a test worker sets to 1)
CPUS="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
# declare less memory than the machine has, or the node drains with "Low RealMemory"
MEM_MB="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)"
mkdir -p /etc/slurm /run/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
sed -e "s/@HOST@/$H/g" -e "s/@CPUS@/$CPUS/g" -e "s/@MEM_MB@/$MEM_MB/g" \
  "$HERE/slurm.conf.in" > /etc/slurm/slurm.conf
[ -s /etc/munge/munge.key ] || mungekey --create >/dev/null 2>&1 || \
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
chown -R munge:munge /etc/munge /run/munge 2>/dev/null || true
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || munged --force
pkill -x slurmctld 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
sleep 1
slurmctld -c   # -c: clear state left by an earlier cluster
slurmd
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed)'; then break; fi
  scontrol update nodename="$H" state=resume >/dev/null 2>&1 || true
  sleep 1
done
if ! sinfo -h -o %T | grep -qE '^(idle|mixed)'; then
  echo "error: the node did not become idle; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
  sinfo >&2 || true
  exit 1
fi
timeout 60 srun -N1 true   # a misconfigured cluster makes srun hang: fail within a minute
echo "SLURM is up: $(sinfo -h -o '%P %a %D %T %c cpus %m MB' | head -1)"
