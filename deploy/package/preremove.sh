#!/bin/sh
# Before removing (deb prerm, rpm %preun): stop the service on a removal,
# not on an upgrade (deb passes "remove", rpm 0 packages left).
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now agent-server >/dev/null 2>&1 || true
	fi
	;;
esac
