#!/usr/bin/env python3
"""The NAT lab test: every NAT kind of lab.py, built in its own namespaces, all kinds at once.

In each kind, with derpd (RFC 5780: 198.18.0.1:3478 / 198.18.0.2:3479) and coturn's turnserver
(198.18.0.1:3480 / 198.18.0.2:3481) in the "public" namespace:
  - coturn's turnutils_natdiscovery against coturn's server must give the lab's ground truth: the
    check that the lab itself is right;
  - turnutils_natdiscovery against derpd must agree too (its mapping test III is judged only when
    it really went to derpd's alternate IP and port, see README.md);
  - natprobe --json (when its target is built) must report what an RFC 5780 client can prove about
    the truth: its mapping and filtering, UDP, the public address, and port mapping (miniupnpd
    runs on the eim-apdf router and nowhere else);
  - stunner, when it can be built, runs too and its verdict is recorded beside ours.
A report table (kind, truth, natprobe, coturn, stunner, times) is written to NATLAB_OUT_DIR and
printed. Needs root; otherwise prints "SKIPPED natlab: <reason>" and exits 77.

Environment: DERPD_BIN (required), NATPROBE_BIN (empty: no natprobe target), NATLAB_OUT_DIR
(report and stunner build), STUNNER_BIN (a stunner binary to use), NATLAB_KINDS (comma list,
default all).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lab  # noqa: E402

DERPD = os.environ.get("DERPD_BIN", "")
NATPROBE = os.environ.get("NATPROBE_BIN", "")
OUT_DIR = os.environ.get("NATLAB_OUT_DIR") or os.path.join(HERE, "out")
NETTOOLS = os.path.join(HERE, "nettools.py")
COTURN_PORT = 3480  # coturn's primary port; its alternate is 3481
STUND_PORT = 3482   # Vovida stund's primary port; its alternate is 3483
STUNNER_PKG = "github.com/jaxxstorm/stunner@latest"

SHORT_MAPPING = {lab.NONE: "none", lab.EI: "EIM", lab.AD: "ADM", lab.APD: "APDM", lab.UNKNOWN: "?"}
SHORT_FILTERING = {lab.NONE: "none", lab.EI: "EIF", lab.AD: "ADF", lab.APD: "APDF", lab.UNKNOWN: "?"}
COTURN_SHORT = {lab.C_NONAT: "none", lab.C_EIM: "EIM", lab.C_ADM: "ADM", lab.C_APDM: "APDM",
                lab.C_EIF: "EIF", lab.C_ADF: "ADF", lab.C_APDF: "APDF", None: "-"}


# ---------------------------------------------------------------------------------------------
# Reading the tools' output

@dataclasses.dataclass
class NatDiscovery:
    mapping: str | None          # coturn's verdict phrase, lab.C_NONAT for "No NAT!"
    filtering: str | None
    mapping_origins: list[str]   # RESPONSE-ORIGIN of each reply in the mapping section
    timeouts: int
    raw: str


def parse_natdiscovery(text: str) -> NatDiscovery:
    """turnutils_natdiscovery -m -f output. The mapping section prints "No NAT! ..." after test I
    when the mapped address is the local one (it then goes on with test II and prints a second
    line); otherwise its one verdict line. The filtering section prints one verdict line."""
    mpart, _, fpart = text.partition("-= Filtering Behavior Discovery =-")
    mapping = None
    if "No NAT!" in mpart:
        mapping = lab.C_NONAT
    else:
        for line in mpart.splitlines():
            if line.strip() in (lab.C_EIM, lab.C_ADM, lab.C_APDM):
                mapping = line.strip()
    filtering = None
    for line in fpart.splitlines():
        if line.strip() in (lab.C_EIF, lab.C_ADF, lab.C_APDF):
            filtering = line.strip()
    origins = []
    for block in re.split(r"RFC 5780 response \d+", mpart)[1:]:
        m = re.search(r"Response origin: : (\S+)", block)
        origins.append(m.group(1) if m else "")
    return NatDiscovery(mapping, filtering, origins, text.count("STUN receive timeout"), text)


@dataclasses.dataclass
class Stunner:
    nat_type: str | None
    difficulty: str | None
    raw: str


def parse_stunner(text: str) -> Stunner:
    """stunner prints boxes: "│  NAT Type: Port-Restricted Cone NAT   │"."""
    def field(name):
        m = re.search(rf"{name}:\s*(.*?)\s*│", text)
        if not m:
            return None
        return re.sub(r"[^\x20-\x7e]", "", m.group(1)).strip() or None
    return Stunner(field("NAT Type"), field("Difficulty"), text)


# ---------------------------------------------------------------------------------------------
# stunner: built into the build tree when it can be

def build_stunner(out_dir: str) -> tuple[str | None, str]:
    """Returns (binary or None, how it was obtained / why not)."""
    given = os.environ.get("STUNNER_BIN")
    if given:
        if os.access(given, os.X_OK):
            return given, f"STUNNER_BIN={given}"
        return None, f"STUNNER_BIN={given} is not executable"
    gobin = os.path.join(out_dir, "tools", "bin")
    binary = os.path.join(gobin, "stunner")
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if go is None:
        if os.access(binary, os.X_OK):
            return binary, "built by an earlier run (Go not installed now)"
        return None, "Go is not installed"
    os.makedirs(gobin, exist_ok=True)
    env = dict(os.environ, GOBIN=gobin, GOTOOLCHAIN="local", GOFLAGS="-buildvcs=false")
    try:
        p = subprocess.run([go, "install", STUNNER_PKG], capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired:
        p = None
    if p is not None and p.returncode == 0 and os.access(binary, os.X_OK):
        return binary, f"go install {STUNNER_PKG}"
    why = "timed out after 300 s" if p is None else (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])
    if isinstance(why, list):
        why = " / ".join(x.strip() for x in why[-2:])
    if os.access(binary, os.X_OK):
        return binary, f"built by an earlier run; go install failed now: {why}"
    return None, f"go install {STUNNER_PKG} failed: {why}"


# ---------------------------------------------------------------------------------------------
# One kind, start to finish

@dataclasses.dataclass
class KindResult:
    kind: lab.Kind
    error: str = ""                       # the lab could not be built or run
    coturn_lab: NatDiscovery | None = None     # natdiscovery -> coturn's turnserver
    coturn_derpd: NatDiscovery | None = None   # natdiscovery -> derpd
    natprobe: dict | None = None
    natprobe_exit: int | None = None
    natprobe_error: str = ""
    natprobe_seconds: float | None = None
    # stunner against derpd, and against Vovida's stund (which ignores FINGERPRINT, see README.md)
    stunner: Stunner | None = None
    stunner_error: str = ""
    stunner_seconds: float | None = None
    stunner_stund: Stunner | None = None
    stunner_stund_error: str = ""
    stunner_stund_seconds: float | None = None
    client_ip: str = ""
    public_ip: str = ""                   # the outermost router's WAN address
    portmap_check: dict | None = None     # miniupnpd really forwarding (nettools), portmap kind only
    derpd_alive: bool = False
    derpd_log: str = ""


def _timed(fn):
    t = time.monotonic()
    r = fn()
    return r, time.monotonic() - t


def run_kind(kind: lab.Kind, stunner: str | None, workdir: str) -> KindResult:
    L = lab.Lab(kind)
    res = KindResult(kind, client_ip=L.client_ip, public_ip=L.public_ip)
    try:
        L.up()
        derpd = L.start_derpd(DERPD)
        L.start_coturn(COTURN_PORT)
        if stunner:
            L.start_stund(STUND_PORT)
        if kind.portmap:
            L.start_miniupnpd(workdir)

        # natprobe first and alone in this lab, so its time is its own.
        if NATPROBE:
            try:
                p, secs = _timed(lambda: L.exec(L.cli, [NATPROBE, "--server", f"{lab.SERVER_IP1}:{lab.STUN_PORT1}",
                                                        "--json"], timeout=60))
                res.natprobe_seconds = secs
                res.natprobe_exit = p.returncode
                try:
                    res.natprobe = json.loads(p.stdout)
                except ValueError as e:
                    res.natprobe_error = (f"exit {p.returncode}, not JSON ({e}): {p.stdout[:300]!r} "
                                          f"{p.stderr.strip()[-300:]}")
            except subprocess.TimeoutExpired:
                res.natprobe_error = "timed out after 60 s"

        if kind.portmap:
            res.portmap_check = check_portmap(L)

        def natdiscovery(port):
            p = L.exec(L.cli, ["timeout", "60", "turnutils_natdiscovery", "-m", "-f", "-p", str(port),
                               "-L", L.client_ip, lab.SERVER_IP1], timeout=70)
            return parse_natdiscovery(p.stdout + p.stderr)

        def run_stunner(port):
            # Two servers (the lab's two public IPs, one port) so it never looks for Tailscale's
            # DERP map on the internet.
            try:
                p, secs = _timed(lambda: L.exec(L.cli, [stunner, "--stun-server", lab.SERVER_IP1, "--stun-server",
                                                        lab.SERVER_IP2, "--stun-port", str(port)], timeout=120))
            except subprocess.TimeoutExpired:
                return None, "timed out after 120 s", None
            st = parse_stunner(p.stdout)
            err = "" if p.returncode == 0 and st.nat_type else f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"
            return st, err, secs

        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            f_lab = ex.submit(natdiscovery, COTURN_PORT)
            f_derpd = ex.submit(natdiscovery, lab.STUN_PORT1)
            if stunner:
                f_st = ex.submit(run_stunner, lab.STUN_PORT1)
                f_st2 = ex.submit(run_stunner, STUND_PORT)
                res.stunner, res.stunner_error, res.stunner_seconds = f_st.result()
                res.stunner_stund, res.stunner_stund_error, res.stunner_stund_seconds = f_st2.result()
            res.coturn_lab = f_lab.result()
            res.coturn_derpd = f_derpd.result()
        res.derpd_alive = derpd.proc.poll() is None
        res.derpd_log = "\n".join(derpd.lines[-20:])
    except Exception as e:  # recorded; the tests report it per kind
        res.error = f"{type(e).__name__}: {e}"
    finally:
        L.down()
    return res


def check_portmap(L: lab.Lab) -> dict:
    """Proves miniupnpd really maps ports: a NAT-PMP mapping for a client port, then a datagram
    from the internet to the public port arrives at the client."""
    port = 41000
    recv = L.spawn(L.cli, [sys.executable, NETTOOLS, "recv", "0.0.0.0", str(port), "5"], "recv", ready='"ready"')
    p = L.exec(L.cli, [sys.executable, NETTOOLS, "natpmp", L.gateway_ip, str(port), "60"], timeout=15)
    out = {"natpmp": json.loads(p.stdout) if p.stdout.strip() else {"error": p.stderr}}
    ext = out["natpmp"].get("map", {}).get("external")
    if ext:
        L.exec(L.pub, [sys.executable, NETTOOLS, "send", L.public_ip, str(ext), "through-the-mapping"], timeout=10)
    recv.proc.wait(10)
    recv.reader.join(2)
    got = [json.loads(x) for x in recv.lines if x.startswith("{") and "ready" not in x]
    out["received"] = got[0] if got else {"error": "no output"}
    q = L.exec(L.cli, [sys.executable, NETTOOLS, "pcp", L.gateway_ip], timeout=10)
    out["pcp"] = json.loads(q.stdout) if q.stdout.strip() else {"error": q.stderr}
    return out


# ---------------------------------------------------------------------------------------------
# Report

def verdict_text(mapping: str | None, filtering: str | None) -> str:
    return f"{SHORT_MAPPING.get(mapping, mapping)}+{SHORT_FILTERING.get(filtering, filtering)}"


def report_rows(results: list[KindResult], stunner_note: str) -> tuple[str, list[dict]]:
    rows = []
    for r in results:
        k = r.kind
        truth = "UDP blocked" if not k.udp else verdict_text(k.mapping, k.filtering)
        if r.error:
            natprobe = "lab error"
        elif not NATPROBE:
            natprobe = "not built"
        elif r.natprobe is None:
            natprobe = "failed"
        elif r.natprobe.get("udp") is False:
            natprobe = "UDP blocked"
        else:
            natprobe = verdict_text(r.natprobe.get("mapping"), r.natprobe.get("filtering"))

        def cot(nd):
            if nd is None:
                return "-"
            if nd.mapping is None and nd.filtering is None:
                return "no reply" if nd.timeouts else "?"
            return f"{COTURN_SHORT.get(nd.mapping, nd.mapping)}+{COTURN_SHORT.get(nd.filtering, nd.filtering)}"

        def stun(st, err):
            if st is not None and st.nat_type:
                return f"{st.nat_type} ({st.difficulty})"
            return err or "not run"
        rows.append({
            "kind": k.name, "truth": truth,
            "expected_natprobe": "UDP blocked" if not k.udp else verdict_text(k.probe_mapping, k.probe_filtering),
            "natprobe": natprobe, "coturn": cot(r.coturn_lab), "coturn_vs_derpd": cot(r.coturn_derpd),
            "stunner": stun(r.stunner, r.stunner_error),
            "stunner_vs_stund": stun(r.stunner_stund, r.stunner_stund_error),
            "natprobe_s": None if r.natprobe_seconds is None else round(r.natprobe_seconds, 2),
            "natprobe_duration_ms": (r.natprobe or {}).get("duration_ms"),
            "stunner_s": None if r.stunner_seconds is None else round(r.stunner_seconds, 1),
            "stunner_vs_stund_s": None if r.stunner_stund_seconds is None else round(r.stunner_stund_seconds, 1),
            "port_mapping": (r.natprobe or {}).get("port_mapping"),
            "error": r.error or r.natprobe_error or "",
        })
    head = ["kind", "truth", "natprobe", "coturn", "coturn_vs_derpd", "stunner", "stunner_vs_stund",
            "natprobe_s", "stunner_s", "stunner_vs_stund_s"]
    table = [head] + [[str(row[h]) if row[h] is not None else "-" for h in head] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    text = "\n".join([
        "# NAT lab report",
        "",
        "truth: the NAT as built (RFC 4787); natprobe: its --json mapping+filtering ('?' = unknown);",
        f"coturn: turnutils_natdiscovery against coturn's turnserver (the lab check); coturn_vs_derpd:",
        "the same client against derpd; stunner: its NAT Type (Difficulty) against derpd, and",
        "against Vovida's stund (which does not check FINGERPRINT). Times are wall seconds.",
        f"stunner: {stunner_note}",
        "",
        *lines,
        "",
    ])
    errors = [f"- {row['kind']}: {row['error']}" for row in rows if row["error"]]
    if errors:
        text += "\nErrors:\n" + "\n".join(errors) + "\n"
    return text, rows


# ---------------------------------------------------------------------------------------------

class NatLab(unittest.TestCase):
    results: dict[str, KindResult] = {}
    stunner_bin: str | None = None
    stunner_note = ""
    report = ""

    @classmethod
    def setUpClass(cls):
        if not DERPD or not os.access(DERPD, os.X_OK):
            raise RuntimeError(f"DERPD_BIN={DERPD!r} is not an executable derpd")
        if NATPROBE and not os.access(NATPROBE, os.X_OK):
            raise RuntimeError(f"NATPROBE_BIN={NATPROBE!r}: the natprobe target exists but is not built")
        for tool in ("turnserver", "turnutils_natdiscovery", "miniupnpd", "stund"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed (tools/setup installs it)")
        lab.remove_stale()
        os.makedirs(OUT_DIR, exist_ok=True)
        cls.stunner_bin, cls.stunner_note = build_stunner(OUT_DIR)
        names = [n for n in os.environ.get("NATLAB_KINDS", ",".join(lab.KINDS)).split(",") if n]
        kinds = [lab.KINDS[n] for n in names]
        cls.workdir = tempfile.mkdtemp(prefix="natlab-")
        for k in kinds:
            os.makedirs(os.path.join(cls.workdir, k.name))
        with concurrent.futures.ThreadPoolExecutor(len(kinds)) as ex:
            futs = {k.name: ex.submit(run_kind, k, cls.stunner_bin, os.path.join(cls.workdir, k.name))
                    for k in kinds}
            cls.results = {name: f.result() for name, f in futs.items()}
        cls.report, rows = report_rows(list(cls.results.values()), cls.stunner_note)
        with open(os.path.join(OUT_DIR, "natlab_report.md"), "w") as f:
            f.write(cls.report)
        with open(os.path.join(OUT_DIR, "natlab_report.json"), "w") as f:
            json.dump({"stunner": cls.stunner_note, "rows": rows,
                       "natprobe": {k: r.natprobe for k, r in cls.results.items()}}, f, indent=1)
        print("\n" + cls.report, flush=True)

    @classmethod
    def tearDownClass(cls):
        lab.Lab.down_all()
        shutil.rmtree(getattr(cls, "workdir", ""), ignore_errors=True)

    def for_each_kind(self, check):
        """Runs check(result) for every kind, each as its own subtest."""
        for name, r in self.results.items():
            with self.subTest(kind=name):
                check(r)

    def test_lab_ran(self):
        def check(r):
            self.assertEqual(r.error, "", "the lab could not be built or run")
            self.assertTrue(r.derpd_alive, "derpd exited during the run:\n" + r.derpd_log)
        self.for_each_kind(check)

    def test_coturn_confirms_the_lab(self):
        """coturn's client against coturn's server: the lab's NATs behave as built."""
        def check(r):
            nd, k = r.coturn_lab, r.kind
            self.assertIsNotNone(nd, r.error)
            if k.coturn_mapping is None:
                self.assertIsNone(nd.mapping, nd.raw)
                self.assertIsNone(nd.filtering, nd.raw)
                self.assertGreater(nd.timeouts, 0, nd.raw)
            else:
                self.assertEqual(nd.mapping, k.coturn_mapping, nd.raw)
                self.assertEqual(nd.filtering, k.coturn_filtering, nd.raw)
        self.for_each_kind(check)

    def test_coturn_against_derpd(self):
        """coturn's client against derpd. Its test III goes to the OTHER-ADDRESS of test II's reply
        (not of test I's); derpd answers there with Da:Cp as RFC 5780 section 7.4 says, so test
        III lands on the primary IP and an ADM NAT reads as APDM. The mapping verdict is compared
        only when test III really went to the alternate IP and port."""
        alt = f"{lab.SERVER_IP2}:{lab.STUN_PORT2}"

        def check(r):
            nd, k = r.coturn_derpd, r.kind
            self.assertIsNotNone(nd, r.error)
            if k.coturn_mapping is None:
                self.assertIsNone(nd.mapping, nd.raw)
                self.assertGreater(nd.timeouts, 0, nd.raw)
                return
            self.assertEqual(nd.filtering, k.coturn_filtering, nd.raw)
            test3_to_alternate = len(nd.mapping_origins) < 3 or nd.mapping_origins[2] == alt
            if test3_to_alternate:
                self.assertEqual(nd.mapping, k.coturn_mapping, nd.raw)
            else:
                self.assertEqual(nd.mapping_origins[2], f"{lab.SERVER_IP1}:{lab.STUN_PORT2}", nd.raw)
                self.assertIn(nd.mapping, (lab.C_ADM, lab.C_APDM), nd.raw)
        self.for_each_kind(check)

    def test_natprobe_matches_ground_truth(self):
        if not NATPROBE:
            self.skipTest("no natprobe target in this build")

        def check(r):
            k, j = r.kind, r.natprobe
            self.assertEqual(r.error, "")
            self.assertIsNotNone(j, r.natprobe_error)
            # Exit 0: a verdict; 1: no STUN server answered.
            self.assertEqual(r.natprobe_exit, 0 if k.udp else 1, j)
            self.assertEqual(j.get("schema"), 1, j)
            self.assertEqual(j.get("udp"), k.udp, j)
            self.assertEqual(j.get("mapping"), k.probe_mapping, j)
            self.assertEqual(j.get("filtering"), k.probe_filtering, j)
            if k.probe_mapping in (lab.AD, lab.APD):
                self.assertTrue(j.get("mapping_endpoint_dependent"), j)
            if k.udp:
                want_ip = r.client_ip if k.mapping == lab.NONE else r.public_ip
                pubs = j.get("public_addresses") or []
                self.assertTrue(pubs, j)
                for a in pubs:
                    self.assertEqual(a.rsplit(":", 1)[0], want_ip, j)
            else:
                self.assertEqual(j.get("public_addresses"), [], j)
        self.for_each_kind(check)

    def test_natprobe_port_mapping(self):
        """miniupnpd runs on the eim-apdf router only: NAT-PMP, PCP and UPnP IGD available there,
        unavailable behind every other router."""
        if not NATPROBE:
            self.skipTest("no natprobe target in this build")

        def check(r):
            self.assertIsNotNone(r.natprobe, r.natprobe_error)
            pm = r.natprobe.get("port_mapping") or {}
            # Other routers answer NAT-PMP/PCP with ICMP port unreachable and SSDP with nothing.
            want = "available" if r.kind.portmap else "unavailable"
            self.assertEqual(pm, {"nat_pmp": want, "pcp": want, "upnp_igd": want})
        self.for_each_kind(check)

    def test_miniupnpd_really_maps_ports(self):
        """The lab's port-mapping router works: NAT-PMP maps a port and a datagram sent from the
        internet to the public port reaches the client; PCP answers."""
        portmap = [r for r in self.results.values() if r.kind.portmap]
        if "eim-apdf" in self.results:
            self.assertEqual(len(portmap), 1)
        for r in portmap:
            with self.subTest(kind=r.kind.name):
                pc = r.portmap_check
                self.assertIsNotNone(pc, r.error)
                self.assertEqual(pc["natpmp"]["public"].get("result"), 0, pc)
                self.assertEqual(pc["natpmp"]["public"].get("ip"), r.public_ip, pc)
                self.assertEqual(pc["natpmp"]["map"].get("result"), 0, pc)
                self.assertEqual(pc["received"].get("data"), "through-the-mapping", pc)
                self.assertEqual(pc["pcp"].get("result"), 0, pc)

    def test_stunner_ran(self):
        """stunner's verdicts are recorded, not judged; when it was built it must have run."""
        if self.stunner_bin is None:
            self.skipTest(f"stunner not built: {self.stunner_note}")

        def check(r):
            self.assertEqual(r.stunner_error, "")
            self.assertEqual(r.stunner_stund_error, "")
            self.assertTrue(r.stunner.nat_type, r.stunner.raw[-500:])
            self.assertTrue(r.stunner_stund.nat_type, r.stunner_stund.raw[-500:])
        self.for_each_kind(check)


def main() -> int:
    reason = lab.can_run()
    if reason:
        print(f"SKIPPED natlab: {reason}", flush=True)
        return 77
    lab.install_signal_teardown()
    prog = unittest.main(argv=[sys.argv[0], *sys.argv[1:]], exit=False)
    lab.Lab.down_all()
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
