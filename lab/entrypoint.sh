#!/bin/sh
# The lab's containers start here (docker-compose.yml): what a role needs
# before shoal runs, then `exec shoal ARGS...`.
#
#   store       s1 makes the store's TLS files (volume storepki) once;
#               every member waits for them
#   agent       shared mount propagation for pods' mounts (the cgroup
#               hierarchy is the machine's, bound read-write by compose)
#   apiserver   the first one makes the tokens and, once its CA exists,
#               the admin kubeconfigs (/pki, /out for the host) and, once
#               it serves, a bootstrap token and the agents' bootstrap
#               kubeconfig (/join); the second waits for the first one's
#               certificate
set -e

kubeconfig() { # server ca-file token
    ca=$(base64 -w0 "$2")
    cat <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: $1
    certificate-authority-data: $ca
users:
- name: admin
  user:
    token: $3
contexts:
- name: lab
  context:
    cluster: lab
    user: admin
current-context: lab
KUBECONFIG
}

case "$1" in
store)
    # s1 makes the store's TLS files once (its own CA, one member
    # certificate for the three addresses, a client certificate); the
    # others wait for them.
    if [ "${LAB_STORE_PKI:-}" = 1 ] && [ ! -e /storepki/ready ]; then
        rm -rf /storepki/new
        shoal store certificates --dir /storepki/new \
            --dns s1,s2,s3,localhost --ip 172.30.0.11,172.30.0.12,172.30.0.13,127.0.0.1 >/dev/null
        mv /storepki/new/* /storepki/
        rmdir /storepki/new
        touch /storepki/ready
    fi
    until [ -e /storepki/ready ]; do sleep 0.2; done
    ;;
agent)
    mount --make-rshared / 2>/dev/null || true
    until [ -s /join/bootstrap-kubeconfig ]; do sleep 0.2; done
    ;;
apiserver)
    until [ -e /storepki/ready ]; do sleep 0.2; done
    if [ "${LAB_FIRST_APISERVER:-}" = 1 ]; then
        # etcdctl on the host (lab/chaos.sh) connects with these.
        if [ -d /out ]; then
            mkdir -p /out/store
            cp /storepki/ca.crt /storepki/client.crt /storepki/client.key /out/store/
            # Theirs who own lab/out (the key is the store's 0600).
            chown "$(stat -c %u:%g /out)" /out/store/*
        fi
        if [ ! -s /pki/tokens.csv ]; then
            token=$(head -c 24 /dev/urandom | base64 | tr -d '+/=')
            echo "$token,admin,admin,\"system:masters\"" >/pki/tokens.csv
        fi
        token=$(cut -d, -f1 /pki/tokens.csv)
        (
            until [ -s /pki/ca.crt ]; do sleep 0.2; done
            kubeconfig https://apiserver:6443 /pki/ca.crt "$token" >/pki/kubeconfig.new
            mv /pki/kubeconfig.new /pki/kubeconfig
            if [ -d /out ]; then
                kubeconfig "https://127.0.0.1:${LAB_HOST_PORT:-16443}" /pki/ca.crt "$token" >/out/kubeconfig.new
                mv /out/kubeconfig.new /out/kubeconfig
            fi
            # The lab's nodes come and go (chaos): the token never expires.
            umask 077
            [ -s /pki/bootstrap-token ] || shoal token generate >/pki/bootstrap-token
            tries=0
            until shoal token create --kubeconfig /pki/kubeconfig --ttl 0s \
                --token "$(cat /pki/bootstrap-token)" \
                --bootstrap-kubeconfig /join/bootstrap-kubeconfig.new \
                >/dev/null 2>/tmp/token.err; do
                tries=$((tries + 1))
                # Refused until the apiserver serves; say why now and then.
                [ $((tries % 20)) -eq 0 ] && echo "bootstrap token: $(cat /tmp/token.err)" >&2
                sleep 0.5
            done
            mv /join/bootstrap-kubeconfig.new /join/bootstrap-kubeconfig
        ) &
    else
        until [ -s /pki/apiserver.crt ] && [ -s /pki/tokens.csv ]; do sleep 0.2; done
    fi
    ;;
esac
exec shoal "$@"
