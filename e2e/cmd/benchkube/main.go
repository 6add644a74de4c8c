// Command benchkube measures flanneld's Kubernetes mode at scale in the netns lab: a real
// kube-apiserver (e2e/kubeproc) holds N annotated Node objects (vxlan peers, each with a
// pod CIDR, labels and a kubelet-like status so that objects have a realistic size); one
// lab node runs flanneld --kube-subnet-mgr with the flannel service account's token. It
// reports the time from exec of the daemon until a netlink dump taken outside it shows all
// N routes, N neighbour entries and N FDB entries on flannel.1, and the daemon's peak RSS
// (VmHWM). Between runs the daemon is stopped and flannel.1 and the local state removed, so
// every run programs everything from scratch. The median of the runs is reported.
//
//	sudo make bench-kube   # or: sudo go run ./e2e/cmd/benchkube -nodes 5000 -runs 3
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/flannel-go/flannel/e2e/benchkit"
	"github.com/flannel-go/flannel/e2e/kubeproc"
	"github.com/flannel-go/flannel/e2e/lab"
)

const netConf = `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`

func main() {
	nodes := flag.Int("nodes", 5000, "number of annotated peer nodes")
	runs := flag.Int("runs", 3, "runs (the median is reported)")
	bin := flag.String("flanneld", "", "flanneld binary (default: go build ./cmd/flanneld)")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up on one run after this long")
	manifest := flag.String("manifest", "dist/kube-flannel.yml", "manifest whose RBAC objects are applied")
	var env []string
	flag.Func("env", "extra environment variable for flanneld, NAME=value (repeatable; e.g. GODEBUG=gctrace=1, whose lines are then shown)", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want NAME=value")
		}
		env = append(env, v)
		return nil
	})
	flag.Parse()
	benchkit.Main("benchkube", "bench-kube", func(ctx context.Context) error {
		return run(ctx, *nodes, *runs, *bin, *timeout, *manifest, env)
	})
}

type result struct {
	converge time.Duration
	hwmKB    int
	// anonKB and fileKB are the largest anonymous and file-backed resident sizes sampled
	// while the daemon converged (every 10 ms, so a short spike may be missed).
	anonKB, fileKB int
}

// run measures n nodes, runs times; env holds extra NAME=value variables for flanneld.
func run(ctx context.Context, n, runs int, bin string, timeout time.Duration, manifest string, env []string) (err error) {
	if n < 1 || n > 60000 || runs < 1 {
		return fmt.Errorf("bad -nodes %d (1..60000) or -runs %d", n, runs)
	}
	if _, err := kubeproc.Binary(); err != nil {
		return err
	}
	var work string
	work, err = os.MkdirTemp("", "fgbenchkube-")
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			os.RemoveAll(work)
		} else {
			fmt.Fprintf(os.Stderr, "benchkube: keeping %s (logs of the failed run)\n", work)
		}
	}()
	if bin, err = benchkit.Flanneld(ctx, bin, work); err != nil {
		return err
	}
	_ = lab.Sweep("fgbkube")
	l, err := lab.New(ctx, lab.Options{Name: lab.UniqueName("fgbkube", "b"), Nodes: 1, WorkDir: filepath.Join(work, "lab"), FlanneldBin: bin})
	if err != nil {
		return err
	}
	defer l.Close()
	api, err := l.StartKubeAPIServer(ctx)
	if err != nil {
		return err
	}
	rc := api.RESTConfig("")
	rc.QPS, rc.Burst = 2000, 4000
	if err := kubeproc.ApplyManifest(ctx, rc, manifest, false); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	token, err := kubeproc.ServiceAccountToken(ctx, cs, "kube-flannel", "flannel")
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(work, "flannel.kubeconfig")
	if err := api.WriteKubeconfig(kubeconfig, token); err != nil {
		return err
	}
	confPath := filepath.Join(work, "net-conf.json")
	if err := os.WriteFile(confPath, []byte(netConf), 0o644); err != nil {
		return err
	}
	if err := createNode(ctx, cs, "lab-n1", 0, false); err != nil {
		return err
	}
	start := time.Now()
	if err := createPeers(ctx, cs, n); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "benchkube: %d nodes created in %v\n", n, time.Since(start).Round(time.Millisecond))

	fmt.Printf("flanneld Kubernetes mode: %d annotated nodes, time to program + peak RSS, %d run(s), median; %s, kube-apiserver %s\n",
		n, runs, benchkit.Machine(), kubeproc.Version)
	var rs []result
	for r := 0; r < runs; r++ {
		res, err := once(ctx, l, n, timeout, kubeconfig, confPath, env)
		if err != nil {
			return fmt.Errorf("run %d: %w", r+1, err)
		}
		fmt.Fprintf(os.Stderr, "benchkube: run %d: %.2fs, %.1f MB (sampled max: anon %.1f MB, file %.1f MB)\n", r+1,
			res.converge.Seconds(), float64(res.hwmKB)/1024, float64(res.anonKB)/1024, float64(res.fileKB)/1024)
		rs = append(rs, res)
	}
	conv := make([]time.Duration, len(rs))
	hwm := make([]int, len(rs))
	var all []string
	for i, r := range rs {
		conv[i], hwm[i] = r.converge, r.hwmKB
		all = append(all, fmt.Sprintf("%.2fs/%.1fMB", r.converge.Seconds(), float64(r.hwmKB)/1024))
	}
	fmt.Printf("%8s  %12s  %12s  %s\n", "nodes", "program", "peak RSS", "all runs")
	fmt.Printf("%8d  %11.2fs  %10.1fMB  %s\n", n, benchkit.Median(conv).Seconds(), float64(benchkit.Median(hwm))/1024, strings.Join(all, " "))
	return nil
}

// once runs flanneld from a clean node (no flannel.1, no state) until everything is programmed.
func once(ctx context.Context, l *lab.Lab, n int, timeout time.Duration, kubeconfig, confPath string, env []string) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, _ = l.Exec(l.NodeNS(1), "ip", "link", "del", "flannel.1")
	for _, f := range []string{"subnet.env", "subnet.state.json"} {
		_ = os.Remove(filepath.Join(l.NodeDir(1), f))
	}
	h, closeH, err := handleIn(l.NodeNS(1))
	if err != nil {
		return result{}, err
	}
	defer closeH()
	start := time.Now()
	if err := l.StartFlanneldEnv(1, append([]string{"NODE_NAME=lab-n1"}, env...), "--kube-subnet-mgr", "--kubeconfig-file="+kubeconfig, "--net-config-path="+confPath); err != nil {
		return result{}, err
	}
	pid := l.FlanneldPID(1)
	var res result
	for {
		if ctx.Err() != nil {
			_ = l.KillFlanneld(1)
			return result{}, fmt.Errorf("not converged: %w (log tail:\n%s)", ctx.Err(), l.LogTail(1, 20))
		}
		if !l.FlanneldRunning(1) {
			return result{}, fmt.Errorf("flanneld exited (log tail:\n%s)", l.LogTail(1, 20))
		}
		if anon, file, err := rssSplit(pid); err == nil {
			res.anonKB, res.fileKB = max(res.anonKB, anon), max(res.fileKB, file)
		}
		if converged(h, n) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	tail := l.LogTail(1, 400)
	if i := strings.LastIndex(tail, "===== lab:"); i >= 0 {
		tail = tail[i:] // this run only
	}
	for _, line := range strings.Split(tail, "\n") {
		if strings.HasPrefix(line, "gc ") || strings.Contains(line, "Node list received") || strings.Contains(line, "Reconciled") || strings.Contains(line, "Found network config") || strings.Contains(line, "Running backend") {
			fmt.Fprintf(os.Stderr, "benchkube:   %s\n", line)
		}
	}
	hwm, err := vmHWM(pid)
	if err != nil {
		return result{}, err
	}
	res.converge, res.hwmKB = elapsed, hwm
	return res, l.StopFlanneld(1)
}

// createPeers creates n peer nodes with 16 concurrent clients.
func createPeers(ctx context.Context, cs kubernetes.Interface, n int) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error { return createNode(ctx, cs, fmt.Sprintf("peer-%05d", i), i, true) })
	}
	return g.Wait()
}

// createNode creates a node shaped like a kubelet-registered one. Peer i gets pod CIDR
// 10.<1+i/256>.<i%256>.0/24 and flannel annotations; its public address cycles through
// 198.51.100.1-250 (only FDB entries point at it: no packet is sent). The own node gets
// 10.0.0.0/24 and no annotations.
func createNode(ctx context.Context, cs kubernetes.Interface, name string, i int, peer bool) error {
	cidr := "10.0.0.0/24"
	ann := map[string]string{"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}
	if peer {
		cidr = fmt.Sprintf("10.%d.%d.0/24", 1+i/256, i%256)
		ann["flannel.alpha.coreos.com/kube-subnet-manager"] = "true"
		ann["flannel.alpha.coreos.com/backend-type"] = "vxlan"
		ann["flannel.alpha.coreos.com/backend-data"] = fmt.Sprintf(`{"VNI":1,"VtepMAC":"0a:%02x:%02x:%02x:00:01"}`, (i>>16)&0xff, (i>>8)&0xff, i&0xff)
		ann["flannel.alpha.coreos.com/public-ip"] = fmt.Sprintf("198.51.100.%d", 1+i%250)
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann, Labels: map[string]string{
			"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
			"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
			"node.kubernetes.io/instance-type": "bench", "topology.kubernetes.io/zone": "lab-a",
		}},
		Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
		Status: corev1.NodeStatus{
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"), corev1.ResourcePods: resource.MustParse("110"),
			},
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("7800m"), corev1.ResourceMemory: resource.MustParse("31Gi"), corev1.ResourcePods: resource.MustParse("110"),
			},
			NodeInfo: corev1.NodeSystemInfo{MachineID: fmt.Sprintf("%032x", i), SystemUUID: fmt.Sprintf("%032x", i+1), BootID: fmt.Sprintf("%032x", i+2),
				KernelVersion: "6.1.0-bench", OSImage: "Debian GNU/Linux 12 (bookworm)", ContainerRuntimeVersion: "containerd://1.7.0",
				KubeletVersion: kubeproc.Version, OperatingSystem: "linux", Architecture: "amd64"},
		},
	}
	now := metav1.Now()
	for _, c := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, corev1.NodeReady} {
		node.Status.Conditions = append(node.Status.Conditions, corev1.NodeCondition{
			Type: c, Status: corev1.ConditionFalse, Reason: "Kubelet" + string(c), Message: "kubelet reports " + string(c),
			LastHeartbeatTime: now, LastTransitionTime: now,
		})
	}
	for j := range 12 {
		node.Status.Images = append(node.Status.Images, corev1.ContainerImage{
			Names:     []string{fmt.Sprintf("registry.example.com/team/app-%d@sha256:%064x", j, j), fmt.Sprintf("registry.example.com/team/app-%d:v1.%d", j, j)},
			SizeBytes: int64(1e7 * (j + 1)),
		})
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create node %s: %w", name, err)
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

func vmHWM(pid int) (int, error) { return benchkit.StatusKB(pid, "VmHWM") }

// rssSplit is the daemon's current anonymous and file-backed resident size.
func rssSplit(pid int) (anon, file int, err error) {
	if anon, err = benchkit.StatusKB(pid, "RssAnon"); err != nil {
		return 0, 0, err
	}
	file, err = benchkit.StatusKB(pid, "RssFile")
	return anon, file, err
}
