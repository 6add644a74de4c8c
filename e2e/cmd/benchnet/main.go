// Command benchnet measures flanneld's data plane in the netns lab: TCP throughput
// (iperf3) and ping round-trip time pod to pod across two nodes for the vxlan, host-gw
// and udp backends, and node to node over the underlay itself, reported as ratios from
// one run. Each backend gets its own two-node lab, all labs live side by side, and the
// measurements are interleaved round by round so that drift of the machine affects all
// alike; the median of the rounds is reported.
//
//	sudo make bench-net    # or: sudo go run ./e2e/cmd/benchnet -runs 3 -time 5
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flannel-go/flannel/e2e/lab"
)

// target is one thing measured: a backend's pods, or the underlay.
type target struct {
	name   string
	config string // "" for the underlay
	lab    *lab.Lab
	from   string     // client namespace
	to     netip.Addr // server address
	toNS   string     // server namespace
	server *exec.Cmd
	gbps   []float64
	rtt    []float64 // ms
}

func main() {
	runs := flag.Int("runs", 3, "measurement rounds (the median is reported)")
	secs := flag.Int("time", 5, "seconds per iperf3 run")
	bin := flag.String("flanneld", "", "flanneld binary (default: go build ./cmd/flanneld)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchnet: needs root (network namespaces); run: sudo make bench-net")
		os.Exit(1)
	}
	for _, tool := range []string{"iperf3", "ping", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "benchnet: %s not installed\n", tool)
			os.Exit(1)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *runs, *secs, *bin); err != nil {
		fmt.Fprintf(os.Stderr, "benchnet: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, runs, secs int, bin string) error {
	if runs < 1 || secs < 1 {
		return fmt.Errorf("bad -runs %d or -time %d", runs, secs)
	}
	work, err := os.MkdirTemp("", "fgbenchnet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if bin != "" {
		if bin, err = filepath.Abs(bin); err != nil {
			return err
		}
	} else {
		bin = filepath.Join(work, "flanneld")
		out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/flanneld").CombinedOutput()
		if err != nil {
			return fmt.Errorf("go build ./cmd/flanneld: %v\n%s", err, out)
		}
	}
	_ = lab.Sweep("fgbnet")

	targets := []*target{
		{name: "underlay"},
		{name: "vxlan", config: `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`},
		{name: "host-gw", config: `{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`},
		{name: "udp", config: `{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}`},
	}
	defer func() {
		for _, t := range targets {
			if t.server != nil && t.server.Process != nil {
				_ = t.server.Process.Kill()
				_ = t.server.Wait()
			}
			if t.lab != nil {
				_ = t.lab.Close()
			}
		}
	}()
	for i, t := range targets {
		if err := setUp(ctx, t, i, bin, filepath.Join(work, strings.ReplaceAll(t.name, "-", ""))); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	for r := 0; r < runs; r++ {
		for _, t := range targets {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			g, err := iperf(ctx, t, secs)
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", t.name, r+1, err)
			}
			rtt, err := ping(ctx, t)
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", t.name, r+1, err)
			}
			t.gbps, t.rtt = append(t.gbps, g), append(t.rtt, rtt)
			fmt.Fprintf(os.Stderr, "round %d %-8s %6.2f Gbit/s  rtt %.3f ms\n", r+1, t.name, g, rtt)
		}
	}

	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Printf("flanneld data plane: TCP pod to pod across two lab nodes (iperf3, %d s, 1 stream), median of %d rounds; %d CPUs, kernel %s\n",
		secs, runs, runtime.NumCPU(), strings.TrimSpace(string(kernel)))
	fmt.Printf("%-9s %10s %9s %11s %12s  %s\n", "path", "Gbit/s", "/vxlan", "/underlay", "ping RTT", "all rounds (Gbit/s)")
	under, vx := median(targets[0].gbps), median(targets[1].gbps)
	for _, t := range targets {
		g := median(t.gbps)
		var all []string
		for _, x := range t.gbps {
			all = append(all, strconv.FormatFloat(x, 'f', 2, 64))
		}
		fmt.Printf("%-9s %10.2f %8.0f%% %10.0f%% %9.3f ms  %s\n", t.name, g, 100*g/vx, 100*g/under, median(t.rtt), strings.Join(all, " "))
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// setUp builds a two-node lab for t: for a backend, flanneld on both nodes and a pod on
// each; the iperf3 server runs in the second pod (or node, for the underlay).
func setUp(ctx context.Context, t *target, i int, bin, dir string) error {
	l, err := lab.New(ctx, lab.Options{Name: lab.UniqueName("fgbnet", strconv.Itoa(i)), Nodes: 2, WorkDir: dir,
		FlanneldBin: bin, NoEtcd: t.config == ""})
	if err != nil {
		return err
	}
	t.lab = l
	if t.config == "" {
		t.from, t.toNS, t.to = l.NodeNS(1), l.NodeNS(2), l.NodeIP(2)
	} else {
		if err := l.PutConfig(ctx, t.config); err != nil {
			return err
		}
		for n := 1; n <= 2; n++ {
			if err := l.StartFlanneld(n); err != nil {
				return err
			}
		}
		for n := 1; n <= 2; n++ {
			if _, err := l.WaitSubnetEnv(n, time.Minute); err != nil {
				return err
			}
		}
		var pods []lab.Pod
		for n := 1; n <= 2; n++ {
			p, err := l.AddPod(n, 0)
			if err != nil {
				return err
			}
			pods = append(pods, p)
		}
		if err := l.Ping(pods[0].NS, pods[1].IP); err != nil {
			return err
		}
		t.from, t.toNS, t.to = pods[0].NS, pods[1].NS, pods[1].IP
	}
	t.server = exec.Command("ip", "netns", "exec", t.toNS, "iperf3", "-s")
	t.server.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := t.server.Start(); err != nil {
		return fmt.Errorf("iperf3 server: %w", err)
	}
	time.Sleep(300 * time.Millisecond)
	return nil
}

// iperf runs one TCP transfer and returns the received throughput in Gbit/s.
func iperf(ctx context.Context, t *target, secs int) (float64, error) {
	var out []byte
	var err error
	for attempt := 0; attempt < 5; attempt++ { // the server may still be starting
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", t.from, "iperf3", "-c", t.to.String(), "-t", strconv.Itoa(secs), "-J")
		out, err = cmd.Output()
		if err == nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		return 0, fmt.Errorf("iperf3: %v\n%s", err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w", err)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

var rttRE = regexp.MustCompile(`= ([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+) ms`)

// ping returns the average round trip of 50 pings at 10 ms intervals, in milliseconds.
func ping(ctx context.Context, t *target) (float64, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", t.from, "ping", "-n", "-q", "-c", "50", "-i", "0.01", "-W", "1", t.to.String()).Output()
	if err != nil {
		return 0, fmt.Errorf("ping: %v\n%s", err, out)
	}
	m := rttRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping: no rtt line in\n%s", out)
	}
	return strconv.ParseFloat(string(m[2]), 64)
}
