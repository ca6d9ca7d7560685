# An agent image: the debootstrapped Debian base plus one coding-agent CLI's pinned binary from the npm registry
# (built by `autoresearch image --agent NAME`, runner/agents/cli_images.py). No torch, no data, no git, no store:
# the agent container sees only the task files the runner copies in, and reaches only the runner's gateway.
# The build context holds this file, agent_enter.sh, agent_relay.py and bin/ with the CLI's binaries (taken out
# of the npm tarball on the host, whose integrity npm checked); the build runs with no network.
ARG BASE
FROM ${BASE}
LABEL autoresearch.image=1
COPY bin/ /usr/local/bin/
COPY agent_enter.sh /opt/autoresearch/enter
COPY agent_relay.py /opt/autoresearch/relay.py
RUN chmod 0755 /opt/autoresearch/enter /usr/local/bin/* \
 && groupadd --gid 1000 agent \
 && useradd --uid 1000 --gid 1000 --home-dir /home/agent --no-create-home --shell /bin/sh agent \
 && mkdir -p /work /home/agent /run/agent /run/gateway /in
# enter starts as root (with CHOWN, SETUID, SETGID and KILL only), lays out /work and drops to the agent's uid.
ENV HOME=/home/agent PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8
WORKDIR /work
ENTRYPOINT ["/opt/autoresearch/enter"]
