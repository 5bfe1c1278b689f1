#!/bin/sh
# Before unpacking (deb preinst, rpm %pre): create the system group and user
# the service runs as, so the package's files can be owned by them.
set -e
if ! getent group agent-server >/dev/null; then
	groupadd --system agent-server
fi
if ! getent passwd agent-server >/dev/null; then
	useradd --system --gid agent-server --home-dir /var/lib/agent-server \
		--no-create-home --shell /usr/sbin/nologin \
		--comment "agent-server service" agent-server
fi
