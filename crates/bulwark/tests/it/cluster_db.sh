#!/bin/sh
# One PostgreSQL 15 replica of a `[leader]` service, run the way Patroni runs one, for
# cluster_db.rs. Every incarnation starts as a standby; only bulwark's election makes one
# the leader (`promote`). Every connection to "the leader" goes through this machine's
# bulwark listener (127.0.0.1:$LISTEN, `route = "leader"`), which reaches the cluster's
# leader wherever it runs: cloning, and the standby's stream, so that after a failover the
# standbys follow the new leader (recovery_target_timeline = latest).
#
#   cluster_db.sh start INDEX PORT    the replica (execs postgres, as user postgres)
#   cluster_db.sh ready PORT          readiness: accepts connections
#   cluster_db.sh promote PORT        `promote`: the leader
#   cluster_db.sh demote PORT         `demote`: a deposed leader stops at once
#
# Environment (the stack's `env`): PGROOT, the data root (a directory per machine under
# it, named after the agent's state directory, where bulwark keeps the replica's token
# file, BULWARK_FENCING_TOKEN_FILE); LISTEN,
# the listener's port; ETCD, etcd's URLs, where the cluster's `initialize` key is (as in
# Patroni): a replica with no data bootstraps only if it creates that key (created only if
# absent) or the key names its machine; every other one clones, so a replica placed on a
# fresh machine after a failover clones the new leader.
set -eu
bin=/usr/lib/postgresql/15/bin
mark=/pg-test/db/initialize

# As user postgres (it refuses root), keeping the parent-death signal bulwark set (a
# change of user clears it): the replica dies with its agent, as on a machine that dies.
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups --pdeathsig=keep -- "$@"; }
sql() { "$bin/psql" -h 127.0.0.1 -p "$1" -U postgres -d postgres -tAq -c "$2"; }

case $1 in
start)
    index=$2 port=$3
    machine="$PGROOT/$(basename "$(dirname "$(dirname "$BULWARK_FENCING_TOKEN_FILE")")")"
    data="$machine/db-$index"
    mkdir -p "$machine"
    chown postgres: "$machine"
    if [ ! -s "$data/PG_VERSION" ]; then
        rm -rf "$data"
        me=$(basename "$machine")
        printf 'create("%s") = "0"\n\nput %s %s\n\n\n' "$mark" "$mark" "$me" |
            etcdctl --endpoints "$ETCD" txn >/dev/null
        if [ "$(etcdctl --endpoints "$ETCD" get --print-value-only "$mark")" = "$me" ]; then
            # Bootstrap: a standby of nobody, ready at once, so it is elected and promoted.
            # A standby reports what it flushed every second when idle (10 s by default):
            # a commit made while a new standby was still catching up is released by its
            # next report once it is synchronous.
            as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust --no-sync >/dev/null
            printf 'host all all 0.0.0.0/0 trust\nhost replication all 0.0.0.0/0 trust\n' \
                >>"$data/pg_hba.conf"
            cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '*'
unix_socket_directories = ''
hot_standby = on
wal_level = replica
synchronous_standby_names = '*'
synchronous_commit = on
recovery_target_timeline = 'latest'
wal_receiver_status_interval = '1s'
primary_conninfo = 'host=127.0.0.1 port=$LISTEN user=postgres'
EOF
        else
            # Clone the leader through the listener (closed at once while nobody leads).
            until as_pg "$bin/pg_basebackup" -D "$data" -h 127.0.0.1 -p "$LISTEN" \
                -U postgres -R -X stream -c fast; do
                rm -rf "$data"
                sleep 0.3
            done
        fi
    fi
    as_pg touch "$data/standby.signal"
    exec setpriv --reuid=postgres --regid=postgres --init-groups --pdeathsig=keep -- \
        "$bin/postgres" -D "$data" -c port="$port"
    ;;
ready)
    exec "$bin/pg_isready" -q -h 127.0.0.1 -p "$2" -U postgres -t 1
    ;;
promote)
    [ "$(sql "$2" 'SELECT pg_promote(true, 30)')" = t ]
    ;;
demote)
    # No writes from a deposed leader: it stops; restarted, it is a standby.
    data=$(sql "$2" 'SHOW data_directory')
    as_pg "$bin/pg_ctl" stop -D "$data" -m immediate
    ;;
*)
    echo "usage: $0 start INDEX PORT | ready PORT | promote PORT | demote PORT" >&2
    exit 2
    ;;
esac
