package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/flannel-go/flannel/e2e/lab"
)

// spoofPort is the inner UDP port of the crafted packets (the pods run no service; a
// capture in each pod sees whatever arrives).
const spoofPort = 7777

// innerUDP builds an inner IPv4/UDP packet (valid header checksum, UDP checksum 0 = none)
// carrying payload.
func innerUDP(src, dst netip.Addr, payload string) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	p[8], p[9] = 64, 17
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	binary.BigEndian.PutUint16(p[10:12], csum(p[:20], 0))
	binary.BigEndian.PutUint16(p[20:22], spoofPort)
	binary.BigEndian.PutUint16(p[22:24], spoofPort)
	binary.BigEndian.PutUint16(p[24:26], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

// sendOuter sends inner to dst:8285 in a UDP datagram whose outer IPv4 source is src,
// whatever the sender's own address (IP_HDRINCL).
func sendOuter(rc *ipv4.RawConn, src, dst netip.Addr, inner []byte) error {
	udp := make([]byte, 8+len(inner))
	binary.BigEndian.PutUint16(udp[0:2], 8285)
	binary.BigEndian.PutUint16(udp[2:4], 8285)
	binary.BigEndian.PutUint16(udp[4:6], uint16(len(udp)))
	copy(udp[8:], inner)
	h := &ipv4.Header{Version: 4, Len: ipv4.HeaderLen, TotalLen: ipv4.HeaderLen + len(udp), TTL: 64, Protocol: 17,
		Src: net.IP(src.AsSlice()), Dst: net.IP(dst.AsSlice())}
	return rc.WriteTo(h, udp, nil)
}

func dropped(reason string) string {
	return fmt.Sprintf(`flannel_udp_dropped_packets_total{reason=%q}`, reason)
}

// A host on the underlay that is no node sends crafted datagrams to a
// node's udp port: from its own address, and with the outer source spoofed to a real
// node's public IP but an inner source outside that node's subnet, or an inner
// destination outside the target's subnet (a pod on a third node). No pod receives any
// of them (tcpdump in every pod) and node 1 counts each class in /metrics. A datagram
// spoofed consistently (node 2's public IP, node 2's subnet, node 1's pod) does arrive:
// the capture works, and that limit of the filter is the one documented. Pod-to-pod
// pings over udp work before and after.
func TestUDPDropsDatagramsFromNonPeers(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump not installed")
	}
	l := newLab(t, "udpspoof", 3)
	outNS, err := l.AddOutsideHost()
	if err != nil {
		t.Fatal(err)
	}
	startAll(t, l, udpConfig, fmt.Sprintf("--healthz-port=%d", healthzPort))
	pods := addPods(t, l)
	pingMesh(t, l, pods)
	for _, r := range []string{"unknown_peer", "source_not_in_peer_subnet", "destination_not_in_own_subnet"} {
		waitMetric(t, l, 1, dropped(r), "exposed", func(float64) bool { return true })
	}
	before, err := scrape(l, 1)
	if err != nil {
		t.Fatal(err)
	}

	pcaps := make([]string, len(pods))
	captures := make([]*exec.Cmd, len(pods))
	for i, p := range pods {
		pcaps[i] = filepath.Join(t.TempDir(), fmt.Sprintf("pod%d.pcap", p.Node))
		captures[i] = background(t, p.NS, "listening on",
			"tcpdump", "-i", "eth0", "-n", "-U", "-s", "0", "-w", pcaps[i], "udp", "port", fmt.Sprint(spoofPort))
	}

	pc, err := lab.ListenPacket(outNS, "ip4:udp", "0.0.0.0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rc, err := ipv4.NewRawConn(pc.(*net.IPConn))
	if err != nil {
		t.Fatal(err)
	}
	target, node2 := l.NodeIP(1), l.NodeIP(2)
	unleased := netip.MustParseAddr("10.5.250.9")
	if envSubnet(t, l, 2).Contains(unleased) || envSubnet(t, l, 3).Contains(unleased) {
		unleased = netip.MustParseAddr("10.5.251.9")
	}
	cases := []struct {
		name, reason string
		outer        netip.Addr
		inner        []byte
	}{
		{"outside-own-address", "unknown_peer", lab.OutsideIP, innerUDP(pods[1].IP, pods[0].IP, "SPOOF-A")},
		{"node2-address-node3-source", "source_not_in_peer_subnet", node2, innerUDP(pods[2].IP, pods[0].IP, "SPOOF-B")},
		{"node2-address-unleased-source", "source_not_in_peer_subnet", node2, innerUDP(unleased, pods[0].IP, "SPOOF-C")},
		{"node2-address-for-node3", "destination_not_in_own_subnet", node2, innerUDP(pods[1].IP, pods[2].IP, "SPOOF-D")},
	}
	const copies = 5
	for _, c := range cases {
		for range copies {
			if err := sendOuter(rc, c.outer, target, c.inner); err != nil {
				t.Fatalf("%s: send: %v", c.name, err)
			}
		}
	}
	// The control, sent last: a datagram no receiver can tell from node 2's own.
	control := innerUDP(pods[1].IP, pods[0].IP, "CONTROL")
	for range copies {
		if err := sendOuter(rc, node2, target, control); err != nil {
			t.Fatalf("control: send: %v", err)
		}
	}

	want := map[string]int{}
	for _, c := range cases {
		want[c.reason] += copies
	}
	for reason, n := range want {
		base := before[dropped(reason)]
		waitMetric(t, l, 1, dropped(reason), fmt.Sprintf(">= %v + %d", base, n), func(v float64) bool { return v >= base+float64(n) })
	}
	// Give any wrongly accepted packet time to cross the node (and node 3) too.
	waitFor(t, convergeTimeout, "the control packet in pod 1's capture", func() (bool, string) {
		return bytes.Contains(readPcap(t, pcaps[0]), []byte("CONTROL")), "not seen yet"
	})
	time.Sleep(2 * time.Second)
	for i, c := range captures {
		_ = c.Process.Signal(syscall.SIGINT)
		waitFor(t, 20*time.Second, "tcpdump to finish", func() (bool, string) {
			return c.ProcessState != nil || c.Process.Signal(syscall.Signal(0)) != nil, "running"
		})
		got := readPcap(t, pcaps[i])
		for _, cs := range cases {
			if marker := cs.inner[28:]; bytes.Contains(got, marker) {
				t.Errorf("pod on node %d received %s (%s)", pods[i].Node, marker, cs.name)
			}
		}
	}
	after, err := scrape(l, 1)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for k, v := range after {
		if strings.HasPrefix(k, "flannel_udp_dropped_packets_total") {
			lines = append(lines, fmt.Sprintf("%s %v (was %v)", k, v, before[k]))
		}
	}
	t.Logf("node 1 drop counters:\n%s", strings.Join(lines, "\n"))
	if !strings.Contains(lab.TailFile(l.LogPath(1), 400), "no peer's public IP") {
		t.Error("node 1 did not log the datagrams from a stranger")
	}
	pingMesh(t, l, pods)
}

// readPcap returns the concatenated frames of a capture file (empty while tcpdump has
// written nothing).
func readPcap(t *testing.T, path string) []byte {
	t.Helper()
	frames, err := pcapRecords(path)
	if err != nil {
		return nil
	}
	return bytes.Join(frames, nil)
}
