#!/bin/sh
# After unpacking (deb postinst, rpm %post): make systemd see the unit. The
# service is not enabled or started: set a key first (see
# /etc/agent-server/config.yaml), then `systemctl enable --now agent-server`.
# On an upgrade a running service is restarted onto the new binaries.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if systemctl is-active --quiet agent-server; then
		systemctl try-restart agent-server || true
	fi
fi
