#!/usr/bin/env python3
"""The NAT lab: network namespaces, veth pairs and nftables routers that behave like the NATs of
RFC 4787, with an RFC 5780 STUN server (two public IPs) on the lab's "internet".

Python 3 standard library only; needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for `ip netns`).

One topology per NAT kind, every namespace named "natlab<PID>-<kind>-<role>" so parallel runs
never clash; `Lab.down()` (also run by atexit) deletes them, and `remove_stale()` deletes the
namespaces of runs whose PID is gone. Links are created inside the namespaces (`ip -n NS link add
... peer ... netns NS2`), so the host's own network configuration is never touched; sysctls are
set inside the lab namespaces only.

Addresses (the same in every kind's private set of namespaces):
  pub   the "internet": STUN server addresses 198.18.0.1 and 198.18.0.2 on its loopback,
        198.18.100.1/24 towards the outermost router (wan 198.18.100.2)
  rN    routers, innermost r0. NAT routers hide 10.0.0.0/24 (client LAN) or 100.64.0.0/24 (between
        the two routers of a double NAT); a plain router routes the public 198.19.0.0/24
  cli   the client: 10.0.0.2 behind a NAT, 198.19.0.2 behind a plain router

Command line, for looking at the lab by hand:
  lab.py kinds                 list the kinds
  lab.py up KIND               build KIND, print the namespaces, wait for Enter, tear down
  lab.py cleanup               remove the namespaces of dead runs
"""
from __future__ import annotations

import atexit
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time

PREFIX_BASE = "natlab"
SERVER_IP1 = "198.18.0.1"   # primary STUN address (Da)
SERVER_IP2 = "198.18.0.2"   # alternate STUN address (Ca)
STUN_PORT1 = 3478           # Dp
STUN_PORT2 = 3479           # Cp
PUB_WAN_NET = "198.18.100"  # pub .1 <-> outermost router .2

# Verdict values of the natprobe JSON contract (client/nat/SCHEMA.md).
NONE = "none"
EI = "endpoint-independent"
AD = "address-dependent"
APD = "address-and-port-dependent"
UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class Layer:
    """One router. nat: the NAT/filter recipe name (see ruleset())."""
    nat: str

    @property
    def hides(self) -> bool:
        """True when the router translates addresses (the subnet behind it is private)."""
        return self.nat != "route"


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    layers: tuple[Layer, ...]  # innermost first
    description: str
    old_name: str
    # Ground truth of the network as built (RFC 4787 behaviour of the whole path).
    udp: bool
    mapping: str
    filtering: str
    # What a client can prove with an RFC 5780 server (two IPs, two ports). Differs from the truth
    # only where no probe can tell: behind an endpoint-dependent mapping that filters by address,
    # no CHANGE-REQUEST reply can come back, so the filtering is unknowable.
    probe_mapping: str
    probe_filtering: str
    # coturn's turnutils_natdiscovery verdict lines (mapping, filtering) this lab must produce;
    # None: it prints no verdict line (no reply at all).
    coturn_mapping: str | None
    coturn_filtering: str | None
    portmap: bool = False  # miniupnpd (NAT-PMP, PCP, UPnP IGD) runs on the innermost router


# coturn 4.6.1's verdict phrases (stun_buffer / natdiscovery.c).
C_NONAT = "No NAT"
C_EIM = "NAT with Endpoint Independent Mapping!"
C_ADM = "NAT with Address Dependent Mapping!"
C_APDM = "NAT with Address and Port Dependent Mapping!"
C_EIF = "NAT with Endpoint Independent Filtering!"
C_ADF = "NAT with Address Dependent Filtering!"
C_APDF = "NAT with Address and Port Dependent Filtering!"

KINDS: dict[str, Kind] = {k.name: k for k in [
    Kind("none", (Layer("route"),),
         "no NAT: a plain router, the client has a public address and nothing is filtered",
         "open internet", True, NONE, NONE, NONE, NONE, C_NONAT, C_EIF),
    Kind("eim-eif", (Layer("eim-eif"),),
         "full cone: snat to the WAN address (ports kept) and every port the client used is "
         "DNATed back to it, whoever sends",
         "full cone", True, EI, EI, EI, EI, C_EIM, C_EIF),
    Kind("eim-adf", (Layer("eim-adf"),),
         "restricted cone: like eim-eif, but only from remote IPs the mapping has sent to",
         "restricted cone", True, EI, AD, EI, AD, C_EIM, C_ADF),
    Kind("eim-apdf", (Layer("eim-apdf"),),
         "port-restricted cone: Linux masquerade (conntrack lets in replies only); miniupnpd "
         "runs on this router",
         "port-restricted cone", True, EI, APD, EI, APD, C_EIM, C_APDF, portmap=True),
    Kind("adm", (Layer("adm"),),
         "address-dependent mapping: snat to a port hashed from the destination IP and the "
         "source port, so one public port per destination IP; conntrack filtering (APDF)",
         "symmetric", True, AD, APD, AD, APD, C_ADM, C_APDF),
    Kind("apdm", (Layer("apdm"),),
         "address-and-port-dependent mapping: masquerade random,fully-random, a new random port "
         "per destination IP:port; conntrack filtering (APDF)",
         "symmetric", True, APD, APD, APD, UNKNOWN, C_APDM, C_APDF),
    Kind("udp-blocked", (Layer("udp-blocked"),),
         "the router forwards no UDP at all (TCP is masqueraded)",
         "UDP blocked", False, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, None, None),
    Kind("double-nat", (Layer("eim-apdf"), Layer("eim-apdf")),
         "home router masquerade (10.0.0.0/24 -> 100.64.0.2) behind a carrier-grade masquerade "
         "(100.64.0.0/24 -> 198.18.100.2): two stacked EIM+APDF NATs are one EIM+APDF NAT",
         "port-restricted cone", True, EI, APD, EI, APD, C_EIM, C_APDF),
    Kind("double-nat-apdm", (Layer("eim-apdf"), Layer("apdm")),
         "home router masquerade behind a carrier-grade NAT with random ports: any "
         "endpoint-dependent layer makes the path endpoint-dependent",
         "symmetric", True, APD, APD, APD, UNKNOWN, C_APDM, C_APDF),
]}


class LabError(RuntimeError):
    pass


def _run(argv, *, input_text=None, check=True, timeout=20.0):
    p = subprocess.run(argv, input=input_text, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_netns() -> list[str]:
    p = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def _ns_pids(ns: str) -> list[int]:
    p = _run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def _delete_ns(ns: str) -> None:
    _run(["ip", "netns", "del", ns], check=False)


def remove_stale() -> list[str]:
    """Deletes lab namespaces (natlab<PID>-...) whose creating process is gone, after stopping the
    processes an interrupted run left inside them. Returns the names removed."""
    removed = []
    for ns in list_netns():
        m = re.fullmatch(rf"{PREFIX_BASE}(\d+)-.+", ns)
        if not m or _pid_alive(int(m.group(1))):
            continue
        for pid in _ns_pids(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _delete_ns(ns)
        removed.append(ns)
    return removed


def can_run() -> str | None:
    """None when this machine can build labs, else the reason it cannot."""
    if os.geteuid() != 0:
        return "not root (needs CAP_NET_ADMIN for network namespaces)"
    for tool in ("ip", "nft"):
        if _run(["sh", "-c", f"command -v {tool}"], check=False).returncode != 0:
            return f"{tool} not installed"
    probe = f"{PREFIX_BASE}{os.getpid()}-probe"
    p = _run(["ip", "netns", "add", probe], check=False)
    if p.returncode != 0:
        return f"ip netns add failed: {p.stderr.strip()}"
    try:
        p = _run(["ip", "netns", "exec", probe, "nft", "-f", "-"], check=False,
                 input_text="table ip natlab_probe {\n chain c {\n  type nat hook postrouting priority srcnat;\n  masquerade\n }\n}\n")
        if p.returncode != 0:
            return f"nftables NAT unavailable: {p.stderr.strip()}"
    finally:
        _delete_ns(probe)
    return None


# ----------------------------------------------------------------------------------------------
# Router rulesets. Interfaces: "lan" (towards the client), "wan" (towards the internet).

_INPUT = """
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" meta l4proto udp drop
    }
"""


def ruleset(nat: str, wan_ip: str, lan_host: str, portmap: bool = False) -> str:
    """nftables ruleset of one router. wan_ip: the router's own WAN address; lan_host: the one
    host behind it (the client, or the inner router of a double NAT); portmap: miniupnpd runs on
    it (its forwards are let through, and it may ask the lab's STUN server about itself)."""
    if portmap and nat != "eim-apdf":
        raise LabError("miniupnpd is only set up on the eim-apdf router")
    if nat == "route":
        # No NAT, no filter: forwards everything both ways.
        return "table ip natlab {" + _INPUT + "}\n"
    if nat == "udp-blocked":
        return ("table ip natlab {" + _INPUT + """
    chain forward {
        type filter hook forward priority filter; policy accept;
        meta l4proto udp drop
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade
    }
}
""")
    fwd_dnat = ""
    if nat in ("eim-eif", "eim-adf") or portmap:
        fwd_dnat = '        iifname "wan" oifname "lan" ct status dnat accept\n'
    forward = f"""
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
{fwd_dnat}    }}
"""
    if nat == "eim-apdf":
        # Linux masquerade: ports kept when free, one mapping per source (EIM); conntrack lets in
        # only replies from the IP:port a flow went to (APDF).
        inp = _INPUT
        if portmap:
            # miniupnpd checks with STUN (CHANGE-REQUEST) that its WAN address is reachable before
            # it forwards ports. Let the lab servers reach the router's own open sockets; packets
            # for the client's mappings never pass the input hook, so its filtering is unchanged.
            inp = _INPUT.replace(
                '        iifname "wan" meta l4proto udp drop',
                f'        iifname "wan" ip saddr {{ {SERVER_IP1}, {SERVER_IP2} }} udp sport {{ {STUN_PORT1}, {STUN_PORT2} }} '
                'socket transparent 0 accept\n        iifname "wan" meta l4proto udp drop')
        return ("table ip natlab {" + inp + forward + """
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade
    }
}
""")
    if nat == "apdm":
        # A new random port for every new flow, i.e. every destination IP:port (APDM).
        return ("table ip natlab {" + _INPUT + forward + """
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade random,fully-random
    }
}
""")
    if nat == "adm":
        # The public port is a hash of (destination IP, source port): the same for every port of
        # one destination IP, another one (with probability 1 - 1/30000) for another IP. (The
        # kernel takes the 32-bit hash register as a big-endian port, so the ports seen are the
        # byte-swapped 30000..59999: still 30000 distinct values, fixed per destination IP.)
        return ("table ip natlab {" + _INPUT + forward + f"""
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" meta l4proto udp snat ip to {wan_ip} : jhash ip daddr . udp sport mod 30000 offset 30000
        oifname "wan" masquerade
    }}
}}
""")
    if nat in ("eim-eif", "eim-adf"):
        # snat to the WAN address keeps the client's port (one client, so never a clash): EIM.
        # After the snat, each (public port) -- for ADF each (remote IP, public port) -- the client
        # sent from is remembered, and a new inbound flow to a remembered port is DNATed back to
        # the client. With ports kept, the public port is the client's port.
        if nat == "eim-eif":
            set_def = "type inet_service; flags timeout; timeout 120s;"
            learn = "update @seen { udp sport }"
            match = "udp dport @seen"
        else:
            set_def = "type ipv4_addr . inet_service; flags timeout; timeout 120s;"
            learn = "update @seen { ip daddr . udp sport }"
            match = "ip saddr . udp dport @seen"
        return ("table ip natlab {" + _INPUT + forward + f"""
    set seen {{
        {set_def}
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan" {match} dnat ip to {lan_host}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" snat ip to {wan_ip}
    }}
    chain learn {{
        type filter hook postrouting priority srcnat + 10; policy accept;
        oifname "wan" meta l4proto udp {learn}
    }}
}}
""")
    raise LabError(f"unknown NAT recipe {nat!r}")


# Tables and chains miniupnpd 2.3.1's nftables backend adds its rules to (its defaults:
# table "filter", chains "miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd").
MINIUPNPD_RULESET = """
table inet filter {
    chain forward {
        type filter hook forward priority filter - 1; policy accept;
        jump miniupnpd
    }
    chain miniupnpd {
    }
    chain prerouting {
        type nat hook prerouting priority dstnat - 1; policy accept;
        jump prerouting_miniupnpd
    }
    chain postrouting {
        type nat hook postrouting priority srcnat - 1; policy accept;
        jump postrouting_miniupnpd
    }
    chain prerouting_miniupnpd {
    }
    chain postrouting_miniupnpd {
    }
}
"""


# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Proc:
    name: str
    proc: subprocess.Popen
    lines: list[str]
    reader: threading.Thread


class Lab:
    """One kind's topology: pub (server side), routers r0..rN (r0 innermost), cli (client)."""

    _all: list["Lab"] = []
    _atexit_registered = False

    def __init__(self, kind: str | Kind, tag: str | None = None):
        self.kind = KINDS[kind] if isinstance(kind, str) else kind
        self.prefix = f"{PREFIX_BASE}{os.getpid()}-{tag or self.kind.name}"
        self.pub = f"{self.prefix}-pub"
        self.routers = [f"{self.prefix}-r{i}" for i in range(len(self.kind.layers))]
        self.cli = f"{self.prefix}-cli"
        self.namespaces = [self.pub, *self.routers, self.cli]
        self.client_ip = "10.0.0.2" if self.kind.layers[0].hides else "198.19.0.2"
        self.gateway_ip = "10.0.0.1" if self.kind.layers[0].hides else "198.19.0.1"
        self.public_ip = f"{PUB_WAN_NET}.2"  # outermost router's WAN address
        self.procs: list[_Proc] = []
        self._created: list[str] = []
        self._lock = threading.Lock()
        self._down = False

    # -- building ------------------------------------------------------------------------------

    def up(self) -> "Lab":
        with Lab._lock_all:
            Lab._all.append(self)
            if not Lab._atexit_registered:
                atexit.register(Lab.down_all)
                Lab._atexit_registered = True
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    _lock_all = threading.Lock()

    def _build(self) -> None:
        for ns in self.namespaces:
            if self._down:
                raise LabError("lab torn down while it was being built")
            self._created.append(ns)
            _run(["ip", "netns", "add", ns])
            # Sysctls before any interface exists, so new interfaces inherit "default".
            self.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
            self.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
            self.ip(ns, "link", "set", "lo", "up")
        for r in self.routers:
            self.sysctl(r, "net.ipv4.ip_forward", "1")
            self.sysctl(r, "net.ipv4.conf.all.rp_filter", "0")
            self.sysctl(r, "net.ipv4.conf.default.rp_filter", "0")

        # pub: the server's two addresses, and the link to the outermost router.
        # (on lo: the host kernel may lack the dummy driver)
        self.ip(self.pub, "addr", "add", f"{SERVER_IP1}/32", "dev", "lo")
        self.ip(self.pub, "addr", "add", f"{SERVER_IP2}/32", "dev", "lo")

        n = len(self.routers)
        outer = self.routers[-1]
        self._veth(self.pub, "r0", outer, "wan")
        self.ip(self.pub, "addr", "add", f"{PUB_WAN_NET}.1/24", "dev", "r0")
        self.ip(outer, "addr", "add", f"{PUB_WAN_NET}.2/24", "dev", "wan")
        self.ip(self.pub, "link", "set", "r0", "up")
        self.ip(outer, "link", "set", "wan", "up")
        self.ip(outer, "route", "add", "default", "via", f"{PUB_WAN_NET}.1")

        # Links inside: router i's lan <-> router i-1's wan (or the client's eth0 for i = 0).
        # lan_net[i]: the subnet on router i's lan side.
        lan_net = []
        for i, layer in enumerate(self.kind.layers):
            if i == 0:
                lan_net.append("10.0.0" if layer.hides else "198.19.0")
            else:
                lan_net.append(f"100.64.{i - 1}" if layer.hides else f"198.19.{i}")
        for i in range(n - 1, -1, -1):
            r = self.routers[i]
            inner, inner_if = (self.cli, "eth0") if i == 0 else (self.routers[i - 1], "wan")
            self._veth(r, "lan", inner, inner_if)
            self.ip(r, "addr", "add", f"{lan_net[i]}.1/24", "dev", "lan")
            self.ip(inner, "addr", "add", f"{lan_net[i]}.2/24", "dev", inner_if)
            self.ip(r, "link", "set", "lan", "up")
            self.ip(inner, "link", "set", inner_if, "up")
            self.ip(inner, "route", "add", "default", "via", f"{lan_net[i]}.1")

        # Routes towards public subnets behind plain routers (none when a NAT hides them).
        visible: list[str] = []  # subnets behind router i that the outside can address
        for i, layer in enumerate(self.kind.layers):
            if layer.hides:
                visible = []
            else:
                visible = visible + [lan_net[i]]
            outer_ns = self.pub if i == n - 1 else self.routers[i + 1]
            via = f"{PUB_WAN_NET}.2" if i == n - 1 else f"{lan_net[i + 1]}.2"
            for net in visible:
                self.ip(outer_ns, "route", "add", f"{net}.0/24", "via", via)

        for i, layer in enumerate(self.kind.layers):
            r = self.routers[i]
            wan_ip = f"{PUB_WAN_NET}.2" if i == n - 1 else f"{lan_net[i + 1]}.2"
            portmap = i == 0 and self.kind.portmap
            self.nft(r, ruleset(layer.nat, wan_ip, f"{lan_net[i]}.2", portmap))
            if portmap:
                self.nft(r, MINIUPNPD_RULESET)

    def _veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        # Created inside ns_a with its peer placed in ns_b: never visible in the host's namespace.
        _run(["ip", "-n", ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b])

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def ip(ns: str, *args: str) -> None:
        _run(["ip", "-n", ns, *args])

    @staticmethod
    def sysctl(ns: str, key: str, value: str) -> None:
        _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"])

    @staticmethod
    def nft(ns: str, text: str) -> None:
        _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input_text=text)

    def exec(self, ns: str, argv: list[str], timeout: float = 30.0, check: bool = False,
             env: dict | None = None) -> subprocess.CompletedProcess:
        """Runs argv inside namespace ns to completion."""
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                              timeout=timeout, check=check, env=env)

    def spawn(self, ns: str, argv: list[str], name: str, ready=None, ready_timeout: float = 10.0,
              env: dict | None = None) -> _Proc:
        """Starts a long-running process inside ns (stdout+stderr collected). `ready` is a string
        some output line must contain, or a predicate over all lines so far; spawn waits for it.
        The process is stopped by PID in down()."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        seen = threading.Event()
        lines: list[str] = []
        if isinstance(ready, str):
            needle = ready
            ready = lambda ls: any(needle in x for x in ls)  # noqa: E731

        def read():
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if ready and ready(lines):
                    seen.set()
            seen.set()

        t = threading.Thread(target=read, daemon=True)
        t.start()
        p = _Proc(name, proc, lines, t)
        with self._lock:
            self.procs.append(p)
        if ready:
            if not seen.wait(ready_timeout) or not ready(list(lines)):
                raise LabError(f"{name} did not become ready within {ready_timeout}s:\n" + "\n".join(lines))
        return p

    def start_derpd(self, derpd: str) -> _Proc:
        """derpd as the RFC 5780 server: primary 198.18.0.1:3478, alternate 198.18.0.2:3479."""
        return self.spawn(self.pub, [derpd, "--stun-addr", f"{SERVER_IP1}:{STUN_PORT1}",
                                     "--stun-alt-addr", f"{SERVER_IP2}:{STUN_PORT2}",
                                     "-derp=false", "-http-port=-1", "--metrics-addr", "127.0.0.1:0",
                                     "--workers", "1"], "derpd", ready="derpd ready")

    def start_miniupnpd(self, workdir: str) -> _Proc:
        """miniupnpd 2.3.1 (nftables backend) on the innermost router of a portmap kind: NAT-PMP,
        PCP and UPnP IGD on the LAN side. Its WAN address is in 198.18.0.0/15, which miniupnpd
        counts as reserved (no port forwarding without a public address), so it asks the lab's
        STUN server (derpd, which must be running) for its public address and reachability."""
        if not self.kind.portmap:
            raise LabError(f"kind {self.kind.name} has no port-mapping router")
        conf = os.path.join(workdir, "miniupnpd.conf")
        with open(conf, "w") as f:
            f.write("\n".join([
                "ext_ifname=wan",
                "listening_ip=lan",
                "enable_natpmp=yes",  # NAT-PMP and PCP (one switch in 2.3.1)
                "enable_upnp=yes",
                "http_port=0",
                "secure_mode=yes",
                "system_uptime=no",
                "ext_perform_stun=yes",
                f"ext_stun_host={SERVER_IP1}",
                f"ext_stun_port={STUN_PORT1}",
                f"lease_file={os.path.join(workdir, 'miniupnpd.leases')}",
                "uuid=6e61746c-6162-4000-8000-6d696e697570",
                f"allow 1024-65535 {self.gateway_ip.rsplit('.', 1)[0]}.0/24 1024-65535",
                "deny 0-65535 0.0.0.0/0 0-65535",
                "",
            ]))
        return self.spawn(self.routers[0], ["miniupnpd", "-d", "-f", conf, "-P", os.path.join(workdir, "miniupnpd.pid")],
                          "miniupnpd", ready="Listening for NAT-PMP/PCP traffic", ready_timeout=15.0)

    def start_coturn(self, port: int) -> _Proc:
        """coturn's turnserver as a second RFC 5780 server on the same two IPs: ports `port` and
        port + 1. With two -L of one family it turns RFC 5780 on by itself; -n ignores
        /etc/turnserver.conf (whose no-rfc5780 would turn it off)."""
        want = {f"UDP listener opened on: {ip}:{p}" for ip in (SERVER_IP1, SERVER_IP2) for p in (port, port + 1)}
        return self.spawn(self.pub, ["turnserver", "-n", "-S", "--no-cli", "--no-tls", "--no-dtls",
                                     "-L", SERVER_IP1, "-L", SERVER_IP2, "--listening-port", str(port),
                                     "--log-file", "stdout", "-v"], "coturn",
                          ready=lambda ls: all(any(w in x for x in ls) for w in want))

    def start_stund(self, port: int) -> _Proc:
        """Vovida's stund (RFC 3489 with CHANGED-ADDRESS) on the same two IPs, ports `port` and
        port + 1. It does not check FINGERPRINT, so it answers clients whose FINGERPRINT is wrong."""
        return self.spawn(self.pub, ["stund", "-v", "-h", SERVER_IP1, "-a", SERVER_IP2, "-p", str(port),
                                     "-o", str(port + 1)], "stund",
                          ready=lambda ls: sum(x.startswith("Opened port") for x in ls) >= 4)

    @staticmethod
    def stop_proc(p: _Proc, timeout: float = 3.0) -> int | None:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
            try:
                p.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait(timeout)
        p.reader.join(2)
        return p.proc.returncode

    # -- teardown ------------------------------------------------------------------------------

    def down(self) -> None:
        with self._lock:
            if self._down:
                return
            self._down = True
            procs = list(self.procs)
        for p in procs:
            try:
                self.stop_proc(p)
            except Exception:  # keep tearing down
                pass
        # Also any namespace of this lab's prefix: a build racing with a teardown from a signal.
        # Exact names only: another kind's prefix may extend this one ("double-nat" and
        # "double-nat-apdm"), and its namespaces and processes are not ours.
        own = re.compile(rf"{re.escape(self.prefix)}-(pub|cli|r\d+)")
        mine = [ns for ns in list_netns() if own.fullmatch(ns)]
        for ns in [*reversed(self._created), *mine]:
            # Anything still inside was started by this lab (e.g. a daemon that forked).
            for pid in _ns_pids(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _delete_ns(ns)
        self._created.clear()

    @classmethod
    def down_all(cls) -> None:
        for lab in list(cls._all):
            lab.down()

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()


def install_signal_teardown() -> None:
    """SIGTERM/SIGHUP/SIGINT (e.g. a ctest timeout): every lab is torn down at once (threads still
    using one then fail fast), then SystemExit so finally blocks and atexit run."""
    def handler(signum, _frame):
        Lab.down_all()
        raise SystemExit(128 + signum)
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, handler)


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "kinds":
        for k in KINDS.values():
            print(f"{k.name:16} {k.description}")
        return 0
    if len(argv) >= 1 and argv[0] == "cleanup":
        for ns in remove_stale():
            print("removed", ns)
        return 0
    if len(argv) == 2 and argv[0] == "up":
        reason = can_run()
        if reason:
            print("cannot build the lab:", reason)
            return 1
        install_signal_teardown()
        remove_stale()
        with Lab(argv[1]) as lab:
            for ns in lab.namespaces:
                print(ns)
            print(f"client {lab.client_ip}; servers {SERVER_IP1}:{STUN_PORT1} {SERVER_IP2}:{STUN_PORT2}")
            derpd = os.environ.get("DERPD_BIN")
            if derpd:
                lab.start_derpd(derpd)
                print("derpd running in", lab.pub)
            try:
                input("Enter tears the lab down> ")
            except EOFError:
                time.sleep(float(os.environ.get("NATLAB_HOLD", "0")))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
