// Command bench measures flanneld's control plane in the netns lab, for N synthetic
// vxlan peer leases written into etcd before start:
//
//   - convergence: the time from exec of the daemon until a netlink dump taken outside it
//     shows all N routes, N neighbour entries and N FDB entries on flannel.1, and the
//     daemon's VmHWM at that moment;
//   - churn: N/5 leases deleted at once (their etcd lease revoked, as when nodes' TTLs
//     run out together) and N/5 new ones written right after (transactions of 100); the
//     time from the revocation until the kernel shows exactly the new set;
//   - idle CPU: the daemon's user+system CPU time over a quiet window (default 30 s, so
//     that one 30 s resync falls inside), as a percentage of one core;
//   - peak RSS: VmHWM at the end of the run.
//
// Each size runs several times; medians are reported.
//
//	sudo make bench-control   # or: sudo go run ./e2e/cmd/bench -sizes 1000,5000,20000 -runs 3
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/e2e/benchkit"
	"github.com/flannel-go/flannel/e2e/lab"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/subnet"
)

const config = `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`

func main() {
	sizes := flag.String("sizes", "1000,5000,20000", "comma-separated numbers of peer leases")
	runs := flag.Int("runs", 3, "runs per size (the median is reported)")
	bin := flag.String("flanneld", "", "flanneld binary (default: go build ./cmd/flanneld)")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up on one run after this long")
	logs := flag.String("logs", "", "copy each run's flanneld log into this directory")
	idle := flag.Duration("idle", 30*time.Second, "idle CPU window (0: skip)")
	churn := flag.Bool("churn", true, "measure churn (N/5 deletions + N/5 additions)")
	verbose := flag.Bool("v", false, "print each run's memory breakdown (RssAnon, RssFile) at its end")
	flag.Parse()
	benchkit.Main("bench", "bench-control", func(ctx context.Context) error {
		return run(ctx, *sizes, *runs, *bin, *timeout, *logs, phases{idle: *idle, churn: *churn, verbose: *verbose})
	})
}

type phases struct {
	idle    time.Duration
	churn   bool
	verbose bool
}

type result struct {
	converge time.Duration
	convKB   int           // VmHWM at convergence
	churn    time.Duration // 0 when not measured
	churnW   time.Duration // of which writing to etcd
	idleCPU  float64       // % of one core; -1 when not measured
	hwmKB    int           // VmHWM at the end
}

func run(ctx context.Context, sizeList string, runs int, bin string, timeout time.Duration, logs string, ph phases) error {
	var sizes []int
	for _, s := range strings.Split(sizeList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 5 || n > 50000 {
			return fmt.Errorf("bad size %q (5..50000)", s)
		}
		sizes = append(sizes, n)
	}
	work, err := os.MkdirTemp("", "fgbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if bin, err = benchkit.Flanneld(ctx, bin, work); err != nil {
		return err
	}
	_ = lab.Sweep("fgbench")
	fmt.Printf("flanneld control plane, %d run(s) per size, median; %s\n", runs, benchkit.Machine())
	fmt.Printf("%8s  %9s  %9s  %14s  %9s  %9s  %s\n", "leases", "converge", "RSS@conv", "churn (n/5)", "idle CPU", "peak RSS", "all runs")
	for _, n := range sizes {
		var rs []result
		for r := 0; r < runs; r++ {
			dir := filepath.Join(work, fmt.Sprintf("%d-%d", n, r))
			res, err := once(ctx, bin, dir, n, timeout, ph)
			if logs != "" {
				copyLog(filepath.Join(dir, "n1", "flanneld.log"), filepath.Join(logs, fmt.Sprintf("flanneld-%d-%d.log", n, r+1)))
			}
			if err != nil {
				return fmt.Errorf("%d leases, run %d: %w", n, r+1, err)
			}
			rs = append(rs, res)
		}
		var conv, churn, churnW []time.Duration
		var convKB, hwm []int
		var idle []float64
		var all []string
		for _, r := range rs {
			conv, convKB, hwm = append(conv, r.converge), append(convKB, r.convKB), append(hwm, r.hwmKB)
			churn, churnW, idle = append(churn, r.churn), append(churnW, r.churnW), append(idle, r.idleCPU)
			all = append(all, fmt.Sprintf("%.2fs/%.1fMB/%.2fs/%.2f%%/%.1fMB", r.converge.Seconds(), mb(r.convKB),
				r.churn.Seconds(), r.idleCPU, mb(r.hwmKB)))
		}
		fmt.Printf("%8d  %8.2fs  %7.1fMB  %6.2fs (%.2fs)  %8.2f%%  %7.1fMB  %s\n", n, benchkit.Median(conv).Seconds(), mb(benchkit.Median(convKB)),
			benchkit.Median(churn).Seconds(), benchkit.Median(churnW).Seconds(), benchkit.Median(idle), mb(benchkit.Median(hwm)), strings.Join(all, " "))
	}
	fmt.Println("churn: time from the deletions until the kernel shows the new set (in parentheses: of which writing the additions to etcd);")
	fmt.Println("idle CPU: % of one core; all runs: converge/RSS@conv/churn/idle/peak RSS")
	return nil
}

func mb(kb int) float64 { return float64(kb) / 1024 }

// once runs one measurement in a fresh one-node lab.
func once(ctx context.Context, bin, dir string, n int, timeout time.Duration, ph phases) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := result{idleCPU: -1}
	l, err := lab.New(ctx, lab.Options{Name: lab.UniqueName("fgbench", "b"), Nodes: 1, WorkDir: dir, FlanneldBin: bin})
	if err != nil {
		return res, err
	}
	defer l.Close()
	if err := l.PutConfig(ctx, config); err != nil {
		return res, err
	}
	nChurn := n / 5
	cli, prefix := l.Etcd(), l.EtcdPrefix()
	victims, err := cli.Grant(ctx, 3600)
	if err != nil {
		return res, fmt.Errorf("grant: %w", err)
	}
	rest, err := cli.Grant(ctx, 3600)
	if err != nil {
		return res, fmt.Errorf("grant: %w", err)
	}
	// leases [0, nChurn) go in the churn, [nChurn, n) stay, [n, n+nChurn) come
	if err := writeLeases(ctx, cli, prefix, 0, nChurn, victims.ID); err != nil {
		return res, err
	}
	if err := writeLeases(ctx, cli, prefix, nChurn, n, rest.ID); err != nil {
		return res, err
	}
	nsh, err := netns.GetFromName(l.NodeNS(1))
	if err != nil {
		return res, fmt.Errorf("open netns: %w", err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return res, fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	c, err := netlinkx.OpenAt(nsh)
	if err != nil {
		return res, err
	}
	defer c.Close()

	start := time.Now()
	if err := l.StartFlanneld(1); err != nil {
		return res, err
	}
	pid := l.FlanneldPID(1)
	wait := func(what string, lo, hi int) error {
		for {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: not converged: %w (log tail:\n%s)", what, ctx.Err(), l.LogTail(1, 20))
			}
			if !l.FlanneldRunning(1) {
				return fmt.Errorf("%s: flanneld exited (log tail:\n%s)", what, l.LogTail(1, 20))
			}
			if converged(h, c, lo, hi) {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := wait("start", 0, n); err != nil {
		return res, err
	}
	res.converge = time.Since(start)
	if res.convKB, err = vmHWM(pid); err != nil {
		return res, err
	}
	if ph.churn && nChurn > 0 {
		time.Sleep(2 * time.Second) // let the start-up settle
		t0 := time.Now()
		if _, err := cli.Revoke(ctx, victims.ID); err != nil {
			return res, fmt.Errorf("revoke: %w", err)
		}
		if err := writeLeases(ctx, cli, prefix, n, n+nChurn, rest.ID); err != nil {
			return res, err
		}
		res.churnW = time.Since(t0)
		if err := wait("churn", nChurn, n+nChurn); err != nil {
			return res, err
		}
		res.churn = time.Since(t0)
	}
	if ph.idle > 0 {
		time.Sleep(3 * time.Second)
		t0, err := benchkit.CPUTicks(pid)
		if err != nil {
			return res, err
		}
		time.Sleep(ph.idle)
		t1, err := benchkit.CPUTicks(pid)
		if err != nil {
			return res, err
		}
		res.idleCPU = float64(t1-t0) / benchkit.TicksPerSecond / ph.idle.Seconds() * 100
	}
	if res.hwmKB, err = vmHWM(pid); err != nil {
		return res, err
	}
	if ph.verbose {
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			for _, line := range strings.Split(string(st), "\n") {
				if strings.HasPrefix(line, "Rss") || strings.HasPrefix(line, "VmHWM") {
					fmt.Fprintf(os.Stderr, "bench: %d leases: %s\n", n, strings.Join(strings.Fields(line), " "))
				}
			}
		}
	}
	return res, l.StopFlanneld(1)
}

// peerSubnet is synthetic peer i's subnet: 10.<1+i/256>.<i%256>.0/24, never 10.0.x
// (SubnetMin is 10.0.1.0; the node picks there or above).
func peerSubnet(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i/256), byte(i % 256), 0}), 24)
}

// writeLeases puts peer leases [from, to) on the etcd lease id, in transactions of 100
// puts. Peers' public addresses cycle through 198.51.100.1-250: only FDB entries point
// at them, no packet is sent.
func writeLeases(ctx context.Context, cli *clientv3.Client, prefix string, from, to int, id clientv3.LeaseID) error {
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		return err
	}
	for i := from; i < to; i++ {
		sn := peerSubnet(i)
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
		ops = append(ops, clientv3.OpPut(prefix+"/subnets/"+subnet.MakeSubnetKey(sn, netip.Prefix{}), string(val), clientv3.WithLease(id)))
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

// converged reports whether flannel.1 carries exactly the routes to peers [lo, hi) and
// as many permanent neighbour and FDB entries (read with lean, kernel-filtered dumps, so
// that polling takes little CPU from the daemon).
func converged(h *netlink.Handle, c *netlinkx.Conn, lo, hi int) bool {
	link, err := h.LinkByName("flannel.1")
	if err != nil {
		return false
	}
	idx := link.Attrs().Index
	n, ok := 0, true
	err = c.Routes(netlinkx.RouteFilter{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN, Oif: idx}, func(r *netlinkx.Route) {
		if r.Protocol == unix.RTPROT_KERNEL {
			return
		}
		n++
		a := r.Dst.Addr().As4()
		i := (int(a[1])-1)*256 + int(a[2])
		if a[0] != 10 || r.Dst.Bits() != 24 || i < lo || i >= hi || peerSubnet(i) != r.Dst {
			ok = false
		}
	})
	if err != nil || !ok || n != hi-lo {
		return false
	}
	count := func(fam uint8) int {
		k := 0
		if err := c.Neighs(fam, idx, func(nb *netlinkx.Neigh) {
			if nb.State&unix.NUD_PERMANENT != 0 {
				k++
			}
		}); err != nil {
			return -1
		}
		return k
	}
	return count(unix.AF_INET) == hi-lo && count(unix.AF_BRIDGE) == hi-lo
}

func vmHWM(pid int) (int, error) { return benchkit.StatusKB(pid, "VmHWM") }

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
