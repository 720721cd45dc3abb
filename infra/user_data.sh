#!/bin/bash
# Boot script of the MHQ agent host (Amazon Linux 2023), run by cloud-init on every
# boot. Each step checks the state it wants before it acts, so a second run on the
# same host changes nothing, and a changed setting restarts only what it affects.
#
# The stack writes the MHQ_* settings above this header. Tests set them in the
# environment and point MHQ_ROOT at a scratch directory that replaces "/".
set -euo pipefail
umask 077

: "${MHQ_REGION:?MHQ_REGION is required}"
: "${MHQ_LOG_GROUP:?MHQ_LOG_GROUP is required}"
: "${MHQ_AGENT_IMAGE:?MHQ_AGENT_IMAGE is required}"
: "${MHQ_POSTGRES_IMAGE:?MHQ_POSTGRES_IMAGE is required}"
: "${MHQ_PARAMETER_PREFIX:?MHQ_PARAMETER_PREFIX is required}"
: "${MHQ_SWAP_MB:=1024}"
root="${MHQ_ROOT:-}"

state_dir="$root/etc/mhq"
data_dir="$root/var/lib/mhq/postgres"
unit_dir="$root/etc/systemd/system"
helper="$root/usr/local/sbin/mhq-agent-pull"
swapfile="$root/swapfile"

restart_postgres=0
restart_agent=0
reload_units=0

log() {
    echo "mhq-boot: $*"
}

# Succeed when a line of file $2 starts with the field $1 (as /proc/swaps and fstab list).
has_first_field() {
    awk -v value="$1" '$1 == value { found = 1 } END { exit !found }' "$2"
}

# Write stdin to $1 with mode $2 unless the file already has that content.
# Returns 0 when the file changed and 1 when it was already up to date.
install_file() {
    local path=$1 mode=$2 tmp
    tmp=$(mktemp "$path.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        chmod "$mode" "$path"
        return 1
    fi
    mv -f "$tmp" "$path"
    log "wrote $path"
    return 0
}

install_docker() {
    if ! rpm -q docker >/dev/null 2>&1; then
        log "installing docker"
        dnf install -y docker
    fi
    systemctl enable --now docker.service
}

# A swap file gives a 1 GiB instance room for fetch peaks instead of the OOM killer.
# MHQ_SWAP_MB=0 leaves swap as it is.
setup_swap() {
    local size=$((MHQ_SWAP_MB * 1024 * 1024))
    ((MHQ_SWAP_MB > 0)) || return 0
    if [[ -f $swapfile ]] && [[ $(stat -c %s "$swapfile") -ne $size ]]; then
        log "resizing the swap file to $MHQ_SWAP_MB MiB"
        swapoff "$swapfile" || true
        rm -f "$swapfile"
    fi
    if [[ ! -f $swapfile ]]; then
        log "creating a $MHQ_SWAP_MB MiB swap file"
        # dd, not fallocate: swapon rejects files with unwritten extents on XFS.
        dd if=/dev/zero of="$swapfile" bs=1M count="$MHQ_SWAP_MB" status=none
        chmod 600 "$swapfile"
        mkswap "$swapfile" >/dev/null
    fi
    if ! has_first_field "$swapfile" "$root/proc/swaps"; then
        swapon "$swapfile"
    fi
    if ! has_first_field /swapfile "$root/etc/fstab"; then
        echo '/swapfile none swap defaults 0 0' >>"$root/etc/fstab"
    fi
    if install_file "$root/etc/sysctl.d/90-mhq-swap.conf" 644 <<'EOF'; then
# Prefer dropping page cache to swapping out Postgres and the agent.
vm.swappiness = 10
EOF
        sysctl -q -p "$root/etc/sysctl.d/90-mhq-swap.conf"
    fi
}

# The Postgres password is generated once and kept in a root-only file on the host.
# It is never written to the template, the user data or SSM.
ensure_password() {
    local file="$state_dir/postgres-password"
    if [[ ! -s $file ]]; then
        log "generating the Postgres password"
        od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$file"
    fi
    chmod 600 "$file"
}

write_env_files() {
    local password
    password=$(<"$state_dir/postgres-password")
    if install_file "$state_dir/postgres.env" 600 <<EOF; then
POSTGRES_USER=mhq
POSTGRES_DB=mhq
POSTGRES_PASSWORD=$password
EOF
        restart_postgres=1
    fi
    if install_file "$state_dir/agent.env" 600 <<EOF; then
DATABASE_URL=postgresql://mhq:$password@mhq-postgres:5432/mhq
MHQ_SSM_PREFIX=$MHQ_PARAMETER_PREFIX
AWS_REGION=$MHQ_REGION
AWS_DEFAULT_REGION=$MHQ_REGION
LOG_FORMAT=json
EOF
        restart_agent=1
    fi
}

write_pull_helper() {
    if install_file "$helper" 755 <<EOF; then
#!/bin/bash
# Pull the agent image before each start of mhq-agent.service, logging in to ECR
# with the instance role when the image is there. When the pull fails, systemd
# goes on and docker runs the image it already has.
set -euo pipefail
image='$MHQ_AGENT_IMAGE'
registry="\${image%%/*}"
case "\$registry" in
*.dkr.ecr.*.amazonaws.com | *.dkr.ecr.*.amazonaws.com.cn)
    aws ecr get-login-password --region '$MHQ_REGION' |
        docker login --username AWS --password-stdin "\$registry"
    ;;
esac
exec docker pull "\$image"
EOF
        restart_agent=1
    fi
}

# Docker log options that send a container's output to stream $1 of the stack's
# log group. Non-blocking mode drops lines when CloudWatch is unreachable and the
# 4 MiB buffer is full, instead of stalling the container on its next write.
log_options() {
    local stream=$1
    echo "--log-driver awslogs --log-opt awslogs-region=$MHQ_REGION" \
        "--log-opt awslogs-group=$MHQ_LOG_GROUP --log-opt awslogs-stream=$stream" \
        "--log-opt mode=non-blocking --log-opt max-buffer-size=4m"
}

write_postgres_unit() {
    # Memory settings for a 1 GiB host that also runs the agent: about 128 MiB of
    # shared buffers and few connections, since the agent opens a handful.
    if install_file "$unit_dir/mhq-postgres.service" 644 <<EOF; then
[Unit]
Description=MHQ agent database (PostgreSQL container)
Requires=docker.service
After=docker.service network-online.target
Wants=network-online.target

[Service]
Restart=always
RestartSec=10
TimeoutStartSec=900
TimeoutStopSec=120
ExecStartPre=-/usr/bin/docker network create mhq
ExecStartPre=-/usr/bin/docker rm --force mhq-postgres
ExecStart=/usr/bin/docker run --rm --name mhq-postgres --network mhq \\
    --env-file /etc/mhq/postgres.env \\
    --volume /var/lib/mhq/postgres:/var/lib/postgresql/data \\
    --shm-size 128m --stop-timeout 90 \\
    $(log_options postgres) \\
    $MHQ_POSTGRES_IMAGE postgres \\
    -c shared_buffers=128MB -c effective_cache_size=384MB \\
    -c work_mem=4MB -c maintenance_work_mem=32MB \\
    -c max_connections=20 -c max_wal_size=256MB -c wal_buffers=4MB
ExecStop=/usr/bin/docker stop --time 90 mhq-postgres

[Install]
WantedBy=multi-user.target
EOF
        reload_units=1
        restart_postgres=1
    fi
}

write_agent_unit() {
    if install_file "$unit_dir/mhq-agent.service" 644 <<EOF; then
[Unit]
Description=MHQ sync agent (container)
Requires=docker.service
Wants=mhq-postgres.service network-online.target
After=docker.service mhq-postgres.service network-online.target

[Service]
Restart=always
RestartSec=15
TimeoutStartSec=900
TimeoutStopSec=60
ExecStartPre=-/usr/bin/docker network create mhq
ExecStartPre=-/usr/bin/docker rm --force mhq-agent
ExecStartPre=-/usr/local/sbin/mhq-agent-pull
ExecStart=/usr/bin/docker run --rm --name mhq-agent --network mhq \\
    --env-file /etc/mhq/agent.env \\
    --read-only --tmpfs /tmp:rw,size=16m,mode=1777 \\
    --cap-drop ALL --security-opt no-new-privileges \\
    $(log_options agent) \\
    $MHQ_AGENT_IMAGE run
ExecStop=/usr/bin/docker stop --time 30 mhq-agent

[Install]
WantedBy=multi-user.target
EOF
        reload_units=1
        restart_agent=1
    fi
}

# Start a unit, or restart it when its unit file or settings changed in this run.
start_unit() {
    local unit=$1 restart=$2
    systemctl enable "$unit"
    if ((restart)); then
        log "restarting $unit"
        systemctl restart "$unit"
    else
        systemctl start "$unit"
    fi
}

main() {
    install -d -m 700 "$state_dir" "$data_dir"
    install -d -m 755 "$unit_dir" "$(dirname "$helper")" "$root/etc/sysctl.d"
    install_docker
    setup_swap
    ensure_password
    write_env_files
    write_pull_helper
    write_postgres_unit
    write_agent_unit
    if ((reload_units)); then
        systemctl daemon-reload
    fi
    start_unit mhq-postgres.service "$restart_postgres"
    start_unit mhq-agent.service "$restart_agent"
    log "done"
}

main "$@"
