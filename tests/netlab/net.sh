#!/usr/bin/env bash
# The connectivity lab's networks, built from network namespaces, veth pairs and iptables.
#
#   net.sh up PREFIX        build every namespace below, named PREFIX-*
#   net.sh down PREFIX      delete them (and whatever runs in them is cut off)
#   net.sh impair PREFIX HOME LOSS_PCT DELAY_MS JITTER_MS DELAYER_BIN
#                           drop LOSS_PCT % of the packets crossing HOME's router in each
#                           direction, and hold those leaving HOME for DELAY_MS (+ up to
#                           JITTER_MS) with netlab-delayer (the kernel has no netem)
#   net.sh clear PREFIX HOME
#                           remove that impairment again
#
# Topology (documentation and private addresses only; nothing reaches a real network):
#
#   PREFIX-inet   "the internet": routes between the routers' WAN links; servers on lo:
#                 203.0.113.10 Switchboard's STUN/TURN (UDP+TCP 443)
#                 203.0.113.20 Switchboard's HTTP/signaling (TCP 443)
#                 203.0.113.11 coturn (UDP+TCP 443), 203.0.113.21 the anchor's signaling
#   PREFIX-rX     router of home X: lan0 10.0.N.1/24, wan0 198.51.100.(4N-2)/30, NAT
#   PREFIX-X      a host in home X: eth0 10.0.N.2/24
#
#   home  N  router NAT                                  inbound
#   a     1  MASQUERADE              (port-restricted cone)   only replies (conntrack)
#   b     2  MASQUERADE              (port-restricted cone)   only replies
#   c     3  MASQUERADE --random-fully (symmetric)            only replies
#   d     4  MASQUERADE --random-fully (symmetric)            only replies
#   e     5  MASQUERADE, and only TCP to port 443 may leave (a corporate network)
set -euo pipefail

HOMES=(a b c d e)

ns() { ip netns exec "$1" "${@:2}"; }

home_index() {
  case "$1" in a) echo 1 ;; b) echo 2 ;; c) echo 3 ;; d) echo 4 ;; e) echo 5 ;;
    *) echo "unknown home $1" >&2; return 1 ;; esac
}

up() {
  local p=$1 inet="$1-inet"
  ip netns add "$inet"
  ns "$inet" ip link set lo up
  ns "$inet" sysctl -qw net.ipv4.ip_forward=1
  for ip in 203.0.113.10 203.0.113.11 203.0.113.20 203.0.113.21; do
    ns "$inet" ip addr add "$ip/32" dev lo
  done
  # Anything not routed to a home (e.g. peers' private host candidates) vanishes here, as it
  # would on the internet, instead of failing with ENETUNREACH.
  ns "$inet" ip route add blackhole default

  local home n router host wan gw
  for home in "${HOMES[@]}"; do
    n=$(home_index "$home")
    router="$p-r$home"
    host="$p-$home"
    gw="198.51.100.$((4 * n - 3))"
    wan="198.51.100.$((4 * n - 2))"
    ip netns add "$router"
    ip netns add "$host"
    ns "$router" ip link set lo up
    ns "$host" ip link set lo up
    ip link add "up$n" netns "$inet" type veth peer name wan0 netns "$router"
    ip link add lan0 netns "$router" type veth peer name eth0 netns "$host"
    ns "$inet" ip addr add "$gw/30" dev "up$n"
    ns "$inet" ip link set "up$n" up
    ns "$router" ip addr add "$wan/30" dev wan0
    ns "$router" ip addr add "10.0.$n.1/24" dev lan0
    ns "$router" ip link set wan0 up
    ns "$router" ip link set lan0 up
    ns "$router" ip route add default via "$gw"
    ns "$router" sysctl -qw net.ipv4.ip_forward=1
    ns "$host" ip addr add "10.0.$n.2/24" dev eth0
    ns "$host" ip link set eth0 up
    ns "$host" ip route add default via "10.0.$n.1"

    local masq=(-j MASQUERADE)
    [[ $home == c || $home == d ]] && masq+=(--random-fully)
    ns "$router" iptables -t nat -A POSTROUTING -o wan0 "${masq[@]}"
    ns "$router" iptables -P FORWARD DROP
    ns "$router" iptables -A FORWARD -i wan0 -o lan0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    if [[ $home == e ]]; then
      ns "$router" iptables -A FORWARD -i lan0 -o wan0 -p tcp --dport 443 -j ACCEPT
    else
      ns "$router" iptables -A FORWARD -i lan0 -o wan0 -j ACCEPT
    fi
    # Nothing unsolicited reaches the router itself from outside either.
    ns "$router" iptables -A INPUT -i wan0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    ns "$router" iptables -A INPUT -i wan0 -j DROP
  done
}

down() {
  local p=$1 name
  for name in $(ip netns list | awk '{print $1}' | grep -E "^$p-" || true); do
    # Whatever still runs in there (servers, browsers, the delayer) is ours: stop it.
    for pid in $(ip netns pids "$name" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns delete "$name" 2>/dev/null || true
  done
}

impair() {
  local p=$1 home=$2 loss=$3 delay=$4 jitter=$5 bin=$6 router="$1-r$2"
  local probability
  probability=$(awk "BEGIN { printf \"%.4f\", $loss / 100 }")
  if [[ $loss != 0 ]]; then
    ns "$router" iptables -t mangle -N netlab-impair
    ns "$router" iptables -t mangle -A netlab-impair -m statistic --mode random --probability "$probability" -j DROP
    ns "$router" iptables -t mangle -I FORWARD 1 -i wan0 -j netlab-impair
    ns "$router" iptables -t mangle -I FORWARD 1 -o wan0 -j netlab-impair
  fi
  if [[ $delay != 0 || $jitter != 0 ]]; then
    ns "$router" iptables -t mangle -A FORWARD -o wan0 -j NFQUEUE --queue-num 7 --queue-bypass
    ns "$router" "$bin" --queue 7 --delay-ms "$delay" --jitter-ms "$jitter" \
      >"${NETLAB_LOGS:-/tmp}/delayer-$router.log" 2>&1 &
    # The rule bypasses the queue until the delayer has bound it; wait for that.
    for _ in $(seq 50); do
      grep -q 'netlab-delayer: queue' "${NETLAB_LOGS:-/tmp}/delayer-$router.log" 2>/dev/null && break
      sleep 0.05
    done
  fi
}

clear_impairment() {
  local router="$1-r$2"
  for pid in $(ip netns pids "$router" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  ns "$router" iptables -t mangle -F FORWARD
  ns "$router" iptables -t mangle -F netlab-impair 2>/dev/null || true
  ns "$router" iptables -t mangle -X netlab-impair 2>/dev/null || true
}

case "${1:-}" in
  up) up "$2" ;;
  down) down "$2" ;;
  impair) impair "$2" "$3" "$4" "$5" "$6" "$7" ;;
  clear) clear_impairment "$2" "$3" ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
