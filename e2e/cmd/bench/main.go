// Command bench measures flanneld's control-plane convergence in the netns lab: for N
// synthetic vxlan peer leases written into etcd before start, the time from exec of the
// daemon until a netlink dump taken outside it shows all N routes, N neighbour entries and
// N FDB entries on flannel.1, and the daemon's peak RSS (VmHWM). Each size runs several
// times; the median is reported.
//
//	sudo make bench        # or: sudo go run ./e2e/cmd/bench -sizes 1000,5000,20000 -runs 3
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
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/e2e/lab"
	"github.com/flannel-go/flannel/subnet"
)

const config = `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`

func main() {
	sizes := flag.String("sizes", "1000,5000,20000", "comma-separated numbers of peer leases")
	runs := flag.Int("runs", 3, "runs per size (the median is reported)")
	bin := flag.String("flanneld", "", "flanneld binary (default: go build ./cmd/flanneld)")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up on one run after this long")
	logs := flag.String("logs", "", "copy each run's flanneld log into this directory")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (network namespaces); run: sudo make bench")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *sizes, *runs, *bin, *timeout, *logs); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

type result struct {
	converge time.Duration
	hwmKB    int
}

func run(ctx context.Context, sizeList string, runs int, bin string, timeout time.Duration, logs string) error {
	var sizes []int
	for _, s := range strings.Split(sizeList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 60000 {
			return fmt.Errorf("bad size %q (1..60000)", s)
		}
		sizes = append(sizes, n)
	}
	work, err := os.MkdirTemp("", "fgbench-")
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
	_ = lab.Sweep("fgbench")
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Printf("flanneld control-plane convergence, %d run(s) per size, median; %d CPUs, kernel %s\n",
		runs, runtime.NumCPU(), strings.TrimSpace(string(kernel)))
	fmt.Printf("%8s  %12s  %12s  %s\n", "leases", "converge", "peak RSS", "all runs")
	for _, n := range sizes {
		var rs []result
		for r := 0; r < runs; r++ {
			dir := filepath.Join(work, fmt.Sprintf("%d-%d", n, r))
			res, err := once(ctx, bin, dir, n, timeout)
			if logs != "" {
				copyLog(filepath.Join(dir, "n1", "flanneld.log"), filepath.Join(logs, fmt.Sprintf("flanneld-%d-%d.log", n, r+1)))
			}
			if err != nil {
				return fmt.Errorf("%d leases, run %d: %w", n, r+1, err)
			}
			rs = append(rs, res)
		}
		conv := make([]time.Duration, len(rs))
		hwm := make([]int, len(rs))
		var all []string
		for i, r := range rs {
			conv[i], hwm[i] = r.converge, r.hwmKB
			all = append(all, fmt.Sprintf("%.2fs/%.1fMB", r.converge.Seconds(), float64(r.hwmKB)/1024))
		}
		slices.Sort(conv)
		slices.Sort(hwm)
		fmt.Printf("%8d  %11.2fs  %10.1fMB  %s\n", n, conv[len(conv)/2].Seconds(), float64(hwm[len(hwm)/2])/1024, strings.Join(all, " "))
	}
	return nil
}

// once runs one measurement in a fresh one-node lab.
func once(ctx context.Context, bin, dir string, n int, timeout time.Duration) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	l, err := lab.New(ctx, lab.Options{Name: lab.UniqueName("fgbench", "b"), Nodes: 1, WorkDir: dir, FlanneldBin: bin})
	if err != nil {
		return result{}, err
	}
	defer l.Close()
	if err := l.PutConfig(ctx, config); err != nil {
		return result{}, err
	}
	if err := writeLeases(ctx, l.Etcd(), l.EtcdPrefix(), n); err != nil {
		return result{}, err
	}
	h, closeH, err := handleIn(l.NodeNS(1))
	if err != nil {
		return result{}, err
	}
	defer closeH()

	start := time.Now()
	if err := l.StartFlanneld(1); err != nil {
		return result{}, err
	}
	pid := l.FlanneldPID(1)
	for {
		if ctx.Err() != nil {
			return result{}, fmt.Errorf("not converged: %w (log tail:\n%s)", ctx.Err(), l.LogTail(1, 20))
		}
		if !l.FlanneldRunning(1) {
			return result{}, fmt.Errorf("flanneld exited (log tail:\n%s)", l.LogTail(1, 20))
		}
		if converged(h, n) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	hwm, err := vmHWM(pid)
	if err != nil {
		return result{}, err
	}
	return result{converge: elapsed, hwmKB: hwm}, l.StopFlanneld(1)
}

// writeLeases puts n peer leases (all on one etcd lease, as live nodes would have) in
// transactions of 100 puts. Peers' public addresses cycle through 198.51.100.1-250: only
// FDB entries point at them, no packet is sent.
func writeLeases(ctx context.Context, cli *clientv3.Client, prefix string, n int) error {
	grant, err := cli.Grant(ctx, 3600)
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		return err
	}
	for i := 0; i < n; i++ {
		// 10.<1+i/256>.<i%256>.0/24: never 10.0.x (SubnetMin is 10.0.1.0; the node picks there or above).
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i/256), byte(i % 256), 0}), 24)
		mac := fmt.Sprintf("0a:%02x:%02x:%02x:00:01", (i>>16)&0xff, (i>>8)&0xff, i&0xff)
		attrs := subnet.LeaseAttrs{
			PublicIP:    netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i%250)}),
			BackendType: "vxlan",
			BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`),
		}
		val, err := json.Marshal(attrs)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(prefix+"/subnets/"+subnet.MakeSubnetKey(sn, netip.Prefix{}), string(val), clientv3.WithLease(grant.ID)))
		if len(ops) == 100 {
			if err := flush(); err != nil {
				return fmt.Errorf("put leases: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return fmt.Errorf("put leases: %w", err)
	}
	return nil
}

// handleIn opens a netlink handle in the named namespace (the dumps run from outside the daemon).
func handleIn(ns string) (*netlink.Handle, func(), error) {
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		return nil, nil, fmt.Errorf("open netns %s: %w", ns, err)
	}
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		nsh.Close()
		return nil, nil, fmt.Errorf("netlink handle in %s: %w", ns, err)
	}
	return h, func() { h.Close(); nsh.Close() }, nil
}

// converged reports whether flannel.1 carries n routes, n permanent neighbours and n
// permanent FDB entries.
func converged(h *netlink.Handle, n int) bool {
	link, err := h.LinkByName("flannel.1")
	if err != nil {
		return false
	}
	idx := link.Attrs().Index
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: idx}, netlink.RT_FILTER_OIF)
	if err != nil || len(routes) < n {
		return false
	}
	count := func(family int) int {
		neighs, err := h.NeighList(idx, family)
		if err != nil {
			return -1
		}
		c := 0
		for _, nb := range neighs {
			if nb.State&unix.NUD_PERMANENT != 0 {
				c++
			}
		}
		return c
	}
	return count(netlink.FAMILY_V4) >= n && count(unix.AF_BRIDGE) >= n
}

func vmHWM(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read VmHWM: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// copyLog keeps a run's daemon log (best effort: a failed copy only loses the log).
func copyLog(from, to string) {
	data, err := os.ReadFile(from)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(to), 0o755)
	}
	if err == nil {
		err = os.WriteFile(to, data, 0o644)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: keeping log: %v\n", err)
	}
}
