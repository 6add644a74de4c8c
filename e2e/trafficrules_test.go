package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/e2e/benchkit"
	"github.com/flannel-go/flannel/e2e/lab"
)

// Traffic rules end to end: masquerade towards an outside host, no masquerade between
// pods, healing of deleted rules, and switching between iptables and nftables.

func trafficConfig(nft bool) string {
	return fmt.Sprintf(`{"Network":"10.5.0.0/16","EnableNFTables":%v,"Backend":{"Type":"vxlan"}}`, nft)
}

func modeName(nft bool) string {
	if nft {
		return "nftables"
	}
	return "iptables"
}

// udpSource sends one datagram from namespace fromNS to the listener at (toNS, to) and
// returns the source address the listener saw. It retries for a while (the path may still
// be converging) and fails the test when nothing arrives.
func udpSource(t *testing.T, fromNS, toNS string, to netip.AddrPort) netip.Addr {
	t.Helper()
	pc, err := lab.ListenPacket(toNS, "udp4", to.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	deadline := time.Now().Add(30 * time.Second)
	buf := make([]byte, 64)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := lab.DialContext(fromNS)(ctx, "udp4", to.String())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("hello"))
		_ = c.Close()
		_ = pc.SetReadDeadline(time.Now().Add(time.Second))
		_, from, err := pc.ReadFrom(buf)
		if err == nil {
			return from.(*net.UDPAddr).AddrPort().Addr().Unmap()
		}
	}
	t.Fatalf("no datagram from %s reached %s in %s", fromNS, to, toNS)
	return netip.Addr{}
}

// ruleDump returns node i's flannel rules of the given mode: iptables lines naming our
// chains or comments, or the nft tables' listing ("" when there is none).
func ruleDump(t *testing.T, l *lab.Lab, i int, nft bool) string {
	t.Helper()
	ns := l.NodeNS(i)
	if nft {
		var b strings.Builder
		for _, tbl := range []string{"flannel-ipv4", "flannel-ipv6"} {
			fam := map[string]string{"flannel-ipv4": "ip", "flannel-ipv6": "ip6"}[tbl]
			out, err := l.Exec(ns, "nft", "-a", "list", "table", fam, tbl)
			if err == nil {
				b.WriteString(out)
			}
		}
		return b.String()
	}
	var lines []string
	for _, cmd := range [][]string{
		{"iptables", "-t", "nat", "-S"}, {"iptables", "-t", "filter", "-S"},
		{"ip6tables", "-t", "nat", "-S"}, {"ip6tables", "-t", "filter", "-S"},
	} {
		out, err := l.Exec(ns, cmd...)
		if err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
		for _, ln := range strings.Split(out, "\n") {
			if strings.Contains(ln, "FLANNEL") || strings.Contains(ln, "flanneld") {
				lines = append(lines, ln)
			}
		}
	}
	return strings.Join(lines, "\n")
}

func expectedIPTables(subnet netip.Prefix) string {
	p := subnet.String()
	return strings.Join([]string{
		`-N FLANNEL-POSTRTG`,
		`-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		`-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s ` + p + ` -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d ` + p + ` -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d ` + p + ` -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		`-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		`-N FLANNEL-FWD`,
		`-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`,
		`-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
		`-A FLANNEL-FWD -d 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
	}, "\n")
}

var handleRE = regexp.MustCompile(` # handle \d+`)

func TestTrafficRulesMasqueradeAndHealing(t *testing.T) {
	for _, nft := range []bool{false, true} {
		t.Run(modeName(nft), func(t *testing.T) {
			l := newLab(t, "tr"+modeName(nft)[:3], 2)
			outNS, err := l.AddOutsideHost()
			if err != nil {
				t.Fatal(err)
			}
			startAll(t, l, trafficConfig(nft), "--ip-masq")
			pods := addPods(t, l)
			n1 := info(t, l, 1, "flannel.1")

			// The exact rule text (iptables) or the rule set (nft) on node 1.
			dump := ruleDump(t, l, 1, nft)
			if !nft {
				if want := expectedIPTables(n1.subnet); dump != want {
					t.Fatalf("node 1 iptables rules:\n%s\nwant:\n%s", dump, want)
				}
			} else if strings.Count(dump, "flanneld masq") != 6 || strings.Count(dump, "flanneld forward") != 2 ||
				!strings.Contains(dump, "ip saddr != 10.5.0.0/16 ip daddr "+n1.subnet.String()+" return") {
				t.Fatalf("node 1 nft rules:\n%s", dump)
			}
			if other := ruleDump(t, l, 1, !nft); other != "" {
				t.Fatalf("node 1 has rules of the other mode:\n%s", other)
			}

			// Pod to pod across nodes: works, and keeps the pod source address.
			pingMesh(t, l, pods)
			dst := netip.AddrPortFrom(pods[1].IP, 5556)
			if src := udpSource(t, pods[0].NS, pods[1].NS, dst); src != pods[0].IP {
				t.Errorf("pod-to-pod datagram arrived from %s, want the pod address %s", src, pods[0].IP)
			}
			// Pod to outside: works (the outside host has no route back to pods) and the
			// outside host sees the node's underlay address.
			if err := l.Ping(pods[0].NS, lab.OutsideIP); err != nil {
				t.Fatalf("pod on node 1 -> outside host %s: %v", lab.OutsideIP, err)
			}
			t.Logf("ping pod n1 %s -> outside %s: ok", pods[0].IP, lab.OutsideIP)
			if src := udpSource(t, pods[0].NS, outNS, netip.AddrPortFrom(lab.OutsideIP, 5555)); src != l.NodeIP(1) {
				t.Errorf("outside host saw source %s, want node 1's underlay address %s", src, l.NodeIP(1))
			}

			// Rules deleted by hand come back; untouched rules keep their identity.
			before := ruleDump(t, l, 1, nft)
			var del []string
			if nft {
				var h string
				for _, ln := range strings.Split(before, "\n") {
					if strings.Contains(ln, "masquerade") && strings.Contains(ln, "224.0.0.0/4") {
						h = strings.TrimPrefix(handleRE.FindString(ln), " # handle ")
					}
				}
				del = []string{"nft", "delete", "rule", "ip", "flannel-ipv4", "postrtg", "handle", h}
			} else {
				del = []string{"iptables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "5"}
			}
			if _, err := l.Exec(l.NodeNS(1), del...); err != nil {
				t.Fatalf("%v: %v", del, err)
			}
			start := time.Now()
			var after string
			waitFor(t, 20*time.Second, "deleted rule restored", func() (bool, string) {
				after = ruleDump(t, l, 1, nft)
				return handleRE.ReplaceAllString(after, "") == handleRE.ReplaceAllString(before, ""), after
			})
			t.Logf("%s: deleted rule restored after %v", modeName(nft), time.Since(start).Round(10*time.Millisecond))
			if nft {
				for _, ln := range strings.Split(before, "\n") {
					if strings.Contains(ln, "handle") && !strings.Contains(ln, "224.0.0.0/4") && !strings.Contains(after, ln) {
						t.Errorf("untouched rule changed: %q", ln)
					}
				}
			}
			// A flushed chain comes back too.
			flush := []string{"iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG"}
			if nft {
				flush = []string{"nft", "flush", "chain", "ip", "flannel-ipv4", "postrtg"}
			}
			if _, err := l.Exec(l.NodeNS(1), flush...); err != nil {
				t.Fatalf("%v: %v", flush, err)
			}
			waitFor(t, 20*time.Second, "flushed chain restored", func() (bool, string) {
				after = ruleDump(t, l, 1, nft)
				return strings.Count(after, "flanneld masq") == strings.Count(before, "flanneld masq"), after
			})
			if err := l.Ping(pods[0].NS, lab.OutsideIP); err != nil {
				t.Fatalf("outside host unreachable after healing: %v", err)
			}
		})
	}
}

// TestTrafficRulesModeSwitch restarts a node with EnableNFTables flipped, twice: each time
// nothing of the other mode remains.
func TestTrafficRulesModeSwitch(t *testing.T) {
	l := newLab(t, "trswitch", 1)
	startAll(t, l, trafficConfig(false), "--ip-masq")
	if dump := ruleDump(t, l, 1, false); !strings.Contains(dump, "FLANNEL-POSTRTG") {
		t.Fatalf("no iptables rules:\n%s", dump)
	}
	for _, nft := range []bool{true, false} {
		if err := l.StopFlanneld(1); err != nil {
			t.Fatal(err)
		}
		if err := l.PutConfig(context.Background(), trafficConfig(nft)); err != nil {
			t.Fatal(err)
		}
		if err := l.StartFlanneld(1, "--ip-masq"); err != nil {
			t.Fatal(err)
		}
		if _, err := l.WaitSubnetEnv(1, startTimeout); err != nil {
			t.Fatal(err)
		}
		if dump := ruleDump(t, l, 1, nft); strings.Count(dump, "flanneld masq") < 6 {
			t.Fatalf("%s mode: rules missing:\n%s", modeName(nft), dump)
		}
		if other := ruleDump(t, l, 1, !nft); other != "" {
			t.Fatalf("switched to %s: rules of the other mode left:\n%s", modeName(nft), other)
		}
		if out, _ := l.Exec(l.NodeNS(1), "nft", "list", "tables"); !nft && strings.Contains(out, "flannel") {
			t.Fatalf("switched to iptables: nft tables left:\n%s", out)
		}
		t.Logf("switched to %s: no rule of the other mode left", modeName(nft))
	}
}

// TestNoMasqueradeWithoutIPMasq is the control: without --ip-masq the outside host sees
// the pod's own address (so the masquerade assertion above can fail), and no masquerade
// chain exists while the forward rules (on by default) do.
func TestNoMasqueradeWithoutIPMasq(t *testing.T) {
	l := newLab(t, "trnomasq", 1)
	outNS, err := l.AddOutsideHost()
	if err != nil {
		t.Fatal(err)
	}
	startAll(t, l, trafficConfig(false))
	pods := addPods(t, l)
	if src := udpSource(t, pods[0].NS, outNS, netip.AddrPortFrom(lab.OutsideIP, 5555)); src != pods[0].IP {
		t.Errorf("without --ip-masq the outside host saw %s, want the pod address %s", src, pods[0].IP)
	}
	dump := ruleDump(t, l, 1, false)
	if strings.Contains(dump, "FLANNEL-POSTRTG") || !strings.Contains(dump, "-A FLANNEL-FWD -s 10.5.0.0/16") {
		t.Errorf("rules without --ip-masq:\n%s", dump)
	}
}

// cpuTicks is a process's CPU time (its own and its waited-for children's: the
// iptables/nft commands it runs) in clock ticks.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := benchkit.CPUTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTrafficRulesIdleCost logs what keeping the rules costs at rest, in both modes. The
// bound asserted is deliberately loose (it only catches a busy loop); the figure is logged.
func TestTrafficRulesIdleCost(t *testing.T) {
	for _, nft := range []bool{false, true} {
		t.Run(modeName(nft), func(t *testing.T) {
			l := newLab(t, "trcost"+modeName(nft)[:3], 1)
			startAll(t, l, trafficConfig(nft), "--ip-masq")
			pid := l.FlanneldPID(1)
			time.Sleep(2 * time.Second)
			const window = 20 * time.Second
			c0 := cpuTicks(t, pid)
			time.Sleep(window)
			c1 := cpuTicks(t, pid)
			pct := float64(c1-c0) / benchkit.TicksPerSecond / window.Seconds() * 100
			t.Logf("%s: flanneld (with its iptables/nft children) used %.2f%% of a core at rest over %v", modeName(nft), pct, window)
			if pct > 10 {
				t.Errorf("%.1f%% of a core at rest: busy loop?", pct)
			}
		})
	}
}
