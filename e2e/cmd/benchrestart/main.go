// Command benchrestart measures what a daemon restart and an etcd outage cost the data
// path, in the netns lab:
//
//   - restart: pod 1 pings pod 2 every 10 ms while node 2's flanneld is killed with -9
//     and started again at once; reported are the pings lost and the time from the kill
//     until the new daemon is ready (/readyz 200: lease, watch and first reconcile), for
//     vxlan and host-gw;
//   - etcd return: etcd is killed for -outage, restarted, and a new peer lease written
//     at once with a fresh client; reported are the times from etcd's return (its client
//     port accepting again) and from the write until node 1's kernel has the peer's
//     route, neighbour and FDB entry.
//
// Each figure is the median of -runs runs.
//
//	sudo make bench-restart   # or: sudo go run ./e2e/cmd/benchrestart -runs 3
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
	runs := flag.Int("runs", 3, "runs per measurement (the median is reported)")
	bin := flag.String("flanneld", "", "flanneld binary (default: go build ./cmd/flanneld)")
	outage := flag.Duration("outage", 10*time.Second, "how long etcd stays down")
	only := flag.String("only", "", `run one part only: "restart" or "outage"`)
	keep := flag.Bool("keep", false, "keep the work directory (logs) and print its path")
	flag.Parse()
	benchkit.Main("benchrestart", "bench-restart", func(ctx context.Context) error {
		return run(ctx, *runs, *bin, *outage, *only, *keep)
	})
}

func run(ctx context.Context, runs int, bin string, outage time.Duration, only string, keep bool) error {
	if runs < 1 {
		return fmt.Errorf("-runs %d: need at least 1", runs)
	}
	work, err := os.MkdirTemp("", "fgrsb-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Printf("work directory (kept): %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	if bin, err = benchkit.Flanneld(ctx, bin, work); err != nil {
		return err
	}
	// The family must not start with another tool's family ("fgbench" sweeps "fgbench*").
	_ = lab.Sweep("fgrsb")
	fmt.Printf("flanneld restart and etcd outage, %d run(s) each, median; %s\n",
		runs, benchkit.Machine())

	if only != "outage" {
		fmt.Printf("\nkill -9 + immediate restart of node 2's flanneld, pod 1 -> pod 2 ping every 10 ms\n")
		fmt.Printf("%-8s  %12s  %14s  %s\n", "backend", "pings lost", "kill->ready", "all runs (lost/sent, kill->ready)")
		for _, be := range []string{"vxlan", "host-gw"} {
			if err := benchRestart(ctx, bin, filepath.Join(work, be), be, runs); err != nil {
				return fmt.Errorf("%s restart: %w", be, err)
			}
		}
	}
	if only == "restart" {
		return nil
	}
	fmt.Printf("\netcd killed for %v, restarted, a new peer lease written at once (vxlan)\n", outage)
	fmt.Printf("%16s  %16s  %s\n", "return->applied", "write->applied", "all runs")
	return benchOutage(ctx, bin, filepath.Join(work, "outage"), runs, outage)
}

func newLab(ctx context.Context, bin, dir, tag, backend string) (*lab.Lab, error) {
	l, err := lab.New(ctx, lab.Options{Name: lab.UniqueName("fgrsb", tag), Nodes: 2, WorkDir: dir, FlanneldBin: bin})
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
		if err := waitReady(ctx, l, i, time.Minute); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// waitReady polls node i's /readyz until it answers 200.
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

func benchRestart(ctx context.Context, bin, dir, backend string, runs int) error {
	l, err := newLab(ctx, bin, dir, "r"+strings.ReplaceAll(backend, "-", ""), backend)
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
	var lost []int
	var ready []time.Duration
	var all []string
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
		if err := waitReady(ctx, l, 2, time.Minute); err != nil {
			ping.Stop()
			return err
		}
		took := time.Since(start)
		time.Sleep(time.Second)
		sent, n, err := ping.Stop()
		if err != nil {
			return err
		}
		lost, ready = append(lost, n), append(ready, took)
		all = append(all, fmt.Sprintf("%d/%d,%.2fs", n, sent, took.Seconds()))
	}
	fmt.Printf("%-8s  %12d  %13.2fs  %s\n", backend, benchkit.Median(lost), benchkit.Median(ready).Seconds(), strings.Join(all, " "))
	return nil
}

func benchOutage(ctx context.Context, bin, dir string, runs int, outage time.Duration) error {
	l, err := newLab(ctx, bin, dir, "etcd", "vxlan")
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
	var fromBack, fromWrite []time.Duration
	var all []string
	for r := 0; r < runs; r++ {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, byte(240 + r), 0}), 24)
		mac := fmt.Sprintf("0e:00:00:00:f0:%02x", r)
		etcd := l.EtcdProc()
		etcd.Kill()
		time.Sleep(outage)
		if err := etcd.Restart(ctx); err != nil {
			return fmt.Errorf("%w\n%s", err, lab.TailFile(l.EtcdLog(), 15))
		}
		back := time.Now()
		written, err := putLease(ctx, l, sn, mac)
		if err != nil {
			return err
		}
		for !applied(h, sn, mac) {
			if time.Since(back) > time.Minute {
				return fmt.Errorf("lease %s not applied on node 1 a minute after etcd's return\n%s", sn, l.LogTail(1, 20))
			}
			time.Sleep(2 * time.Millisecond)
		}
		done := time.Now()
		fromBack, fromWrite = append(fromBack, done.Sub(back)), append(fromWrite, done.Sub(written))
		all = append(all, fmt.Sprintf("%.2fs/%.2fs", done.Sub(back).Seconds(), done.Sub(written).Seconds()))
		for i := 1; i <= 2; i++ {
			if !l.FlanneldRunning(i) {
				return fmt.Errorf("node %d: flanneld exited during the outage\n%s", i, l.LogTail(i, 20))
			}
		}
		if err := waitReady(ctx, l, 1, time.Minute); err != nil {
			return err
		}
	}
	fmt.Printf("%15.2fs  %15.2fs  %s\n", benchkit.Median(fromBack).Seconds(), benchkit.Median(fromWrite).Seconds(), strings.Join(all, " "))
	return nil
}

// putLease writes a peer lease (public address 192.0.2.99: nothing is sent to it) with a
// fresh client and returns when the write was acknowledged.
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
