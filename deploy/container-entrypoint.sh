#!/bin/sh
# Every process of the image (code server, webservers, daemon, run containers) starts here:
# what it writes (compute logs, the outbox) holds names and addresses, so nobody else may read it.
umask 077
exec "$@"
