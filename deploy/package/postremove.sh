#!/bin/sh
# After removing (deb postrm, rpm %postun). A purge (deb only) also deletes
# the data in /var/lib/agent-server; dpkg deletes the config files itself.
# The agent-server user and group stay, as Debian's policy advises: files
# elsewhere may still belong to them.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
if [ "$1" = purge ]; then
	rm -rf /var/lib/agent-server
fi
