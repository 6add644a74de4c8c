package e2e

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// background starts a command in namespace ns and kills it (by PID) when the test ends.
// When ready is not empty, it waits until the command prints a line containing it
// (on standard error or output).
func background(t *testing.T, ns, ready string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); pw.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	readyCh := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		seen := false
		for sc.Scan() {
			if !seen && ready != "" && strings.Contains(sc.Text(), ready) {
				seen = true
				close(readyCh)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	if ready != "" {
		select {
		case <-readyCh:
		case <-done:
			t.Fatalf("%v ended before printing %q", args, ready)
		case <-time.After(20 * time.Second):
			t.Fatalf("%v did not print %q within 20 s", args, ready)
		}
	}
	return cmd
}

// pcapRecords reads a classic pcap file with Ethernet link type and returns the frames.
func pcapRecords(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 24 {
		return nil, errors.New("pcap: short file")
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(b[:4]) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return nil, fmt.Errorf("pcap: bad magic % x", b[:4])
	}
	if lt := bo.Uint32(b[20:24]); lt != 1 {
		return nil, fmt.Errorf("pcap: link type %d, want Ethernet", lt)
	}
	var out [][]byte
	for off := 24; off < len(b); {
		if off+16 > len(b) {
			return nil, errors.New("pcap: truncated record header")
		}
		incl, orig := int(bo.Uint32(b[off+8:])), int(bo.Uint32(b[off+12:]))
		off += 16
		if off+incl > len(b) {
			return nil, errors.New("pcap: truncated record")
		}
		if incl != orig {
			return nil, fmt.Errorf("pcap: frame of %d bytes captured as %d (snap length)", orig, incl)
		}
		out = append(out, b[off:off+incl])
		off += incl
	}
	return out, nil
}

func csum(b []byte, initial uint32) uint16 {
	sum := initial
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = (sum & 0xffff) + (sum >> 16)
	}
	return ^uint16(sum)
}

// checkInner verifies that p is exactly one IPv4 packet, no larger than mtu, with a
// valid header checksum and, for TCP, UDP and ICMP, a valid transport checksum.
func checkInner(p []byte, mtu int) error {
	if len(p) < 20 || p[0]>>4 != 4 {
		return errors.New("not IPv4")
	}
	ihl := int(p[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(p[2:4]))
	if ihl < 20 || total != len(p) {
		return fmt.Errorf("IPv4 total length %d but datagram payload %d bytes", total, len(p))
	}
	if total > mtu {
		return fmt.Errorf("inner packet of %d bytes exceeds the MTU %d", total, mtu)
	}
	if csum(p[:ihl], 0) != 0 {
		return errors.New("bad IPv4 header checksum")
	}
	if binary.BigEndian.Uint16(p[6:8])&0x3fff != 0 {
		return nil // fragment: no transport checksum to check
	}
	l4 := p[ihl:]
	var pseudo uint32
	pseudo += uint32(binary.BigEndian.Uint16(p[12:14])) + uint32(binary.BigEndian.Uint16(p[14:16]))
	pseudo += uint32(binary.BigEndian.Uint16(p[16:18])) + uint32(binary.BigEndian.Uint16(p[18:20]))
	pseudo += uint32(p[9]) + uint32(len(l4))
	switch p[9] {
	case 6:
		if csum(l4, pseudo) != 0 {
			return errors.New("bad TCP checksum")
		}
	case 17:
		if len(l4) >= 8 && binary.BigEndian.Uint16(l4[6:8]) != 0 && csum(l4, pseudo) != 0 {
			return errors.New("bad UDP checksum")
		}
	case 1:
		if csum(l4, 0) != 0 {
			return errors.New("bad ICMP checksum")
		}
	}
	return nil
}

// The wire format during a bulk TCP transfer: every UDP datagram on port 8285
// carries exactly one valid IPv4 packet no larger than flannel0's MTU — also when
// flanneld gets 64 KiB TCP segments from the TUN and sends with UDP GSO.
//
// tcpdump taps a veth before segmentation, so a GSO send shows up as one frame holding
// several datagrams' payloads back to back. The kernel (or a NIC) cuts such a payload
// every gso_size bytes, gso_size being the first datagram's size, and the test applies
// exactly that rule: each cut must be one whole valid inner packet.
func TestUDPWireFormatDuringBulkTCP(t *testing.T) {
	for _, tool := range []string{"tcpdump", "iperf3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	l := newLab(t, "udpwire", 2)
	startAll(t, l, udpConfig)
	pods := addPods(t, l)
	pingMesh(t, l, pods)

	pcap := filepath.Join(t.TempDir(), "eth0.pcap")
	capture := background(t, l.NodeNS(1), "listening on",
		"tcpdump", "-i", "eth0", "-n", "-s", "0", "-B", "65536", "-w", pcap, "udp", "port", "8285")
	background(t, pods[1].NS, "Server listening", "iperf3", "-s", "-1", "--forceflush")
	out, err := l.Exec(pods[0].NS, "iperf3", "-c", pods[1].IP.String(), "-t", "2", "-f", "m")
	if err != nil {
		t.Fatalf("iperf3: %v\n%s", err, out)
	}
	t.Logf("iperf3 pod to pod over udp:\n%s", lastLines(out, 4))
	_ = capture.Process.Signal(syscall.SIGINT)
	waitFor(t, 20*time.Second, "tcpdump to finish", func() (bool, string) {
		return capture.ProcessState != nil || capture.Process.Signal(syscall.Signal(0)) != nil, "running"
	})

	frames, err := pcapRecords(pcap)
	if err != nil {
		t.Fatal(err)
	}
	const mtu = 1472
	datagrams, superFrames, tcp := 0, 0, 0
	bad := 0
	for i, f := range frames {
		if len(f) < 14+20+8 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
			continue
		}
		ip := f[14:]
		ihl := int(ip[0]&0xf) * 4
		if ip[9] != 17 || len(ip) < ihl+8 {
			continue
		}
		udp := ip[ihl:]
		if binary.BigEndian.Uint16(udp[0:2]) != 8285 && binary.BigEndian.Uint16(udp[2:4]) != 8285 {
			continue
		}
		payload := udp[8:min(len(udp), int(binary.BigEndian.Uint16(ip[2:4]))-ihl)]
		if len(payload) < 20 {
			bad++
			t.Errorf("frame %d: UDP payload of %d bytes", i, len(payload))
			continue
		}
		seg := int(binary.BigEndian.Uint16(payload[2:4])) // the first packet's length = gso_size
		if seg < 20 || seg > len(payload) {
			seg = len(payload)
		}
		if seg < len(payload) {
			superFrames++
		}
		for off := 0; off < len(payload); off += seg {
			p := payload[off:min(off+seg, len(payload))]
			datagrams++
			if p[9] == 6 {
				tcp++
			}
			if err := checkInner(p, mtu); err != nil {
				bad++
				if bad <= 10 {
					t.Errorf("frame %d, datagram at offset %d (%d bytes): %v", i, off, len(p), err)
				}
			}
		}
	}
	t.Logf("captured %d frames: %d datagrams (%d TCP), %d frames were GSO sends cut at the first datagram's size; %d bad",
		len(frames), datagrams, tcp, superFrames, bad)
	if tcp < 1000 {
		t.Errorf("only %d TCP datagrams captured; the transfer did not go over udp", tcp)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
