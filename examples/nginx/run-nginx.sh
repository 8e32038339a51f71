#!/bin/sh
# One nginx replica (Debian's nginx) on 127.0.0.1:PORT, with a directory of its own for its
# configuration, pid file and temporary files. bulwark runs it in the foreground; its master
# and worker share bulwark's process group for the replica, so a stop or a kill reaches both.
set -eu
port="$1"
dir="${TMPDIR:-/tmp}/bulwark-nginx-$port"
mkdir -p "$dir"
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
error_log stderr warn;
pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port;
        location = /healthz { return 200 "ok\n"; }
        location / { default_type text/plain; return 200 "hello from nginx on $port\n"; }
    }
}
CONF
exec nginx -p "$dir" -c "$dir/nginx.conf" -g "daemon off;"
