// Command benchrestart measures the pings lost across a kill -9 and restart of flanneld,
// and how soon a lease written as etcd returns from an outage is applied.
//
//	sudo make bench-restart   # or: sudo go run ./e2e/cmd/benchrestart -runs 3 -upstream build
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/e2e/benchkit"
	"github.com/flannel-go/flannel/e2e/lab"
)

const healthzPort = 8473

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 3, "runs per measurement (the median is reported)")
	o.Define("after ours, in labs of its own")
	flag.DurationVar(&o.outage, "outage", 10*time.Second, "how long etcd stays down")
	flag.DurationVar(&o.limit, "limit", time.Minute, "a lease not applied this long after etcd's return is reported as not within it")
	flag.StringVar(&o.only, "only", "", `run one part only: "restart" or "outage"`)
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (logs) and print its path")
	flag.Parse()
	benchkit.Main("benchrestart", "bench-restart", func(ctx context.Context) error { return run(ctx, o) })
}

type options struct {
	benchkit.Flags
	runs          int
	outage, limit time.Duration
	only          string
	keep          bool
}

// targetOutage bounds applying a lease changed during an etcd outage, after its return.
const targetOutage = 2 * time.Second

// upstreamSettle is how long pings go on after upstream's restart wrote its subnet file.
const upstreamSettle = 2 * time.Second

func run(ctx context.Context, o options) error {
	if o.runs < 1 {
		return fmt.Errorf("-runs %d: need at least 1", o.runs)
	}
	work, err := os.MkdirTemp("", "fgrsb-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Printf("work directory (kept): %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	daemons, err := o.Daemons(ctx, work)
	if err != nil {
		return err
	}
	// The family must not start with another tool's family ("fgbench" sweeps "fgbench*").
	_ = lab.Sweep("fgrsb")
	rep := benchkit.NewReport("restart", "restart and etcd outage: pings lost across kill -9 and restart, lease applied after etcd's return", "go run ./e2e/cmd/benchrestart")
	rep.SetDaemons(daemons)
	fmt.Printf("flanneld restart and etcd outage, %d run(s) each, median; %s\n", o.runs, rep.Machine)
	for _, d := range daemons {
		if o.only != "outage" {
			for _, be := range []string{"vxlan", "host-gw"} {
				if err := benchRestart(ctx, rep, d, filepath.Join(work, d.Name, be), be, o.runs); err != nil {
					return fmt.Errorf("%s, %s restart: %w", d.Name, be, err)
				}
			}
		}
		if o.only != "restart" {
			if err := benchOutage(ctx, rep, d, filepath.Join(work, d.Name, "outage"), o); err != nil {
				return fmt.Errorf("%s, etcd outage: %w", d.Name, err)
			}
		}
	}
	rep.Note("restart: pod 1 pings pod 2 every 10 ms; node 2's flanneld killed with -9 and started at once; the ping ends 1 s after /readyz answers 200 (upstream, which has no /readyz: %v after it rewrote its subnet file)", upstreamSettle)
	rep.Note("outage: etcd down for %v; a new peer lease written as soon as it accepts connections; applied = node 1's kernel has its route, neighbour and FDB entry", o.outage)
	return o.Finish(os.Stdout, rep)
}

func newLab(ctx context.Context, d benchkit.Daemon, dir, tag, backend string) (*lab.Lab, error) {
	if d.IsUpstream() {
		tag += "u"
	}
	l, err := lab.New(ctx, lab.Options{Name: lab.UniqueName("fgrsb", tag), Nodes: 2, WorkDir: dir, FlanneldBin: d.Bin})
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`{"Network":"10.5.0.0/16","Backend":{"Type":%q}}`, backend)
	if err := l.PutConfig(ctx, cfg); err != nil {
		l.Close()
		return nil, err
	}
	for i := 1; i <= 2; i++ {
		if err := l.StartFlanneld(i, fmt.Sprintf("--healthz-port=%d", healthzPort)); err != nil {
			l.Close()
			return nil, err
		}
	}
	for i := 1; i <= 2; i++ {
		if err := waitStarted(ctx, l, d, i); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// waitStarted waits for /readyz 200, or upstream's subnet file (it has no /readyz).
func waitStarted(ctx context.Context, l *lab.Lab, d benchkit.Daemon, i int) error {
	if d.IsUpstream() {
		_, err := l.WaitSubnetEnv(i, time.Minute)
		return err
	}
	return waitReady(ctx, l, i, time.Minute)
}

func waitReady(ctx context.Context, l *lab.Lab, i int, timeout time.Duration) error {
	start := time.Now()
	deadline := start.Add(timeout)
	last := ""
	for {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		code, body, err := lab.HTTPGet(hctx, l.NodeNS(i), fmt.Sprintf("http://127.0.0.1:%d/readyz", healthzPort))
		cancel()
		if err == nil && code == 200 {
			if d := time.Since(start); d > 2*time.Second {
				fmt.Fprintf(os.Stderr, "benchrestart: node %d ready only after %v; last answer before: %s\n", i, d.Round(time.Millisecond), last)
			}
			return nil
		}
		if a := fmt.Sprintf("%d %q %v", code, body, err); a != last {
			last = fmt.Sprintf("%s (at %v)", a, time.Since(start).Round(time.Millisecond))
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("node %d not ready after %v: %d %q %v\n%s", i, timeout, code, body, err, l.LogTail(i, 20))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func benchRestart(ctx context.Context, rep *benchkit.Report, d benchkit.Daemon, dir, backend string, runs int) error {
	l, err := newLab(ctx, d, dir, "r"+strings.ReplaceAll(backend, "-", ""), backend)
	if err != nil {
		return err
	}
	defer l.Close()
	var pods []lab.Pod
	for i := 1; i <= 2; i++ {
		p, err := l.AddPod(i, 0)
		if err != nil {
			return err
		}
		pods = append(pods, p)
	}
	if err := l.Ping(pods[0].NS, pods[1].IP); err != nil {
		return err
	}
	lost := benchkit.Result{Case: backend, Metric: "pings lost across kill -9 + restart", Unit: "pings", Daemon: d.Name}
	lostShare := benchkit.Result{Case: backend, Metric: "share of pings lost", Unit: "%", Daemon: d.Name}
	ready := benchkit.Result{Case: backend, Metric: "kill to ready (/readyz)", Unit: "s", Daemon: d.Name}
	for r := 0; r < runs; r++ {
		ping, err := lab.StartPingStream(pods[0].NS, pods[1].IP, 10*time.Millisecond)
		if err != nil {
			return err
		}
		time.Sleep(time.Second)
		start := time.Now()
		if err := l.KillFlanneld(2); err != nil {
			ping.Stop()
			return err
		}
		if err := l.StartFlanneld(2, fmt.Sprintf("--healthz-port=%d", healthzPort)); err != nil {
			ping.Stop()
			return err
		}
		if err := waitStarted(ctx, l, d, 2); err != nil {
			ping.Stop()
			return err
		}
		took := time.Since(start)
		if d.IsUpstream() {
			time.Sleep(upstreamSettle)
		} else {
			time.Sleep(time.Second)
			ready.Runs = append(ready.Runs, took.Seconds())
		}
		sent, n, err := ping.Stop()
		if err != nil {
			return err
		}
		lost.Runs = append(lost.Runs, float64(n))
		lostShare.Runs = append(lostShare.Runs, 100*float64(n)/float64(max(sent, 1)))
		fmt.Fprintf(os.Stderr, "benchrestart: %s %s run %d: %d/%d lost, ready after %.2fs\n", d.Name, backend, r+1, n, sent, took.Seconds())
	}
	rep.Add(lost)
	rep.Add(lostShare)
	rep.Add(ready)
	return nil
}

func benchOutage(ctx context.Context, rep *benchkit.Report, d benchkit.Daemon, dir string, o options) error {
	l, err := newLab(ctx, d, dir, "etcd", "vxlan")
	if err != nil {
		return err
	}
	defer l.Close()
	nsh, err := netns.GetFromName(l.NodeNS(1))
	if err != nil {
		return err
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return err
	}
	defer h.Close()
	c := fmt.Sprintf("etcd down %v", o.outage)
	fromBack := benchkit.Result{Case: c, Metric: "etcd back to new lease applied", Unit: "s", Daemon: d.Name, Limit: o.limit.Seconds()}
	if !d.IsUpstream() {
		fromBack.Target = targetOutage.Seconds()
	}
	fromWrite := benchkit.Result{Case: c, Metric: "lease written to applied", Unit: "s", Daemon: d.Name, Limit: o.limit.Seconds()}
	for r := 0; r < o.runs; r++ {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, byte(240 + r), 0}), 24)
		mac := fmt.Sprintf("0e:00:00:00:f0:%02x", r)
		etcd := l.EtcdProc()
		etcd.Kill()
		time.Sleep(o.outage)
		if err := etcd.Restart(ctx); err != nil {
			return fmt.Errorf("%w\n%s", err, lab.TailFile(l.EtcdLog(), 15))
		}
		back := time.Now()
		written, err := putLease(ctx, l, sn, mac)
		if err != nil {
			return err
		}
		for !applied(h, sn, mac) && time.Since(back) <= o.limit && l.FlanneldRunning(1) {
			time.Sleep(2 * time.Millisecond)
		}
		done := time.Now()
		if applied(h, sn, mac) {
			fromBack.Runs, fromWrite.Runs = append(fromBack.Runs, done.Sub(back).Seconds()), append(fromWrite.Runs, done.Sub(written).Seconds())
			fmt.Fprintf(os.Stderr, "benchrestart: %s outage run %d: applied %.2fs after etcd's return\n", d.Name, r+1, done.Sub(back).Seconds())
		} else {
			fromBack.Over, fromWrite.Over = fromBack.Over+1, fromWrite.Over+1
			fmt.Fprintf(os.Stderr, "benchrestart: %s outage run %d: not applied within %v\n", d.Name, r+1, o.limit)
		}
		for i := 1; i <= 2; i++ {
			if !l.FlanneldRunning(i) {
				rep.Note("%s: node %d's flanneld exited during etcd's outage (run %d; log: %s); started again", d.Name, i, r+1, l.LogTail(i, 1))
				if err := l.StartFlanneld(i, fmt.Sprintf("--healthz-port=%d", healthzPort)); err != nil {
					return err
				}
			}
		}
		if err := waitStarted(ctx, l, d, 1); err != nil {
			return err
		}
	}
	rep.Add(fromBack)
	rep.Add(fromWrite)
	return nil
}

// putLease writes a peer lease with a fresh client and returns the acknowledgement time.
func putLease(ctx context.Context, l *lab.Lab, sn netip.Prefix, mac string) (time.Time, error) {
	cli, err := l.NewEtcdClient()
	if err != nil {
		return time.Time{}, err
	}
	defer cli.Close()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	grant, err := cli.Grant(pctx, 600)
	if err != nil {
		return time.Time{}, fmt.Errorf("grant: %w", err)
	}
	key := l.EtcdPrefix() + "/subnets/" + strings.ReplaceAll(sn.String(), "/", "-")
	val := fmt.Sprintf(`{"PublicIP":"192.0.2.99","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":%q}}`, mac)
	if _, err := cli.Put(pctx, key, val, clientv3.WithLease(grant.ID)); err != nil {
		return time.Time{}, fmt.Errorf("put %s: %w", key, err)
	}
	return time.Now(), nil
}

// applied reports whether flannel.1 has the peer's route, permanent neighbour and FDB entry.
func applied(h *netlink.Handle, sn netip.Prefix, mac string) bool {
	link, err := h.LinkByName("flannel.1")
	if err != nil {
		return false
	}
	idx := link.Attrs().Index
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: idx}, netlink.RT_FILTER_OIF)
	if err != nil || !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == sn.String() }) {
		return false
	}
	has := func(family int) bool {
		ns, err := h.NeighList(idx, family)
		return err == nil && slices.ContainsFunc(ns, func(n netlink.Neigh) bool {
			return n.State&unix.NUD_PERMANENT != 0 && strings.EqualFold(n.HardwareAddr.String(), mac)
		})
	}
	return has(netlink.FAMILY_V4) && has(unix.AF_BRIDGE)
}
