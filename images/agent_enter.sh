#!/bin/sh
# The agent container's entry point (trusted code, run as root with CHOWN, SETUID, SETGID and KILL only):
# 1. lay out /work: the task files root-owned and read-only in a root-owned folder; train.py, notes.md and
#    description.txt the only files the agent's uid (1000) owns;
# 2. run the CLI ("$@") as uid 1000 with no capabilities, its output to a file the runner reads back;
# 3. when it ends, kill every process of the agent's, then print what the runner judges: the exit code, a tar
#    of /work and the CLI's output (capped), each base64 on one line. Nothing the agent runs can write to this
#    script's stdout: the CLI's descriptors are the output file and /dev/null.
set -u
umask 022
cp /in/task/* /work/ && chmod 0444 /work/*
for name in train.py notes.md description.txt; do  # mode before owner: root has no CAP_FOWNER here
    cp "/in/agent/$name" "/work/$name" && chmod 0644 "/work/$name" && chown 1000:1000 "/work/$name"
done
chown 0:0 /work && chmod 0755 /work
: > /run/agent/output
cd /work
setpriv --reuid=1000 --regid=1000 --clear-groups --inh-caps=-all --bounding-set=-all -- "$@" \
    >/run/agent/output 2>&1 </dev/null &
wait $!
code=$?
kill -KILL -1 2>/dev/null
sleep 0.2
kill -KILL -1 2>/dev/null
echo "autoresearch-agent-exit $code"
printf 'autoresearch-agent-work '
tar --numeric-owner -C /work -cf - . 2>/dev/null | base64 -w 0
echo
printf 'autoresearch-agent-output '
head -c 1000000 /run/agent/output | base64 -w 0
echo
