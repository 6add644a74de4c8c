// Command benchkube measures flanneld --kube-subnet-mgr against a real kube-apiserver with
// N realistic Node objects: median time from exec until flannel.1 holds all N peers, and
// peak RSS.
//
//	sudo make bench-kube   # or: sudo go run ./e2e/cmd/benchkube -nodes 1000,5000 -runs 3 -upstream build
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
	var o options
	flag.StringVar(&o.sizes, "nodes", "1000,5000", "comma-separated numbers of annotated peer nodes (ascending; nodes are added between sizes)")
	flag.IntVar(&o.runs, "runs", 3, "runs per size (the median is reported)")
	o.Define("in the same lab against the same apiserver, alternating with ours")
	flag.IntVar(&o.upRuns, "upstream-runs", 0, "upstream's runs per size (0: as -runs)")
	flag.DurationVar(&o.limit, "limit", 90*time.Second, "a daemon that has not programmed every node after this long is reported as not within it")
	flag.StringVar(&o.manifest, "manifest", "dist/kube-flannel.yml", "manifest whose RBAC objects are applied")
	flag.Func("env", "extra environment variable for flanneld, NAME=value (repeatable; e.g. GODEBUG=gctrace=1, whose lines are then shown)", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want NAME=value")
		}
		o.env = append(o.env, v)
		return nil
	})
	flag.Parse()
	benchkit.Main("benchkube", "bench-kube", func(ctx context.Context) error { return run(ctx, o) })
}

type options struct {
	benchkit.Flags
	sizes        string
	runs, upRuns int
	limit        time.Duration
	manifest     string
	env          []string // extra NAME=value variables for flanneld
}

// Targets at 5,000 nodes.
const (
	targetNodes    = 5000
	targetConverge = 1.0  // s
	targetPeakRSS  = 35.0 // MB
)

type result struct {
	converge time.Duration
	hwmKB    int
	over     bool // not programmed within the limit
	// largest anonymous and file-backed RSS sampled every 10 ms while converging
	anonKB, fileKB int
}

func run(ctx context.Context, o options) (err error) {
	var sizes []int
	for _, s := range strings.Split(o.sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 60000 || (len(sizes) > 0 && n <= sizes[len(sizes)-1]) {
			return fmt.Errorf("bad -nodes %q (ascending, 1..60000)", o.sizes)
		}
		sizes = append(sizes, n)
	}
	if o.runs < 1 || o.upRuns < 0 {
		return fmt.Errorf("bad -runs %d or -upstream-runs %d", o.runs, o.upRuns)
	}
	if o.upRuns == 0 {
		o.upRuns = o.runs
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
	daemons, err := o.Daemons(ctx, work)
	if err != nil {
		return err
	}
	_ = lab.Sweep("fgbkube")
	l, err := lab.New(ctx, lab.Options{Name: lab.UniqueName("fgbkube", "b"), Nodes: 1, WorkDir: filepath.Join(work, "lab"), FlanneldBin: daemons[0].Bin})
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
	if err := kubeproc.ApplyManifest(ctx, rc, o.manifest, false); err != nil {
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
	rep := benchkit.NewReport("kube", "Kubernetes mode: time to program every annotated node, and peak RSS", "go run ./e2e/cmd/benchkube")
	rep.SetDaemons(daemons)
	fmt.Printf("flanneld Kubernetes mode: annotated nodes, time to program + peak RSS, %d run(s), median; %s, kube-apiserver %s\n",
		o.runs, rep.Machine, kubeproc.Version)
	have := 0
	for _, n := range sizes {
		start := time.Now()
		if err := createPeers(ctx, cs, have, n); err != nil {
			return err
		}
		have = n
		fmt.Fprintf(os.Stderr, "benchkube: %d nodes in the apiserver (added in %v)\n", n, time.Since(start).Round(time.Millisecond))
		runs := map[string][]result{}
		for r := 0; r < o.runs; r++ {
			for _, d := range daemons {
				if d.IsUpstream() && r >= o.upRuns {
					continue
				}
				res, err := once(ctx, l, d, n, kubeconfig, confPath, o)
				if err != nil {
					return fmt.Errorf("%s, %d nodes, run %d: %w", d.Name, n, r+1, err)
				}
				if res.over {
					fmt.Fprintf(os.Stderr, "benchkube: %s, %d nodes, run %d: not programmed within %v\n", d.Name, n, r+1, o.limit)
				} else {
					fmt.Fprintf(os.Stderr, "benchkube: %s, %d nodes, run %d: %.2fs, %.1f MB (sampled max: anon %.1f MB, file %.1f MB)\n", d.Name, n, r+1,
						res.converge.Seconds(), mb(res.hwmKB), mb(res.anonKB), mb(res.fileKB))
				}
				runs[d.Name] = append(runs[d.Name], res)
			}
		}
		for _, d := range daemons {
			addResults(rep, d.Name, n, runs[d.Name], o.limit)
		}
	}
	if len(daemons) > 1 && o.upRuns < o.runs {
		rep.Note("upstream ran %d time(s) per size (ours %d)", o.upRuns, o.runs)
	}
	rep.Note("kube-apiserver %s; nodes of kubelet size (labels, conditions, images: about 12 kB in protobuf)", kubeproc.Version)
	return o.Finish(os.Stdout, rep)
}

func addResults(rep *benchkit.Report, daemon string, n int, rs []result, limit time.Duration) {
	c := fmt.Sprintf("%d nodes", n)
	conv := benchkit.Result{Case: c, X: float64(n), Metric: "time to program", Unit: "s", Daemon: daemon, Limit: limit.Seconds()}
	peak := benchkit.Result{Case: c, X: float64(n), Metric: "peak RSS", Unit: "MB", Daemon: daemon}
	if daemon == benchkit.Ours && n == targetNodes {
		conv.Target, peak.Target = targetConverge, targetPeakRSS
	}
	for _, r := range rs {
		if r.over {
			conv.Over++
			continue
		}
		conv.Runs, peak.Runs = append(conv.Runs, r.converge.Seconds()), append(peak.Runs, mb(r.hwmKB))
	}
	rep.Add(conv)
	rep.Add(peak)
}

func mb(kb int) float64 { return float64(kb) / 1024 }

// once runs d on a clean node (no flannel.1, no state) until everything is programmed.
func once(ctx context.Context, l *lab.Lab, d benchkit.Daemon, n int, kubeconfig, confPath string, o options) (result, error) {
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
	if err := l.StartFlanneldBin(1, d.Bin, append([]string{"NODE_NAME=lab-n1"}, o.env...), "--kube-subnet-mgr", "--kubeconfig-file="+kubeconfig, "--net-config-path="+confPath); err != nil {
		return result{}, err
	}
	pid := l.FlanneldPID(1)
	var res result
	for {
		if ctx.Err() != nil {
			_ = l.KillFlanneld(1)
			return result{}, ctx.Err()
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
		if time.Since(start) > o.limit {
			res.over = true
			if err := l.StopFlanneld(1); err != nil {
				_ = l.KillFlanneld(1)
			}
			return res, nil
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

func createPeers(ctx context.Context, cs kubernetes.Interface, from, to int) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := from; i < to; i++ {
		g.Go(func() error { return createNode(ctx, cs, fmt.Sprintf("peer-%05d", i), i, true) })
	}
	return g.Wait()
}

// createNode creates a kubelet-like node; a peer gets flannel annotations and a public
// address never sent to, the own node 10.0.0.0/24 and none.
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

// converged reports whether flannel.1 carries n routes, neighbours and FDB entries.
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
