// Command demo starts a vxlan netns lab of N nodes with a pod each, pings every pod from
// every other and keeps the lab until Ctrl-C.
//
//	sudo make demo            # or: sudo go run ./e2e/cmd/demo [-nodes 3] [-keep]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/flannel-go/flannel/e2e/lab"
)

const (
	labName = "fgdemo"
	config  = `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`
)

type options struct {
	nodes    int
	keep     bool
	flanneld string
	oneshot  bool
	timeout  time.Duration
}

func main() {
	var o options
	flag.IntVar(&o.nodes, "nodes", 3, "number of nodes (1..20)")
	flag.BoolVar(&o.keep, "keep", false, "print the ip netns exec commands to explore the running lab")
	flag.StringVar(&o.flanneld, "flanneld", "", "flanneld binary to use (default: go build ./cmd/flanneld)")
	flag.BoolVar(&o.oneshot, "oneshot", false, "tear down right after the report instead of waiting for Ctrl-C; exit 1 if a ping failed")
	flag.DurationVar(&o.timeout, "timeout", 60*time.Second, "how long to wait for each flanneld to write its subnet file")
	flag.Parse()
	if o.nodes < 1 || o.nodes > 20 {
		fmt.Fprintln(os.Stderr, "demo: -nodes must be between 1 and 20")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root to create network namespaces; run: sudo make demo")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, o, os.Stdout))
}

func run(ctx context.Context, o options, w io.Writer) int {
	if err := lab.Sweep(labName); err != nil {
		fmt.Fprintf(w, "warning: removing an earlier demo's leftovers: %v\n", err)
	}
	workDir, err := os.MkdirTemp("", "fgdemo-")
	if err != nil {
		fmt.Fprintf(w, "demo: %v\n", err)
		return 1
	}
	defer os.RemoveAll(workDir)

	bin := o.flanneld
	if bin == "" {
		bin = filepath.Join(workDir, "flanneld")
		fmt.Fprintln(w, "building flanneld ...")
		if err := build(ctx, bin); err != nil {
			fmt.Fprintf(w, "demo: %v\n", err)
			return 1
		}
	} else if bin, err = filepath.Abs(bin); err != nil {
		fmt.Fprintf(w, "demo: %v\n", err)
		return 1
	}

	fmt.Fprintf(w, "creating a %d-node lab %q (namespaces %s-sw, %s-n1 ...) in %s\n", o.nodes, labName, labName, labName, workDir)
	l, err := lab.New(ctx, lab.Options{Name: labName, Nodes: o.nodes, WorkDir: workDir, FlanneldBin: bin})
	if err != nil {
		fmt.Fprintf(w, "demo: %v\n", err)
		return 1
	}
	defer func() {
		fmt.Fprintln(w, "tearing down the lab ...")
		if err := l.Close(); err != nil {
			fmt.Fprintf(w, "demo: teardown: %v\n", err)
		} else {
			fmt.Fprintln(w, "done: all demo namespaces and processes removed")
		}
	}()

	// The scenario has its own goroutine so Ctrl-C tears down at once.
	type outcome struct {
		failed int
		err    error
	}
	res := make(chan outcome, 1)
	go func() {
		failed, err := scenario(ctx, l, o, w)
		res <- outcome{failed, err}
	}()
	var out outcome
	select {
	case out = <-res:
	case <-ctx.Done():
		fmt.Fprintln(w, "\ninterrupted")
		return 130
	}
	if out.err != nil {
		fmt.Fprintf(w, "demo: %v\n", out.err)
		for i := 1; i <= l.Nodes(); i++ {
			fmt.Fprintf(w, "--- node %d flanneld log, last lines:\n%s\n", i, l.LogTail(i, 15))
		}
		return 1
	}
	if o.keep {
		explain(w, l)
	} else {
		fmt.Fprintln(w, "(run with -keep to get the commands to explore the lab)")
	}
	if o.oneshot {
		if out.failed > 0 {
			return 1
		}
		return 0
	}
	fmt.Fprintln(w, "\nthe lab is up; press Ctrl-C to stop and tear everything down")
	<-ctx.Done()
	fmt.Fprintln(w)
	return 0
}

func build(ctx context.Context, out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "github.com/flannel-go/flannel/cmd/flanneld")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as make build and the image
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/flanneld: %w\n%s", err, b)
	}
	return nil
}

type nodeRow struct {
	i             int
	subnet, mac   string
	mtu, vxlanDev string
	pod           lab.Pod
}

// scenario prints the node table and ping matrix and returns the failed pings.
func scenario(ctx context.Context, l *lab.Lab, o options, w io.Writer) (int, error) {
	if err := l.PutConfig(ctx, config); err != nil {
		return 0, err
	}
	fmt.Fprintf(w, "etcd: %s (inside %s), config %s\n", l.EtcdEndpoint(), l.SwitchNS(), config)
	for i := 1; i <= l.Nodes(); i++ {
		if err := l.StartFlanneld(i); err != nil {
			return 0, err
		}
	}
	fmt.Fprintf(w, "flanneld started on %d nodes, waiting for their subnet files ...\n", l.Nodes())
	rows := make([]nodeRow, l.Nodes())
	for i := 1; i <= l.Nodes(); i++ {
		env, err := l.WaitSubnetEnv(i, o.timeout)
		if err != nil {
			return 0, err
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		r := nodeRow{i: i, subnet: env["FLANNEL_SUBNET"], mtu: env["FLANNEL_MTU"], mac: "?", vxlanDev: "?"}
		if dev, mac, err := vtep(ctx, l, i); err == nil {
			r.vxlanDev, r.mac = dev, mac
		}
		pod, err := l.AddPod(i, 0)
		if err != nil {
			return 0, err
		}
		r.pod = pod
		rows[i-1] = r
	}

	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNAMESPACE\tUNDERLAY IP\tSUBNET (cni0)\tVXLAN DEV\tVTEP MAC\tMTU\tPOD IP")
	for _, r := range rows {
		fmt.Fprintf(tw, "n%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.i, l.NodeNS(r.i), l.NodeIP(r.i), r.subnet, r.vxlanDev, r.mac, r.mtu, r.pod.IP)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nping matrix (pod on row node -> pod on column node; ping -c 3, average rtt):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := []string{"from \\ to"}
	for _, r := range rows {
		header = append(header, fmt.Sprintf("n%d %s", r.i, r.pod.IP))
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	failed, total := 0, 0
	var failures []string
	for _, from := range rows {
		cells := []string{fmt.Sprintf("n%d %s", from.i, from.pod.IP)}
		for _, to := range rows {
			if from.i == to.i {
				cells = append(cells, "-")
				continue
			}
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			total++
			rtt, err := l.PingRTT(from.pod.NS, to.pod.IP, 20*time.Second)
			if err != nil {
				failed++
				cells = append(cells, "FAIL")
				failures = append(failures, fmt.Sprintf("n%d -> n%d: %v", from.i, to.i, err))
				continue
			}
			cells = append(cells, fmt.Sprintf("ok %.2fms", float64(rtt)/float64(time.Millisecond)))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
	if failed == 0 {
		fmt.Fprintf(w, "\nall %d pod-to-pod paths work across the vxlan overlay\n", total)
	} else {
		fmt.Fprintf(w, "\n%d of %d pod-to-pod paths FAILED:\n  %s\n", failed, total, strings.Join(failures, "\n  "))
	}
	return failed, nil
}

// vtep finds node i's flannel vxlan device and its MAC.
func vtep(ctx context.Context, l *lab.Lab, i int) (string, string, error) {
	links, err := lab.Links(ctx, l.NodeNS(i))
	if err != nil {
		return "", "", err
	}
	for _, k := range links {
		if k.Kind == "vxlan" && strings.HasPrefix(k.Name, "flannel.") {
			return k.Name, k.Address, nil
		}
	}
	return "", "", errors.New("no flannel vxlan device")
}

func explain(w io.Writer, l *lab.Lab) {
	n1 := l.NodeNS(1)
	dev := "flannel.1"
	fmt.Fprintln(w, "\nexplore the running lab from another terminal:")
	lines := []string{
		"sudo ip netns list | grep " + labName,
		"sudo ip netns exec " + n1 + " ip -d link show " + dev,
		"sudo ip netns exec " + n1 + " ip route",
		"sudo ip netns exec " + n1 + " ip neigh show dev " + dev,
		"sudo ip netns exec " + n1 + " bridge fdb show dev " + dev,
		"sudo cat " + l.SubnetEnvPath(1),
		"sudo ip netns exec " + l.SwitchNS() + " etcdctl --endpoints " + l.EtcdEndpoint() + " get --prefix " + l.EtcdPrefix(),
		"sudo tail -f " + l.LogPath(1),
	}
	if pods := l.Pods(); len(pods) > 1 {
		lines = append(lines,
			fmt.Sprintf("sudo ip netns exec %s ping %s", pods[0].NS, pods[len(pods)-1].IP),
			fmt.Sprintf("sudo ip netns exec %s tcpdump -ni eth0 udp port 8472", n1))
	}
	for _, s := range lines {
		fmt.Fprintln(w, "  "+s)
	}
}
